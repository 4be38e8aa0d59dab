"""search: exact search, Kith against FAISS IndexFlatIP."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np

from .common import KITH_BENCH


def search(args) -> str:
    import faiss

    d, k = 1280, 10
    rows = []
    for n, singles, rounds in [(10_000, 500, args.rounds), (100_000, 100, args.rounds), (1_000_000, 10, 1)]:
        if n > args.max_items:
            continue
        best = {"kith": [0, 0], "faiss": [0, 0]}
        for r in range(rounds):
            out = subprocess.run(
                [
                    KITH_BENCH,
                    "search",
                    "--json",
                    "--items",
                    str(n),
                    "--singles",
                    str(singles),
                    "--batch",
                    "1000",
                    "--threads",
                    "2",
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            row = json.loads(out)
            best["kith"] = [
                max(best["kith"][0], row["single_queries_per_second"]),
                max(best["kith"][1], row["batch_queries_per_second"]),
            ]
            x = np.random.default_rng(r).standard_normal((n, d), dtype=np.float32)
            faiss.normalize_L2(x)
            q = np.random.default_rng(100 + r).standard_normal((1000, d), dtype=np.float32)
            faiss.omp_set_num_threads(2)
            index = faiss.IndexFlatIP(d)
            index.add(x)
            del x
            index.search(q[:1], k)
            start = time.perf_counter()
            for i in range(singles):
                index.search(q[i % 1000 : i % 1000 + 1], k)
            single = singles / (time.perf_counter() - start)
            start = time.perf_counter()
            index.search(q, k)
            batch = 1000 / (time.perf_counter() - start)
            best["faiss"] = [max(best["faiss"][0], single), max(best["faiss"][1], batch)]
            del index
            print(f"search {n}: round {r + 1}/{rounds} done", file=sys.stderr)
        rows.append((n, best))
    lines = [
        f"Measured by `tools/bench search --rounds {args.rounds}` on {time.strftime('%Y-%m-%d')}: exact top-{k} by inner "
        f"product over random unit vectors of {d} float32 held in memory, 2 threads for both, FAISS {faiss.__version__} "
        "`IndexFlatIP`; single queries one after another, then one batch of 1,000; best of the rounds "
        "(one round at 1M).",
        "",
        "| items | Kith single q/s | FAISS single q/s | ratio | Kith batch q/s | FAISS batch q/s | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, b in rows:
        lines.append(
            f"| {n:,} | {b['kith'][0]:,.1f} | {b['faiss'][0]:,.1f} | {b['kith'][0] / b['faiss'][0]:.2f} | "
            f"{b['kith'][1]:,.1f} | {b['faiss'][1]:,.1f} | {b['kith'][1] / b['faiss'][1]:.2f} |"
        )
    return "\n".join(lines)
