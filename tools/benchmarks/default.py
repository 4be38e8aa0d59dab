"""default: the space answers use by default after `kith adapt`, measured."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

import numpy as np

from .common import cell, kith_at
from .data import fashion_indexes, glyph60_folder, glyph_folder, split_classes


def default_space(args) -> str:
    """After `kith adapt` with its defaults and `--head-from`: the space Kith answers in by default (the head
    measured against the backbone on the target index's data) beside the backbone's and the adapted one, on classes
    the head never saw; and near-duplicate recall on Fashion-MNIST in the default space."""
    work = tempfile.mkdtemp(prefix="kith-bench-default-")
    indexes = os.path.join(work, "indexes")
    run = kith_at(indexes)

    def split(folder: str, count: int, name: str) -> tuple[str, str, int, int]:
        _, halves = split_classes(folder, count, os.path.join(work, name))
        images = {h: sum(len(os.listdir(os.path.join(work, name, h, c))) for c in halves[h]) for h in halves}
        return os.path.join(work, name, "seen"), os.path.join(work, name, "unseen"), len(halves["seen"]), images["seen"]

    def accuracies(index: str, shot: int, space: str | None) -> dict:
        path = os.path.join(work, f"{index}-{shot}-{space}.json")
        cmd = [
            "eval",
            "fewshot",
            index,
            "--way",
            "5",
            "--shot",
            str(shot),
            "--episodes",
            "600",
            "--json",
            path,
            "--head",
            "logreg",
            "--head",
            "prototype",
        ]
        out = run(*cmd, *(["--space", space] if space else []))
        answered = out.splitlines()[0].split(" space")[0]
        return {"space": answered, **{r["head"]: r["accuracies"] for r in json.load(open(path))["results"]}}

    settings = [
        ("30 / 30 glyph classes, 60 images each", glyph60_folder(), 60),
        ("115 / 116 glyph classes (all 231, up to 40 images)", glyph_folder(), 1000),
    ]
    lines = [
        f"Measured by `tools/bench default` on {time.strftime('%Y-%m-%d')}, EfficientNet-Lite0. Glyph classes split at random "
        "(seed 0) into seen (added without labels; `kith adapt seen` with its defaults) and unseen (labelled); `kith adapt unseen "
        "--head-from seen` copies the head and measures it on the unseen index (views recall@1, `logreg` at 1 and 5 shots on "
        "its labels; docs/adapt.md), which decides the default space. `kith eval fewshot unseen` then scores the same 600 "
        "episodes (5-way, 15 queries, seed 0) in the backbone's space, the adapted one and the default (no `--space`). "
        "Accuracy in % ± 95% CI.",
        "",
        "| setting | measured on unseen: backbone → adapted | default | shots | head | backbone | adapted | default | default − backbone |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, folder, count in settings:
        tag = f"s{count}"
        seen, unseen, classes, images = split(folder, count, tag)
        run("index", "create", f"{tag}-seen")
        run("index", "add", f"{tag}-seen", seen, "--thumbnail-size", "0")
        run("index", "create", f"{tag}-unseen")
        run("index", "add", f"{tag}-unseen", unseen, "--label-from-folder", "--thumbnail-size", "0")
        adapted_line = run("adapt", f"{tag}-seen", "--epochs", str(args.adapt_epochs)).splitlines()[-1]
        run("adapt", f"{tag}-unseen", "--head-from", f"{tag}-seen")
        info = json.loads(run("index", "stats", f"{tag}-unseen", "--json"))["adapted"]
        figures = ", ".join(
            f"{m['name']} {m['backbone']:.3f} → {m['adapted']:.3f}"
            if m["name"] == "views"
            else f"{m['name']} {100 * m['backbone']:.1f} → {100 * m['adapted']:.1f}"
            for m in info["comparison"]["measures"]
        )
        for shot in (1, 5):
            spaces = {space: accuracies(f"{tag}-unseen", shot, space) for space in ("backbone", "adapted", None)}
            for head in ("logreg", "prototype"):
                gap = 100 * (np.mean(spaces[None][head]) - np.mean(spaces["backbone"][head]))
                lines.append(
                    f"| {name}: {classes} seen ({images:,} images) | {figures} | {spaces[None]['space']} | {shot} | `{head}` | "
                    f"{cell(spaces['backbone'][head])} | {cell(spaces['adapted'][head])} | {cell(spaces[None][head])} | {gap:+.2f} |"
                )
        lines.append(f"| | seen index, after `kith adapt`: {adapted_line.split(': ', 1)[-1]} | | | | | | | |")
        print(f"default: {name} done", file=sys.stderr)

    # Near-duplicates: the head of Fashion-MNIST training images, copied to the test gallery and measured there.
    gallery = fashion_indexes(args, run)
    run("adapt", "train", "--flip", "--epochs", str(args.adapt_epochs))
    measured = run("adapt", "gallery", "--head-from", "train").splitlines()[-1]
    recall = {
        space: json.loads(
            run(
                "eval",
                "retrieval",
                "gallery",
                "--queries",
                os.path.join(gallery, "queries.tsv"),
                "--json",
                *(["--space", space] if space else []),
            )
        )
        for space in ("backbone", "adapted", None)
    }
    lines += [
        "",
        f"Near-duplicates: a head adapted on {args.adapt_items:,} Fashion-MNIST training images (`--flip`), copied to an "
        "index of 2,000 test images (no labels: measured by held-out views alone) — "
        f"{measured.split(': ', 1)[-1]}. Recall@1 of their near-duplicate queries (tools/make_fashion_gallery.py): backbone "
        f"{recall['backbone']['recall@1']:.4f}, adapted {recall['adapted']['recall@1']:.4f}, default ({recall[None]['space']}) "
        f"**{recall[None]['recall@1']:.4f}**.",
    ]
    return "\n".join(lines)
