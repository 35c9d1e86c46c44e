"""SimpleCNN in PyTorch (eager) under the shared protocol; with PRECISION=bf16 under CPU autocast to bfloat16."""
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import onednn_isa, run

torch.set_num_threads(2)
torch.manual_seed(1)
BF16 = os.environ.get("PRECISION") == "bf16"


class SimpleCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(3136, 128)
        self.dropout = nn.Dropout(0.5)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = self.dropout(F.relu(self.fc1(x.flatten(1))))
        return self.fc2(x)


model = SimpleCNN()
opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)


def step(x, y):
    model.train()
    opt.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=BF16):
        loss = F.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
    loss.backward()
    opt.step()


@torch.no_grad()
def infer(x):
    model.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=BF16):
        return model(torch.from_numpy(x)).float().numpy()


# What actually ran: ATen's vector kernels and oneDNN's convolutions each report their ISA.
ran = {"aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
       "onednn_isa": onednn_isa("import torch; torch.nn.functional.conv2d(torch.zeros(1, 4, 8, 8), torch.zeros(8, 4, 3, 3))")}
run("pytorch " + torch.__version__ + (" autocast bf16" if BF16 else ""), step, infer, epochs=int(sys.argv[1]) if len(sys.argv) > 1 else 2, extra=ran)
