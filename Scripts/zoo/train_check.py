"""Training torchvision models from their ONNX files, checked against PyTorch (make zoo-train-check).

For ResNet-18 and MobileNetV2 with 10 classes at 32x32: the model, random seeded, is exported with its batch norms
kept (`training=TrainingMode.PRESERVE`) and trained by `cnnc train MODEL.onnx` for one SGD step (lr 1, no momentum,
one batch of 16 CIFAR-format images, one shard): the weights' change is the step's gradient, which must equal
PyTorch's for the same batch and weights (the module in training mode, batch statistics in its batch norms) within
1e-4 of each parameter's largest gradient (or of 1/1000 of the model's largest, for gradients that are zero in
exact arithmetic). PyTorch's gradients are taken in float64: its own float32 ones differ
from them by up to 9% in ResNet-18's first block (and cnnc's by 1e-5), so float32 PyTorch is reported beside them,
not used as the reference. Then 200 steps on a small learnable task must lower the loss. One JSON
line per check; exit status 1 when any fails.

usage: train_check.py CNNC WORK_DIR [MODEL ...]
"""
import copy
import json
import os
import re
import subprocess
import sys

import numpy as np
import torch
import torchvision
from safetensors.torch import load_file

cnnc, work = sys.argv[1], sys.argv[2]
MODELS = sys.argv[3:] or ["resnet18", "mobilenet_v2"]
TOLERANCE = 1e-4
FLOOR = 1e-3
BATCH = 16
MEAN, STD = 0.5, 0.25


def write_cifar(directory, images, labels):
    """CIFAR-10 binary: a label byte, then 3x32x32 pixels; the training records spread over the five batch files."""
    os.makedirs(directory, exist_ok=True)
    records = [bytes([int(l)]) + img.tobytes() for img, l in zip(images, labels)]
    for k, part in enumerate(np.array_split(np.arange(len(records)), 5)):
        with open(f"{directory}/data_batch_{k + 1}.bin", "wb") as f:
            f.write(b"".join(records[i] for i in part))
    with open(f"{directory}/test_batch.bin", "wb") as f:
        f.write(b"".join(records[:BATCH]))


def train(model_path, data, out, steps, lr, batch):
    args = [cnnc, "train", model_path, "--jit", "--data", data, "--batch", str(batch), "--steps", str(steps), "--epochs", "1000", "--optimizer", "sgd",
            "--lr", str(lr), "--mean", str(MEAN), "--std", str(STD), "--shards", "1", "--out", out, "--overwrite", "--no-report",
            "--log-every", "1"]
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip()[:400])
    return r.stdout


def gradient_check(name):
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None, num_classes=10)
    # Dropout draws from each framework's own generator: off, so that one step's gradients are comparable.
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (BATCH, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, BATCH)
    path = f"{work}/{name}-train.onnx"
    model.eval()
    torch.onnx.export(model, (torch.zeros(1, 3, 32, 32),), path, input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}}, opset_version=17, dynamo=False,
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    data = f"{work}/{name}-batch"
    write_cifar(data, images, labels)
    out = f"{work}/{name}-step"
    train(path, data, out, steps=1, lr=1.0, batch=BATCH)
    after = load_file(f"{out}/weights.safetensors")
    # PyTorch's gradient of the same batch, the module in training mode, in float64 (the reference) and in float32.
    x = torch.from_numpy(images).double() / 255
    def gradients(dtype):
        m = copy.deepcopy(model).to(dtype).train()
        loss = torch.nn.functional.cross_entropy(m(((x - MEAN) / STD).to(dtype)), torch.from_numpy(labels))
        loss.backward()
        return {k: p.grad.double() for k, p in m.named_parameters()}
    g64, g32 = gradients(torch.float64), gradients(torch.float32)
    worst, where, torch32 = 0.0, "", 0.0
    # Each parameter on the scale of its largest gradient, but at least FLOOR of the model's largest: a gradient
    # that is zero in exact arithmetic (a batch norm's bias before a conv and another batch norm) is rounding
    # noise in both, compared on the model's scale.
    floor = FLOOR * max(float(g.abs().max()) for g in g64.values())
    for key, p in model.named_parameters():
        ours, scale = (p.detach().double() - after[key].double()), g64[key].abs().max().clamp_min(floor)
        err = float((ours - g64[key]).abs().max() / scale)
        torch32 = max(torch32, float((g32[key] - g64[key]).abs().max() / scale))
        if err > worst:
            worst, where = err, key
    return {"model": name, "check": "one SGD step's gradients vs PyTorch's (float64)", "parameters": len(g64),
            "max_rel_diff": worst, "at": where, "pytorch_float32_max_rel_diff": torch32, "ok": worst <= TOLERANCE}


def loss_check(name):
    """200 steps on 512 images whose class is the brightest of ten vertical bands: the loss must fall."""
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 10, 512)
    images = rng.integers(0, 128, (512, 3, 32, 32), dtype=np.uint8)
    for i, l in enumerate(labels):
        images[i, :, :, 3 * l:3 * l + 3] += 127
    data = f"{work}/{name}-task"
    write_cifar(data, images, labels)
    log = train(f"{work}/{name}-train.onnx", data, f"{work}/{name}-200", steps=200, lr=0.05, batch=32)
    losses = [float(m) for m in re.findall(r"step \d+/\d+: loss ([0-9.]+)", log)]
    if len(losses) < 20:
        return {"model": name, "check": "loss over 200 steps", "error": f"read {len(losses)} losses from the log"}
    first, last = float(np.mean(losses[:10])), float(np.mean(losses[-10:]))
    return {"model": name, "check": "loss over 200 steps", "first_10": first, "last_10": last, "ok": last < 0.8 * first}


rows = []
for name in MODELS:
    for check in (gradient_check, loss_check):
        try:
            row = check(name)
        except Exception as e:
            row = {"model": name, "check": check.__name__, "error": str(e)[:400]}
        print(json.dumps(row), flush=True)
        rows.append(row)
sys.exit(0 if all(r.get("ok") for r in rows) else 1)
