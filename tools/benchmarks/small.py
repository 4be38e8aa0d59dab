"""small: `kith adapt` on small collections."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time

from .common import kith_at
from .data import glyph60_folder


def small_collections(args) -> str:
    """Why adapting on 1,800 images of 30 glyph classes lost where 4,367 of 115 gained, and what the design changes
    buy: heads adapted on seen sets of different shapes, copied to the same 30 unseen classes and measured there."""
    import random

    work = tempfile.mkdtemp(prefix="kith-bench-small-")
    indexes = os.path.join(work, "indexes")
    run = kith_at(indexes)
    folder = glyph60_folder()
    classes = sorted(os.listdir(folder))
    random.Random(0).shuffle(classes)  # the same split as `default`: unseen = classes[30:60]
    sets = {"unseen": (classes[30:60], 60), "30 × 60": (classes[:30], 60), "99 × 18": (classes[:30] + classes[60:], 18)}
    for name, (names, per) in sets.items():
        for c in names:
            os.makedirs(os.path.join(work, name, c))
            for f in sorted(os.listdir(os.path.join(folder, c)))[:per]:
                shutil.copy(os.path.join(folder, c, f), os.path.join(work, name, c, f))
        tag = name.replace(" × ", "x")
        run("index", "create", tag)
        run(
            "index",
            "add",
            tag,
            os.path.join(work, name),
            "--thumbnail-size",
            "0",
            *(["--label-from-folder"] if name == "unseen" else []),
        )
    designs = [
        (
            "before: the same 4 transforms for every image, plain head, no early stopping",
            ["--no-per-image", "--no-residual", "--measure-every", "0"],
        ),
        ("per-image views", ["--no-residual", "--measure-every", "0"]),
        ("per-image views, residual head", ["--measure-every", "0"]),
        ("per-image views, residual head, early stopping (the defaults)", []),
    ]
    lines = [
        f"Measured by `tools/bench small` on {time.strftime('%Y-%m-%d')}, EfficientNet-Lite0, `kith adapt` with 20 epochs and its other "
        "defaults on a seen set (no labels), the head copied to the same 30 unseen glyph classes × 60 images (labelled; the "
        "`default` section's split) with `--head-from`, which measures it there: `logreg` on 300 episodes of 5-way 1- and 5-shot "
        "(% ± the paired 95% half-width) and recall@1 of 300 held-out views. The queue holds at most one entry per item in every row.",
        "",
        "| seen set (classes × images) | design | views recall@1 | 1-shot: backbone → adapted | 5-shot: backbone → adapted | default space |",
        "|---|---|---|---|---|---|",
    ]
    for seen, rows in (("30 × 60", designs), ("99 × 18", [designs[0], designs[-1]])):
        tag = seen.replace(" × ", "x")
        for design, flags in rows:
            run("adapt", tag, "--epochs", str(args.adapt_epochs), *flags)
            run("adapt", "unseen", "--head-from", tag)
            info = json.loads(run("index", "stats", "unseen", "--json"))["adapted"]
            m = {x["name"]: x for x in info["comparison"]["measures"]}

            def shot(k, m=m):
                return f"{100 * m[k]['backbone']:.1f} → {100 * m[k]['adapted']:.1f} ({100 * m[k]['adapted'] - 100 * m[k]['backbone']:+.1f} ± {100 * m[k]['interval']:.1f})"

            lines.append(
                f"| {seen} ({sum(len(os.listdir(os.path.join(work, seen, c))) for c in os.listdir(os.path.join(work, seen))):,} images) | {design} | "
                f"{m['views']['backbone']:.3f} → {m['views']['adapted']:.3f} | {shot('1-shot')} | {shot('5-shot')} | {info['default_space']} |"
            )
            print(f"small: {seen}, {design} done", file=sys.stderr)
    return "\n".join(lines)
