"""views: augmented support sets (stored views)."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

from .common import cell, kith_at
from .data import fashion_folder, glyph_folder

VIEW_HEADS = [
    "logreg",
    "logreg+views",
    "prototype",
    "prototype+views",
    "copa",
    "copa+views",
    "logreg+whiten",
    "logreg+whiten+views",
    "prototype+whiten",
    "prototype+whiten+views",
]


def views(args) -> str:
    """SCL's augmented support sets: an index of the glyph set (and of Fashion-MNIST, where mirroring keeps the label)
    with 4 stored views per labelled image, every head with and without them on the same episodes."""
    glyphs, fashion = glyph_folder(), fashion_folder()
    indexes = tempfile.mkdtemp(prefix="kith-bench-views-")
    rows: dict = {}
    timings = []
    for name, folder, flip in [("glyphs", glyphs, False), ("fashion", fashion, True)]:
        run = kith_at(indexes)
        run("index", "create", name)
        run("index", "add", name, folder, "--label-from-folder", "--thumbnail-size", "0")
        start = time.perf_counter()
        out = run("index", "views", name, "--count", "4", *(["--flip"] if flip else []))
        timings.append(f"{name}: {time.perf_counter() - start:.0f} s ({out.strip().splitlines()[-1]})")
        for shot in (1, 5):
            path = os.path.join(indexes, f"{name}-{shot}.json")
            cmd = ["eval", "fewshot", name, "--way", "5", "--shot", str(shot), "--episodes", "600", "--json", path]
            for head in VIEW_HEADS:
                cmd += ["--head", head]
            run(*cmd)
            for r in json.load(open(path))["results"]:
                rows.setdefault(r["head"], {})[(name, shot)] = cell(r["accuracies"])
        print(f"views {name} done", file=sys.stderr)
    lines = [
        f"Measured by `tools/bench views` on {time.strftime('%Y-%m-%d')}: indexes of the glyph set (8,796 images, "
        "labelled by character, no mirroring) and of 3,000 Fashion-MNIST test images (labelled by class; mirrored "
        "views allowed, `--flip`), EfficientNet-Lite0; `kith index views NAME --count 4` stores 4 views per labelled "
        "image (crop 0.75–1 of the side, turn ±10°, seed 0); then `kith eval fewshot NAME` scores every head with and "
        "without `+views` on the same 600 episodes (5-way, 15 queries, seed 0) of the index's labelled items. "
        "Accuracy in % ± 95% CI. Time to make the views (one forward pass per view, 2 threads): "
        + "; ".join(timings)
        + ".",
        "",
        "| head | glyphs 1-shot | glyphs 5-shot | Fashion-MNIST 1-shot | Fashion-MNIST 5-shot |",
        "|---|---|---|---|---|",
    ]
    for head, cells in rows.items():
        lines.append(
            f"| `{head}` | "
            + " | ".join(cells.get(k, "") for k in [("glyphs", 1), ("glyphs", 5), ("fashion", 1), ("fashion", 5)])
            + " |"
        )
    return "\n".join(lines)
