"""The data sets of the sections, built once under bench-out/ (glyphs, Fashion-MNIST), and their splits."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from .common import ROOT


def glyph_folder() -> str:
    """The glyph set of tools/make_glyphs.py (up to 40 fonts), built once under bench-out/."""
    folder = os.path.join(ROOT, "bench-out", "glyphs")
    if not os.path.isdir(folder):
        subprocess.run(
            [sys.executable, os.path.join(ROOT, "tools", "make_glyphs.py"), folder, "--max-fonts", "40"], check=True
        )
    return folder


def fashion_folder() -> str:
    """3,000 Fashion-MNIST test images, one folder per class, built once under bench-out/."""
    folder = os.path.join(ROOT, "bench-out", "fashion-t10k")
    if not os.path.isdir(folder):
        subprocess.run(
            [
                sys.executable,
                os.path.join(ROOT, "tools", "make_fashion_mnist.py"),
                folder,
                "--split",
                "t10k",
                "--count",
                "3000",
            ],
            check=True,
            capture_output=True,
        )
    return folder


def fashion_gallery() -> str:
    """2,000 Fashion-MNIST test images and a near-duplicate query for each (tools/make_fashion_gallery.py), built once."""
    data = os.path.join(ROOT, "bench-out", "fashion-gallery")
    if not os.path.isdir(data):
        subprocess.run(
            [sys.executable, os.path.join(ROOT, "tools", "make_fashion_gallery.py"), data, "--count", "2000"],
            check=True,
        )
    return data


def glyph60_folder() -> str:
    """Glyph classes drawn by 60 fonts each (tools/make_glyphs.py --min-fonts 60 --max-fonts 60), built once."""
    folder = os.path.join(ROOT, "bench-out", "glyphs60")
    if not os.path.isdir(folder):
        subprocess.run(
            [
                sys.executable,
                os.path.join(ROOT, "tools", "make_glyphs.py"),
                folder,
                "--min-fonts",
                "60",
                "--max-fonts",
                "60",
            ],
            check=True,
        )
    return folder


def split_classes(folder: str, count: int, destination: str) -> tuple[list[str], dict]:
    """Up to `count` classes of `folder` at random (seed 0), halved into seen and unseen and copied to
    destination/seen and destination/unseen; returns the classes and the halves."""
    import random

    classes = sorted(os.listdir(folder))
    random.Random(0).shuffle(classes)
    classes = classes[:count]
    halves = {"seen": classes[: len(classes) // 2], "unseen": classes[len(classes) // 2 :]}
    for half, names in halves.items():
        for c in names:
            shutil.copytree(os.path.join(folder, c), os.path.join(destination, half, c))
    return classes, halves


def fashion_indexes(args, run) -> str:
    """Indexes `train` (args.adapt_items Fashion-MNIST training images, built once under bench-out/) and `gallery`
    (the near-duplicate gallery's 2,000 test images), without labels; returns the gallery's folder."""
    gallery = fashion_gallery()
    train = os.path.join(ROOT, "bench-out", f"fashion-train{args.adapt_items}")
    if not os.path.isdir(train):
        subprocess.run(
            [
                sys.executable,
                os.path.join(ROOT, "tools", "make_fashion_mnist.py"),
                train,
                "--split",
                "train",
                "--count",
                str(args.adapt_items),
            ],
            check=True,
            capture_output=True,
        )
    run("index", "create", "train")
    run("index", "add", "train", train, "--thumbnail-size", "0")
    run("index", "create", "gallery")
    run("index", "add", "gallery", os.path.join(gallery, "gallery"), "--thumbnail-size", "0")
    return gallery
