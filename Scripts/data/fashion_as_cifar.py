#!/usr/bin/env python3
"""Writes Fashion-MNIST as a 32x32 colour data set in the CIFAR-10 binary format, for the 32x32 networks
(Graphs/resnet8.graph) where no colour data set can be downloaded: each 28x28 image padded by 2 pixels of 0 on
every side and its grey value copied into the three channels. Standard library only.

usage: fashion_as_cifar.py [SOURCE (default /usr/share/datasets/fashion-mnist)] OUT_DIR
writes OUT_DIR/data_batch_1.bin ... data_batch_5.bin (12,000 images each) and OUT_DIR/test_batch.bin.
"""
import gzip
import os
import struct
import sys


def idx(path):
    """The array of an IDX file (gzipped or not): its dims and bytes."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return shape, data[4 + 4 * dims:]


def find(source, stem):
    for name in (stem + ".gz", stem):
        if os.path.exists(os.path.join(source, name)):
            return os.path.join(source, name)
    sys.exit(f"{source}: no {stem}[.gz]")


def records(source, split):
    """CIFAR records (label byte, then the red, green and blue planes of 32x32) of one split."""
    (count, rows, cols), pixels = idx(find(source, f"{split}-images-idx3-ubyte"))
    _, labels = idx(find(source, f"{split}-labels-idx1-ubyte"))
    assert (rows, cols) == (28, 28), (rows, cols)
    for i in range(count):
        image = pixels[i * 784:(i + 1) * 784]
        plane = bytearray(32 * 32)
        for y in range(28):
            plane[(y + 2) * 32 + 2:(y + 2) * 32 + 30] = image[y * 28:(y + 1) * 28]
        yield bytes([labels[i]]) + bytes(plane) * 3


def main():
    args = sys.argv[1:]
    if len(args) not in (1, 2):
        sys.exit(__doc__)
    source, out = (args if len(args) == 2 else ["/usr/share/datasets/fashion-mnist"] + args)
    os.makedirs(out, exist_ok=True)
    train = list(records(source, "train"))
    per = len(train) // 5
    for b in range(5):
        with open(os.path.join(out, f"data_batch_{b + 1}.bin"), "wb") as f:
            f.write(b"".join(train[b * per:(b + 1) * per]))
    with open(os.path.join(out, "test_batch.bin"), "wb") as f:
        f.write(b"".join(records(source, "t10k")))
    print(f"wrote {len(train)} training and the test images to {out} (CIFAR-10 binary, 32x32x3)")


if __name__ == "__main__":
    main()
