"""Writes the ONNX files the tests import: small networks written with PyTorch, exported by torch.onnx.export
(the TorchScript exporter at opset 17, and the default one, opset 18 with its weights in a .data file; batch
dimension dynamic), with their logits on fixed inputs beside them so the tests can compare. Needs onnxscript.

usage: export_fixtures.py OUT_DIR
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


def export(model, shape, name, out, dynamo=False):
    model.eval()
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


out = sys.argv[1]
export(TinyCNN(), (1, 28, 28), "tiny", out)
export(BNNet(), (3, 8, 8), "bnnet", out)
export(TinyCNN(), (1, 28, 28), "tiny_dynamo", out, dynamo=True)
