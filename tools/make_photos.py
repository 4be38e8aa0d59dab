#!/usr/bin/env python3
"""Write a folder of camera-sized JPEG photos for end-to-end benchmarks.

  make_photos.py OUT [--count 500] [--large-every 5] [--quality 90] [--seed 0]

Each file is a random crop (with a random flip and brightness) of one of the real photos that the
set-up copies from scikit-image into samples/photos, saved as a 640 × 480 JPEG, or, for every
--large-every-th file, as a 4000 × 3000 one (12 megapixels, as a phone writes). --link N adds N
hard-linked copies of the whole set (for a large folder at no cost in disk space).
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from PIL import Image, ImageEnhance

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--large-every", type=int, default=5)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--link", type=int, default=0, help="hard-linked copies of the set to add")
    args = parser.parse_args()
    photos_dir = os.path.join(ROOT, "samples", "photos")
    photos = [Image.open(os.path.join(photos_dir, f)).convert("RGB") for f in sorted(os.listdir(photos_dir))]
    rng = np.random.default_rng(args.seed)
    os.makedirs(args.out, exist_ok=True)
    names = []
    for i in range(args.count):
        photo = photos[i % len(photos)]
        w, h = photo.size
        scale = rng.uniform(0.6, 1.0)
        cw, ch = int(w * scale), int(min(h, w * scale * 3 / 4))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        img = photo.crop((x, y, x + cw, y + ch))
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.8, 1.2))
        size = (4000, 3000) if args.large_every and i % args.large_every == 0 else (640, 480)
        name = f"photo-{i:05d}-{size[0]}x{size[1]}.jpg"
        img.resize(size, Image.BICUBIC).save(os.path.join(args.out, name), quality=args.quality)
        names.append(name)
    for copy in range(args.link):
        for name in names:
            os.link(os.path.join(args.out, name), os.path.join(args.out, f"copy{copy}-{name}"))
    print(f"{args.out}: {len(names) * (1 + args.link)} JPEGs")


if __name__ == "__main__":
    main()
