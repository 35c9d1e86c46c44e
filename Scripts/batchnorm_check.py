"""Loads a cnnc-trained Graphs/bncnn.graph checkpoint into the same network written with PyTorch's
nn.BatchNorm2d / nn.BatchNorm1d (strict state_dict load, buffers and num_batches_tracked included), and
checks that PyTorch in eval mode predicts the MNIST test set exactly as `cnnc eval` reported.

usage: batchnorm_check.py WEIGHTS.safetensors DATA_DIR EXPECTED_CORRECT
"""
import gzip
import sys

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn


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


weights, data_dir, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
model = BNCNN()
model.load_state_dict(load_file(weights), strict=True)
model.eval()
images = (idx(f"{data_dir}/t10k-images-idx3-ubyte.gz").astype(np.float32) / 255 - 0.1307) / 0.3081
labels = idx(f"{data_dir}/t10k-labels-idx1-ubyte.gz")
with torch.no_grad():
    logits = model(torch.from_numpy(images).unsqueeze(1))
correct = int((logits.argmax(1).numpy() == labels).sum())
tracked = int(model.bn1.num_batches_tracked)
print(f"PyTorch eval: {correct} of {len(labels)} correct (cnnc: {expected}); bn1.num_batches_tracked {tracked}")
sys.exit(0 if correct == expected else 1)
