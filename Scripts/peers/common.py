"""The benchmark protocol shared by the peer scripts (the same one `cnnc bench` runs).

MNIST from the repository's data/mnist, normalised (x/255 - 0.1307)/0.3081, batch 64, drop_last (937 steps),
a fresh permutation per epoch from numpy's default_rng(1 + epoch), Adam lr 1e-3 (0.9, 0.999, eps 1e-8).
Training images/s over whole epochs after the first; inference at batch 1000 (median of 3 passes) and
batch 1 (median latency of 5 chunks); first-step time; peak RSS; test accuracy.
"""
import gzip
import json
import os
import resource
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BATCH = 64


def load(split):
    d = os.path.join(ROOT, "data", "mnist")
    with gzip.open(os.path.join(d, f"{split}-images-idx3-ubyte.gz")) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open(os.path.join(d, f"{split}-labels-idx1-ubyte.gz")) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    return ((x.astype(np.float32) / 255 - 0.1307) / 0.3081), y.astype(np.int64)


def onednn_isa(probe):
    """The ISA oneDNN dispatches to under this environment: runs `probe` (Python source doing one
    convolution) in a child with ONEDNN_VERBOSE=1 and returns oneDNN's own "isa:" line, or None."""
    import subprocess
    import sys
    env = dict(os.environ, ONEDNN_VERBOSE="1", TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300).stdout
    for line in out.splitlines():
        if ",info,cpu,isa:" in line:
            return line.split("isa:", 1)[1].strip()
    return None


def isa_settings():
    """The ISA caps this run was started with (make bench-compare ISA=...)."""
    keys = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "TF_ENABLE_ONEDNN_OPTS")
    return {k: os.environ[k] for k in keys if k in os.environ}


def run(name, train_step, predict, epochs, singles=2000, extra=None):
    """train_step(x, y) trains on one batch; predict(x) returns logits as numpy; `extra` joins the JSON."""
    xtr, ytr = load("train")
    xte, yte = load("t10k")
    steps = len(xtr) // BATCH
    first_step = None
    epoch_seconds = []
    for epoch in range(epochs):
        order = np.random.default_rng(1 + epoch).permutation(len(xtr))
        t = time.perf_counter()
        for s in range(steps):
            idx = order[s * BATCH:(s + 1) * BATCH]
            t0 = time.perf_counter()
            train_step(xtr[idx], ytr[idx])
            if first_step is None:
                first_step = time.perf_counter() - t0
        epoch_seconds.append(time.perf_counter() - t)
    timed = epoch_seconds[1:] or epoch_seconds
    train_rate = steps * BATCH * len(timed) / sum(timed)
    predict(xte[:1000])  # warm-up
    passes = []
    for _ in range(3):
        t = time.perf_counter()
        logits = np.concatenate([predict(xte[i:i + 1000]) for i in range(0, len(xte), 1000)])
        passes.append(time.perf_counter() - t)
    accuracy = float((logits.argmax(1) == yte).mean())
    predict(xte[:1])
    chunks = []
    per = singles // 5
    for c in range(5):
        t = time.perf_counter()
        for i in range(per):
            predict(xte[c * per + i:c * per + i + 1])
        chunks.append((time.perf_counter() - t) / per)
    print(json.dumps({
        "framework": name, "train_images_per_s": round(train_rate, 1), "first_step_s": round(first_step, 4),
        "infer_b1000_images_per_s": round(len(xte) / sorted(passes)[1], 1),
        "infer_b1_us_per_image": round(sorted(chunks)[2] * 1e6, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "test_accuracy": round(accuracy, 4), "epochs": epochs, "isa_settings": isa_settings(), **(extra or {}),
    }))
