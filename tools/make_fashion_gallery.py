#!/usr/bin/env python3
"""A retrieval benchmark from Fashion-MNIST: a gallery and near-duplicate queries made from it.

Gallery: the first --count test images as JPEGs in OUT/gallery/<class>/. Queries: one per gallery
image, made by a random mix of rotation (±15°), crop (80–95%), brightness (±30%), blur and JPEG
re-encoding at quality 20–40, in OUT/queries/, listed with their gallery source in OUT/queries.tsv
(query path relative to OUT, then the gallery file's absolute path).

  make_fashion_gallery.py OUT [--count 2000] [--seed 0]
"""

from __future__ import annotations

import argparse
import io
import os
import random
import sys

from PIL import Image, ImageEnhance, ImageFilter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fashion_mnist import CLASSES, load  # noqa: E402


def distort(img: Image.Image, rng: random.Random) -> Image.Image:
    img = img.resize((112, 112), Image.BICUBIC)
    if rng.random() < 0.7:
        img = img.rotate(rng.uniform(-15, 15), resample=Image.BILINEAR, fillcolor=0)
    if rng.random() < 0.7:
        f = rng.uniform(0.8, 0.95)
        w = int(112 * f)
        x, y = rng.randint(0, 112 - w), rng.randint(0, 112 - w)
        img = img.crop((x, y, x + w, y + w)).resize((112, 112), Image.BICUBIC)
    if rng.random() < 0.7:
        img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.7, 1.3))
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=rng.randint(20, 40))
    return Image.open(io.BytesIO(buf.getvalue()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    images, labels = load("t10k")
    rng = random.Random(args.seed)
    os.makedirs(os.path.join(args.out, "queries"), exist_ok=True)
    lines = []
    for i in range(min(args.count, len(images))):
        folder = os.path.join(args.out, "gallery", CLASSES[labels[i]])
        os.makedirs(folder, exist_ok=True)
        source = os.path.abspath(os.path.join(folder, f"{i:05d}.jpg"))
        img = Image.fromarray(images[i], "L")
        img.save(source, quality=95)
        query = os.path.join("queries", f"{i:05d}.jpg")
        distort(img, rng).save(os.path.join(args.out, query), quality=95)
        lines.append(f"{query}\t{source}\n")
    with open(os.path.join(args.out, "queries.tsv"), "w") as f:
        f.writelines(lines)
    print(f"wrote {len(lines)} gallery images and queries to {args.out}")


if __name__ == "__main__":
    main()
