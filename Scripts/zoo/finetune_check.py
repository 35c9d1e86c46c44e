"""Fine-tuning ResNet-18 on a folder of photos, cnnc against PyTorch under one protocol (make finetune-check).

The photos: CLASSES classes of synthetic JPEGs of 160 to 320 pixels a side (each class a hue and a shape on a
noisy background, drawn at a random place and size), TRAIN and TEST per class, seeded. The model: torchvision's
resnet18 (no weights can be downloaded) with random seeded weights, pretrained here by PyTorch for PRETRAIN_EPOCHS
epochs on another task of the same photos (their shape, 2 classes), so that its backbone's features and batch-norm
statistics mean something. Both sides then fine-tune it for the CLASSES hues, once per seed of SEEDS, and each seed
pairs the two runs: PyTorch gives the model a new head of CLASSES outputs from the seed (nn.Linear's
initialisation) and exports it to ONNX with its batch norms kept (training=PRESERVE), which cnnc trains; and PyTorch
takes its batches in the order cnnc's seed gives (the permutation is reproduced here), so the two runs differ only
in arithmetic rounding and in the images' decoding and resizing (within 1/255 per pixel). Resize(256),
CenterCrop(224) and ImageNet's normalisation; SGD with momentum (the transfer-learning tutorial's), lr 1e-3 for the
whole network and 1e-4 head-only (LR), batch 16, EPOCHS epochs. Head-only, both run the frozen backbone as in
evaluation (running statistics), as PyTorch's model.eval() does. PyTorch runs eager on the same transformed images
held in memory, 2 threads; cnnc reads the photos per batch from disk. cnnc trains the whole network in one shard,
so that its batch norms see the whole batch as PyTorch's do (two shards of 8 images normalise each with its own
statistics, as data-parallel training without synchronised batch norm does), its kernels split over the 2 threads;
head-only, with no batch statistics, in two shards. One JSON line per mode (test accuracies and the training loss of the
first and last step per seed, the largest difference of the two sides' step losses, median training images/s of
the epochs after the first), then a table of mean accuracies and speed ratios.

usage: finetune_check.py CNNC WORK_DIR
"""
import copy
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import torch
import torchvision
import torchvision.transforms as T
from PIL import Image, ImageDraw

cnnc, work = sys.argv[1], sys.argv[2]
CLASSES, TRAIN, TEST, EPOCHS, BATCH, MOMENTUM, THREADS, PRETRAIN_EPOCHS, PRETRAIN_LR = 5, 32, 60, 3, 16, 0.9, 2, 2, 1e-3
# The learning rate per mode: the tutorial's 1e-3 for the whole network; head-only, 1e-4, since this backbone's
# features (norm about 200, far above an ImageNet backbone's) make 1e-3 diverge on both sides (training loss 20-40
# after 3 epochs, an accuracy that is mostly seed noise).
LR = {True: 1e-4, False: 1e-3}
# One run of 30 steps moves test accuracy by 10 points or more from seed to seed (measured with PyTorch alone:
# 68-90% whole network with Adam, 72-82% with SGD), so each side runs with each seed and the means are compared.
SEEDS = (1, 2, 3, 4, 5)
torch.set_num_threads(THREADS)


def photos(root):
    """The photo folder: train/CLASS and test/CLASS, JPEGs of several sizes."""
    rng = np.random.default_rng(3)
    hues = [(200, 40, 40), (40, 170, 60), (50, 60, 200), (220, 200, 40), (160, 60, 190)]
    for split, count in [("train", TRAIN), ("test", TEST)]:
        for k in range(CLASSES):
            os.makedirs(f"{root}/{split}/c{k}", exist_ok=True)
            for i in range(count):
                w, h = (int(v) for v in rng.integers(160, 321, 2))
                background = rng.normal(128, 40, (h, w, 3)).clip(0, 255).astype(np.uint8)
                picture = Image.fromarray(background)
                draw = ImageDraw.Draw(picture)
                size = int(rng.integers(min(w, h) // 4, min(w, h) // 2))
                x, y = int(rng.integers(0, w - size)), int(rng.integers(0, h - size))
                colour = tuple(int(np.clip(c + rng.integers(-30, 31), 0, 255)) for c in hues[k])
                (draw.ellipse if k % 2 else draw.rectangle)([x, y, x + size, y + size], fill=colour)
                picture.save(f"{root}/{split}/c{k}/{i:03d}.jpg", quality=90)


def pretrained(data):
    """ResNet-18 from seeded random weights, trained for PRETRAIN_EPOCHS epochs to tell the photos' shapes apart
    (rectangle or ellipse: class k % 2), then in eval mode: the state both sides fine-tune from."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=2)
    x, y = tensors(data, "train")
    y = y % 2
    optimizer = torch.optim.Adam(model.parameters(), lr=PRETRAIN_LR)
    generator = torch.Generator().manual_seed(2)
    model.train()
    for _ in range(PRETRAIN_EPOCHS):
        order = torch.randperm(len(x), generator=generator)
        for s in range(len(x) // BATCH):
            idx = order[s * BATCH:(s + 1) * BATCH]
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
    return model.eval()


def exported(model, path):
    # In eval mode, PRESERVE without constant folding keeps the batch norms as nodes (with the running statistics).
    torch.onnx.export(model, (torch.zeros(1, 3, 224, 224),), path, input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}}, opset_version=17, dynamo=False,
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    return path


def cnnc_run(model, data, head_only, seed):
    shards = 2 if head_only else 1
    out = f"{work}/run-{'head' if head_only else 'whole'}"
    args = [cnnc, "train", model, "--jit", "--data", data, "--transform", "resize:256,center_crop:224",
            "--normalize", "imagenet", "--epochs", str(EPOCHS), "--batch", str(BATCH), "--optimizer", "sgd", "--lr", str(LR[head_only]),
            "--momentum", str(MOMENTUM), "--seed", str(seed), "--threads", str(THREADS), "--shards", str(shards), "--out", out,
            "--overwrite", "--no-report", "--log-every", "0"] + (["--freeze-backbone"] if head_only else [])
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip()[-600:])
    epochs = [l for l in r.stdout.splitlines() if l.startswith("epoch ")]
    accuracy = float(re.search(r"test acc ([0-9.]+)%", epochs[-1]).group(1))
    speeds = [float(re.search(r"([0-9.]+) img/s", l).group(1)) for l in epochs[1:]]
    with open(f"{out}/history.json") as f:
        losses = [loss for epoch in json.load(f) for loss in epoch["stepLosses"]]
    return accuracy, float(np.median(speeds)), losses


def cnnc_order(seed, epoch, count):
    """cnnc's order of the training examples in an epoch: a Fisher-Yates permutation drawn from splitmix64 seeded
    with the seed and a stream of the epoch (Runtime/Random.swift, Trainer.epochOrder)."""
    mask = (1 << 64) - 1
    state = (seed ^ ((0x5eed0000 + epoch) * 0xd1342543de82ef95)) & mask
    order = list(range(count))
    for i in range(count - 1, 0, -1):
        state = (state + 0x9e3779b97f4a7c15) & mask
        z = ((state ^ (state >> 30)) * 0xbf58476d1ce4e5b9) & mask
        z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & mask
        j = (z ^ (z >> 31)) % (i + 1)
        order[i], order[j] = order[j], order[i]
    return torch.tensor(order)


def with_head(start, seed):
    """The pretrained model with a new head of CLASSES outputs, initialised from the seed as nn.Linear does."""
    model = torchvision.models.resnet18(weights=None, num_classes=2)
    model.load_state_dict(start)
    torch.manual_seed(seed)
    model.fc = torch.nn.Linear(512, CLASSES)
    return model.eval()


def tensors(data, split):
    transform = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    folder = torchvision.datasets.ImageFolder(f"{data}/{split}", transform=transform)
    images = torch.stack([folder[i][0] for i in range(len(folder))])
    return images, torch.tensor(folder.targets)


def pytorch_run(data, head_only, model, seed):
    if head_only:
        for name, p in model.named_parameters():
            p.requires_grad = name.startswith("fc.")
    # The transfer-learning tutorial's optimiser.
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=LR[head_only], momentum=MOMENTUM)
    x, y = tensors(data, "train")
    tx, ty = tensors(data, "test")
    speeds, losses = [], []
    for epoch in range(EPOCHS):
        model.train()
        if head_only:
            model.eval()  # the frozen backbone's batch norms in evaluation mode, as fine-tuning recipes set them
        order = cnnc_order(seed, epoch, len(x))
        steps = len(x) // BATCH
        begin = time.perf_counter()
        for s in range(steps):
            idx = order[s * BATCH:(s + 1) * BATCH]
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        if epoch > 0:
            speeds.append(steps * BATCH / (time.perf_counter() - begin))
    model.eval()
    with torch.no_grad():
        accuracy = float((model(tx).argmax(1) == ty).float().mean()) * 100
    return accuracy, float(np.median(speeds)), losses


os.makedirs(work, exist_ok=True)
data = f"{work}/photos-{TRAIN}-{TEST}"
if not os.path.exists(f"{data}/test"):
    photos(data)
backbone = pretrained(data)
start = copy.deepcopy(backbone.state_dict())
exported(backbone, f"{work}/resnet18_pretrained.onnx")
models = {seed: with_head(start, seed) for seed in SEEDS}
paths = {seed: exported(models[seed], f"{work}/resnet18_head{seed}.onnx") for seed in SEEDS}
rows = []
for head_only in [True, False]:
    mode = "head-only" if head_only else "whole network"
    ours = [cnnc_run(paths[seed], data, head_only, seed) for seed in SEEDS]
    theirs = [pytorch_run(data, head_only, copy.deepcopy(models[seed]), seed) for seed in SEEDS]
    row = {"mode": mode, "seeds": list(SEEDS), "cnnc_test_accuracy": [a for a, _, _ in ours], "pytorch_test_accuracy": [a for a, _, _ in theirs],
           "cnnc_first_last_loss": [[l[0], l[-1]] for _, _, l in ours], "pytorch_first_last_loss": [[l[0], l[-1]] for _, _, l in theirs],
           "largest_step_loss_difference": max(float(np.max(np.abs(np.subtract(a, b)))) for (_, _, a), (_, _, b) in zip(ours, theirs)),
           "cnnc_train_images_per_s": float(np.median([v for _, v, _ in ours])), "pytorch_train_images_per_s": float(np.median([v for _, v, _ in theirs]))}
    print(json.dumps(row), flush=True)
    rows.append(row)
print(f"\n{CLASSES} classes, {TRAIN} training and {TEST} test photos each, a backbone pretrained {PRETRAIN_EPOCHS} epochs on their shapes, "
      f"SGD lr {LR[True]} head-only and {LR[False]} whole, momentum {MOMENTUM}, {EPOCHS} epochs, batch {BATCH}, {THREADS} threads, seeds {', '.join(map(str, SEEDS))} "
      "(accuracy: mean, and the range over the seeds; each seed's runs paired: same head, same batches; speed: median)")
print("| run | cnnc accuracy | PyTorch accuracy | difference of means | cnnc img/s | PyTorch img/s | speed ratio |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    ours, theirs = r["cnnc_test_accuracy"], r["pytorch_test_accuracy"]
    print(f"| {r['mode']} | {np.mean(ours):.2f}% ({min(ours):.1f}-{max(ours):.1f}) | {np.mean(theirs):.2f}% ({min(theirs):.1f}-{max(theirs):.1f}) | "
          f"{np.mean(ours) - np.mean(theirs):+.2f} | {r['cnnc_train_images_per_s']:.1f} | "
          f"{r['pytorch_train_images_per_s']:.1f} | {r['cnnc_train_images_per_s'] / r['pytorch_train_images_per_s']:.2f}x |")
