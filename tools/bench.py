#!/usr/bin/env python3
"""Kith's benchmarks, each run side by side with its anchor and written to BENCHMARKS.md.

  inference  EfficientNet-Lite0 images/s at batch 1 and 16 with 1 and 2 threads, MobileNetV2,
             EfficientNet-Lite2 and ResNet-50 with 2 threads: Kith (`kith bench`) against onnxruntime
             on ONNX graphs built from the same converted weights (tools/onnx_export.py); plus JPEG
             decode + resize of a 4000 × 3000 photo with and without DCT scaling.
  embedding  `kith embed` of a folder of 500 camera-sized JPEGs against Pillow + onnxruntime in
             Python, 2 threads each; and kith embed's peak memory on 500 and 5,000 images.
  store      adding 100,000 1280-d vectors in transactions of 1,000 and loading them into the
             search matrix: Kith (`kith bench store`) against Python's lmdb binding writing the
             same bytes (one value per vector, and blocks of 64 as Kith stores them).
  ingest     `kith index add` over a folder of Fashion-MNIST JPEGs: images/s and the share of
             time spent decoding, encoding and writing.
  search     exact top-10 search over 10k, 100k and 1M random 1280-d unit vectors, single queries
             and batches of 1,000: Kith (`kith bench search`) against FAISS IndexFlatIP.
  heads      logistic-regression fit time for 5-way 5-shot and 64-way 100-shot support sets:
             Kith (`kith bench heads`) against scikit-learn's LogisticRegression on the same data.
  fewshot    5-way 1-shot and 5-shot accuracy ± 95% CI of every head and option on the glyph set
             (tools/make_glyphs.py) with EfficientNet-Lite0 embeddings, mixed and within one script,
             beside a raw-pixel prototype baseline and scikit-learn's LogisticRegression on the same
             episodes; the same without leaks (statistics from other characters); long-tailed
             support sets on the glyphs and Fashion-MNIST; and the fit time of one episode.
  whitening  whitening's shrinkage on the glyph set (231 classes) beside Fashion-MNIST (10 classes).
  auto       `auto` (chosen inside each episode from its support set) beside every fixed head on each
             evaluation (glyphs and Fashion-MNIST at 1 and 5 shots, within script, long tails), and
             the cost of choosing for a 100-class 5-shot support set.
  views      every head with and without +views (4 stored views per labelled image) on indexes of
             the glyph set and of Fashion-MNIST, on the same episodes.
  retrieval  near-duplicate recall@1/5/10 on Fashion-MNIST (tools/make_fashion_gallery.py), beside
             raw pixels.
  spark      spark/kith_embed.py on a standalone cluster of 1-core workers on 127.0.0.1 (1 and 2
             executors) against `kith index add` in one process, 5,000 images; and add-parquet.
  server     `kith serve` under a bounded wrk load on 127.0.0.1 (8 connections): search on a 100k
             index, classify with a cached head, and embed; against the same calls made on the
             library directly by 8 concurrent callers (`kith bench engine`).

Kith and its anchor alternate in rounds and the best round of each counts, so that both see the
same load on a shared machine.

  tools/bench [SECTION ...] [--rounds 3] [--seconds 3] [--no-write]
"""
from __future__ import annotations

import argparse
import shutil
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import onnx_export  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
KITH = os.path.join(ROOT, ".build", "release", "kith")
CONFIGS = [(threads, batch) for threads in (1, 2) for batch in (1, 16)]


# (model, input size, configurations (threads, batch)) of the inference section.
INFERENCE_MODELS = [("efficientnet-lite0", 224, CONFIGS), ("mobilenetv2", 224, [(2, 1), (2, 16)]),
                    ("efficientnet-lite2", 260, [(2, 1), (2, 16)]), ("resnet50-random", 224, [(2, 1), (2, 16)])]


def kith_round(model: str, configs: list, seconds: float, decode: str | None = None) -> list[dict]:
    cmd = [KITH, "bench", "inference", "--json", "--model", model, "--seconds", str(seconds), "--repeats", "1",
           "--batch-sizes", *sorted({str(b) for _, b in configs}), "--thread-counts", *sorted({str(t) for t, _ in configs})]
    if decode:
        cmd += ["--decode", decode]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def ort_session(model: str, threads: int):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def ort_round(model: str, size: int, configs: list, seconds: float) -> dict:
    rates = {}
    for threads, batch in configs:
        session = ort_session(model, threads)
        x = np.random.default_rng(0).uniform(-1, 1, (batch, 3, size, size)).astype(np.float32)
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


def onednn_info() -> str:
    """oneDNN's version and the instruction set its kernels run, as it reports them."""
    out = subprocess.run([KITH, "bench", "inference", "--seconds", "0", "--repeats", "1", "--batch-sizes", "1",
                          "--thread-counts", "1"], capture_output=True, text=True, env=dict(os.environ, DNNL_VERBOSE="1")).stdout
    info = [line.split(",", 3)[-1] for line in out.splitlines() if line.startswith("onednn_verbose,info,") and
            ("oneDNN v" in line or "isa:" in line)]
    return "; ".join(info)


def inference(args) -> str:
    tmp = tempfile.mkdtemp(prefix="kith-bench-")
    graphs, drift = {}, {}
    for model, _, _ in INFERENCE_MODELS:
        graphs[model] = onnx_export.export(os.path.join(ROOT, "models"), model, os.path.join(tmp, f"{model}.onnx"))
        drift[model] = onnx_export.check(graphs[model], os.path.join(ROOT, "models"), model)
    photo = os.path.join(tmp, "photo-4000x3000.jpg")
    big_photo(photo)

    kith_best: dict = {}
    ort_best: dict = {}
    decode: dict = {}
    for r in range(args.rounds):
        for model, size, configs in INFERENCE_MODELS:
            for row in kith_round(model, configs, args.seconds, photo if r == 0 and model == "efficientnet-lite0" else None):
                if row["kind"] == "inference":
                    key = (model, row["threads"], row["batch"])
                    kith_best[key] = max(kith_best.get(key, 0), row["images_per_second"])
                else:
                    decode[row["dct_scaling"]] = row
            for (threads, batch), rate in ort_round(graphs[model], size, configs, args.seconds).items():
                key = (model, threads, batch)
                ort_best[key] = max(ort_best.get(key, 0), rate)
        print(f"inference: round {r + 1}/{args.rounds} done", file=sys.stderr)

    import onnxruntime
    worst = max(drift.values())
    lines = [f"Measured by `tools/bench inference --rounds {args.rounds} --seconds {args.seconds:g}` on "
             f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, a shared machine, with its "
             f"environment as it is (OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}); best of {args.rounds} "
             f"alternating rounds. Kith runs on oneDNN ({onednn_info()}). onnxruntime {onnxruntime.__version__} runs ONNX "
             f"graphs built from the same converted weights (tools/onnx_export.py; their features differ from the numpy "
             f"reference by at most {worst:.1e} relative) with intra-op threads = threads. ResNet-50 has random weights "
             "(timing does not depend on them).", "",
             "| model | threads | batch | Kith images/s | onnxruntime images/s | Kith / onnxruntime |",
             "|---|---|---|---|---|---|"]
    for model, _, configs in INFERENCE_MODELS:
        for threads, batch in configs:
            key = (model, threads, batch)
            lines.append(f"| {model} | {threads} | {batch} | {kith_best[key]:.1f} | {ort_best[key]:.1f} | "
                         f"{kith_best[key] / ort_best[key]:.2f} |")
    lines += ["", "JPEG decode + preprocessing of a 4000 × 3000 photo (quality 90) to the 224 × 224 input, one thread:", "",
              "| DCT scaling | decoded at | milliseconds |", "|---|---|---|"]
    for scaled in (False, True):
        row = decode[scaled]
        lines.append(f"| {'yes' if scaled else 'no'} | {row['decoded']} | {row['milliseconds']:.1f} |")
    return "\n".join(lines)


def max_rss_mib(cmd: list[str]) -> tuple[float, float]:
    """(seconds, peak resident MiB) of `cmd`, run in a child Python whose only child it is."""
    probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
             "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
             "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    seconds, kib = subprocess.run([sys.executable, "-c", probe, *cmd], check=True, capture_output=True, text=True).stdout.split()
    return float(seconds), int(kib) / 1024


def python_embed(folder: str, model_path: str, size: int, threads: int) -> tuple[float, np.ndarray]:
    """What a user would write: Pillow decoding and resizing on `threads` threads, feeding batches of
    16 to onnxruntime with `threads` intra-op threads. Returns (images/s, L2-normalised embeddings)."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image, ImageOps
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder))
    mean, std = np.float32(127), np.float32(128)

    def load(path):
        img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        side = int(224 / 256 * min(img.size))
        x, y = (img.width - side + 1) // 2, (img.height - side + 1) // 2
        img = img.resize((size, size), Image.BICUBIC, box=(x, y, x + side, y + side))
        return ((np.asarray(img, np.float32) - mean) / std).transpose(2, 0, 1)

    session = ort_session(model_path, threads)
    start = time.perf_counter()
    out = []
    with ThreadPoolExecutor(threads) as pool:
        inputs = pool.map(load, files)
        batch = []
        for x in inputs:
            batch.append(x)
            if len(batch) == 16:
                out.append(session.run(None, {"input": np.stack(batch)})[0])
                batch = []
        if batch:
            out.append(session.run(None, {"input": np.stack(batch)})[0])
    rate = len(files) / (time.perf_counter() - start)
    e = np.concatenate(out)
    return rate, e / np.linalg.norm(e, axis=1, keepdims=True)


def embedding(args) -> str:
    tmp = tempfile.mkdtemp(prefix="kith-bench-embed-")
    folder, big = os.path.join(tmp, "photos"), os.path.join(tmp, "photos-5000")
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_photos.py"), folder, "--count", "500"],
                   check=True, capture_output=True)
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_photos.py"), big, "--count", "500", "--link", "9"],
                   check=True, capture_output=True)
    model = onnx_export.export(os.path.join(ROOT, "models"), "efficientnet-lite0", os.path.join(tmp, "lite0.onnx"))
    out = os.path.join(tmp, "kith.npy")
    kith_rate = python_rate = 0.0
    for r in range(args.rounds):
        seconds, _ = max_rss_mib([KITH, "embed", folder, "--format", "npy", "-o", out])
        kith_rate = max(kith_rate, 500 / seconds)
        rate, ours = python_embed(folder, model, 224, 2)
        python_rate = max(python_rate, rate)
        print(f"embedding: round {r + 1}/{args.rounds} done", file=sys.stderr)
    kith = np.load(out)
    order = [line.strip() for line in open(out + ".paths.txt")]
    assert [os.path.basename(p) for p in order] == sorted(os.listdir(folder)), "kith embed changed the order"
    cosine = (kith * ours).sum(axis=1)
    rss = {n: max_rss_mib([KITH, "embed", f, "--format", "npy", "-o", os.path.join(tmp, f"rss-{n}.npy")])
           for n, f in ((500, folder), (5000, big))}
    lines = [f"Measured by `tools/bench embedding --rounds {args.rounds}` on {time.strftime('%Y-%m-%d')}: 500 JPEGs of "
             "tools/make_photos.py (400 at 640 × 480, 100 at 4000 × 3000, quality 90), EfficientNet-Lite0, 2 threads, "
             "best of the rounds. Kith: `kith embed FOLDER --format npy -o FILE` (the whole command, loading the model "
             "included). Python: Pillow decoding and the same crop and bicubic resize on 2 threads feeding batches of 16 "
             "to onnxruntime with 2 intra-op threads (tools/bench.py `python_embed`). The two sets of embeddings agree to "
             f"cosine {cosine.min():.4f} at worst (mean {cosine.mean():.4f}): Pillow resizes in 8 bits, Kith in float, "
             "and Kith decodes large JPEGs at reduced DCT scale.", "",
             "| pipeline | images/s | Kith / Python |", "|---|---|---|",
             f"| Kith `kith embed` | {kith_rate:.1f} | {kith_rate / python_rate:.2f} |",
             f"| Pillow + onnxruntime | {python_rate:.1f} | 1.00 |", "",
             "Peak resident memory of `kith embed` (maximum RSS of the process):", "",
             "| images | seconds | peak RSS MiB |", "|---|---|---|"]
    for n, (seconds, mib) in rss.items():
        lines.append(f"| {n:,} | {seconds:.1f} | {mib:.0f} |")
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
             "overlapping encoding, so the shares add up to more than 100%. Each round into a new index, as `kith index add` reports it:", ""]
    lines += [f"- `{row}`" for row in rows]
    return "\n".join(lines)


def search(args) -> str:
    import faiss
    d, k = 1280, 10
    rows = []
    for n, singles, rounds in [(10_000, 500, args.rounds), (100_000, 100, args.rounds), (1_000_000, 10, 1)]:
        if n > args.max_items:
            continue
        best = {"kith": [0, 0], "faiss": [0, 0]}
        for r in range(rounds):
            out = subprocess.run([KITH, "bench", "search", "--json", "--items", str(n), "--singles", str(singles),
                                  "--batch", "1000", "--threads", "2"], check=True, capture_output=True, text=True).stdout
            row = json.loads(out)
            best["kith"] = [max(best["kith"][0], row["single_queries_per_second"]), max(best["kith"][1], row["batch_queries_per_second"])]
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
                index.search(q[i % 1000:i % 1000 + 1], k)
            single = singles / (time.perf_counter() - start)
            start = time.perf_counter()
            index.search(q, k)
            batch = 1000 / (time.perf_counter() - start)
            best["faiss"] = [max(best["faiss"][0], single), max(best["faiss"][1], batch)]
            del index
            print(f"search {n}: round {r + 1}/{rounds} done", file=sys.stderr)
        rows.append((n, best))
    lines = [f"Measured by `tools/bench search --rounds {args.rounds}` on {time.strftime('%Y-%m-%d')}: exact top-{k} by inner "
             f"product over random unit vectors of {d} float32 held in memory, 2 threads for both, FAISS {faiss.__version__} "
             "`IndexFlatIP`; single queries one after another, then one batch of 1,000; best of the rounds "
             "(one round at 1M).", "",
             "| items | Kith single q/s | FAISS single q/s | ratio | Kith batch q/s | FAISS batch q/s | ratio |", "|---|---|---|---|---|---|---|"]
    for n, b in rows:
        lines.append(f"| {n:,} | {b['kith'][0]:,.1f} | {b['faiss'][0]:,.1f} | {b['kith'][0] / b['faiss'][0]:.2f} | "
                     f"{b['kith'][1]:,.1f} | {b['faiss'][1]:,.1f} | {b['kith'][1] / b['faiss'][1]:.2f} |")
    return "\n".join(lines)


def ann_data(n: int, d: int, queries: int, seed: int = 0) -> tuple[str, int]:
    """Clustered synthetic vectors in bench-out/ann-N: a mixture of n/500 directions on the sphere
    (sizes falling as rank^-0.5, each cluster's spread drawn so that an item's cosine to its
    direction is 0.67-0.86, like embeddings around a class), written in chunks of 100,000 rows
    (chunk-I.npy, chunk-I.txt: a label l0..l99 per row at random), queries.npy from the same
    mixture, and truth.npy, their exact top 10 (and truth-l7.npy within label l7)."""
    folder = os.path.join(ROOT, "bench-out", f"ann-{n}")
    chunk = 100_000
    done = os.path.join(folder, "done")
    if os.path.exists(done):
        return folder, chunk
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    centres = max(2, n // 500)
    mu = rng.standard_normal((centres, d)).astype(np.float32)
    mu /= np.linalg.norm(mu, axis=1, keepdims=True)
    weights = 1 / np.sqrt(np.arange(1, centres + 1))
    weights /= weights.sum()
    spread = rng.uniform(0.6, 1.1, centres).astype(np.float32)

    def draw(count):
        c = rng.choice(centres, count, p=weights)
        x = mu[c] + spread[c, None] * rng.standard_normal((count, d), dtype=np.float32) / np.sqrt(d)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    q = draw(queries)
    np.save(os.path.join(folder, "queries.npy"), q)
    top = np.full((queries, 10), -np.inf, dtype=np.float32)
    top_ids = np.zeros((queries, 10), dtype=np.int64)
    top_l, top_l_ids = top.copy(), top_ids.copy()
    for i, start in enumerate(range(0, n, chunk)):
        x = draw(min(chunk, n - start))
        labels = rng.integers(0, 100, len(x))
        np.save(os.path.join(folder, f"chunk-{i}.npy"), x)
        with open(os.path.join(folder, f"chunk-{i}.txt"), "w") as f:
            f.write("\n".join(f"l{v}" for v in labels) + "\n")
        scores = q @ x.T
        ids = np.arange(start, start + len(x))[None, :].repeat(queries, 0)
        for (t, t_ids, mask) in ((top, top_ids, None), (top_l, top_l_ids, labels == 7)):
            s = scores if mask is None else np.where(mask[None, :], scores, -np.inf)
            part = np.argpartition(-s, 10, axis=1)[:, :10]  # this chunk's best 10, then merged with the best so far
            merged = np.concatenate([t, np.take_along_axis(s, part, 1)], axis=1)
            merged_ids = np.concatenate([t_ids, np.take_along_axis(ids, part, 1)], axis=1)
            best = np.argsort(-merged, axis=1, kind="stable")[:, :10]
            t[:] = np.take_along_axis(merged, best, 1)
            t_ids[:] = np.take_along_axis(merged_ids, best, 1)
        print(f"ann data: {start + len(x):,}/{n:,}", file=sys.stderr)
    np.save(os.path.join(folder, "truth.npy"), top_ids)
    np.save(os.path.join(folder, "truth-l7.npy"), top_l_ids)
    open(done, "w").close()
    return folder, chunk


def ann_real(probes_list: list[int]) -> str:
    """Recall on real embeddings: Kith's EfficientNet-Lite0 embeddings of Fashion-MNIST's 60,000 training and 9,000
    test images as the index, the other 1,000 test images (at random) as queries; approximate against exact search (Kith's own),
    and FAISS IVF-SQ8 with the same lists on the same vectors."""
    import faiss
    folder = os.path.join(ROOT, "bench-out", "fashion-70k")
    for split, count in (("train", 60_000), ("t10k", 10_000)):
        if not os.path.isdir(os.path.join(folder, split)):
            subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_fashion_mnist.py"), os.path.join(folder, split),
                            "--split", split, "--count", str(count)], check=True, capture_output=True)
    vectors = os.path.join(folder, "all.npy")
    if not os.path.exists(vectors):
        subprocess.run([KITH, "embed", os.path.join(folder, "train"), os.path.join(folder, "t10k"), "--format", "npy", "-o", vectors],
                       check=True, capture_output=True)
    x = np.load(vectors)
    held_out = 60_000 + np.random.default_rng(0).permutation(len(x) - 60_000)[:1000]  # 1,000 test images at random
    base, queries = np.delete(x, held_out, axis=0), x[held_out]
    work = tempfile.mkdtemp(prefix="kith-bench-ann-real-", dir=os.path.join(ROOT, "bench-out"))
    np.save(os.path.join(work, "base.npy"), base)
    np.save(os.path.join(work, "queries.npy"), queries)
    run = lambda *a: subprocess.run([KITH, *a, "--indexes", work], check=True, capture_output=True, text=True).stdout
    run("index", "create", "fm", "--dimension", str(x.shape[1]))
    run("index", "add-vectors", "fm", os.path.join(work, "base.npy"), "--batch-size", "5000")
    t = time.perf_counter()
    run("index", "build-ann", "fm")
    build = time.perf_counter() - t
    status = json.loads(run("index", "stats", "fm", "--json"))["ann"]
    ids = os.path.join(work, "ids")
    out = subprocess.run([KITH, "bench", "ann", "fm", "--indexes", work, "--queries", os.path.join(work, "queries.npy"), "--json",
                          "--nprobe", "0", *map(str, probes_list), "--threads", "2", "--ids", ids], check=True, capture_output=True, text=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if '"ann"' in line]
    exact = np.load(f"{ids}.nprobe-0.npy").astype(np.int64) - 1
    recall = lambda found: float(np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact)]))
    nlist = status["configuration"]["lists"]
    faiss.omp_set_num_threads(2)
    quantizer = faiss.IndexFlatIP(x.shape[1])
    index = faiss.IndexIVFScalarQuantizer(quantizer, x.shape[1], nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter, index.cp.max_points_per_centroid, index.cp.seed = 10, 64, 0
    t = time.perf_counter()
    index.train(base)
    index.add(base)
    faiss_build = time.perf_counter() - t
    lines = [f"Real embeddings: EfficientNet-Lite0 embeddings (Kith's) of Fashion-MNIST's 60,000 training and 9,000 test images as "
             f"the index, 1,000 other test images (at random) as queries; recall@10 against Kith's exact search. Kith: {nlist} lists (build "
             f"{build:.0f} s, default probes {status['configuration']['probes']}, calibrated recall "
             f"{status.get('calibrated_recall') or 0:.3f}); FAISS IVF-SQ8 with the same lists (build {faiss_build:.0f} s). 2 threads.", "",
             "| nprobe | Kith recall@10 | Kith single q/s | Kith batch q/s | FAISS IVF-SQ8 recall@10 | FAISS single q/s | FAISS batch q/s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["nprobe"] == 0:
            lines.append(f"| exact | 1.000 | {r['single_queries_per_second']:,.0f} | {r['batch_queries_per_second']:,.0f} | | | |")
            continue
        index.nprobe = r["nprobe"]
        index.search(queries[:2], 10)
        t = time.perf_counter()
        for i in range(200):
            index.search(queries[i:i + 1], 10)
        single = 200 / (time.perf_counter() - t)
        t = time.perf_counter()
        _, found = index.search(queries, 10)
        batch = len(queries) / (time.perf_counter() - t)
        # FAISS's ids are rows of base; Kith's are item ids from 1.
        lines.append(f"| {r['nprobe']} | {recall(np.load(ids + '.nprobe-' + str(r['nprobe']) + '.npy').astype(np.int64) - 1):.3f} | "
                     f"{r['single_queries_per_second']:,.0f} | {r['batch_queries_per_second']:,.0f} | {recall(found):.3f} | {single:,.0f} | {batch:,.0f} |")
    shutil.rmtree(work, ignore_errors=True)
    return "\n".join(lines)


def ann_interleaved(indexes: str, name: str, faiss_index: str, queries: str, probes: int, threads: int, rounds: int = 5) -> dict:
    """Batch q/s of Kith and FAISS IVF-SQ8 at the same probes and threads, alternating fresh
    processes round by round (each answers the batch once to warm up, then times it twice);
    the median of each, so that the machine's drifts hit both alike."""
    faiss_code = ("import faiss, numpy as np, sys, time\n"
                  "index = faiss.read_index(sys.argv[1]); index.nprobe = int(sys.argv[3]); q = np.load(sys.argv[2])\n"
                  "faiss.omp_set_num_threads(int(sys.argv[4])); index.search(q, 10)\n"
                  "for _ in range(2):\n"
                  "    t = time.perf_counter(); index.search(q, 10); print(len(q) / (time.perf_counter() - t))\n")
    kith, theirs = [], []
    for _ in range(rounds):
        out = subprocess.run([KITH, "bench", "ann", name, "--indexes", indexes, "--queries", queries, "--json", "--singles", "0",
                              "--threads", str(threads), "--nprobe", str(probes), str(probes), str(probes)],
                             check=True, capture_output=True, text=True).stdout
        kith += [json.loads(line)["batch_queries_per_second"] for line in out.splitlines() if json.loads(line)["kind"] == "ann"][1:]
        out = subprocess.run([sys.executable, "-c", faiss_code, faiss_index, queries, str(probes), str(threads)],
                             check=True, capture_output=True, text=True).stdout
        theirs += [float(v) for v in out.split()]
    return {"kith": float(np.median(kith)), "faiss": float(np.median(theirs)), "rounds": rounds,
            "kith_all": kith, "faiss_all": theirs}


def ann(args) -> str:
    """Approximate search against FAISS's IVF-Flat, IVF-SQ8 and HNSW32 on the same clustered vectors."""
    import faiss
    n, d, k, nq = args.ann_items, 1280, 10, 1000
    folder, chunk = ann_data(n, d, nq)
    chunks = sorted(f for f in os.listdir(folder) if f.startswith("chunk-") and f.endswith(".npy"))
    q = np.load(os.path.join(folder, "queries.npy"))
    truth = np.load(os.path.join(folder, "truth.npy"))
    truth_l7 = np.load(os.path.join(folder, "truth-l7.npy"))

    def recall(found: np.ndarray, exact: np.ndarray) -> float:
        return float(np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact)]))

    def best_at(rows: list[dict], key: str) -> dict | None:
        good = [r for r in rows if r["recall"] >= 0.95]
        return max(good, key=lambda r: r[key]) if good else None

    # Kith: an index of the vectors (one add-vectors per chunk), build-ann, then bench ann.
    indexes = tempfile.mkdtemp(prefix="kith-bench-ann-", dir=os.path.join(ROOT, "bench-out"))
    run = lambda *a: subprocess.run([KITH, *a, "--indexes", indexes], check=True, capture_output=True, text=True).stdout
    run("index", "create", "ann", "--dimension", str(d))
    t = time.perf_counter()
    for c in chunks:
        run("index", "add-vectors", "ann", os.path.join(folder, c), "--labels", os.path.join(folder, c.replace(".npy", ".txt")),
            "--batch-size", "5000")
    add_seconds = time.perf_counter() - t
    print(f"ann: kith added {n:,} in {add_seconds:.0f} s", file=sys.stderr)
    data_mdb = os.path.join(indexes, "ann", "data.mdb")
    size_before = os.path.getsize(data_mdb)
    def build_ann(*extra: str) -> tuple[float, float]:
        """(seconds to train and code, seconds to calibrate) of a build-ann, from its own report."""
        line = run("index", "build-ann", "ann", *extra).strip().splitlines()[-1]
        built, calibrated = re.search(r"built in ([0-9.]+) s, calibrated in ([0-9.]+) s", line).groups()
        return float(built), float(calibrated)

    build_seconds, calibrate_seconds = build_ann()
    status = json.loads(run("index", "stats", "ann", "--json"))["ann"]
    size_after = os.path.getsize(data_mdb)
    print(f"ann: kith built in {build_seconds:.0f} s: {status}", file=sys.stderr)
    probes_list = [1, 2, 4, 8, 16, 32, 64, 128, 256]
    ids_prefix = os.path.join(indexes, "ids")

    def kith_bench(*extra: str) -> list[dict]:
        out = subprocess.run([KITH, "bench", "ann", "ann", "--indexes", indexes, "--queries", os.path.join(folder, "queries.npy"),
                              "--json", "--singles", "200", *extra], check=True, capture_output=True, text=True).stdout
        return [json.loads(line) for line in out.splitlines()]

    exact_rows = kith_bench("--nprobe", "0", "--threads", "2")
    kith_rows = []
    for line in kith_bench("--nprobe", *map(str, probes_list), "--threads", "1", "2", "--ids", ids_prefix):
        if line["kind"] == "open":
            kith_open = line
            continue
        found = np.load(f"{ids_prefix}.nprobe-{line['nprobe']}.npy").astype(np.int64) - 1
        kith_rows.append(dict(line, recall=recall(found, truth)))
    filtered = []
    for line in kith_bench("--nprobe", str(status["configuration"]["probes"]), "--threads", "2", "--label", "l7", "--ids", ids_prefix + "-l7"):
        if line["kind"] == "ann":
            found = np.load(f"{ids_prefix}-l7.nprobe-{line['nprobe']}.npy").astype(np.int64) - 1
            filtered.append(dict(line, recall=recall(found, truth_l7)))
    print("ann: kith searched", file=sys.stderr)

    # FAISS: the same vectors, its three indexes, each swept over its knob.
    faiss_rows = {}
    builds = {}
    x = np.concatenate([np.load(os.path.join(folder, c)) for c in chunks])
    nlist = status["configuration"]["lists"]
    for name in ("IVF-Flat", "IVF-SQ8", "HNSW32"):
        faiss.omp_set_num_threads(2)
        t = time.perf_counter()
        if name == "HNSW32":
            index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
            index.add(x)
            knobs = [16, 32, 64, 128, 256, 512]
        else:
            quantizer = faiss.IndexFlatIP(d)
            index = (faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT) if name == "IVF-Flat" else
                     faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT))
            index.cp.niter = 10  # Kith's rounds and sample: the same k-means
            index.cp.max_points_per_centroid = 64
            index.cp.seed = 0
            index.train(x)
            index.add(x)
            knobs = probes_list
        builds[name] = time.perf_counter() - t
        print(f"ann: faiss {name} built in {builds[name]:.0f} s", file=sys.stderr)
        if name == "IVF-SQ8":
            faiss.write_index(index, os.path.join(indexes, "faiss-sq8.index"))
        rows = []
        for knob in knobs:
            if name == "HNSW32":
                index.hnsw.efSearch = knob
            else:
                index.nprobe = knob
            for threads in (1, 2):
                faiss.omp_set_num_threads(threads)
                index.search(q[:2], k)
                t = time.perf_counter()
                for i in range(200):
                    index.search(q[i:i + 1], k)
                single = 200 / (time.perf_counter() - t)
                t = time.perf_counter()
                _, found = index.search(q, k)
                batch = nq / (time.perf_counter() - t)
                rows.append({"knob": knob, "threads": threads, "single_queries_per_second": single,
                             "batch_queries_per_second": batch, "recall": recall(found, truth)})
        faiss_rows[name] = rows
        del index
    del x
    # Resident memory like for like: a fresh process of each answers the batch at the calibrated
    # probes (FAISS reads its index file into its own memory; Kith maps the index).
    probes = status["configuration"]["probes"]
    memory_rows = kith_bench("--nprobe", str(probes), "--threads", "2", "--mapped-pages")
    kith_memory = [r for r in memory_rows if r["kind"] == "ann"][0]
    kith_mapped = [r for r in memory_rows if r["kind"] == "mapped"][0]
    faiss_memory = json.loads(subprocess.run([sys.executable, "-c", (
        "import faiss, json, numpy as np, sys\n"
        "index = faiss.read_index(sys.argv[1]); index.nprobe = int(sys.argv[3]); index.search(np.load(sys.argv[2]), 10)\n"
        "status = dict(line.split(':', 1) for line in open('/proc/self/status') if ':' in line)\n"
        "print(json.dumps({k: int(status[k].split()[0]) * 1024 for k in ('VmRSS', 'RssAnon', 'RssFile')}))"),
        os.path.join(indexes, "faiss-sq8.index"), os.path.join(folder, "queries.npy"), str(probes)],
        check=True, capture_output=True, text=True).stdout)
    interleaved = {t: ann_interleaved(indexes, "ann", os.path.join(indexes, "faiss-sq8.index"), os.path.join(folder, "queries.npy"), probes, t)
                   for t in (1, 2)}
    # Half-precision codes: the same index rebuilt with --codes fp16 (same lists and probes), last,
    # so that every comparison above is of the 8-bit codes.
    half_seconds, _ = build_ann("--codes", "fp16", "--probes", str(status["configuration"]["probes"]))
    half_size = os.path.getsize(data_mdb)
    half_rows = []
    for line in kith_bench("--nprobe", *map(str, probes_list[:6]), "--threads", "1", "2", "--ids", ids_prefix + "-fp16"):
        if line["kind"] == "ann":
            found = np.load(f"{ids_prefix}-fp16.nprobe-{line['nprobe']}.npy").astype(np.int64) - 1
            half_rows.append(dict(line, recall=recall(found, truth)))
    shutil.rmtree(indexes, ignore_errors=True)

    lines = [f"Measured by `tools/bench ann --ann-items {n}` on {time.strftime('%Y-%m-%d')}: {n:,} clustered unit vectors of {d} "
             f"float32 (a mixture of {max(2, n // 500):,} directions, cosine 0.67-0.86 to their direction; tools/bench.py "
             f"`ann_data`), {nq:,} queries from the same mixture, recall@{k} against exact search. Kith: `kith index build-ann` "
             f"defaults ({nlist:,} lists, trained on {status['configuration']['training_sample']:,} items, 10 rounds; 8-bit codes "
             f"scanned in the memory map, the best {max(4 * k, 32)} re-ranked from float32), `kith bench ann`; FAISS "
             f"{faiss.__version__}: IVF-Flat and IVF-SQ8 with the same lists, sample and rounds, HNSW32 (efConstruction 40). "
             "Single queries one after another, then one batch; q/s.", ""]
    lines += ["| index | build s | knob | recall@10 | single q/s, 1 thread | single q/s, 2 threads | batch q/s, 1 thread | batch q/s, 2 threads |",
              "|---|---|---|---|---|---|---|---|"]

    def table(name: str, build: float, rows: list[dict], knob: str) -> None:
        by_knob: dict = {}
        for r in rows:
            by_knob.setdefault(r[knob], {})[r["threads"]] = r
        for value, per in sorted(by_knob.items()):
            one, two = per.get(1, {}), per.get(2, {})
            lines.append(f"| {name} | {build:.0f} | {knob} {value} | {two.get('recall', one.get('recall', 0)):.3f} | "
                         f"{one.get('single_queries_per_second', 0):,.0f} | {two.get('single_queries_per_second', 0):,.0f} | "
                         f"{one.get('batch_queries_per_second', 0):,.0f} | {two.get('batch_queries_per_second', 0):,.0f} |")

    table("Kith IVF, 8-bit + re-rank", build_seconds, kith_rows, "nprobe")
    table("Kith IVF, fp16 + re-rank", half_seconds, half_rows, "nprobe")
    for name, rows in faiss_rows.items():
        table(f"FAISS {name}", builds[name], [dict(r, nprobe=r["knob"]) if name != "HNSW32" else dict(r, efSearch=r["knob"]) for r in rows],
              "nprobe" if name != "HNSW32" else "efSearch")
    lines += ["", "At recall@10 ≥ 0.95, the fastest setting of each (q/s; Kith's ratio to it):", "",
              "| index | single, 1 thread | single, 2 threads | batch, 1 thread | batch, 2 threads |", "|---|---|---|---|---|"]
    kith_best = {}
    for threads in (1, 2):
        for mode in ("single", "batch"):
            key = f"{mode}_queries_per_second"
            kith_best[(mode, threads)] = best_at([r for r in kith_rows if r["threads"] == threads], key)
    def fmt(best, key, ours=None):
        if not best:
            return "—"
        text = f"{best[key]:,.0f}"
        if ours:
            text += f" ({ours[key] / best[key]:.2f})"
        return text
    cells = [fmt(kith_best[(m, t)], f"{m}_queries_per_second") for t in (1, 2) for m in ("single",)] + \
            [fmt(kith_best[(m, t)], f"{m}_queries_per_second") for t in (1, 2) for m in ("batch",)]
    lines.append("| Kith | " + " | ".join(cells) + " |")
    for name, rows in faiss_rows.items():
        cells = []
        for m in ("single", "batch"):
            for t in (1, 2):
                key = f"{m}_queries_per_second"
                cells.append(fmt(best_at([r for r in rows if r["threads"] == t], key), key, kith_best[(m, t)]))
        lines.append(f"| FAISS {name} | " + " | ".join(cells) + " |")
    mib = lambda b: f"{b / 2**20:,.0f} MiB"
    lines += ["", f"Kith: adding the vectors {add_seconds:.0f} s (`add-vectors`, 5,000 per transaction); build-ann {build_seconds:.0f} s "
              f"to train and code (the build column), then {calibrate_seconds:.0f} s to calibrate the default probes; "
              f"data.mdb {mib(size_before)} before and {mib(size_after)} after (the 8-bit codes and lists), {mib(half_size)} "
              f"with half-precision codes instead (built in {half_seconds:.0f} s). "
              f"Default probes calibrated by the build: {status['configuration']['probes']} "
              f"(recall@10 {status.get('calibrated_recall') or 0:.3f} on the index's own items). "
              f"Opening the index and answering a first query: exact {exact_rows[0]['seconds']:.2f} s with {mib(exact_rows[0]['rss_anon_bytes'])} "
              f"of the process's own memory (the vectors are read in place; {mib(exact_rows[0]['rss_file_bytes'])} of the index's pages mapped), "
              f"approximate {kith_open['seconds']:.2f} s with {mib(kith_open['rss_anon_bytes'])} "
              f"(and {mib(kith_open['rss_file_bytes'])} mapped). "
              f"Resident memory of a fresh process answering the batch at {probes} probes (2 threads): Kith {mib(kith_memory['rss_anon_bytes'])} "
              f"of its own and {mib(kith_memory['rss_file_bytes'])} of the index's pages mapped (page cache, shared; the kernel maps "
              f"64 KiB around each page touched): {mib(kith_mapped['codes_bytes'])} of codes (and their ids), "
              f"{mib(kith_mapped['vectors_bytes'])} of float32 vectors read to re-rank, {mib(kith_mapped['other_bytes'])} of item records "
              f"and B-tree pages (`kith bench ann --mapped-pages`); FAISS IVF-SQ8 after `read_index` {mib(faiss_memory['RssAnon'])} of its own "
              f"(VmRSS {mib(faiss_memory['VmRSS'])}). "
              f"After the 8-bit sweep (9 settings × 1,200 queries) the process held {mib(kith_rows[-1]['rss_anon_bytes'])} of its own "
              f"and {mib(kith_rows[-1]['rss_file_bytes'])} of the index's pages (the page cache's, shared with any other process "
              "that opens the index; FAISS holds its codes in its own memory). "
              f"Exact search on the same index: {exact_rows[1]['single_queries_per_second']:,.1f} single q/s, "
              f"{exact_rows[1]['batch_queries_per_second']:,.1f} batch q/s (2 threads)."]
    lines += ["", f"Interleaved: batches of the 1,000 queries at {probes} probes, Kith and FAISS IVF-SQ8 in alternating fresh "
              "processes, 5 rounds of two timed batches each (after one to warm up); medians, Kith's ratio, and the ranges:", "",
              "| threads | Kith batch q/s | FAISS IVF-SQ8 batch q/s | ratio | Kith's range | FAISS's range |", "|---|---|---|---|---|---|"]
    for t, r in interleaved.items():
        lines.append(f"| {t} | {r['kith']:,.0f} | {r['faiss']:,.0f} | {r['kith'] / r['faiss']:.2f} | "
                     f"{min(r['kith_all']):,.0f}–{max(r['kith_all']):,.0f} | {min(r['faiss_all']):,.0f}–{max(r['faiss_all']):,.0f} |")
    if args.ann_real:
        lines += ["", ann_real(probes_list)]
    if filtered:
        f = filtered[0]
        lines += ["", f"Filtered (label l7 of 100, {n // 100:,} items): recall@10 {f['recall']:.3f} against exact search "
                  f"within the label, {f['single_queries_per_second']:,.0f} single and {f['batch_queries_per_second']:,.0f} batch q/s (2 threads)."]
    return "\n".join(lines)


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


def write_npy_labels(folder: str, name: str, x: np.ndarray, labels: list[str]) -> tuple[str, str]:
    path = os.path.join(folder, f"{name}.npy")
    np.save(path, x)
    with open(os.path.join(folder, f"{name}.txt"), "w") as f:
        f.write("\n".join(labels) + "\n")
    return path, os.path.join(folder, f"{name}.txt")


def heads(args) -> str:
    import sklearn
    from sklearn.linear_model import LogisticRegression
    tmp = tempfile.mkdtemp(prefix="kith-bench-heads-")
    lines = [f"Measured by `tools/bench heads --rounds {args.rounds}` on {time.strftime('%Y-%m-%d')}: multinomial logistic "
             f"regression (C = 1, L-BFGS) fitted on the same float32 support set by Kith's head and by scikit-learn "
             f"{sklearn.__version__}'s `LogisticRegression()`, both on one thread; synthetic 1280-d unit vectors around random class "
             "means (tools/bench.py `clusters`); accuracy on held-out queries of the same classes; best of the rounds.", "",
             "| support set | Kith ms/fit | scikit-learn ms/fit | speed-up | Kith accuracy | scikit-learn accuracy | same predictions |",
             "|---|---|---|---|---|---|---|"]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    for name, classes, shots, queries, repeats in [("5-way 5-shot", 5, 5, 15, 50), ("64-way 100-shot", 64, 100, 20, 2)]:
        xs, ys, xq, yq = clusters(classes, shots, queries, 1280, seed=classes)
        support, labels = write_npy_labels(tmp, "support", xs, ys)
        qpath = os.path.join(tmp, "queries.npy")
        np.save(qpath, xq)
        kith_ms = sk_ms = float("inf")
        for r in range(args.rounds):
            out = subprocess.run([KITH, "bench", "heads", "--json", "--support", support, "--labels", labels, "--queries", qpath,
                                  "--repeats", str(repeats)], check=True, capture_output=True, text=True, env=env).stdout
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
        lines.append(f"| {name} ({len(ys)} vectors) | {kith_ms:.2f} | {sk_ms:.2f} | {sk_ms / kith_ms:.1f}× | {acc_k:.4f} | {acc_s:.4f} | {same:.2%} |")
    return "\n".join(lines)


def embed_folder(folder: str, out: str) -> tuple[str, str, list[str]]:
    """`kith embed` of a folder tree: the .npy, a label file (parent folder names) and the paths."""
    subprocess.run([KITH, "embed", folder, "--format", "npy", "--output", out], check=True, capture_output=True)
    paths = open(out + ".paths.txt").read().splitlines()
    labels = [os.path.basename(os.path.dirname(p)) for p in paths]
    with open(out + ".labels.txt", "w") as f:
        f.write("\n".join(labels) + "\n")
    return out, out + ".labels.txt", paths


def glyph_folder() -> str:
    """The glyph set of tools/make_glyphs.py (up to 40 fonts), built once under bench-out/."""
    folder = os.path.join(ROOT, "bench-out", "glyphs")
    if not os.path.isdir(folder):
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_glyphs.py"), folder, "--max-fonts", "40"], check=True)
    return folder


def fashion_folder() -> str:
    """3,000 Fashion-MNIST test images, one folder per class, built once under bench-out/."""
    folder = os.path.join(ROOT, "bench-out", "fashion-t10k")
    if not os.path.isdir(folder):
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_fashion_mnist.py"), folder, "--split", "t10k", "--count", "3000"],
                       check=True, capture_output=True)
    return folder


# Heads and options of the few-shot section: every head plain, then each option on the heads it may help.
FEWSHOT_HEADS = ["logreg", "prototype", "knn", "copa", "logreg+whiten", "prototype+whiten", "copa+whiten", "knn+whiten",
                 "prototype+whiten=1", "prototype+whiten=10", "logreg+angular", "prototype+angular", "prototype+whiten+angular",
                 "logreg+expand=10", "prototype+expand=10", "logreg+whiten+expand=10", "prototype+whiten+expand=10",
                 "logreg+adjust", "copa+steps=200"]
LONG_TAIL_HEADS = ["logreg", "logreg+balanced", "logreg+adjust", "logreg+balanced+adjust", "prototype", "prototype+adjust",
                   "knn", "knn+adjust", "copa", "copa+adjust", "prototype+whiten", "prototype+whiten+adjust",
                   "logreg+whiten", "logreg+whiten+adjust"]


def kith_eval(npy: str, labels: str, out: str, shot: int, heads: list[str], *extra: str) -> dict:
    """`kith eval fewshot` of `heads` on 600 seeded 5-way episodes; the JSON it writes."""
    cmd = [KITH, "eval", "fewshot", npy, "--labels", labels, "--way", "5", "--shot", str(shot), "--episodes", "600",
           "--json", out, *extra]
    for head in heads:
        cmd += ["--head", head]
    subprocess.run(cmd, check=True, capture_output=True)
    return json.load(open(out))


def cell(values: list[float]) -> str:
    a = np.array(values)
    return f"{100 * a.mean():.2f} ± {100 * 1.96 * a.std() / np.sqrt(len(a)):.2f}"


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
        add(kith_eval(npy, label_file, os.path.join(tmp, f"coarse-{shot}.json"), shot, FEWSHOT_HEADS, *coarse_args, "--within-coarse"),
            f"coarse {shot}")
        print(f"fewshot {shot}-shot done", file=sys.stderr)
    columns = ["mixed 1", "mixed 5", "coarse 1", "coarse 5"]
    base = table["logreg"]["mixed 1"]
    lines = [f"Measured by `tools/bench fewshot` on {time.strftime('%Y-%m-%d')}: the glyph set of tools/make_glyphs.py "
             f"({len(classes)} characters of {len(scripts)} scripts × up to 40 fonts, {len(labels):,} images), "
             "EfficientNet-Lite0 embeddings from `kith embed`, 600 episodes of 5-way K-shot with 15 queries per class "
             "(seed 0), every head on the same episodes (`kith eval fewshot --json` writes them). Accuracy in % ± 95% CI. "
             "*Mixed*: any 5 characters; *within script*: 5 characters of one script (`--within-coarse`, coarse label = "
             "script). Options that need the collection draw on the glyph set itself without labels (whitening statistics "
             "of every image; as neighbours for `expand`, the images outside the episode; coarse means without the "
             "episode's queries): what an index of the glyphs would give them.", "",
             "| head | mixed 1-shot | mixed 5-shot | within script 1-shot | within script 5-shot |", "|---|---|---|---|---|"]
    for name, cells in list(table.items()) + list(baselines.items()):
        lines.append(f"| {name if name in baselines else '`' + name + '`'} | " + " | ".join(cells.get(c, "") for c in columns) + " |")

    # 2. Without leaks: statistics and neighbours from the other half of the characters.
    half = set(classes[0::2])
    evaluated = [i for i, label in enumerate(labels) if label in half]
    other = [i for i, label in enumerate(labels) if label not in half]
    np.save(os.path.join(tmp, "half.npy"), x[evaluated])
    np.save(os.path.join(tmp, "other.npy"), x[other])
    with open(os.path.join(tmp, "half.labels.txt"), "w") as f:
        f.write("\n".join(labels[i] for i in evaluated) + "\n")
    leak_heads = ["logreg", "prototype", "logreg+whiten=1", "prototype+whiten=1", "prototype+whiten", "copa+whiten=1",
                  "logreg+whiten=1+expand=10", "prototype+whiten=1+expand=10"]
    held: dict = {}
    for shot in (1, 5):
        result = kith_eval(os.path.join(tmp, "half.npy"), os.path.join(tmp, "half.labels.txt"), os.path.join(tmp, f"half-{shot}.json"),
                           shot, leak_heads, "--collection", os.path.join(tmp, "other.npy"))
        for r in result["results"]:
            held.setdefault(r["head"], {})[shot] = cell(r["accuracies"])
    lines += ["", f"Without leaks: episodes from every other character ({len(half)} classes, {len(evaluated):,} images); whitening "
              f"statistics and `expand`'s neighbours from the images of the other {len(classes) - len(half)} characters only "
              "(`--collection`).", "", "| head | 5-way 1-shot | 5-way 5-shot |", "|---|---|---|"]
    lines += [f"| `{name}` | {cells[1]} | {cells[5]} |" for name, cells in held.items()]

    # 3. Another seed for the headline comparison.
    again = kith_eval(npy, label_file, os.path.join(tmp, "seed1.json"), 1, ["logreg", "prototype", "logreg+whiten", "prototype+whiten"],
                      "--seed", "1")
    lines += ["", "The same 1-shot comparison on the 600 episodes of seed 1: " +
              "; ".join(f"`{r['head']}` {cell(r['accuracies'])}" for r in again["results"]) + "."]

    # 4. Long tails: Zipf shots from M down to 1, balanced queries; balanced accuracy and the rarest third.
    fashion = fashion_folder()
    fnpy, flabels, _ = embed_folder(fashion, os.path.join(tmp, "fashion.npy"))
    tail: dict = {}
    for name, (data_npy, data_labels, shots, queries) in {"glyphs": (npy, label_file, 20, 10), "fashion": (fnpy, flabels, 50, 15)}.items():
        result = kith_eval(data_npy, data_labels, os.path.join(tmp, f"tail-{name}.json"), shots, LONG_TAIL_HEADS, "--long-tail",
                           "--queries", str(queries))
        for r in result["results"]:
            tail.setdefault(r["head"], {})[name] = (cell(r["accuracies"]), cell(r["rarest_accuracies"]))
    def zipf(m: int) -> str:  # EpisodeConfiguration.shotsPerClass
        return ", ".join(str(max(1, int(np.floor(m * r ** (-np.log(m) / np.log(5)) + 0.5)))) for r in range(1, 6))
    lines += ["", "Long-tailed support sets (`--long-tail`): in each 5-way episode the classes get M, …, 1 shots along a Zipf "
              f"law (M = 20 on the glyph set with 10 queries per class: {zipf(20)}; M = 50 on 3,000 Fashion-MNIST test "
              f"images with 15: {zipf(50)}), queries balanced, so the accuracy is the balanced accuracy; *rarest* is "
              "the accuracy on the queries of the two classes with the fewest shots. 600 episodes, seed 0.", "",
              "| head | glyphs: balanced | glyphs: rarest third | Fashion-MNIST: balanced | Fashion-MNIST: rarest third |",
              "|---|---|---|---|---|"]
    lines += [f"| `{name}` | {c['glyphs'][0]} | {c['glyphs'][1]} | {c['fashion'][0]} | {c['fashion'][1]} |" for name, c in tail.items()]

    # 5. Fitting time of one episode's heads on one core (`kith bench heads`).
    timing = []
    for shot in (1, 5):
        ep = json.load(open(os.path.join(tmp, f"mixed-{shot}.json")))["episodes"][0]
        support, support_labels = write_npy_labels(tmp, f"episode-{shot}", x[ep["support"]], [labels[i] for i in ep["support"]])
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
        for head in ("prototype", "logreg", "copa"):
            best = min(json.loads(subprocess.run([KITH, "bench", "heads", "--json", "--support", support, "--labels", support_labels,
                                                  "--head", head, "--repeats", "200"], check=True, capture_output=True, text=True,
                                                 env=env).stdout)["milliseconds_per_fit"] for _ in range(args.rounds))
            timing.append(f"`{head}` {shot}-shot {best:.3f} ms")
    lines += ["", "Fitting one 5-way episode's head on one core (`kith bench heads`, best of the rounds): " + "; ".join(timing) + "."]
    return "\n".join(lines)


WHITENING_HEADS = ["logreg", "prototype", "copa", "prototype+whiten=1", "prototype+whiten", "prototype+whiten=30",
                   "prototype+whiten=1000", "copa+whiten", "logreg+expand=10", "prototype+whiten+expand=10"]


def whitening(args) -> str:
    """Whitening against the number of classes: the glyph set (231 characters) beside Fashion-MNIST (10 classes)."""
    glyphs, fashion = glyph_folder(), fashion_folder()
    tmp = tempfile.mkdtemp(prefix="kith-bench-whitening-")
    table: dict = {}
    for name, folder in [("glyphs", glyphs), ("fashion", fashion)]:
        npy, labels, _ = embed_folder(folder, os.path.join(tmp, f"{name}.npy"))
        for shot in (1, 5):
            for r in kith_eval(npy, labels, os.path.join(tmp, f"{name}-{shot}.json"), shot, WHITENING_HEADS)["results"]:
                table.setdefault(r["head"], {})[(name, shot)] = cell(r["accuracies"])
    lines = [f"Measured by `tools/bench whitening` on {time.strftime('%Y-%m-%d')}: whitening's shrinkage α against the number of "
             "classes, on the glyph set (231 characters, 8,796 images) and on 3,000 Fashion-MNIST test images (10 classes), "
             "EfficientNet-Lite0 embeddings from `kith embed`; statistics from every image of the data set (labels unused), "
             "600 episodes of 5-way K-shot, 15 queries, seed 0. `whiten=1000` is in effect centring on the collection's mean.", "",
             "| head | glyphs 1-shot | glyphs 5-shot | Fashion-MNIST 1-shot | Fashion-MNIST 5-shot |", "|---|---|---|---|---|"]
    for head, cells in table.items():
        lines.append(f"| `{head}` | " + " | ".join(cells[k] for k in [("glyphs", 1), ("glyphs", 5), ("fashion", 1), ("fashion", 5)]) + " |")
    return "\n".join(lines)


VIEW_HEADS = ["logreg", "logreg+views", "prototype", "prototype+views", "copa", "copa+views", "logreg+whiten", "logreg+whiten+views",
              "prototype+whiten", "prototype+whiten+views"]


def views(args) -> str:
    """SCL's augmented support sets: an index of the glyph set (and of Fashion-MNIST, where mirroring keeps the label)
    with 4 stored views per labelled image, every head with and without them on the same episodes."""
    glyphs, fashion = glyph_folder(), fashion_folder()
    indexes = tempfile.mkdtemp(prefix="kith-bench-views-")
    rows: dict = {}
    timings = []
    for name, folder, flip in [("glyphs", glyphs, False), ("fashion", fashion, True)]:
        run = lambda *a: subprocess.run([KITH, *a, "--indexes", indexes], check=True, capture_output=True, text=True).stdout
        run("index", "create", name)
        run("index", "add", name, folder, "--label-from-folder", "--thumbnail-size", "0")
        start = time.perf_counter()
        out = run("index", "views", name, "--count", "4", *(["--flip"] if flip else []))
        timings.append(f"{name}: {time.perf_counter() - start:.0f} s ({out.strip().splitlines()[-1]})")
        for shot in (1, 5):
            path = os.path.join(indexes, f"{name}-{shot}.json")
            cmd = ["eval", "fewshot", name, "--way", "5", "--shot", str(shot), "--episodes", "600", "--json", path]
            for head in VIEW_HEADS:
                cmd += ["--head", head]
            run(*cmd)
            for r in json.load(open(path))["results"]:
                rows.setdefault(r["head"], {})[(name, shot)] = cell(r["accuracies"])
        print(f"views {name} done", file=sys.stderr)
    lines = [f"Measured by `tools/bench views` on {time.strftime('%Y-%m-%d')}: indexes of the glyph set (8,796 images, "
             "labelled by character, no mirroring) and of 3,000 Fashion-MNIST test images (labelled by class; mirrored "
             "views allowed, `--flip`), EfficientNet-Lite0; `kith index views NAME --count 4` stores 4 views per labelled "
             "image (crop 0.75–1 of the side, turn ±10°, seed 0); then `kith eval fewshot NAME` scores every head with and "
             "without `+views` on the same 600 episodes (5-way, 15 queries, seed 0) of the index's labelled items. "
             "Accuracy in % ± 95% CI. Time to make the views (one forward pass per view, 2 threads): " + "; ".join(timings) + ".", "",
             "| head | glyphs 1-shot | glyphs 5-shot | Fashion-MNIST 1-shot | Fashion-MNIST 5-shot |", "|---|---|---|---|---|"]
    for head, cells in rows.items():
        lines.append(f"| `{head}` | " + " | ".join(cells.get(k, "") for k in [("glyphs", 1), ("glyphs", 5), ("fashion", 1), ("fashion", 5)]) + " |")
    return "\n".join(lines)


def fashion_gallery() -> str:
    """2,000 Fashion-MNIST test images and a near-duplicate query for each (tools/make_fashion_gallery.py), built once."""
    data = os.path.join(ROOT, "bench-out", "fashion-gallery")
    if not os.path.isdir(data):
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_fashion_gallery.py"), data, "--count", "2000"], check=True)
    return data


ADAPT_HEADS = ["logreg", "prototype", "prototype+whiten=1000", "logreg+whiten"]


def split_classes(folder: str, count: int, destination: str) -> tuple[list[str], dict]:
    """Up to `count` classes of `folder` at random (seed 0), halved into seen and unseen and copied to
    destination/seen and destination/unseen; returns the classes and the halves."""
    import random
    classes = sorted(os.listdir(folder))
    random.Random(0).shuffle(classes)
    classes = classes[:count]
    halves = {"seen": classes[: len(classes) // 2], "unseen": classes[len(classes) // 2:]}
    for half, names in halves.items():
        for c in names:
            shutil.copytree(os.path.join(folder, c), os.path.join(destination, half, c))
    return classes, halves


def fashion_indexes(args, run) -> str:
    """Indexes `train` (args.adapt_items Fashion-MNIST training images, built once under bench-out/) and `gallery`
    (the near-duplicate gallery's 2,000 test images), without labels; returns the gallery's folder."""
    gallery = fashion_gallery()
    train = os.path.join(ROOT, "bench-out", f"fashion-train{args.adapt_items}")
    if not os.path.isdir(train):
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_fashion_mnist.py"), train, "--split", "train",
                        "--count", str(args.adapt_items)], check=True, capture_output=True)
    run("index", "create", "train")
    run("index", "add", "train", train, "--thumbnail-size", "0")
    run("index", "create", "gallery")
    run("index", "add", "gallery", os.path.join(gallery, "gallery"), "--thumbnail-size", "0")
    return gallery


def adapt(args) -> str:
    """`kith adapt` without leaks: NNCLR's head learnt on the images of half the glyph classes (and on Fashion-MNIST
    training images), then few-shot accuracy on the other half (and near-duplicate recall on test images), in the
    backbone's space and in the adapted one, with and without the queue."""
    glyphs = glyph_folder()
    work = tempfile.mkdtemp(prefix="kith-bench-adapt-")
    classes, halves = split_classes(glyphs, args.adapt_classes, work)
    indexes = os.path.join(work, "indexes")
    run = lambda *a: subprocess.run([KITH, *a, "--indexes", indexes], check=True, capture_output=True, text=True).stdout
    run("index", "create", "seen")
    run("index", "add", "seen", os.path.join(work, "seen"), "--thumbnail-size", "0")  # no labels: adapting never sees one
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
            cmd = ["eval", "fewshot", "unseen", "--way", "5", "--shot", str(shot), "--episodes", "600", "--json", path,
                   "--space", "backbone" if space == "backbone" else "adapted"]
            for head in ADAPT_HEADS:
                cmd += ["--head", head]
            run(*cmd)
            for r in json.load(open(path))["results"]:
                rows.setdefault(r["head"], {})[(space, shot)] = cell(r["accuracies"])

    # Each variant: (column, extra kith adapt options). Jitter and blur change the views' recipe, so
    # their views are made anew (the time of the first of them includes those forward passes).
    rich = ("--jitter", "--blur")
    variants = [("adapted", ()), ("no queue", ("--no-queue",)), ("adapted, jitter + blur", rich),
                ("no queue, jitter + blur", ("--no-queue", *rich))]
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
        out = run("eval", "retrieval", "gallery", "--queries", os.path.join(gallery, "queries.tsv"), "--json",
                  "--space", "backbone" if space == "backbone" else "adapted")
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
    lines = [f"Measured by `tools/bench adapt` on {time.strftime('%Y-%m-%d')}, EfficientNet-Lite0, `kith adapt` defaults "
             f"({epochs} epochs, 4 views per item drawn for each image, 128 items per step, a queue of 8,192 or one entry per "
             "item if fewer, a residual head 1280 → 1024 → 1024 → 256 plus the collection's 256 principal directions, measured "
             "every 5 epochs and the best kept). "
             f"Glyphs: the {len(classes)} characters split at random (seed 0) into {len(halves['seen'])} seen ({n_seen:,} images, added "
             f"without labels and adapted on: {glyph_times['adapted']}) and {len(halves['unseen'])} unseen ({n_unseen:,} images, labelled); "
             "the head is copied to the unseen index (`kith adapt unseen --head-from seen`) and `kith eval fewshot unseen` "
             "scores the same 600 episodes (5-way, 15 queries, seed 0) in each space. Accuracy in % ± 95% CI. "
             f"No queue: the ablation (`--no-queue`, each view's own projection as its positive; training only, the views "
             f"are stored: {glyph_times['no queue']}). Jitter + blur: views with `--jitter --blur` (colour jitter on every "
             f"view, a Gaussian blur on every other; views and training: {glyph_times['adapted, jitter + blur']})."]
    for shot in (1, 5):
        lines += ["", f"| head, {shot}-shot | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for head, cells in rows.items():
            lines.append(f"| `{head}` | " + " | ".join(cells.get((space, shot), "") for space in columns) + " |")
    lines += ["", f"Fashion-MNIST: adapted on {args.adapt_items:,} training images (`--flip`: mirrored views; views and "
              f"training together {fashion_times['adapted']}: the time and memory of adapting on {args.adapt_items:,} items on this "
              f"2-core machine; with jitter and blur {fashion_times['adapted, jitter + blur']}), the head copied to an index of "
              "2,000 test images; `kith eval retrieval` of their near-duplicate queries (tools/make_fashion_gallery.py).", "",
              "| space | recall@1 | recall@5 | recall@10 |", "|---|---|---|---|"]
    for space, r in recalls.items():
        lines.append(f"| {space} | {r['recall@1']:.4f} | {r['recall@5']:.4f} | {r['recall@10']:.4f} |")
    return "\n".join(lines)


def retrieval(args) -> str:
    from PIL import Image
    data = fashion_gallery()
    tmp = tempfile.mkdtemp(prefix="kith-bench-retrieval-")
    env = dict(os.environ, KITH_INDEXES=tmp)
    subprocess.run([KITH, "index", "create", "gallery"], check=True, capture_output=True, env=env)
    subprocess.run([KITH, "index", "add", "gallery", os.path.join(data, "gallery"), "--label-from-folder"], check=True, capture_output=True, env=env)
    out = subprocess.run([KITH, "eval", "retrieval", "gallery", "--queries", os.path.join(data, "queries.tsv"), "--json"],
                         check=True, capture_output=True, text=True, env=env).stdout
    kith = json.loads(out)
    pairs = [line.split("\t") for line in open(os.path.join(data, "queries.tsv")).read().splitlines()]

    def pixels(path):
        v = np.asarray(Image.open(path).convert("L").resize((28, 28), Image.BILINEAR), np.float32).ravel()
        v = v - v.mean()
        return v / (np.linalg.norm(v) + 1e-9)
    gallery = np.stack([pixels(t) for _, t in pairs])
    queries = np.stack([pixels(os.path.join(data, q)) for q, _ in pairs])
    ranks = np.argsort(-(queries @ gallery.T), axis=1)[:, :10]
    raw = {k: float(np.mean([i in ranks[i, :k] for i in range(len(pairs))])) for k in (1, 5, 10)}
    lines = [f"Measured by `tools/bench retrieval` on {time.strftime('%Y-%m-%d')}: {len(pairs):,} Fashion-MNIST test images as "
             "the gallery (`kith index add`), one near-duplicate query per image (rotation, crop, brightness, blur, JPEG "
             "quality 20–40; tools/make_fashion_gallery.py); `kith eval retrieval`. Raw pixels: 28 × 28 grey values, mean-"
             "centred, cosine.", "",
             "| method | recall@1 | recall@5 | recall@10 |", "|---|---|---|---|",
             f"| Kith, EfficientNet-Lite0 | {kith['recall@1']:.4f} | {kith['recall@5']:.4f} | {kith['recall@10']:.4f} |",
             f"| raw pixels | {raw[1]:.4f} | {raw[5]:.4f} | {raw[10]:.4f} |"]
    return "\n".join(lines)


def parse_wrk(text: str) -> dict:
    import re
    def ms(v, unit):
        return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    out = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))}
    for p in ("50", "99"):
        m = re.search(rf"\s{p}(?:\.000)?%\s+([\d.]+)(us|ms|s)", text)
        out[f"p{p}"] = ms(m.group(1), m.group(2)) if m else float("nan")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    out["errors"] = int(errors.group(1)) if errors else 0
    return out


def server(args) -> str:
    import shutil
    import signal
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: tools/setup installs it")
    tmp = tempfile.mkdtemp(prefix="kith-bench-server-")
    env = dict(os.environ, KITH_INDEXES=os.path.join(tmp, "indexes"))
    n, d = 100_000, 1280
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    np.save(os.path.join(tmp, "vectors.npy"), x)
    with open(os.path.join(tmp, "labels.txt"), "w") as f:
        f.write("\n".join(f"c{i % 10}" if i < 1000 else "" for i in range(n)) + "\n")
    q = rng.standard_normal((1, d), dtype=np.float32)
    np.save(os.path.join(tmp, "query.npy"), q)
    del x
    subprocess.run([KITH, "index", "create", "big"], check=True, capture_output=True, env=env)
    subprocess.run([KITH, "index", "add-vectors", "big", os.path.join(tmp, "vectors.npy"), "--labels", os.path.join(tmp, "labels.txt")],
                   check=True, capture_output=True, env=env)
    image = os.path.join(ROOT, "Tests", "Fixtures", "images", "chelsea.jpg")
    vector = json.dumps(q[0].tolist())
    query_npy = os.path.join(tmp, "query.npy")

    def binary(path, content_type):
        return f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "{content_type}"\nlocal f = io.open("{path}", "rb")\nwrk.body = f:read("*a")\nf:close()\n'
    # operation -> (path, wrk script, library operation)
    scripts = {
        "search (.npy body)": ("/v1/indexes/big/search?k=10", binary(query_npy, "application/x-npy"), "search"),
        "classify (.npy body)": ("/v1/indexes/big/classify?head=logreg", binary(query_npy, "application/x-npy"), "classify"),
        "classify (JSON body)": ("/v1/indexes/big/classify", f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = [==[{{"vectors": [{vector}], "head": "logreg"}}]==]\n', "classify"),
        "embed (JPEG body)": ("/v1/embed", binary(image, "image/jpeg"), "embed"),
    }
    lua_files = {}
    for i, (name, (_, lua, _)) in enumerate(scripts.items()):
        lua_files[name] = os.path.join(tmp, f"script-{i}.lua")
        with open(lua_files[name], "w") as f:
            f.write(lua)
    best = {op: {"library": None, "server": None} for op in scripts}
    seconds = max(3, int(args.seconds * 2))
    for r in range(args.rounds):
        library: dict = {}
        for op in ("search", "classify", "embed"):
            cmd = [KITH, "bench", "engine", "--json", "--operation", op, "--concurrency", "8", "--seconds", str(seconds)]
            cmd += ["--image", image] if op == "embed" else ["--index", "big", "--vector", query_npy]
            row = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout)
            library[op] = {"rps": row.get("requests_per_second", row.get("images_per_second")), "p50": row.get("p50_ms"), "p99": row.get("p99_ms")}
        for name, (_, _, op) in scripts.items():
            if best[name]["library"] is None or library[op]["rps"] > best[name]["library"]["rps"]:
                best[name]["library"] = library[op]
        serve = subprocess.Popen([KITH, "serve", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        port = int(serve.stdout.readline().strip().rsplit(":", 1)[1])
        base = f"http://127.0.0.1:{port}"
        for op, (path, _, _) in scripts.items():  # warm up: load the snapshot, fit the head, load the backbone
            subprocess.run(["wrk", "-t1", "-c1", "-d1s", "-s", lua_files[op], base + path], check=True, capture_output=True)
        for op, (path, _, _) in scripts.items():
            out = subprocess.run(["wrk", "-t2", "-c8", f"-d{seconds}s", "--latency", "-s", lua_files[op], base + path],
                                 check=True, capture_output=True, text=True).stdout
            res = parse_wrk(out)
            if best[op]["server"] is None or res["rps"] > best[op]["server"]["rps"]:
                best[op]["server"] = res
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=30)
        print(f"server: round {r + 1}/{args.rounds} done", file=sys.stderr)
    shutil.rmtree(tmp)
    lines = [f"Measured by `tools/bench server --rounds {args.rounds}` on {time.strftime('%Y-%m-%d')}: `kith serve` on 127.0.0.1 "
             f"under `wrk -t2 -c8 -d{seconds}s` (8 connections, one query or one image per request; wrk runs on the same 2 cores), "
             "against the same operations called on the library by 8 concurrent callers in one process (`kith bench engine`; "
             "embed there is the encoder on batches of 16). Search: top-10 over 100,000 random 1280-d items; classify: the "
             "logistic-regression head fitted once on 1,000 labelled items and cached; embed: a 451 × 300 JPEG. Best of the rounds.", "",
             "| operation | library req/s | server req/s | server / library | server p50 ms | server p99 ms | library p50 ms | library p99 ms | non-2xx |",
             "|---|---|---|---|---|---|---|---|---|"]
    for op, b in best.items():
        lib, srv = b["library"], b["server"]
        fmt = lambda v: "–" if v is None else f"{v:.2f}"
        lines.append(f"| {op} | {lib['rps']:,.1f} | {srv['rps']:,.1f} | {srv['rps'] / lib['rps']:.2f} | {srv['p50']:.2f} | {srv['p99']:.2f} | "
                     f"{fmt(lib['p50'])} | {fmt(lib['p99'])} | {srv['errors']} |")
    return "\n".join(lines)


def client(args) -> str:
    """The NNCLR queue step of examples/nnclr_queue.py over loopback, beside the same NN in numpy."""
    import signal
    tmp = tempfile.mkdtemp(prefix="kith-bench-client-")
    env = dict(os.environ, KITH_INDEXES=os.path.join(tmp, "indexes"))
    serve = subprocess.Popen([KITH, "serve", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    url = "http://" + serve.stdout.readline().strip().rsplit(" ", 1)[1]
    example = os.path.join(ROOT, "examples", "nnclr_queue.py")
    reports = []
    try:
        for r in range(args.rounds):
            out = subprocess.run([sys.executable, example, "--url", url, "--index", f"nnclr-{r}", "--steps", "30"],
                                 check=True, capture_output=True, text=True).stdout
            reports.append(json.loads(out))
            print(f"client: round {r + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=30)
        shutil.rmtree(tmp)
    lines = [f"Measured by `tools/bench client --rounds {args.rounds}` on {time.strftime('%Y-%m-%d')}: `examples/nnclr_queue.py` "
             "against `kith serve` on 127.0.0.1, a vector index (256-d) whose queue holds 65,536 entries; each step asks NN(z, Q) for a batch "
             "of 256 (an .npy body each way) and enqueues the batch (evicting 256). numpy: the same NN (z @ Qᵀ, argmax) on the client's "
             "mirror of the queue, in process; floor: an empty request's round trip. Medians of 30 steps per round; every answer "
             "agreed with numpy's.", "",
             "| round | step ms (NN + enqueue) | NN ms | enqueue ms | numpy NN ms | floor ms | NN / (numpy + floor) | agreement |",
             "|---|---|---|---|---|---|---|---|"]
    for r, rep in enumerate(reports):
        lines.append(f"| {r + 1} | {rep['step_ms']:.1f} | {rep['nn_ms']:.1f} | {rep['enqueue_ms']:.1f} | {rep['numpy_nn_ms']:.1f} | "
                     f"{rep['network_floor_ms']:.2f} | {rep['nn_over_numpy_plus_floor']:.2f} | {rep['agreement']:.2f} |")
    return "\n".join(lines)


def spark(args) -> str:
    """The Spark job on a standalone cluster of 1-core workers on 127.0.0.1, against one process."""
    tmp = tempfile.mkdtemp(prefix="kith-bench-spark-")
    folder = os.path.join(tmp, "fashion-mnist")
    count = args.spark_images
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_fashion_mnist.py"), folder, "--count", str(count)],
                   check=True, capture_output=True)
    python = sys.executable
    home = os.path.dirname(__import__("pyspark").__file__)
    env = dict(os.environ, KITH_CLUSTER_DIR=os.path.join(tmp, "cluster"), KITH_CLUSTER_PORT="7177",
               KITH_CLUSTER_UI_PORT="8181", PYTHON=python, PYTHONPATH=os.path.join(ROOT, "clients", "python"),
               SPARK_LOCAL_IP="127.0.0.1")
    cluster = os.path.join(ROOT, "spark", "local-cluster")
    url = subprocess.run([cluster, "start", "--workers", "2", "--cores", "1"], check=True, capture_output=True, text=True,
                         env=env).stdout.strip()
    models = os.path.join(ROOT, "models")
    runs: dict[str, list[dict]] = {}
    try:
        for r in range(args.rounds):
            for threads in (1, 2):
                indexes = os.path.join(tmp, f"indexes-{r}-{threads}")
                subprocess.run([KITH, "index", "create", "fm", "--indexes", indexes], check=True, capture_output=True)
                t0 = time.time()
                subprocess.run([KITH, "index", "add", "fm", folder, "--indexes", indexes, "--threads", str(threads),
                                "--thumbnail-size", "0"], check=True, capture_output=True)
                runs.setdefault(f"add-{threads}", []).append({"seconds": time.time() - t0})
            for executors in (1, 2):
                out = os.path.join(tmp, f"shards-{r}-{executors}")
                t0 = time.time()
                job = subprocess.run([os.path.join(home, "bin", "spark-submit"), "--master", url, "--conf", "spark.ui.enabled=false",
                                      "--conf", f"spark.pyspark.python={python}", "--executor-cores", "1",
                                      "--total-executor-cores", str(executors), os.path.join(ROOT, "spark", "kith_embed.py"),
                                      "--input", folder, "--output", out, "--kith", KITH, "--models", models,
                                      "--partition-size", "250"], check=True, capture_output=True, text=True, env=env)
                summary = json.loads(job.stdout.strip().splitlines()[-1])
                summary["wall"] = time.time() - t0
                runs.setdefault(f"spark-{executors}", []).append(summary)
                indexes = os.path.join(tmp, f"indexes-parquet-{r}-{executors}")
                subprocess.run([KITH, "index", "create", "fm", "--indexes", indexes], check=True, capture_output=True)
                t0 = time.time()
                subprocess.run([KITH, "index", "add-parquet", "fm", out, "--indexes", indexes], check=True, capture_output=True,
                               env=dict(env, KITH_PYTHON=python))
                runs.setdefault("add-parquet", []).append({"seconds": time.time() - t0})
            print(f"spark: round {r + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        subprocess.run([cluster, "stop"], env=env)
        shutil.rmtree(tmp, ignore_errors=True)
    best = {k: min(v, key=lambda x: x.get("wall", x["seconds"])) for k, v in runs.items()}
    add1, add2 = count / best["add-1"]["seconds"], count / best["add-2"]["seconds"]
    lines = [f"Measured by `tools/bench spark --rounds {args.rounds}` on {time.strftime('%Y-%m-%d')}: {count:,} Fashion-MNIST test "
             "images as 28 × 28 JPEGs, EfficientNet-Lite0. Spark: `spark/local-cluster` (a master and two workers of one core "
             "each on 127.0.0.1), `spark/kith_embed.py` with partitions of 250 images and `--threads 1` per task, "
             "`--executor-cores 1` and 1 or 2 executors; wall time of `spark-submit` from start to exit, so JVM start-up, "
             "scheduling and writing the Parquet shards are in it. Task time: the tasks' own time (kith start-up, embedding, "
             "writing a shard), summed. Beside it `kith index add` (no thumbnails) of the same folder in one process, with 1 and "
             "2 threads, and `kith index add-parquet` of the shards. Best of the rounds.", "",
             "| run | wall s | images/s | against `kith index add`, same cores | images/s per task-second |", "|---|---|---|---|---|"]
    lines.append(f"| `kith index add`, 1 thread | {best['add-1']['seconds']:.1f} | {add1:.1f} | 1.00 | |")
    lines.append(f"| `kith index add`, 2 threads | {best['add-2']['seconds']:.1f} | {add2:.1f} | 1.00 | |")
    for executors, anchor in ((1, add1), (2, add2)):
        b = best[f"spark-{executors}"]
        rate = count / b["wall"]
        lines.append(f"| Spark, {executors} executor{'s' if executors > 1 else ''} of 1 core | {b['wall']:.1f} | {rate:.1f} | "
                     f"{rate / anchor:.2f} | {count / b['task_seconds']:.1f} |")
    lines.append(f"| `kith index add-parquet` of the shards | {best['add-parquet']['seconds']:.1f} | "
                 f"{count / best['add-parquet']['seconds']:.0f} | | |")
    return "\n".join(lines)

# The heads `auto` chooses among and the fixed heads it is measured against (tools/bench auto).
AUTO_FIXED = [f"{head}{'+whiten' + alpha if alpha is not None else ''}{adjust}"
              for head, adjust in (("copa", ""), ("logreg", ""), ("prototype", ""), ("copa", "+adjust"), ("logreg", "+adjust"))
              for alpha in (None, "=1000", "=10", "")] + ["knn", "knn+adjust", "prototype+adjust", "logreg+balanced", "prototype+whiten=30"]


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
    evaluations = [("glyphs, 1-shot", gnpy, glabels, 1, []), ("glyphs, 5-shot", gnpy, glabels, 5, []),
                   ("glyphs within script, 1-shot", gnpy, glabels, 1, ["--coarse-labels", coarse, "--within-coarse"]),
                   ("glyphs within script, 5-shot", gnpy, glabels, 5, ["--coarse-labels", coarse, "--within-coarse"]),
                   ("Fashion-MNIST, 1-shot", fnpy, flabels, 1, []), ("Fashion-MNIST, 5-shot", fnpy, flabels, 5, []),
                   ("glyphs long tail 20…1", gnpy, glabels, 20, ["--long-tail", "--queries", "10"]),
                   ("Fashion-MNIST long tail 50…1", fnpy, flabels, 50, ["--long-tail"])]
    lines = [f"Measured by `tools/bench auto` on {time.strftime('%Y-%m-%d')}: `kith eval fewshot --head auto` beside every "
             "fixed head it chooses among, on the same 600 episodes (5-way, 15 queries per class unless said, seed 0) of the "
             "glyph set (231 classes) and 3,000 Fashion-MNIST test images (10 classes), EfficientNet-Lite0. `auto` chooses "
             "inside each episode from that episode's support set alone (the shrinkage by class separation, the head by "
             "stratified folds, docs/heads.md); whitening statistics from every image of the data set, labels unused, for "
             "`auto` and the fixed heads alike. The fixed heads: copa, logreg and prototype with no whitening and at every "
             "shrinkage `auto` tries (1000, 10, 3), copa and logreg with `+adjust` likewise, and knn, knn+adjust, "
             "prototype+adjust, logreg+balanced, prototype+whiten=30. Accuracy in % ± 95% CI (long tails: balanced "
             "accuracy). *Best fixed*: the best of the fixed heads on these episodes, chosen after the fact on the queries; "
             "*chosen*: the heads `auto` took, in how many episodes.", "",
             "| evaluation | `auto` | `logreg` | best fixed | auto − best | auto − logreg | chosen |", "|---|---|---|---|---|---|---|"]
    for name, npy, label_file, shot, extra in evaluations:
        result = kith_eval(npy, label_file, os.path.join(tmp, f"auto-{len(lines)}.json"), shot, ["auto"] + AUTO_FIXED, *extra)
        by = dict(zip(["auto"] + AUTO_FIXED, result["results"]))  # in the order asked (the answer writes α as 1000.0)
        mean = {h: 100 * np.mean(r["accuracies"]) for h, r in by.items()}
        best = max(AUTO_FIXED, key=lambda h: mean[h])
        chosen = ", ".join(f"`{h}` {n}" for h, n in sorted(by["auto"]["chosen"].items(), key=lambda kv: -kv[1])[:4])
        lines.append(f"| {name} | {cell(by['auto']['accuracies'])} | {cell(by['logreg']['accuracies'])} | `{best}` "
                     f"{cell(by[best]['accuracies'])} | {mean['auto'] - mean[best]:+.2f} | {mean['auto'] - mean['logreg']:+.2f} | {chosen} |")
        print(f"auto: {name} done", file=sys.stderr)
    # The cost of choosing for a 100-class 5-shot support set of glyphs, 2 threads.
    x = np.load(gnpy)
    classes = sorted(set(labels))[:100]
    rows = [i for c in classes for i in [j for j, label in enumerate(labels) if label == c][:5]]
    support, support_labels = write_npy_labels(tmp, "s100", x[rows], [labels[i] for i in rows])
    runs = [json.loads(subprocess.run([KITH, "bench", "heads", "--json", "--support", support, "--labels", support_labels, "--collection",
                                       gnpy, "--head", "auto", "--threads", "2", "--repeats", "5"], check=True, capture_output=True,
                                      text=True).stdout) for _ in range(args.rounds)]
    fastest = min(runs, key=lambda r: r["milliseconds_choosing"])
    lines += ["", f"Choosing for a 100-class 5-shot support set of glyphs (`kith bench heads --head auto --threads 2`, best of "
              f"{args.rounds} rounds of 5): **{fastest['milliseconds_choosing']:.0f} ms** (10 groups × 2 folds of 10-way 4-shot, "
              f"200 held-out predictions); with the chosen head's fit on all 500 examples {fastest['milliseconds_per_fit']:.0f} ms. "
              f"It chose `{fastest['chosen']}` at {100 * fastest['validation']:.1f}% held-out accuracy against logreg's "
              f"{100 * fastest['baseline']:.1f}%. Statistics of the collection (8,796 × 1280) are computed once per change of the "
              "items, not counted here."]
    return "\n".join(lines)


def glyph60_folder() -> str:
    """Glyph classes drawn by 60 fonts each (tools/make_glyphs.py --min-fonts 60 --max-fonts 60), built once."""
    folder = os.path.join(ROOT, "bench-out", "glyphs60")
    if not os.path.isdir(folder):
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_glyphs.py"), folder, "--min-fonts", "60", "--max-fonts", "60"],
                       check=True)
    return folder


def default_space(args) -> str:
    """After `kith adapt` with its defaults and `--head-from`: the space Kith answers in by default (the head
    measured against the backbone on the target index's data) beside the backbone's and the adapted one, on classes
    the head never saw; and near-duplicate recall on Fashion-MNIST in the default space."""
    work = tempfile.mkdtemp(prefix="kith-bench-default-")
    indexes = os.path.join(work, "indexes")
    run = lambda *a: subprocess.run([KITH, *a, "--indexes", indexes], check=True, capture_output=True, text=True).stdout

    def split(folder: str, count: int, name: str) -> tuple[str, str, int, int]:
        _, halves = split_classes(folder, count, os.path.join(work, name))
        images = {h: sum(len(os.listdir(os.path.join(work, name, h, c))) for c in halves[h]) for h in halves}
        return os.path.join(work, name, "seen"), os.path.join(work, name, "unseen"), len(halves["seen"]), images["seen"]

    def accuracies(index: str, shot: int, space: str | None) -> dict:
        path = os.path.join(work, f"{index}-{shot}-{space}.json")
        cmd = ["eval", "fewshot", index, "--way", "5", "--shot", str(shot), "--episodes", "600", "--json", path,
               "--head", "logreg", "--head", "prototype"]
        out = run(*cmd, *(["--space", space] if space else []))
        answered = out.splitlines()[0].split(" space")[0]
        return {"space": answered, **{r["head"]: r["accuracies"] for r in json.load(open(path))["results"]}}

    settings = [("30 / 30 glyph classes, 60 images each", glyph60_folder(), 60),
                ("115 / 116 glyph classes (all 231, up to 40 images)", glyph_folder(), 1000)]
    lines = [f"Measured by `tools/bench default` on {time.strftime('%Y-%m-%d')}, EfficientNet-Lite0. Glyph classes split at random "
             "(seed 0) into seen (added without labels; `kith adapt seen` with its defaults) and unseen (labelled); `kith adapt unseen "
             "--head-from seen` copies the head and measures it on the unseen index (views recall@1, `logreg` at 1 and 5 shots on "
             "its labels; docs/adapt.md), which decides the default space. `kith eval fewshot unseen` then scores the same 600 "
             "episodes (5-way, 15 queries, seed 0) in the backbone's space, the adapted one and the default (no `--space`). "
             "Accuracy in % ± 95% CI.", "",
             "| setting | measured on unseen: backbone → adapted | default | shots | head | backbone | adapted | default | default − backbone |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, folder, count in settings:
        tag = f"s{count}"
        seen, unseen, classes, images = split(folder, count, tag)
        run("index", "create", f"{tag}-seen")
        run("index", "add", f"{tag}-seen", seen, "--thumbnail-size", "0")
        run("index", "create", f"{tag}-unseen")
        run("index", "add", f"{tag}-unseen", unseen, "--label-from-folder", "--thumbnail-size", "0")
        adapted_line = run("adapt", f"{tag}-seen", "--epochs", str(args.adapt_epochs)).splitlines()[-1]
        copied = run("adapt", f"{tag}-unseen", "--head-from", f"{tag}-seen").splitlines()[-1]
        info = json.loads(run("index", "stats", f"{tag}-unseen", "--json"))["adapted"]
        figures = ", ".join(f"{m['name']} {m['backbone']:.3f} → {m['adapted']:.3f}" if m["name"] == "views" else
                            f"{m['name']} {100 * m['backbone']:.1f} → {100 * m['adapted']:.1f}" for m in info["comparison"]["measures"])
        for shot in (1, 5):
            spaces = {space: accuracies(f"{tag}-unseen", shot, space) for space in ("backbone", "adapted", None)}
            for head in ("logreg", "prototype"):
                gap = 100 * (np.mean(spaces[None][head]) - np.mean(spaces["backbone"][head]))
                lines.append(f"| {name}: {classes} seen ({images:,} images) | {figures} | {spaces[None]['space']} | {shot} | `{head}` | "
                             f"{cell(spaces['backbone'][head])} | {cell(spaces['adapted'][head])} | {cell(spaces[None][head])} | {gap:+.2f} |")
        lines.append(f"| | seen index, after `kith adapt`: {adapted_line.split(': ', 1)[-1]} | | | | | | | |")
        print(f"default: {name} done", file=sys.stderr)

    # Near-duplicates: the head of Fashion-MNIST training images, copied to the test gallery and measured there.
    gallery = fashion_indexes(args, run)
    run("adapt", "train", "--flip", "--epochs", str(args.adapt_epochs))
    measured = run("adapt", "gallery", "--head-from", "train").splitlines()[-1]
    recall = {space: json.loads(run("eval", "retrieval", "gallery", "--queries", os.path.join(gallery, "queries.tsv"), "--json",
                                    *(["--space", space] if space else []))) for space in ("backbone", "adapted", None)}
    lines += ["", f"Near-duplicates: a head adapted on {args.adapt_items:,} Fashion-MNIST training images (`--flip`), copied to an "
              "index of 2,000 test images (no labels: measured by held-out views alone) — "
              f"{measured.split(': ', 1)[-1]}. Recall@1 of their near-duplicate queries (tools/make_fashion_gallery.py): backbone "
              f"{recall['backbone']['recall@1']:.4f}, adapted {recall['adapted']['recall@1']:.4f}, default ({recall[None]['space']}) "
              f"**{recall[None]['recall@1']:.4f}**."]
    return "\n".join(lines)


def small_collections(args) -> str:
    """Why adapting on 1,800 images of 30 glyph classes lost where 4,367 of 115 gained, and what the design changes
    buy: heads adapted on seen sets of different shapes, copied to the same 30 unseen classes and measured there."""
    import random
    work = tempfile.mkdtemp(prefix="kith-bench-small-")
    indexes = os.path.join(work, "indexes")
    run = lambda *a: subprocess.run([KITH, *a, "--indexes", indexes], check=True, capture_output=True, text=True).stdout
    folder = glyph60_folder()
    classes = sorted(os.listdir(folder))
    random.Random(0).shuffle(classes)  # the same split as `default`: unseen = classes[30:60]
    sets = {"unseen": (classes[30:60], 60), "30 × 60": (classes[:30], 60), "99 × 18": (classes[:30] + classes[60:], 18)}
    for name, (names, per) in sets.items():
        for c in names:
            os.makedirs(os.path.join(work, name, c))
            for f in sorted(os.listdir(os.path.join(folder, c)))[:per]:
                shutil.copy(os.path.join(folder, c, f), os.path.join(work, name, c, f))
        tag = name.replace(" × ", "x")
        run("index", "create", tag)
        run("index", "add", tag, os.path.join(work, name), "--thumbnail-size", "0", *(["--label-from-folder"] if name == "unseen" else []))
    designs = [("before: the same 4 transforms for every image, plain head, no early stopping",
                ["--no-per-image", "--no-residual", "--measure-every", "0"]),
               ("per-image views", ["--no-residual", "--measure-every", "0"]),
               ("per-image views, residual head", ["--measure-every", "0"]),
               ("per-image views, residual head, early stopping (the defaults)", [])]
    lines = [f"Measured by `tools/bench small` on {time.strftime('%Y-%m-%d')}, EfficientNet-Lite0, `kith adapt` with 20 epochs and its other "
             "defaults on a seen set (no labels), the head copied to the same 30 unseen glyph classes × 60 images (labelled; the "
             "`default` section's split) with `--head-from`, which measures it there: `logreg` on 300 episodes of 5-way 1- and 5-shot "
             "(% ± the paired 95% half-width) and recall@1 of 300 held-out views. The queue holds at most one entry per item in every row.", "",
             "| seen set (classes × images) | design | views recall@1 | 1-shot: backbone → adapted | 5-shot: backbone → adapted | default space |",
             "|---|---|---|---|---|---|"]
    for seen, rows in (("30 × 60", designs), ("99 × 18", [designs[0], designs[-1]])):
        tag = seen.replace(" × ", "x")
        for design, flags in rows:
            run("adapt", tag, "--epochs", str(args.adapt_epochs), *flags)
            run("adapt", "unseen", "--head-from", tag)
            info = json.loads(run("index", "stats", "unseen", "--json"))["adapted"]
            m = {x["name"]: x for x in info["comparison"]["measures"]}
            shot = lambda k: f"{100 * m[k]['backbone']:.1f} → {100 * m[k]['adapted']:.1f} ({100 * m[k]['adapted'] - 100 * m[k]['backbone']:+.1f} ± {100 * m[k]['interval']:.1f})"
            lines.append(f"| {seen} ({sum(len(os.listdir(os.path.join(work, seen, c))) for c in os.listdir(os.path.join(work, seen))):,} images) | {design} | "
                         f"{m['views']['backbone']:.3f} → {m['views']['adapted']:.3f} | {shot('1-shot')} | {shot('5-shot')} | {info['default_space']} |")
            print(f"small: {seen}, {design} done", file=sys.stderr)
    return "\n".join(lines)


SECTIONS = {
    "inference": ("Encoder: inference against onnxruntime, and JPEG decoding", inference),
    "embedding": ("Encoder: a folder of photos end to end, and peak memory", embedding),
    "store": ("Index: writing and loading vectors", store),
    "ingest": ("Index: ingesting a folder of images", ingest),
    "search": ("Query engine: exact search against FAISS", search),
    "heads": ("Query engine: logistic-regression fitting against scikit-learn", heads),
    "fewshot": ("Query engine: few-shot accuracy on the glyph set", fewshot),
    "whitening": ("Query engine: whitening against the number of classes", whitening),
    "auto": ("Query engine: auto, the head chosen by measurement", auto),
    "views": ("Query engine: augmented support sets (stored views)", views),
    "adapt": ("kith adapt: NNCLR on the collection, measured without leaks", adapt),
    "default": ("kith adapt: the space answers use by default, measured", default_space),
    "small": ("kith adapt: small collections", small_collections),
    "ann": ("Query engine: approximate search against FAISS", ann),
    "retrieval": ("Query engine: near-duplicate retrieval on Fashion-MNIST", retrieval),
    "server": ("HTTP service: overhead against the library", server),
    "client": ("Python client: the NNCLR queue step over loopback", client),
    "spark": ("More than one machine: the Spark job against one process", spark),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sections", nargs="*", choices=[[]] + list(SECTIONS), default=[])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--spark-images", type=int, default=5000, help="images of the spark section")
    parser.add_argument("--max-items", type=int, default=1_000_000, help="largest collection for the search section")
    parser.add_argument("--ann-items", type=int, default=1_000_000, help="vectors of the ann section")
    parser.add_argument("--ann-real", action=argparse.BooleanOptionalAction, default=True,
                        help="also recall on Fashion-MNIST's 70,000 embeddings (ann section)")
    parser.add_argument("--adapt-epochs", type=int, default=20, help="epochs of the adapt section")
    parser.add_argument("--adapt-items", type=int, default=10_000, help="Fashion-MNIST training images of the adapt section")
    parser.add_argument("--adapt-classes", type=int, default=1000, help="glyph classes of the adapt section (at most all)")
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
