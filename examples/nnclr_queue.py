#!/usr/bin/env python3
"""NNCLR's support set kept in Kith: a training loop's queue step, against a real server.

NNCLR (Dwibedi et al., 2021) replaces the positive of each embedding z by its nearest neighbour in
a FIFO queue Q of past embeddings, NN(z, Q), and then pushes the batch into Q. Kept in Kith, the
queue is shared by every worker of a training job and survives restarts. Each step here:

1. the "network" (a fixed random projection, so that this runs without a framework) turns a
   batch into z, L2-normalised, `--dimension` values each;
2. `client.nearest_in_queue(index, z)` answers NN(z, Q) as arrays (one .npy body each way);
3. `client.enqueue(index, z)` pushes the batch, evicting the oldest entries.

A local numpy mirror of the queue checks every answer and times the same NN in process. The
report gives the median step (NN + enqueue) over loopback beside the numpy time and the network
floor (an empty request's round trip).

    python examples/nnclr_queue.py --url http://127.0.0.1:8080 --queue 65536 --batch 256 --dimension 256
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

import kith


class Mirror:
    """The queue as the server keeps it: entry with sequence s at row s mod capacity."""

    def __init__(self, capacity: int, dimension: int) -> None:
        self.rows = np.zeros((capacity, dimension), dtype=np.float32)
        self.sequences = np.full(capacity, -1, dtype=np.int64)
        self.capacity = capacity

    def push(self, vectors: np.ndarray, sequences: np.ndarray) -> None:
        slots = sequences.astype(np.int64) % self.capacity
        self.rows[slots] = vectors
        self.sequences[slots] = sequences

    def nearest(self, z: np.ndarray) -> np.ndarray:
        """The sequence numbers of NN(z, Q), computed with numpy."""
        if self.sequences[-1] >= 0:  # full: every row is an entry, no copy
            return self.sequences[np.argmax(z @ self.rows.T, axis=1)]
        live = self.sequences >= 0
        return self.sequences[live][np.argmax(z @ self.rows[live].T, axis=1)]


def normalised(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--token")
    parser.add_argument("--index", default="nnclr")
    parser.add_argument("--queue", type=int, default=65_536, help="queue capacity")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dimension", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    projection = rng.normal(size=(64, args.dimension)).astype(np.float32)  # the "network"

    def embed(n: int) -> np.ndarray:
        return normalised(rng.normal(size=(n, 64)).astype(np.float32) @ projection)

    with kith.Client(args.url, token=args.token) as client:
        try:
            client.create_index(args.index, dimension=args.dimension, queue_capacity=args.queue)
        except kith.IndexExistsError:
            pass  # another worker made it, or an earlier run: the queue carries on
        mirror = Mirror(args.queue, args.dimension)
        start = 0
        while True:  # what the queue already holds
            entries, start = client.queue(args.index, start=start, limit=1000)
            if entries:
                mirror.push(
                    np.array([e["vector"] for e in entries], dtype=np.float32),
                    np.array([e["sequence"] for e in entries]),
                )
            if start is None:
                break
        while (mirror.sequences >= 0).sum() < args.queue:  # fill it up (not timed)
            n = min(4096, args.queue - int((mirror.sequences >= 0).sum()))
            z = embed(n)
            mirror.push(z, client.enqueue(args.index, z))

        floor = []
        for _ in range(20):
            t = time.perf_counter()
            client.health()
            floor.append(time.perf_counter() - t)
        steps, nn_times, enqueue_times, numpy_times, agree = [], [], [], [], 0
        for step in range(args.steps + 2):  # the first two warm the server's caches
            z = embed(args.batch)
            t0 = time.perf_counter()
            neighbours = client.nearest_in_queue(args.index, z)
            t1 = time.perf_counter()
            sequences = client.enqueue(args.index, z)
            t2 = time.perf_counter()
            expected = mirror.nearest(z)
            t3 = time.perf_counter()
            mirror.push(z, sequences)
            # The positives a training step would use: neighbours.vectors (one per row of z).
            assert neighbours.vectors.shape == z.shape
            if step < 2:
                continue
            agree += int(np.array_equal(neighbours.sequences.astype(np.int64), expected))
            steps.append(t2 - t0)
            nn_times.append(t1 - t0)
            enqueue_times.append(t2 - t1)
            numpy_times.append(t3 - t2)
        entries = client.stats(args.index)["queue_entries"]

    def ms(xs):
        return 1000 * statistics.median(xs)

    report = {
        "steps": args.steps,
        "batch": args.batch,
        "dimension": args.dimension,
        "queue_entries": entries,
        "step_ms": ms(steps),
        "nn_ms": ms(nn_times),
        "enqueue_ms": ms(enqueue_times),
        "numpy_nn_ms": ms(numpy_times),
        "network_floor_ms": ms(floor),
        "agreement": agree / args.steps,
    }
    report["nn_over_numpy_plus_floor"] = report["nn_ms"] / (report["numpy_nn_ms"] + report["network_floor_ms"])
    if not args.quiet:
        print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
