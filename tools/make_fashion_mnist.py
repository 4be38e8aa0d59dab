#!/usr/bin/env python3
"""Write Fashion-MNIST images (Debian's dataset-fashion-mnist) as JPEG files, one folder per class.

  make_fashion_mnist.py OUT [--split t10k|train] [--count N] [--size 28] [--quality 90]

Images are grey 28 × 28; --size upscales them (bicubic) for a heavier decode.
"""

from __future__ import annotations

import argparse
import gzip
import os

import numpy as np
from PIL import Image

DATA = "/usr/share/datasets/fashion-mnist"
CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]


def load(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images [n, 28, 28] uint8, labels [n]) from the IDX files: 16- and 8-byte headers."""
    with gzip.open(os.path.join(DATA, f"{split}-images-idx3-ubyte.gz")) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(os.path.join(DATA, f"{split}-labels-idx1-ubyte.gz")) as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return images, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--split", default="t10k", choices=["t10k", "train"])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--quality", type=int, default=90)
    args = parser.parse_args()
    if not os.path.isdir(DATA):
        raise SystemExit(f"{DATA} is missing: apt-get install dataset-fashion-mnist (tools/setup does)")
    images, labels = load(args.split)
    for i in range(min(args.count, len(images))):
        folder = os.path.join(args.out, CLASSES[labels[i]])
        os.makedirs(folder, exist_ok=True)
        img = Image.fromarray(images[i], "L")
        if args.size != 28:
            img = img.resize((args.size, args.size), Image.BICUBIC)
        img.save(os.path.join(folder, f"{args.split}-{i:05d}.jpg"), quality=args.quality)
    print(f"wrote {min(args.count, len(images))} images to {args.out}")


if __name__ == "__main__":
    main()
