"""ingest: `kith index add` over a folder of Fashion-MNIST JPEGs."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

from .common import KITH, ROOT


def ingest(args) -> str:
    tmp = tempfile.mkdtemp(prefix="kith-bench-ingest-")
    folder = os.path.join(tmp, "fashion-mnist")
    subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "make_fashion_mnist.py"), folder, "--count", str(args.images)],
        check=True,
        capture_output=True,
    )
    rows = []
    for r in range(args.rounds):
        env = dict(os.environ, KITH_INDEXES=os.path.join(tmp, f"indexes-{r}"))
        subprocess.run([KITH, "index", "create", "fm"], check=True, capture_output=True, env=env)
        out = subprocess.run(
            [KITH, "index", "add", "fm", folder, "--label-from-folder", "--batch-size", "32"],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        ).stdout
        rows.append(out.strip().splitlines()[-1])
        print(f"ingest: round {r + 1}/{args.rounds} done", file=sys.stderr)
    lines = [
        f"Measured by `tools/bench ingest --rounds {args.rounds}` on {time.strftime('%Y-%m-%d')}: `kith index add` of "
        f"{args.images:,} Fashion-MNIST test images saved as 28 × 28 JPEGs (tools/make_fashion_mnist.py), labels from "
        "folders, batches of 32, EfficientNet-Lite0, 2 threads. Decoding runs on the producer side of the pipeline, "
        "overlapping encoding, so the shares add up to more than 100%. Each round into a new index, as `kith index add` reports it:",
        "",
    ]
    lines += [f"- `{row}`" for row in rows]
    return "\n".join(lines)
