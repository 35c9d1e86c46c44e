"""torchvision models at 224x224: cnnc's inference speed against ONNX Runtime and OpenVINO (make zoo-compare).

Each model, with random seeded weights in eval mode, is exported once by torch.onnx (TorchScript exporter, opset
17, a dynamic batch), and the same file is timed by the three: `cnnc bench MODEL --inference-only`, ONNX Runtime's
CPU provider and OpenVINO's CPU plugin (fp32: INFERENCE_PRECISION_HINT f32), each on 2 threads, at batch 1 and 16,
on random inputs. Each engine warms up, then times single calls until 2 s have passed (at least 5); the median
call divided by the batch is the time per image. Each engine runs in a process of its own (this script with
--engine, which imports only numpy and that engine), so its peak resident memory over both batches (the kernel's
VmHWM, as cnnc reports its own) is comparable with cnnc's `peak_rss_mb`. One JSON line per model, then a table with
cnnc's time against the better of the two engines (below 1 is faster) and the three peaks. CNNC_FLAGS (e.g.
"--cpu x86-64-v3") go to cnnc only: the engines run at the machine's full ISA.

PRECISION=int8: each exported model goes through ONNX Runtime's quantize_static first (the QDQ form: u8 activations,
s8 weights per channel, calibrated on 8 seeded random inputs), and that file is what the three time: ONNX Runtime
fuses it into its int8 kernels, OpenVINO runs its int8 transformations, cnnc imports the pairs as int8 convs.
REDUCE_RANGE=1 (make zoo-compare PRECISION=int8 ISA=avx2 sets it): the weights in 7 bits (quantize_static's
reduce_range, what ONNX Runtime advises for CPUs without VNNI), a file of its own; cnnc reads them as
`weight_steps: 64` and multiplies u8 x s8 pairs in 16 bits on AVX2.

usage: zoo_compare.py CNNC WORK_DIR [MODEL ...]
       zoo_compare.py --engine onnxruntime|openvino MODEL.onnx   (one engine's JSON: us per image, peak MB)
"""
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

BATCHES = [1, 16]
THREADS = 2
SECONDS = 2.0
MINIMUM_CALLS = 5
WARMUP_CALLS = 2
CNNC_FLAGS = os.environ.get("CNNC_FLAGS", "").split()
PRECISION = os.environ.get("PRECISION", "fp32")
REDUCE_RANGE = os.environ.get("REDUCE_RANGE", "0") == "1"
CALIBRATION_INPUTS = 8


def peak_mb():
    """This process's peak resident memory: VmHWM (getrusage would also count the image exec replaced)."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def export(name):
    path = f"{work}/{name}.onnx"
    if os.path.exists(path):
        return path
    import torch
    import torchvision
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    torch.onnx.export(model, (torch.zeros(1, 3, 224, 224),), path, input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}}, opset_version=17, dynamo=False)
    return path


def quantized(path):
    """The model through ONNX Runtime's quantize_static (QDQ), written beside it once (7-bit weights with REDUCE_RANGE)."""
    out = path.replace(".onnx", "-int8-reduced.onnx" if REDUCE_RANGE else "-int8.onnx")
    if os.path.exists(out):
        return out
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    batches = [np.random.default_rng(100 + i).uniform(-1, 1, (1, 3, 224, 224)).astype(np.float32) for i in range(CALIBRATION_INPUTS)]

    class Reader(CalibrationDataReader):
        def get_next(self):
            return {"image": batches.pop()} if batches else None

    quantize_static(path, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, reduce_range=REDUCE_RANGE)
    return out


def timed(call):
    """Median seconds of one call, after the warm-up calls."""
    for _ in range(WARMUP_CALLS):
        call()
    calls, begin = [], time.perf_counter()
    while len(calls) < MINIMUM_CALLS or time.perf_counter() - begin < SECONDS:
        t = time.perf_counter()
        call()
        calls.append(time.perf_counter() - t)
    return sorted(calls)[len(calls) // 2]


def inputs(batch):
    return np.random.default_rng(batch).uniform(-1, 1, (batch, 3, 224, 224)).astype(np.float32)


def onnxruntime_us(path):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return {str(b): timed(lambda x=inputs(b): session.run(None, {name: x})) / b * 1e6 for b in BATCHES}


def openvino_us(path):
    import openvino as ov
    core = ov.Core()
    out = {}
    for b in BATCHES:
        model = core.read_model(path)
        model.reshape([b, 3, 224, 224])
        compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": THREADS, "INFERENCE_PRECISION_HINT": "f32",
                                                      "PERFORMANCE_HINT": "LATENCY"})
        request = compiled.create_infer_request()
        x = inputs(b)
        out[str(b)] = timed(lambda: request.infer({0: x})) / b * 1e6
    return out


def engine_us(engine, path):
    """One engine's times per image and peak memory, from a process of its own."""
    r = subprocess.run([sys.executable, __file__, "--engine", engine, path], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError((r.stderr.strip().splitlines() or ["exit status %d" % r.returncode])[-1])
    report = json.loads(r.stdout)
    return report["us_per_image"], report["peak_rss_mb"]


def cnnc_us(path):
    r = subprocess.run([cnnc, "bench", path, "--inference-only", "--batches", ",".join(map(str, BATCHES)), "--seconds", str(SECONDS),
                        "--threads", str(THREADS)] + CNNC_FLAGS, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip()[:400])
    report = json.loads(r.stdout)
    return report["inference_us_per_image"], report["target"]["cpu"], report["peak_rss_mb"]


if sys.argv[1] == "--engine":
    engine, path = sys.argv[2], sys.argv[3]
    us = {"onnxruntime": onnxruntime_us, "openvino": openvino_us}[engine](path)
    print(json.dumps({"us_per_image": us, "peak_rss_mb": round(peak_mb(), 1)}))
    sys.exit(0)

cnnc, work = sys.argv[1], sys.argv[2]
MODELS = sys.argv[3:] or ["resnet18", "mobilenet_v2", "efficientnet_b0", "shufflenet_v2_x1_0", "resnet50"]
rows = []
for name in MODELS:
    path = export(name)
    if PRECISION == "int8":
        path = quantized(path)
    row = {"model": name, "precision": PRECISION}
    try:
        row["cnnc_us_per_image"], row["cnnc_cpu"], row["cnnc_peak_rss_mb"] = cnnc_us(path)
    except Exception as e:
        row["cnnc_error"] = str(e)[:400]
    for engine in ["onnxruntime", "openvino"]:
        try:
            row[f"{engine}_us_per_image"], row[f"{engine}_peak_rss_mb"] = engine_us(engine, path)
        except Exception as e:  # an engine that cannot run the file is reported, not counted
            row[f"{engine}_error"] = str(e).splitlines()[0][:300]
    print(json.dumps(row), flush=True)
    rows.append(row)

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
print(f"\n{cpu}, {os.cpu_count()} CPUs; cnnc built for {rows[0].get('cnnc_cpu', '?')}; {THREADS} threads each; {PRECISION}; us per image (ratio: cnnc / best engine)")
print(f"| model | batch | cnnc | ONNX Runtime | OpenVINO | ratio |")
print(f"|---|---|---|---|---|---|")
for row in rows:
    for b in map(str, BATCHES):
        ours = row.get("cnnc_us_per_image", {}).get(b)
        peers = [row.get(f"{e}_us_per_image", {}).get(b) for e in ["onnxruntime", "openvino"]]
        best = min([p for p in peers if p], default=None)
        cell = lambda v: f"{v:,.0f}" if v else "-"
        print(f"| {row['model']} | {b} | {cell(ours)} | {cell(peers[0])} | {cell(peers[1])} | {ours / best:.2f} |" if ours and best
              else f"| {row['model']} | {b} | {cell(ours)} | {cell(peers[0])} | {cell(peers[1])} | - |")

print(f"\nPeak resident memory of each process (MB; batches 1 and 16 in one process, as `cnnc bench` runs them)")
print(f"| model | cnnc | ONNX Runtime | OpenVINO | ratio |")
print(f"|---|---|---|---|---|")
for row in rows:
    ours = row.get("cnnc_peak_rss_mb")
    peers = [row.get(f"{e}_peak_rss_mb") for e in ["onnxruntime", "openvino"]]
    best = min([p for p in peers if p], default=None)
    cell = lambda v: f"{v:,.0f}" if v else "-"
    print(f"| {row['model']} | {cell(ours)} | {cell(peers[0])} | {cell(peers[1])} | {ours / best:.2f} |" if ours and best
          else f"| {row['model']} | {cell(ours)} | {cell(peers[0])} | {cell(peers[1])} | - |")
