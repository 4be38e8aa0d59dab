"""auto: the head chosen by measurement beside every fixed head."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from .common import KITH_BENCH, cell, embed_folder, kith_eval, write_npy_labels
from .data import fashion_folder, glyph_folder

# The heads `auto` chooses among and the fixed heads it is measured against (tools/bench auto).
AUTO_FIXED = [
    f"{head}{'+whiten' + alpha if alpha is not None else ''}{adjust}"
    for head, adjust in (("copa", ""), ("logreg", ""), ("prototype", ""), ("copa", "+adjust"), ("logreg", "+adjust"))
    for alpha in (None, "=1000", "=10", "")
] + ["knn", "knn+adjust", "prototype+adjust", "logreg+balanced", "prototype+whiten=30"]


def auto(args) -> str:
    """`auto` (the head chosen inside each episode from its support set alone) beside every fixed head, on
    the same 600 episodes of each evaluation the project has; and the cost of choosing for 100 classes."""
    tmp = tempfile.mkdtemp(prefix="kith-bench-auto-")
    gnpy, glabels, gpaths = embed_folder(glyph_folder(), os.path.join(tmp, "glyphs.npy"))
    fnpy, flabels, _ = embed_folder(fashion_folder(), os.path.join(tmp, "fashion.npy"))
    coarse = os.path.join(tmp, "glyphs.coarse.txt")
    labels = open(glabels).read().splitlines()
    with open(coarse, "w") as f:  # the script: the class name up to its first '-'
        f.write("\n".join(label.split("-")[0] for label in labels) + "\n")
    evaluations = [
        ("glyphs, 1-shot", gnpy, glabels, 1, []),
        ("glyphs, 5-shot", gnpy, glabels, 5, []),
        ("glyphs within script, 1-shot", gnpy, glabels, 1, ["--coarse-labels", coarse, "--within-coarse"]),
        ("glyphs within script, 5-shot", gnpy, glabels, 5, ["--coarse-labels", coarse, "--within-coarse"]),
        ("Fashion-MNIST, 1-shot", fnpy, flabels, 1, []),
        ("Fashion-MNIST, 5-shot", fnpy, flabels, 5, []),
        ("glyphs long tail 20…1", gnpy, glabels, 20, ["--long-tail", "--queries", "10"]),
        ("Fashion-MNIST long tail 50…1", fnpy, flabels, 50, ["--long-tail"]),
    ]
    lines = [
        f"Measured by `tools/bench auto` on {time.strftime('%Y-%m-%d')}: `kith eval fewshot --head auto` beside every "
        "fixed head it chooses among, on the same 600 episodes (5-way, 15 queries per class unless said, seed 0) of the "
        "glyph set (231 classes) and 3,000 Fashion-MNIST test images (10 classes), EfficientNet-Lite0. `auto` chooses "
        "inside each episode from that episode's support set alone (the shrinkage by class separation, the head by "
        "stratified folds, docs/heads.md); whitening statistics from every image of the data set, labels unused, for "
        "`auto` and the fixed heads alike. The fixed heads: copa, logreg and prototype with no whitening and at every "
        "shrinkage `auto` tries (1000, 10, 3), copa and logreg with `+adjust` likewise, and knn, knn+adjust, "
        "prototype+adjust, logreg+balanced, prototype+whiten=30. Accuracy in % ± 95% CI (long tails: balanced "
        "accuracy). *Best fixed*: the best of the fixed heads on these episodes, chosen after the fact on the queries; "
        "*chosen*: the heads `auto` took, in how many episodes.",
        "",
        "| evaluation | `auto` | `logreg` | best fixed | auto − best | auto − logreg | chosen |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, npy, label_file, shot, extra in evaluations:
        result = kith_eval(
            npy, label_file, os.path.join(tmp, f"auto-{len(lines)}.json"), shot, ["auto"] + AUTO_FIXED, *extra
        )
        by = dict(zip(["auto"] + AUTO_FIXED, result["results"]))  # in the order asked (the answer writes α as 1000.0)
        mean = {h: 100 * np.mean(r["accuracies"]) for h, r in by.items()}
        best = max(AUTO_FIXED, key=lambda h: mean[h])
        chosen = ", ".join(f"`{h}` {n}" for h, n in sorted(by["auto"]["chosen"].items(), key=lambda kv: -kv[1])[:4])
        lines.append(
            f"| {name} | {cell(by['auto']['accuracies'])} | {cell(by['logreg']['accuracies'])} | `{best}` "
            f"{cell(by[best]['accuracies'])} | {mean['auto'] - mean[best]:+.2f} | {mean['auto'] - mean['logreg']:+.2f} | {chosen} |"
        )
        print(f"auto: {name} done", file=sys.stderr)
    # The cost of choosing for a 100-class 5-shot support set of glyphs, 2 threads.
    x = np.load(gnpy)
    classes = sorted(set(labels))[:100]
    rows = [i for c in classes for i in [j for j, label in enumerate(labels) if label == c][:5]]
    support, support_labels = write_npy_labels(tmp, "s100", x[rows], [labels[i] for i in rows])
    runs = [
        json.loads(
            subprocess.run(
                [
                    KITH_BENCH,
                    "heads",
                    "--json",
                    "--support",
                    support,
                    "--labels",
                    support_labels,
                    "--collection",
                    gnpy,
                    "--head",
                    "auto",
                    "--threads",
                    "2",
                    "--repeats",
                    "5",
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        for _ in range(args.rounds)
    ]
    fastest = min(runs, key=lambda r: r["milliseconds_choosing"])
    lines += [
        "",
        f"Choosing for a 100-class 5-shot support set of glyphs (`kith-bench heads --head auto --threads 2`, best of "
        f"{args.rounds} rounds of 5): **{fastest['milliseconds_choosing']:.0f} ms** (10 groups × 2 folds of 10-way 4-shot, "
        f"200 held-out predictions); with the chosen head's fit on all 500 examples {fastest['milliseconds_per_fit']:.0f} ms. "
        f"It chose `{fastest['chosen']}` at {100 * fastest['validation']:.1f}% held-out accuracy against logreg's "
        f"{100 * fastest['baseline']:.1f}%. Statistics of the collection (8,796 × 1280) are computed once per change of the "
        "items, not counted here.",
    ]
    return "\n".join(lines)
