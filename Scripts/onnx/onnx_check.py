"""ONNX in and out against the real tools (make onnx-check).

1. Each seed network, written with PyTorch (the modules below mirror Graphs/simplecnn, convnet, mnistnet and
   smallcnn), is exported by torch.onnx.export (by both of its exporters) and read by cnnc: `cnnc import` must give a graph with
   PyTorch's parameter count, and `cnnc predict MODEL.onnx` (its own weights, the JIT) PyTorch's logits on the
   first 100 MNIST test images within 1e-4; then `cnnc train MODEL.onnx` trains it for an epoch from them.
2. A cnnc-trained SimpleCNN, exported by `cnnc export`, must pass onnx.checker, and ONNX Runtime must predict
   the 10,000 MNIST test images exactly as `cnnc predict` does.
3. int8 both ways: that SimpleCNN quantized by `cnnc quantize` and exported in the QDQ form must pass onnx.checker
   and ONNX Runtime must predict at least 99.5% of the test images as `cnnc predict` of the int8 graph does; the
   fp32 export quantized by ONNX Runtime's quantize_static (QDQ, calibrated on 256 test images) must be read
   by `cnnc predict` to at least 99.5% of ONNX Runtime's own predictions.

usage: onnx_check.py CNNC WORK_DIR [EPOCH_STEPS]
"""
import gzip
import json
import re
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn
import torch.nn.functional as F

cnnc, work = sys.argv[1], sys.argv[2]
steps = sys.argv[3] if len(sys.argv) > 3 else None
torch.manual_seed(1)
MNIST = "data/mnist"
MEAN, STD = 0.1307, 0.3081


def images(count):
    data = gzip.open(f"{MNIST}/t10k-images-idx3-ubyte.gz").read()
    x = np.frombuffer(data, np.uint8, offset=16).reshape(-1, 1, 28, 28)[:count].astype(np.float32) / 255
    return (x - MEAN) / STD


class SimpleCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 32, 3, padding=1), nn.Conv2d(32, 64, 3, padding=1)
        self.fc1, self.drop, self.fc2 = nn.Linear(3136, 128), nn.Dropout(0.5), nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(self.drop(F.relu(self.fc1(x.flatten(1)))))


class ConvNet(nn.Module):
    """The variant whose first conv has no pool."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 32, 3, padding=1), nn.Conv2d(32, 64, 3, padding=1)
        self.fc1, self.drop, self.fc2 = nn.Linear(12544, 128), nn.Dropout(0.5), nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        return self.fc2(self.drop(F.relu(self.fc1(torch.flatten(x, 1)))))


class MNISTNet(nn.Module):
    """Unpadded convs, dropout, and log-probabilities out (the final LogSoftmax folds into cnnc's loss)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 32, 3), nn.Conv2d(32, 64, 3)
        self.drop1, self.fc1, self.drop2, self.fc2 = nn.Dropout(0.25), nn.Linear(9216, 128), nn.Dropout(0.5), nn.Linear(128, 10)

    def forward(self, x):
        x = self.drop1(F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2))
        return F.log_softmax(self.fc2(self.drop2(F.relu(self.fc1(torch.flatten(x, 1))))), dim=1)


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(16, 32, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(1568, 128), nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.view(x.size(0), -1))))


def run(*args):
    r = subprocess.run([cnnc, *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"cnnc {' '.join(args)} failed:\n{r.stderr}")
    return r.stdout


def cnnc_logits(model, count, weights=None):
    extra = ["--weights", weights] if weights else []
    out = run("predict", model, *extra, f"{MNIST}/t10k-images-idx3-ubyte.gz", "--count", str(count), "--json", "--logits", "--backend", "jit")
    rows = [json.loads(line) for line in out.splitlines()]
    return np.array([r["logits"] for r in rows], dtype=np.float32), np.array([r["prediction"] for r in rows])


failures = []
x100 = torch.from_numpy(images(100))
for name, module in [("simplecnn", SimpleCNN()), ("convnet", ConvNet()), ("mnistnet", MNISTNet()), ("smallcnn", SmallCNN())]:
    module.eval()
    # The default exporter (opset 18, weights in NAME.onnx.data), and the TorchScript one (opset 17, weights inside).
    torch.onnx.export(module, (x100[:2],), f"{work}/{name}-default.onnx", input_names=["image"],
                      dynamic_shapes={"x": {0: torch.export.Dim("N")}}, dynamo=True, external_data=True)
    path = f"{work}/{name}.onnx"
    torch.onnx.export(module, (x100[:2],), path, input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}}, opset_version=17, dynamo=False)
    print(run("import", path, "-o", f"{work}/{name}.graph", "--weights-out", f"{work}/{name}.safetensors").strip())
    count = sum(p.numel() for p in module.parameters())
    plan = run("compile", path, "--emit", "none")
    with torch.no_grad():
        expected = module(x100).numpy()
    diffs = []
    for exported in [path, f"{work}/{name}-default.onnx"]:
        ours, _ = cnnc_logits(exported, 100)
        if name == "mnistnet":
            # cnnc's output is the logits before the folded LogSoftmax.
            ours = ours - np.log(np.exp(ours - ours.max(1, keepdims=True)).sum(1, keepdims=True)) - ours.max(1, keepdims=True)
        diffs.append(float(np.abs(ours - expected).max()))
    diff = max(diffs)
    counted = re.search(r"parameters:\s+([\d,]+)", plan).group(1) == f"{count:,}"
    print(f"{name}: {count:,} parameters ({'the same in cnnc' if counted else 'NOT what cnnc counts'}), max |logit difference| "
          f"on 100 test images {diffs[0]:.2e} (TorchScript exporter, opset 17), {diffs[1]:.2e} (default exporter, opset 18, external weights)")
    if diff > 1e-4 or not counted:
        failures.append(name)
    trained = run("train", path, "--jit", "--epochs", "1", *(["--steps", steps] if steps else []), "--out", f"{work}/run-{name}", "--no-report", "--overwrite")
    print("  " + [line for line in trained.splitlines() if line.startswith("epoch 1:")][0])

# 2. cnnc -> ONNX -> ONNX Runtime.
run("train", "Graphs/simplecnn.graph", "--jit", "--epochs", "1", *(["--steps", steps] if steps else []), "--out", f"{work}/run-export", "--no-report", "--overwrite")
weights = f"{work}/run-export/weights.safetensors"
print(run("export", "Graphs/simplecnn.graph", "--weights", weights, "-o", f"{work}/simplecnn-trained.onnx").strip())
onnx.checker.check_model(onnx.load(f"{work}/simplecnn-trained.onnx"), full_check=True)
session = ort.InferenceSession(f"{work}/simplecnn-trained.onnx", providers=["CPUExecutionProvider"])
x = images(10000)
theirs = np.concatenate([session.run(None, {"image": x[i:i + 1000]})[0] for i in range(0, 10000, 1000)]).argmax(1)
_, ours = cnnc_logits("Graphs/simplecnn.graph", 10000, weights)
same = int((theirs == ours).sum())
print(f"exported SimpleCNN: onnx.checker passed; ONNX Runtime {ort.__version__} and cnnc predict agree on {same:,} of 10,000 test predictions")
if same != 10000:
    failures.append("export")
# 3. int8 both ways.
int8 = f"{work}/simplecnn-int8"
print(run("quantize", "Graphs/simplecnn.graph", "--weights", weights, "--calibrate", MNIST, "--out", int8 + ".graph").strip())
print(run("export", int8 + ".graph", "--weights", int8 + ".safetensors", "-o", int8 + ".onnx").strip())
onnx.checker.check_model(onnx.load(int8 + ".onnx"), full_check=True)
session = ort.InferenceSession(int8 + ".onnx", providers=["CPUExecutionProvider"])
theirs = np.concatenate([session.run(None, {"image": x[i:i + 1000]})[0] for i in range(0, 10000, 1000)]).argmax(1)
_, ours = cnnc_logits(int8 + ".graph", 10000, int8 + ".safetensors")
same = int((theirs == ours).sum())
print(f"int8 SimpleCNN exported in the QDQ form: onnx.checker passed; ONNX Runtime and cnnc predict agree on {same:,} of 10,000")
if same < 9950:
    failures.append("int8 export")
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
calibration = [images(256)[i:i + 16] for i in range(0, 256, 16)]


class Reader(CalibrationDataReader):
    def get_next(self):
        return {"image": calibration.pop()} if calibration else None


quantize_static(f"{work}/simplecnn-trained.onnx", f"{work}/simplecnn-ort-int8.onnx", Reader(), quant_format=QuantFormat.QDQ,
                per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
session = ort.InferenceSession(f"{work}/simplecnn-ort-int8.onnx", providers=["CPUExecutionProvider"])
theirs = np.concatenate([session.run(None, {"image": x[i:i + 1000]})[0] for i in range(0, 10000, 1000)]).argmax(1)
_, ours = cnnc_logits(f"{work}/simplecnn-ort-int8.onnx", 10000)
same = int((theirs == ours).sum())
print(f"ONNX Runtime's quantize_static SimpleCNN read by cnnc: ONNX Runtime and cnnc predict agree on {same:,} of 10,000")
if same < 9950:
    failures.append("int8 import")
sys.exit(f"failed: {', '.join(failures)}" if failures else 0)
