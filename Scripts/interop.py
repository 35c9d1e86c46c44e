"""Checkpoint interop between cnnc and PyTorch's state_dict format, checked with safetensors + numpy only.

1. Reads a checkpoint cnnc wrote and checks every tensor name, dtype and shape against the state_dict
   that PyTorch's SimpleCNN (nn.Conv2d / nn.Linear named conv1, conv2, fc1, fc2) has.
2. Writes a checkpoint the way torch's safetensors.torch.save_file(model.state_dict()) does (same names,
   layouts and F32 dtype, PyTorch's default initialisation), for cnnc to load with `cnnc eval`.
"""
import sys

import numpy as np
from safetensors.numpy import load_file, save_file

# PyTorch's SimpleCNN state_dict: name -> shape.
STATE_DICT = {
    "conv1.weight": (32, 1, 3, 3), "conv1.bias": (32,),
    "conv2.weight": (64, 32, 3, 3), "conv2.bias": (64,),
    "fc1.weight": (128, 3136), "fc1.bias": (128,),
    "fc2.weight": (10, 128), "fc2.bias": (10,),
}


def check(path):
    tensors = load_file(path)
    assert set(tensors) == set(STATE_DICT), f"names differ: {sorted(set(tensors) ^ set(STATE_DICT))}"
    for name, shape in STATE_DICT.items():
        t = tensors[name]
        assert t.dtype == np.float32, f"{name}: dtype {t.dtype}"
        assert t.shape == shape, f"{name}: shape {t.shape}, PyTorch has {shape}"
        assert np.isfinite(t).all(), f"{name}: non-finite values"
    print(f"{path}: {len(tensors)} tensors match PyTorch's SimpleCNN state_dict")


def write(path):
    rng = np.random.default_rng(0)
    out = {}
    for name, shape in STATE_DICT.items():
        fan_in = int(np.prod(STATE_DICT[name.rsplit(".", 1)[0] + ".weight"][1:]))
        bound = 1 / np.sqrt(fan_in)
        out[name] = rng.uniform(-bound, bound, size=shape).astype(np.float32)
    save_file(out, path, metadata={"format": "pt"})
    print(f"{path}: wrote a PyTorch-style state_dict")


if __name__ == "__main__":
    {"check": check, "write": write}[sys.argv[1]](sys.argv[2])
