"""torchvision's classification models through cnnc against ONNX Runtime (make zoo-check).

Each model is built with random seeded weights (batch-norm statistics and affine parameters randomised too, so
they matter), put in eval mode and exported by both torch.onnx exporters (the TorchScript one at opset 17, the
default one with its own opset); `cnnc infer MODEL.onnx` must give ONNX Runtime's logits on the same 4 random
224x224 images within 1e-3 of the largest logit. For ResNet-18 and MobileNetV2, a training-mode-preserving export
(batch norm kept) is imported by `cnnc import`, and its weights file must load into the torchvision module with
`load_state_dict(strict=True)` and give the module's own outputs. One JSON line per model and exporter, then a
summary; the exit status is 1 when any check fails.

usage: zoo_check.py CNNC WORK_DIR [MODEL ...]
"""
import json
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort
import torch
import torchvision

cnnc, work = sys.argv[1], sys.argv[2]
MODELS = sys.argv[3:] or ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
                          "efficientnet_b0", "squeezenet1_1", "densenet121", "vgg11"]
TOLERANCE = 1e-3
IMAGES = 4


def randomised(name):
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None)
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
    return model.eval()


def export(model, x, path, dynamo):
    if dynamo:
        torch.onnx.export(model, (x,), path, input_names=["image"], dynamic_shapes={"x": {0: torch.export.Dim("N")}},
                          dynamo=True, external_data=True)
    else:
        torch.onnx.export(model, (x,), path, input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}}, opset_version=17, dynamo=False)


def check(name, model, x, exporter):
    path = f"{work}/{name}-{exporter}.onnx"
    row = {"model": name, "exporter": exporter}
    try:
        export(model, torch.from_numpy(x[:1]), path, exporter == "default")
    except Exception as e:  # an exporter failure is the exporter's, reported and not counted against cnnc
        row["export_error"] = str(e).splitlines()[0][:300]
        return row
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    expected = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.save(f"{work}/{name}-x.npy", x)
    start = time.time()
    r = subprocess.run([cnnc, "infer", path, "--input", f"{work}/{name}-x.npy", "-o", f"{work}/{name}-{exporter}-y.npy"],
                       capture_output=True, text=True)
    row["cnnc_s"] = round(time.time() - start, 2)
    if r.returncode != 0:
        row["error"] = (r.stderr.strip().splitlines() or ["exit %d" % r.returncode])[0][:400]
        return row
    ours = np.load(f"{work}/{name}-{exporter}-y.npy")
    if ours.shape != expected.shape:
        row["error"] = f"logits of shape {ours.shape}, ONNX Runtime's {expected.shape}"
        return row
    row["max_rel_diff"] = float(np.abs(ours - expected).max() / np.abs(expected).max())
    row["ok"] = row["max_rel_diff"] <= TOLERANCE
    return row


def state_dict_check(name, model, x):
    """cnnc's weights of an imported model under PyTorch's keys: a strict load, and the same outputs."""
    from safetensors.torch import load_file
    path = f"{work}/{name}-bn.onnx"
    torch.onnx.export(model, (torch.from_numpy(x[:1]),), path, input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}}, opset_version=17, dynamo=False,
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    weights = f"{work}/{name}-bn.safetensors"
    r = subprocess.run([cnnc, "import", path, "-o", f"{work}/{name}-bn.graph", "--weights-out", weights], capture_output=True, text=True)
    row = {"model": name, "check": "state_dict strict load"}
    if r.returncode != 0:
        row["error"] = r.stderr.strip()[:400]
        return row
    fresh = getattr(torchvision.models, name)(weights=None).eval()
    try:
        fresh.load_state_dict(load_file(weights), strict=True)
    except RuntimeError as e:
        row["error"] = str(e)[:400]
        return row
    with torch.no_grad():
        row["ok"] = bool(torch.equal(fresh(torch.from_numpy(x)), model(torch.from_numpy(x))))
    return row


rows = []
for name in MODELS:
    model = randomised(name)
    x = np.random.default_rng(2).standard_normal((IMAGES, 3, 224, 224)).astype(np.float32)
    for exporter in ["torchscript", "default"]:
        row = check(name, model, x, exporter)
        print(json.dumps(row), flush=True)
        rows.append(row)
    if name in ["resnet18", "mobilenet_v2"]:
        row = state_dict_check(name, model, x)
        print(json.dumps(row), flush=True)
        rows.append(row)
checked = [r for r in rows if "export_error" not in r]
passed = [r for r in checked if r.get("ok")]
exports = [r for r in checked if "exporter" in r]
good = [r for r in passed if "exporter" in r]
print(json.dumps({"summary": f"{len(good)} of {len(exports)} exports within {TOLERANCE} of ONNX Runtime; "
                             f"{len(passed) - len(good)} of {len(checked) - len(exports)} strict state_dict loads",
                  "models_passing_both": sorted({r["model"] for r in good if sum(q["model"] == r["model"] for q in good) == 2})}))
sys.exit(0 if len(passed) == len(checked) and checked else 1)
