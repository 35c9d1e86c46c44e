"""Writes the ONNX files the tests import: small networks written with PyTorch, exported by torch.onnx.export
(the TorchScript exporter at opset 17, and the default one, opset 18 with its weights in a .data file; batch
dimension dynamic), with their logits on fixed inputs beside them so the tests can compare. Needs onnxscript.

tiny_qdq is tiny through ONNX Runtime's quantize_static (needs onnxruntime).

usage: export_fixtures.py OUT_DIR [NAME ...]   (by default every fixture)
"""
import json
import sys

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

torch.manual_seed(3)


class TinyCNN(nn.Module):
    """Conv (stride 2), relu, max pool, a dense classifier: Graphs/tiny.graph."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, stride=2)
        self.fc1 = nn.Linear(4 * 6 * 6, 10)

    def forward(self, x):
        return self.fc1(F.max_pool2d(F.relu(self.conv1(x)), 2).flatten(1))


class BNNet(nn.Module):
    """Conv without bias and batch norm, a residual add, average pooling, dropout, log-softmax output."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.drop = nn.Dropout(0.25)
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.conv2(y) + y)
        y = F.avg_pool2d(y, 2)
        return F.log_softmax(self.fc(self.drop(torch.flatten(y, 1))), dim=1)


class ZooBlocks(nn.Module):
    """The torchvision blocks of format 1.3 in one small network, with torchvision-style dotted names: a stem
    conv + batch norm + ReLU6, a 5x5 depthwise conv, hard-swish, a squeeze-excitation gate (hard-sigmoid),
    SiLU, a SqueezeNet-style concat of two expands, ShuffleNet's chunk and channel shuffle, and a padded
    ceil-mode max pool."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU6()),
            nn.Conv2d(8, 8, 5, padding=2, groups=8))
        self.se = nn.Sequential(nn.Conv2d(8, 4, 1), nn.ReLU(), nn.Conv2d(4, 8, 1), nn.Hardsigmoid())
        self.expand1, self.expand3 = nn.Conv2d(8, 4, 1), nn.Conv2d(8, 4, 3, padding=1)
        self.fc = nn.Linear(8 * 5 * 5, 5)

    def forward(self, x):
        x = F.hardswish(self.features(x))
        x = F.silu(x * self.se(F.adaptive_avg_pool2d(x, 1)))
        y = torch.cat([F.relu(self.expand1(x)), F.relu(self.expand3(x))], 1)
        a, b = y.chunk(2, dim=1)
        y = torch.cat([a, F.relu(b)], 1)
        y = y.view(-1, 2, 4, 8, 8).transpose(1, 2).reshape(-1, 8, 8, 8)
        y = F.max_pool2d(y, 3, 2, padding=1, ceil_mode=True)
        return self.fc(torch.flatten(y, 1))


def export(model, shape, name, out, dynamo=False):
    model.eval()
    if isinstance(model, ZooBlocks):
        model.features[0][1].running_mean.uniform_(-0.5, 0.5)
        model.features[0][1].running_var.uniform_(0.5, 1.5)
    if isinstance(model, BNNet):
        # Running statistics away from 0 and 1, so the import of both is checked.
        model.bn1.running_mean.uniform_(-0.5, 0.5)
        model.bn1.running_var.uniform_(0.5, 1.5)
    x = torch.randn(3, *shape)
    if dynamo:
        # The exporter torch.onnx uses by default: opset 18, the weights in NAME.onnx.data beside the model.
        torch.onnx.export(model, (x,), f"{out}/{name}.onnx", input_names=["image"], output_names=["logits"],
                          dynamic_shapes={"x": {0: torch.export.Dim("N")}}, dynamo=True, external_data=True)
    else:
        torch.onnx.export(model, (x,), f"{out}/{name}.onnx", input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}}, opset_version=17, dynamo=False,
                          training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    with torch.no_grad():
        y = model(x)
    json.dump({"input": x.flatten().tolist(), "shape": [3, *shape], "output": y.flatten().tolist()},
              open(f"{out}/{name}.onnx.json", "w"))


def quantize(name, quantized, out):
    """NAME.onnx through ONNX Runtime's quantize_static (QDQ, u8 activations, s8 weights per channel, calibrated on
    its fixture's inputs and seeded noise), with ONNX Runtime's output on the fixture's inputs beside it."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    fixture = json.load(open(f"{out}/{name}.onnx.json"))
    x = np.array(fixture["input"], dtype=np.float32).reshape(fixture["shape"])
    noise = np.random.default_rng(3).standard_normal((13, *x.shape[1:])).astype(np.float32)
    batches = [x, noise]

    class Reader(CalibrationDataReader):
        def get_next(self):
            return {"image": batches.pop()} if batches else None

    quantize_static(f"{out}/{name}.onnx", f"{out}/{quantized}.onnx", Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    session = ort.InferenceSession(f"{out}/{quantized}.onnx", providers=["CPUExecutionProvider"])
    y = session.run(None, {"image": x})[0]
    json.dump({"input": fixture["input"], "shape": fixture["shape"], "output": y.flatten().tolist()}, open(f"{out}/{quantized}.onnx.json", "w"))


out, names = sys.argv[1], set(sys.argv[2:])
fixtures = [(TinyCNN, (1, 28, 28), "tiny", False), (BNNet, (3, 8, 8), "bnnet", False), (TinyCNN, (1, 28, 28), "tiny_dynamo", True),
            (ZooBlocks, (3, 16, 16), "zoo_blocks", True)]
for make, shape, name, dynamo in fixtures:
    if not names or name in names:
        torch.manual_seed(3)
        export(make(), shape, name, out, dynamo=dynamo)
if not names or "tiny_qdq" in names:
    quantize("tiny", "tiny_qdq", out)
