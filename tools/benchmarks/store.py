"""store: writing and loading vectors, Kith against Python's lmdb binding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from .common import KITH_BENCH


def python_lmdb_store(n: int, d: int, batch: int, layout: str) -> dict:
    import shutil
    import struct

    import lmdb

    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    path = tempfile.mkdtemp(prefix="kith-bench-pylmdb-")
    try:
        env = lmdb.open(path, map_size=1 << 34)
        start = time.perf_counter()
        for s in range(0, n, batch):
            with env.begin(write=True) as txn:
                if layout == "per-vector":
                    for i in range(s, min(s + batch, n)):
                        txn.put(struct.pack(">Q", i), x[i].tobytes())
                else:  # blocks of 64, the last one of a transaction rewritten by the next, as Kith does
                    for b in range(s // 64, (min(s + batch, n) + 63) // 64):
                        txn.put(struct.pack(">Q", b), x[b * 64 : min((b + 1) * 64, s + batch, n)].tobytes())
        write = time.perf_counter() - start
        start = time.perf_counter()
        with env.begin() as txn:
            matrix = np.concatenate([np.frombuffer(v, dtype=np.float32) for _, v in txn.cursor()]).reshape(-1, d)
        load = time.perf_counter() - start
        assert matrix.shape == (n, d)
        size = os.path.getsize(os.path.join(path, "data.mdb"))
        env.close()
        return {"write": n / write, "load": n / load, "file": size}
    finally:
        shutil.rmtree(path)


def store(args) -> str:
    n, d, batch = args.vectors, 1280, 1000
    best: dict = {}
    for r in range(args.rounds):
        out = subprocess.run(
            [KITH_BENCH, "store", "--json", "--count", str(n), "--dimension", str(d), "--batch-size", str(batch)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        row = json.loads(out)
        results = {
            "Kith (blocks of 64, with item records)": {
                "write": row["write_vectors_per_second"],
                "load": row["load_vectors_per_second"],
                "file": row["file_bytes"],
            },
            "Python lmdb, one value per vector": python_lmdb_store(n, d, batch, "per-vector"),
            "Python lmdb, blocks of 64": python_lmdb_store(n, d, batch, "blocks"),
        }
        for name, res in results.items():
            old = best.setdefault(name, {"write": 0, "load": 0, "file": res["file"]})
            old["write"], old["load"] = max(old["write"], res["write"]), max(old["load"], res["load"])
        print(f"store: round {r + 1}/{args.rounds} done", file=sys.stderr)
    import lmdb

    kith = best["Kith (blocks of 64, with item records)"]
    lines = [
        f"Measured by `tools/bench store --rounds {args.rounds}` on {time.strftime('%Y-%m-%d')}: {n:,} unit vectors of "
        f"{d} float32 ({n * d * 4 / 2**20:.0f} MiB), one transaction per {batch:,}, then every vector read back "
        f"into one matrix; best of {args.rounds} alternating rounds. Python lmdb {lmdb.__version__} writes the same "
        "bytes without item records.",
        "",
        "| writer | write vectors/s | load vectors/s | data.mdb MiB | Kith write / this |",
        "|---|---|---|---|---|",
    ]
    for name, res in best.items():
        lines.append(
            f"| {name} | {res['write']:,.0f} | {res['load']:,.0f} | {res['file'] / 2**20:.0f} | {kith['write'] / res['write']:.2f} |"
        )
    return "\n".join(lines)
