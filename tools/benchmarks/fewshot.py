"""fewshot: few-shot accuracy of every head and option on the glyph set."""

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

# Heads and options of the few-shot section: every head plain, then each option on the heads it may help.
FEWSHOT_HEADS = [
    "logreg",
    "prototype",
    "knn",
    "copa",
    "logreg+whiten",
    "prototype+whiten",
    "copa+whiten",
    "knn+whiten",
    "prototype+whiten=1",
    "prototype+whiten=10",
    "logreg+angular",
    "prototype+angular",
    "prototype+whiten+angular",
    "logreg+expand=10",
    "prototype+expand=10",
    "logreg+whiten+expand=10",
    "prototype+whiten+expand=10",
    "logreg+adjust",
    "copa+steps=200",
]


LONG_TAIL_HEADS = [
    "logreg",
    "logreg+balanced",
    "logreg+adjust",
    "logreg+balanced+adjust",
    "prototype",
    "prototype+adjust",
    "knn",
    "knn+adjust",
    "copa",
    "copa+adjust",
    "prototype+whiten",
    "prototype+whiten+adjust",
    "logreg+whiten",
    "logreg+whiten+adjust",
]


def fewshot(args) -> str:
    from PIL import Image
    from sklearn.linear_model import LogisticRegression

    data = glyph_folder()
    tmp = tempfile.mkdtemp(prefix="kith-bench-fewshot-")
    npy, label_file, paths = embed_folder(data, os.path.join(tmp, "glyphs.npy"))
    x = np.load(npy)
    labels = open(label_file).read().splitlines()
    coarse_file = os.path.join(tmp, "glyphs.coarse.txt")
    with open(coarse_file, "w") as f:  # the script: the class name up to its first '-'
        f.write("\n".join(label.split("-")[0] for label in labels) + "\n")
    classes = sorted(set(labels))
    scripts = sorted(set(label.split("-")[0] for label in labels))
    pixels = np.stack([np.asarray(Image.open(p).convert("L"), np.float32).ravel() for p in paths])
    pixels = 255 - pixels  # ink as signal
    pixels /= np.linalg.norm(pixels, axis=1, keepdims=True)
    coarse_args = ["--coarse-labels", coarse_file]

    # 1. Every head and option on the same episodes: mixed, then fine-within-coarse.
    table: dict = {}

    def add(result: dict, column: str) -> None:
        for r in result["results"]:
            table.setdefault(r["head"], {})[column] = cell(r["accuracies"])

    baselines: dict = {}
    for shot in (1, 5):
        result = kith_eval(npy, label_file, os.path.join(tmp, f"mixed-{shot}.json"), shot, FEWSHOT_HEADS, *coarse_args)
        add(result, f"mixed {shot}")
        sk, raw = [], []
        for ep in result["episodes"]:
            s, q = ep["support"], ep["queries"]
            ys, yq = [labels[i] for i in s], np.array([labels[i] for i in q])
            sk.append(np.mean(LogisticRegression().fit(x[s], ys).predict(x[q]) == yq))
            names = sorted(set(ys))
            protos = np.stack([pixels[[i for i in s if labels[i] == c]].mean(0) for c in names])
            protos /= np.linalg.norm(protos, axis=1, keepdims=True)
            raw.append(np.mean(np.array(names)[np.argmax(pixels[q] @ protos.T, axis=1)] == yq))
        baselines.setdefault("scikit-learn `LogisticRegression()`", {})[f"mixed {shot}"] = cell(sk)
        baselines.setdefault("raw-pixel prototype", {})[f"mixed {shot}"] = cell(raw)
        add(
            kith_eval(
                npy,
                label_file,
                os.path.join(tmp, f"coarse-{shot}.json"),
                shot,
                FEWSHOT_HEADS,
                *coarse_args,
                "--within-coarse",
            ),
            f"coarse {shot}",
        )
        print(f"fewshot {shot}-shot done", file=sys.stderr)
    columns = ["mixed 1", "mixed 5", "coarse 1", "coarse 5"]
    lines = [
        f"Measured by `tools/bench fewshot` on {time.strftime('%Y-%m-%d')}: the glyph set of tools/make_glyphs.py "
        f"({len(classes)} characters of {len(scripts)} scripts × up to 40 fonts, {len(labels):,} images), "
        "EfficientNet-Lite0 embeddings from `kith embed`, 600 episodes of 5-way K-shot with 15 queries per class "
        "(seed 0), every head on the same episodes (`kith eval fewshot --json` writes them). Accuracy in % ± 95% CI. "
        "*Mixed*: any 5 characters; *within script*: 5 characters of one script (`--within-coarse`, coarse label = "
        "script). Options that need the collection draw on the glyph set itself without labels (whitening statistics "
        "of every image; as neighbours for `expand`, the images outside the episode; coarse means without the "
        "episode's queries): what an index of the glyphs would give them.",
        "",
        "| head | mixed 1-shot | mixed 5-shot | within script 1-shot | within script 5-shot |",
        "|---|---|---|---|---|",
    ]
    for name, cells in list(table.items()) + list(baselines.items()):
        lines.append(
            f"| {name if name in baselines else '`' + name + '`'} | "
            + " | ".join(cells.get(c, "") for c in columns)
            + " |"
        )

    # 2. Without leaks: statistics and neighbours from the other half of the characters.
    half = set(classes[0::2])
    evaluated = [i for i, label in enumerate(labels) if label in half]
    other = [i for i, label in enumerate(labels) if label not in half]
    np.save(os.path.join(tmp, "half.npy"), x[evaluated])
    np.save(os.path.join(tmp, "other.npy"), x[other])
    with open(os.path.join(tmp, "half.labels.txt"), "w") as f:
        f.write("\n".join(labels[i] for i in evaluated) + "\n")
    leak_heads = [
        "logreg",
        "prototype",
        "logreg+whiten=1",
        "prototype+whiten=1",
        "prototype+whiten",
        "copa+whiten=1",
        "logreg+whiten=1+expand=10",
        "prototype+whiten=1+expand=10",
    ]
    held: dict = {}
    for shot in (1, 5):
        result = kith_eval(
            os.path.join(tmp, "half.npy"),
            os.path.join(tmp, "half.labels.txt"),
            os.path.join(tmp, f"half-{shot}.json"),
            shot,
            leak_heads,
            "--collection",
            os.path.join(tmp, "other.npy"),
        )
        for r in result["results"]:
            held.setdefault(r["head"], {})[shot] = cell(r["accuracies"])
    lines += [
        "",
        f"Without leaks: episodes from every other character ({len(half)} classes, {len(evaluated):,} images); whitening "
        f"statistics and `expand`'s neighbours from the images of the other {len(classes) - len(half)} characters only "
        "(`--collection`).",
        "",
        "| head | 5-way 1-shot | 5-way 5-shot |",
        "|---|---|---|",
    ]
    lines += [f"| `{name}` | {cells[1]} | {cells[5]} |" for name, cells in held.items()]

    # 3. Another seed for the headline comparison.
    again = kith_eval(
        npy,
        label_file,
        os.path.join(tmp, "seed1.json"),
        1,
        ["logreg", "prototype", "logreg+whiten", "prototype+whiten"],
        "--seed",
        "1",
    )
    lines += [
        "",
        "The same 1-shot comparison on the 600 episodes of seed 1: "
        + "; ".join(f"`{r['head']}` {cell(r['accuracies'])}" for r in again["results"])
        + ".",
    ]

    # 4. Long tails: Zipf shots from M down to 1, balanced queries; balanced accuracy and the rarest third.
    fashion = fashion_folder()
    fnpy, flabels, _ = embed_folder(fashion, os.path.join(tmp, "fashion.npy"))
    tail: dict = {}
    for name, (data_npy, data_labels, shots, queries) in {
        "glyphs": (npy, label_file, 20, 10),
        "fashion": (fnpy, flabels, 50, 15),
    }.items():
        result = kith_eval(
            data_npy,
            data_labels,
            os.path.join(tmp, f"tail-{name}.json"),
            shots,
            LONG_TAIL_HEADS,
            "--long-tail",
            "--queries",
            str(queries),
        )
        for r in result["results"]:
            tail.setdefault(r["head"], {})[name] = (cell(r["accuracies"]), cell(r["rarest_accuracies"]))

    def zipf(m: int) -> str:  # EpisodeConfiguration.shotsPerClass
        return ", ".join(str(max(1, int(np.floor(m * r ** (-np.log(m) / np.log(5)) + 0.5)))) for r in range(1, 6))

    lines += [
        "",
        "Long-tailed support sets (`--long-tail`): in each 5-way episode the classes get M, …, 1 shots along a Zipf "
        f"law (M = 20 on the glyph set with 10 queries per class: {zipf(20)}; M = 50 on 3,000 Fashion-MNIST test "
        f"images with 15: {zipf(50)}), queries balanced, so the accuracy is the balanced accuracy; *rarest* is "
        "the accuracy on the queries of the two classes with the fewest shots. 600 episodes, seed 0.",
        "",
        "| head | glyphs: balanced | glyphs: rarest third | Fashion-MNIST: balanced | Fashion-MNIST: rarest third |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| `{name}` | {c['glyphs'][0]} | {c['glyphs'][1]} | {c['fashion'][0]} | {c['fashion'][1]} |"
        for name, c in tail.items()
    ]

    # 5. Fitting time of one episode's heads on one core (`kith-bench heads`).
    timing = []
    for shot in (1, 5):
        ep = json.load(open(os.path.join(tmp, f"mixed-{shot}.json")))["episodes"][0]
        support, support_labels = write_npy_labels(
            tmp, f"episode-{shot}", x[ep["support"]], [labels[i] for i in ep["support"]]
        )
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
        for head in ("prototype", "logreg", "copa"):
            best = min(
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
                            "--head",
                            head,
                            "--repeats",
                            "200",
                        ],
                        check=True,
                        capture_output=True,
                        text=True,
                        env=env,
                    ).stdout
                )["milliseconds_per_fit"]
                for _ in range(args.rounds)
            )
            timing.append(f"`{head}` {shot}-shot {best:.3f} ms")
    lines += [
        "",
        "Fitting one 5-way episode's head on one core (`kith-bench heads`, best of the rounds): "
        + "; ".join(timing)
        + ".",
    ]
    return "\n".join(lines)
