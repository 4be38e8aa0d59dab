#!/usr/bin/env python3
"""Kith's benchmarks, each run side by side with its anchor and written to BENCHMARKS.md.

  inference  EfficientNet-Lite0 images/s at batch 1 and 16 with 1 and 2 threads: Kith (`kith bench`)
             against onnxruntime on an ONNX graph built from the same converted weights
             (tools/onnx_export.py); plus JPEG decode + resize of a 4000 × 3000 photo with and
             without DCT scaling.
  store      adding 100,000 1280-d vectors in transactions of 1,000 and loading them into the
             search matrix: Kith (`kith bench store`) against Python's lmdb binding writing the
             same bytes (one value per vector, and blocks of 64 as Kith stores them).
  ingest     `kith index add` over a folder of Fashion-MNIST JPEGs: images/s and the share of
             time spent decoding, encoding and writing.

Kith and its anchor alternate in rounds and the best round of each counts, so that both see the
same load on a shared machine.

  tools/bench [inference] [store] [ingest] [--rounds 3] [--seconds 3] [--no-write]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import onnx_export  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
KITH = os.path.join(ROOT, ".build", "release", "kith")
CONFIGS = [(threads, batch) for threads in (1, 2) for batch in (1, 16)]


def kith_round(seconds: float, env: dict, decode: str | None = None) -> list[dict]:
    cmd = [KITH, "bench", "--json", "--seconds", str(seconds), "--repeats", "1",
           "--batch-sizes", "1", "16", "--thread-counts", "1", "2"]
    if decode:
        cmd += ["--decode", decode]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def ort_round(model: str, seconds: float) -> dict:
    import onnxruntime as ort
    rates = {}
    for threads, batch in CONFIGS:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).uniform(-1, 1, (batch, 3, 224, 224)).astype(np.float32)
        session.run(None, {"input": x})
        start, calls = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            session.run(None, {"input": x})
            calls += 1
        rates[(threads, batch)] = calls * batch / (time.perf_counter() - start)
    return rates


def big_photo(path: str) -> None:
    from PIL import Image
    photo = Image.open(os.path.join(ROOT, "samples", "photos", "chelsea.png")).convert("RGB")
    photo.resize((4000, 3000), Image.BICUBIC).save(path, quality=90)


def inference(args) -> str:
    tmp = tempfile.mkdtemp(prefix="kith-bench-")
    model = onnx_export.export(os.path.join(ROOT, "models"), "efficientnet-lite0", os.path.join(tmp, "lite0.onnx"))
    drift = onnx_export.check(model, os.path.join(ROOT, "models"), "efficientnet-lite0")
    photo = os.path.join(tmp, "photo-4000x3000.jpg")
    big_photo(photo)

    env_default = dict(os.environ)
    env_native = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    kith_best: dict = {}
    native_best: dict = {}
    ort_best: dict = {}
    decode: dict = {}
    for r in range(args.rounds):
        for row in kith_round(args.seconds, env_default, photo if r == 0 else None):
            if row["kind"] == "inference":
                key = (row["threads"], row["batch"])
                kith_best[key] = max(kith_best.get(key, 0), row["images_per_second"])
            else:
                decode[row["dct_scaling"]] = row
        if "OPENBLAS_CORETYPE" in os.environ:
            for row in kith_round(args.seconds, env_native):
                key = (row["threads"], row["batch"])
                native_best[key] = max(native_best.get(key, 0), row["images_per_second"])
        for key, rate in ort_round(model, args.seconds).items():
            ort_best[key] = max(ort_best.get(key, 0), rate)
        print(f"inference: round {r + 1}/{args.rounds} done", file=sys.stderr)

    import onnxruntime
    lines = [f"Measured by `tools/bench inference --rounds {args.rounds} --seconds {args.seconds:g}` on "
             f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, a shared machine; "
             f"best of {args.rounds} alternating rounds. onnxruntime {onnxruntime.__version__} runs an ONNX graph built "
             f"from the same converted weights (its features differ from the numpy reference by {drift:.1e} relative).", ""]
    header = "| threads | batch | Kith images/s | onnxruntime images/s | Kith / onnxruntime |"
    if native_best:
        header += " Kith, OpenBLAS own kernels | ratio |"
        lines.append(f"This machine sets `OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']}`, which pins OpenBLAS to its "
                     "AVX2 kernels; the last two columns rerun Kith with it unset (OpenBLAS then picks its AVX-512 kernels). "
                     "Tests and CI keep the machine's setting.")
        lines.append("")
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    for key in CONFIGS:
        threads, batch = key
        row = f"| {threads} | {batch} | {kith_best[key]:.1f} | {ort_best[key]:.1f} | {kith_best[key] / ort_best[key]:.2f} |"
        if native_best:
            row += f" {native_best[key]:.1f} | {native_best[key] / ort_best[key]:.2f} |"
        lines.append(row)
    lines += ["", "JPEG decode + preprocessing of a 4000 × 3000 photo (quality 90) to the 224 × 224 input, one thread:", "",
              "| DCT scaling | decoded at | milliseconds |", "|---|---|---|"]
    for scaled in (False, True):
        row = decode[scaled]
        lines.append(f"| {'yes' if scaled else 'no'} | {row['decoded']} | {row['milliseconds']:.1f} |")
    return "\n".join(lines)


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
                        txn.put(struct.pack(">Q", b), x[b * 64:min((b + 1) * 64, s + batch, n)].tobytes())
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
        out = subprocess.run([KITH, "bench", "store", "--json", "--count", str(n), "--dimension", str(d),
                              "--batch-size", str(batch)], check=True, capture_output=True, text=True).stdout
        row = json.loads(out)
        results = {"Kith (blocks of 64, with item records)": {"write": row["write_vectors_per_second"],
                                                             "load": row["load_vectors_per_second"], "file": row["file_bytes"]},
                   "Python lmdb, one value per vector": python_lmdb_store(n, d, batch, "per-vector"),
                   "Python lmdb, blocks of 64": python_lmdb_store(n, d, batch, "blocks")}
        for name, res in results.items():
            old = best.setdefault(name, {"write": 0, "load": 0, "file": res["file"]})
            old["write"], old["load"] = max(old["write"], res["write"]), max(old["load"], res["load"])
        print(f"store: round {r + 1}/{args.rounds} done", file=sys.stderr)
    import lmdb
    kith = best["Kith (blocks of 64, with item records)"]
    lines = [f"Measured by `tools/bench store --rounds {args.rounds}` on {time.strftime('%Y-%m-%d')}: {n:,} unit vectors of "
             f"{d} float32 ({n * d * 4 / 2**20:.0f} MiB), one transaction per {batch:,}, then every vector read back "
             f"into one matrix; best of {args.rounds} alternating rounds. Python lmdb {lmdb.__version__} writes the same "
             "bytes without item records.", "",
             "| writer | write vectors/s | load vectors/s | data.mdb MiB | Kith write / this |", "|---|---|---|---|---|"]
    for name, res in best.items():
        lines.append(f"| {name} | {res['write']:,.0f} | {res['load']:,.0f} | {res['file'] / 2**20:.0f} | {kith['write'] / res['write']:.2f} |")
    return "\n".join(lines)


def ingest(args) -> str:
    tmp = tempfile.mkdtemp(prefix="kith-bench-ingest-")
    folder = os.path.join(tmp, "fashion-mnist")
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_fashion_mnist.py"), folder,
                    "--count", str(args.images)], check=True, capture_output=True)
    rows = []
    for r in range(args.rounds):
        env = dict(os.environ, KITH_INDEXES=os.path.join(tmp, f"indexes-{r}"))
        subprocess.run([KITH, "index", "create", "fm"], check=True, capture_output=True, env=env)
        out = subprocess.run([KITH, "index", "add", "fm", folder, "--label-from-folder", "--batch-size", "32"],
                             check=True, capture_output=True, text=True, env=env).stdout
        rows.append(out.strip().splitlines()[-1])
        print(f"ingest: round {r + 1}/{args.rounds} done", file=sys.stderr)
    lines = [f"Measured by `tools/bench ingest --rounds {args.rounds}` on {time.strftime('%Y-%m-%d')}: `kith index add` of "
             f"{args.images:,} Fashion-MNIST test images saved as 28 × 28 JPEGs (tools/make_fashion_mnist.py), labels from "
             "folders, batches of 32, EfficientNet-Lite0, 2 threads. Decoding runs on the producer side of the pipeline, "
             "overlapping encoding, so the shares add up to more than 100%. Each round into a new index:", ""]
    lines += [f"- `{row}`" for row in rows]
    return "\n".join(lines)


SECTIONS = {
    "inference": ("Foundation: EfficientNet-Lite0 inference and JPEG decoding", inference),
    "store": ("Index: writing and loading vectors", store),
    "ingest": ("Index: ingesting a folder of images", ingest),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sections", nargs="*", choices=[[]] + list(SECTIONS), default=[])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    for name in args.sections or list(SECTIONS):
        title, run = SECTIONS[name]
        begin, end = f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"
        table = f"{begin}\n\n{run(args)}\n\n{end}"
        print(table)
        if args.no_write:
            continue
        path = os.path.join(ROOT, "BENCHMARKS.md")
        text = open(path).read() if os.path.exists(path) else "# Benchmarks\n\nEvery figure below comes from `tools/bench`, which runs Kith and its anchor side by side in one run.\n"
        if begin in text:
            text = text[: text.index(begin)] + table + text[text.index(end) + len(end):]
        else:
            text += f"\n## {title}\n\n{table}\n"
        with open(path, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
