"""adapt: NNCLR on the collection (`kith adapt`), measured without leaks."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

from .common import KITH, cell, kith_at, max_rss_mib
from .data import fashion_indexes, glyph_folder, split_classes

ADAPT_HEADS = ["logreg", "prototype", "prototype+whiten=1000", "logreg+whiten"]


def adapt(args) -> str:
    """`kith adapt` without leaks: NNCLR's head learnt on the images of half the glyph classes (and on Fashion-MNIST
    training images), then few-shot accuracy on the other half (and near-duplicate recall on test images), in the
    backbone's space and in the adapted one, with and without the queue."""
    glyphs = glyph_folder()
    work = tempfile.mkdtemp(prefix="kith-bench-adapt-")
    classes, halves = split_classes(glyphs, args.adapt_classes, work)
    indexes = os.path.join(work, "indexes")
    run = kith_at(indexes)
    run("index", "create", "seen")
    run(
        "index", "add", "seen", os.path.join(work, "seen"), "--thumbnail-size", "0"
    )  # no labels: adapting never sees one
    run("index", "create", "unseen")
    run("index", "add", "unseen", os.path.join(work, "unseen"), "--label-from-folder", "--thumbnail-size", "0")
    epochs = str(args.adapt_epochs)

    def adapted(name: str, *extra: str) -> str:
        seconds, mib = max_rss_mib([KITH, "adapt", name, "--epochs", epochs, "--indexes", indexes, *extra])
        return f"{seconds:.0f} s, peak {mib:.0f} MiB"

    rows: dict = {}

    def evaluate(space: str) -> None:
        for shot in (1, 5):
            path = os.path.join(work, f"{space}-{shot}.json")
            cmd = [
                "eval",
                "fewshot",
                "unseen",
                "--way",
                "5",
                "--shot",
                str(shot),
                "--episodes",
                "600",
                "--json",
                path,
                "--space",
                "backbone" if space == "backbone" else "adapted",
            ]
            for head in ADAPT_HEADS:
                cmd += ["--head", head]
            run(*cmd)
            for r in json.load(open(path))["results"]:
                rows.setdefault(r["head"], {})[(space, shot)] = cell(r["accuracies"])

    # Each variant: (column, extra kith adapt options). Jitter and blur change the views' recipe, so
    # their views are made anew (the time of the first of them includes those forward passes).
    rich = ("--jitter", "--blur")
    variants = [
        ("adapted", ()),
        ("no queue", ("--no-queue",)),
        ("adapted, jitter + blur", rich),
        ("no queue, jitter + blur", ("--no-queue", *rich)),
    ]
    evaluate("backbone")
    glyph_times = {}
    for column, extra in variants:
        glyph_times[column] = adapted("seen", *extra)
        run("adapt", "unseen", "--head-from", "seen")
        evaluate(column)
    print("adapt glyphs done", file=sys.stderr)

    # Fashion-MNIST: adapt on training images, near-duplicate recall on the test gallery.
    gallery = fashion_indexes(args, run)
    recalls = {}

    def recall(space: str) -> None:
        out = run(
            "eval",
            "retrieval",
            "gallery",
            "--queries",
            os.path.join(gallery, "queries.tsv"),
            "--json",
            "--space",
            "backbone" if space == "backbone" else "adapted",
        )
        recalls[space] = json.loads(out)

    recall("backbone")
    fashion_times = {}
    for column, extra in variants:
        fashion_times[column] = adapted("train", "--flip", *extra)
        run("adapt", "gallery", "--head-from", "train")
        recall(column)
    print("adapt fashion done", file=sys.stderr)

    n_seen = sum(len(os.listdir(os.path.join(work, "seen", c))) for c in halves["seen"])
    n_unseen = sum(len(os.listdir(os.path.join(work, "unseen", c))) for c in halves["unseen"])
    columns = ["backbone"] + [column for column, _ in variants]
    lines = [
        f"Measured by `tools/bench adapt` on {time.strftime('%Y-%m-%d')}, EfficientNet-Lite0, `kith adapt` defaults "
        f"({epochs} epochs, 4 views per item drawn for each image, 128 items per step, a queue of 8,192 or one entry per "
        "item if fewer, a residual head 1280 → 1024 → 1024 → 256 plus the collection's 256 principal directions, measured "
        "every 5 epochs and the best kept). "
        f"Glyphs: the {len(classes)} characters split at random (seed 0) into {len(halves['seen'])} seen ({n_seen:,} images, added "
        f"without labels and adapted on: {glyph_times['adapted']}) and {len(halves['unseen'])} unseen ({n_unseen:,} images, labelled); "
        "the head is copied to the unseen index (`kith adapt unseen --head-from seen`) and `kith eval fewshot unseen` "
        "scores the same 600 episodes (5-way, 15 queries, seed 0) in each space. Accuracy in % ± 95% CI. "
        f"No queue: the ablation (`--no-queue`, each view's own projection as its positive; training only, the views "
        f"are stored: {glyph_times['no queue']}). Jitter + blur: views with `--jitter --blur` (colour jitter on every "
        f"view, a Gaussian blur on every other; views and training: {glyph_times['adapted, jitter + blur']})."
    ]
    for shot in (1, 5):
        lines += ["", f"| head, {shot}-shot | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for head, cells in rows.items():
            lines.append(f"| `{head}` | " + " | ".join(cells.get((space, shot), "") for space in columns) + " |")
    lines += [
        "",
        f"Fashion-MNIST: adapted on {args.adapt_items:,} training images (`--flip`: mirrored views; views and "
        f"training together {fashion_times['adapted']}: the time and memory of adapting on {args.adapt_items:,} items on this "
        f"2-core machine; with jitter and blur {fashion_times['adapted, jitter + blur']}), the head copied to an index of "
        "2,000 test images; `kith eval retrieval` of their near-duplicate queries (tools/make_fashion_gallery.py).",
        "",
        "| space | recall@1 | recall@5 | recall@10 |",
        "|---|---|---|---|",
    ]
    for space, r in recalls.items():
        lines.append(f"| {space} | {r['recall@1']:.4f} | {r['recall@5']:.4f} | {r['recall@10']:.4f} |")
    return "\n".join(lines)
