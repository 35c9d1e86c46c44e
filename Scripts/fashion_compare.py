"""Graphs/bncnn.graph written with PyTorch, trained on Fashion-MNIST under the protocol `cnnc train
Graphs/bncnn.graph --jit --normalize data` follows: inputs (x/255 - mean)/std with the training set's mean
and std, batch 64 with drop_last, a fresh permutation per epoch, Adam lr 1e-3 (0.9, 0.999, eps 1e-8),
PyTorch's default initialisation; with --augment flip, each training image is mirrored left-right with
probability 1/2 (cnnc's `--augment flip`), and with --lr-schedule cosine the rate follows
CosineAnnealingLR over the epochs, stepped per epoch (cnnc's `--lr-schedule cosine`). Prints one JSON line:
test accuracy after each epoch, images/s over the epochs after the first, and the count of correct test
images; with WEIGHTS, also saves the trained state_dict there as safetensors (running statistics and
num_batches_tracked included, the normalisation in cnnc's metadata keys) for `cnnc eval` to load.

usage: fashion_compare.py DATA_DIR EPOCHS [WEIGHTS.safetensors] [--augment none|flip] [--lr-schedule none|cosine]
"""
import argparse
import gzip
import json
import sys
import time

import numpy as np
import torch
from torch import nn

torch.set_num_threads(2)
torch.manual_seed(1)


class BNCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.fc1 = nn.Linear(3136, 128, bias=False)
        self.bn3 = nn.BatchNorm1d(128, momentum=0.05)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        x = torch.max_pool2d(torch.relu(self.bn2(self.conv2(x))), 2)
        return self.fc2(torch.relu(self.bn3(self.fc1(x.flatten(1)))))


def idx(path):
    with gzip.open(path) as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


cli = argparse.ArgumentParser()
cli.add_argument("data_dir")
cli.add_argument("epochs", type=int)
cli.add_argument("weights", nargs="?")
cli.add_argument("--augment", choices=["none", "flip"], default="none")
cli.add_argument("--lr-schedule", choices=["none", "cosine"], default="none")
args = cli.parse_args()
data_dir, epochs = args.data_dir, args.epochs
xtr = idx(f"{data_dir}/train-images-idx3-ubyte.gz").astype(np.float32) / 255
ytr = idx(f"{data_dir}/train-labels-idx1-ubyte.gz").astype(np.int64)
xte = idx(f"{data_dir}/t10k-images-idx3-ubyte.gz").astype(np.float32) / 255
yte = idx(f"{data_dir}/t10k-labels-idx1-ubyte.gz").astype(np.int64)
mean, std = float(xtr.mean()), float(xtr.std())
xtr = torch.from_numpy((xtr - mean) / std).unsqueeze(1)
xte = torch.from_numpy((xte - mean) / std).unsqueeze(1)
ytr, yte = torch.from_numpy(ytr), torch.from_numpy(yte)
model = BNCNN()
opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs) if args.lr_schedule == "cosine" else None
flips = torch.Generator().manual_seed(1)
batch, steps = 64, len(xtr) // 64
accuracies, seconds = [], []
for epoch in range(epochs):
    order = torch.from_numpy(np.random.default_rng(1 + epoch).permutation(len(xtr)))
    model.train()
    t = time.perf_counter()
    for s in range(steps):
        i = order[s * batch:(s + 1) * batch]
        x = xtr[i]
        if args.augment == "flip":
            mirrored = torch.rand(len(i), generator=flips) < 0.5
            x = torch.where(mirrored[:, None, None, None], x.flip(3), x)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), ytr[i]).backward()
        opt.step()
    if schedule:
        schedule.step()
    seconds.append(time.perf_counter() - t)
    model.eval()
    with torch.no_grad():
        predictions = torch.cat([model(xte[j:j + 1000]).argmax(1) for j in range(0, len(xte), 1000)])
    accuracies.append(float((predictions == yte).float().mean()))
timed = seconds[1:] or seconds
if args.weights:
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.weights,
              metadata={"cnnc.normalize.mean": repr(mean), "cnnc.normalize.std": repr(std)})
print(json.dumps({"framework": "pytorch " + torch.__version__, "normalize": [mean, std], "augment": args.augment,
                  "lr_schedule": args.lr_schedule, "test_accuracy": accuracies,
                  "correct": int((predictions == yte).sum()), "train_images_per_s": steps * batch * len(timed) / sum(timed)}))
