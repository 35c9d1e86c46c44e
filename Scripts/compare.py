"""Prints cnnc's benchmark JSON next to the peers' (same protocol, same machine) and the ratios between them."""
import json
import sys

text, rows, decoder = sys.stdin.read(), [], json.JSONDecoder()
pos = text.find("{")
while pos >= 0:
    obj, end = decoder.raw_decode(text, pos)
    rows.append(obj)
    pos = text.find("{", end)
cnnc = next(r for r in rows if r.get("framework", "").startswith("cnnc"))
# The peers' first step includes tracing and compiling; cnnc compiles before it, so count both.
cnnc["first_step_s"] = round(cnnc["first_step_s"] + cnnc.get("compile_s", 0), 4)
peers = [r for r in rows if r is not cnnc]
keys = [("train_images_per_s", "train img/s", True), ("infer_b1000_images_per_s", "infer b1000 img/s", True),
        ("infer_b1_us_per_image", "infer b1 us/img", False), ("first_step_s", "first step s (+compile)", False),
        ("peak_rss_mb", "peak RSS MB", False), ("test_accuracy", "test accuracy", True)]
t = cnnc.get("target", {})
print(f"cnnc target: {t.get('cpu')} ({t.get('isa')}, {t.get('lanes')} lanes) on a {t.get('host_cpu')} host")
for p in peers:
    print(f"{p['framework']}: ran {p.get('aten_cpu_capability', '')} {p.get('onednn_isa') or ''} under {p.get('isa_settings', {})}")
print(f"{'':22}" + "".join(f"{r['framework'][:20]:>22}" for r in [cnnc] + peers))
for k, label, _ in keys:
    print(f"{label:22}" + "".join(f"{r.get(k, float('nan')):>22}" for r in [cnnc] + peers))
for p in peers:
    print(f"\ncnnc / {p['framework']}:")
    for k, label, higher in keys[:5]:
        if k in p and k in cnnc and p[k]:
            ratio = cnnc[k] / p[k] if higher else p[k] / cnnc[k]
            print(f"  {label:20} {ratio:6.2f}x {'better' if ratio >= 1 else 'worse'}")
if "compile_s" in cnnc:
    cached = f" ({cnnc['compile_cached_s']} s with every module in the object cache)" if cnnc.get("compile_cached_s") is not None else ""
    print(f"\ncnnc compile before the first step: {cnnc['compile_s']} s{cached}; sgemm peak {cnnc.get('sgemm_peak_gflops')} GFLOP/s")
