"""heads: logistic-regression fitting, Kith against scikit-learn."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from .common import KITH_BENCH, write_npy_labels


def clusters(classes: int, per_class: int, queries: int, d: int, seed: int):
    """Unit vectors around random class means: support and query sets with labels."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((classes, d))
    means /= np.linalg.norm(means, axis=1, keepdims=True)

    def draw(n):
        y = np.repeat(np.arange(classes), n)
        x = means[y] + rng.standard_normal((len(y), d)) * (1.2 / np.sqrt(d)) * 4
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), [f"c{v}" for v in y]

    return draw(per_class) + draw(queries)


def heads(args) -> str:
    import sklearn
    from sklearn.linear_model import LogisticRegression

    tmp = tempfile.mkdtemp(prefix="kith-bench-heads-")
    lines = [
        f"Measured by `tools/bench heads --rounds {args.rounds}` on {time.strftime('%Y-%m-%d')}: multinomial logistic "
        f"regression (C = 1, L-BFGS) fitted on the same float32 support set by Kith's head and by scikit-learn "
        f"{sklearn.__version__}'s `LogisticRegression()`, both on one thread; synthetic 1280-d unit vectors around random class "
        "means (tools/benchmarks/heads.py `clusters`); accuracy on held-out queries of the same classes; best of the rounds.",
        "",
        "| support set | Kith ms/fit | scikit-learn ms/fit | speed-up | Kith accuracy | scikit-learn accuracy | same predictions |",
        "|---|---|---|---|---|---|---|",
    ]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    for name, classes, shots, queries, repeats in [("5-way 5-shot", 5, 5, 15, 50), ("64-way 100-shot", 64, 100, 20, 2)]:
        xs, ys, xq, yq = clusters(classes, shots, queries, 1280, seed=classes)
        support, labels = write_npy_labels(tmp, "support", xs, ys)
        qpath = os.path.join(tmp, "queries.npy")
        np.save(qpath, xq)
        kith_ms = sk_ms = float("inf")
        for r in range(args.rounds):
            out = subprocess.run(
                [
                    KITH_BENCH,
                    "heads",
                    "--json",
                    "--support",
                    support,
                    "--labels",
                    labels,
                    "--queries",
                    qpath,
                    "--repeats",
                    str(repeats),
                ],
                check=True,
                capture_output=True,
                text=True,
                env=env,
            ).stdout
            row = json.loads(out)
            kith_ms = min(kith_ms, row["milliseconds_per_fit"])
            ours = row["predictions"]
            from threadpoolctl import threadpool_limits

            with threadpool_limits(1):
                start = time.perf_counter()
                for _ in range(repeats):
                    model = LogisticRegression().fit(xs, ys)
                sk_ms = min(sk_ms, 1000 * (time.perf_counter() - start) / repeats)
            theirs = model.predict(xq).tolist()
            print(f"heads {name}: round {r + 1}/{args.rounds} done", file=sys.stderr)
        acc_k = np.mean([a == b for a, b in zip(ours, yq)])
        acc_s = np.mean([a == b for a, b in zip(theirs, yq)])
        same = np.mean([a == b for a, b in zip(ours, theirs)])
        lines.append(
            f"| {name} ({len(ys)} vectors) | {kith_ms:.2f} | {sk_ms:.2f} | {sk_ms / kith_ms:.1f}× | {acc_k:.4f} | {acc_s:.4f} | {same:.2%} |"
        )
    return "\n".join(lines)
