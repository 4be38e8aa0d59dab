"""whitening: whitening's shrinkage against the number of classes."""

from __future__ import annotations

import os
import tempfile
import time

from .common import cell, embed_folder, kith_eval
from .data import fashion_folder, glyph_folder

WHITENING_HEADS = [
    "logreg",
    "prototype",
    "copa",
    "prototype+whiten=1",
    "prototype+whiten",
    "prototype+whiten=30",
    "prototype+whiten=1000",
    "copa+whiten",
    "logreg+expand=10",
    "prototype+whiten+expand=10",
]


def whitening(args) -> str:
    """Whitening against the number of classes: the glyph set (231 characters) beside Fashion-MNIST (10 classes)."""
    glyphs, fashion = glyph_folder(), fashion_folder()
    tmp = tempfile.mkdtemp(prefix="kith-bench-whitening-")
    table: dict = {}
    for name, folder in [("glyphs", glyphs), ("fashion", fashion)]:
        npy, labels, _ = embed_folder(folder, os.path.join(tmp, f"{name}.npy"))
        for shot in (1, 5):
            for r in kith_eval(npy, labels, os.path.join(tmp, f"{name}-{shot}.json"), shot, WHITENING_HEADS)["results"]:
                table.setdefault(r["head"], {})[(name, shot)] = cell(r["accuracies"])
    lines = [
        f"Measured by `tools/bench whitening` on {time.strftime('%Y-%m-%d')}: whitening's shrinkage α against the number of "
        "classes, on the glyph set (231 characters, 8,796 images) and on 3,000 Fashion-MNIST test images (10 classes), "
        "EfficientNet-Lite0 embeddings from `kith embed`; statistics from every image of the data set (labels unused), "
        "600 episodes of 5-way K-shot, 15 queries, seed 0. `whiten=1000` is in effect centring on the collection's mean.",
        "",
        "| head | glyphs 1-shot | glyphs 5-shot | Fashion-MNIST 1-shot | Fashion-MNIST 5-shot |",
        "|---|---|---|---|---|",
    ]
    for head, cells in table.items():
        lines.append(
            f"| `{head}` | "
            + " | ".join(cells[k] for k in [("glyphs", 1), ("glyphs", 5), ("fashion", 1), ("fashion", 5)])
            + " |"
        )
    return "\n".join(lines)
