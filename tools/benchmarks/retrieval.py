"""retrieval: near-duplicate recall on Fashion-MNIST beside raw pixels."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time

import numpy as np

from .common import KITH
from .data import fashion_gallery


def retrieval(args) -> str:
    from PIL import Image

    data = fashion_gallery()
    tmp = tempfile.mkdtemp(prefix="kith-bench-retrieval-")
    env = dict(os.environ, KITH_INDEXES=tmp)
    subprocess.run([KITH, "index", "create", "gallery"], check=True, capture_output=True, env=env)
    subprocess.run(
        [KITH, "index", "add", "gallery", os.path.join(data, "gallery"), "--label-from-folder"],
        check=True,
        capture_output=True,
        env=env,
    )
    out = subprocess.run(
        [KITH, "eval", "retrieval", "gallery", "--queries", os.path.join(data, "queries.tsv"), "--json"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    kith = json.loads(out)
    pairs = [line.split("\t") for line in open(os.path.join(data, "queries.tsv")).read().splitlines()]

    def pixels(path):
        v = np.asarray(Image.open(path).convert("L").resize((28, 28), Image.BILINEAR), np.float32).ravel()
        v = v - v.mean()
        return v / (np.linalg.norm(v) + 1e-9)

    gallery = np.stack([pixels(t) for _, t in pairs])
    queries = np.stack([pixels(os.path.join(data, q)) for q, _ in pairs])
    ranks = np.argsort(-(queries @ gallery.T), axis=1)[:, :10]
    raw = {k: float(np.mean([i in ranks[i, :k] for i in range(len(pairs))])) for k in (1, 5, 10)}
    lines = [
        f"Measured by `tools/bench retrieval` on {time.strftime('%Y-%m-%d')}: {len(pairs):,} Fashion-MNIST test images as "
        "the gallery (`kith index add`), one near-duplicate query per image (rotation, crop, brightness, blur, JPEG "
        "quality 20–40; tools/make_fashion_gallery.py); `kith eval retrieval`. Raw pixels: 28 × 28 grey values, mean-"
        "centred, cosine.",
        "",
        "| method | recall@1 | recall@5 | recall@10 |",
        "|---|---|---|---|",
        f"| Kith, EfficientNet-Lite0 | {kith['recall@1']:.4f} | {kith['recall@5']:.4f} | {kith['recall@10']:.4f} |",
        f"| raw pixels | {raw[1]:.4f} | {raw[5]:.4f} | {raw[10]:.4f} |",
    ]
    return "\n".join(lines)
