"""ann: approximate search against FAISS's IVF-Flat, IVF-SQ8 and HNSW32."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from .common import KITH, KITH_BENCH, ROOT, kith_at


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
        for t, t_ids, mask in ((top, top_ids, None), (top_l, top_l_ids, labels == 7)):
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
            subprocess.run(
                [
                    sys.executable,
                    os.path.join(ROOT, "tools", "make_fashion_mnist.py"),
                    os.path.join(folder, split),
                    "--split",
                    split,
                    "--count",
                    str(count),
                ],
                check=True,
                capture_output=True,
            )
    vectors = os.path.join(folder, "all.npy")
    if not os.path.exists(vectors):
        subprocess.run(
            [
                KITH,
                "embed",
                os.path.join(folder, "train"),
                os.path.join(folder, "t10k"),
                "--format",
                "npy",
                "-o",
                vectors,
            ],
            check=True,
            capture_output=True,
        )
    x = np.load(vectors)
    held_out = 60_000 + np.random.default_rng(0).permutation(len(x) - 60_000)[:1000]  # 1,000 test images at random
    base, queries = np.delete(x, held_out, axis=0), x[held_out]
    work = tempfile.mkdtemp(prefix="kith-bench-ann-real-", dir=os.path.join(ROOT, "bench-out"))
    np.save(os.path.join(work, "base.npy"), base)
    np.save(os.path.join(work, "queries.npy"), queries)
    run = kith_at(work)
    run("index", "create", "fm", "--dimension", str(x.shape[1]))
    run("index", "add-vectors", "fm", os.path.join(work, "base.npy"), "--batch-size", "5000")
    t = time.perf_counter()
    run("index", "build-ann", "fm")
    build = time.perf_counter() - t
    status = json.loads(run("index", "stats", "fm", "--json"))["ann"]
    ids = os.path.join(work, "ids")
    out = subprocess.run(
        [
            KITH_BENCH,
            "ann",
            "fm",
            "--indexes",
            work,
            "--queries",
            os.path.join(work, "queries.npy"),
            "--json",
            "--nprobe",
            "0",
            *map(str, probes_list),
            "--threads",
            "2",
            "--ids",
            ids,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rows = [json.loads(line) for line in out.splitlines() if '"ann"' in line]
    exact = np.load(f"{ids}.nprobe-0.npy").astype(np.int64) - 1

    def recall(found):
        return float(np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact)]))

    nlist = status["configuration"]["lists"]
    faiss.omp_set_num_threads(2)
    quantizer = faiss.IndexFlatIP(x.shape[1])
    index = faiss.IndexIVFScalarQuantizer(
        quantizer, x.shape[1], nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
    )
    index.cp.niter, index.cp.max_points_per_centroid, index.cp.seed = 10, 64, 0
    t = time.perf_counter()
    index.train(base)
    index.add(base)
    faiss_build = time.perf_counter() - t
    lines = [
        f"Real embeddings: EfficientNet-Lite0 embeddings (Kith's) of Fashion-MNIST's 60,000 training and 9,000 test images as "
        f"the index, 1,000 other test images (at random) as queries; recall@10 against Kith's exact search. Kith: {nlist} lists (build "
        f"{build:.0f} s, default probes {status['configuration']['probes']}, calibrated recall "
        f"{status.get('calibrated_recall') or 0:.3f}); FAISS IVF-SQ8 with the same lists (build {faiss_build:.0f} s). 2 threads.",
        "",
        "| nprobe | Kith recall@10 | Kith single q/s | Kith batch q/s | FAISS IVF-SQ8 recall@10 | FAISS single q/s | FAISS batch q/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["nprobe"] == 0:
            lines.append(
                f"| exact | 1.000 | {r['single_queries_per_second']:,.0f} | {r['batch_queries_per_second']:,.0f} | | | |"
            )
            continue
        index.nprobe = r["nprobe"]
        index.search(queries[:2], 10)
        t = time.perf_counter()
        for i in range(200):
            index.search(queries[i : i + 1], 10)
        single = 200 / (time.perf_counter() - t)
        t = time.perf_counter()
        _, found = index.search(queries, 10)
        batch = len(queries) / (time.perf_counter() - t)
        # FAISS's ids are rows of base; Kith's are item ids from 1.
        lines.append(
            f"| {r['nprobe']} | {recall(np.load(ids + '.nprobe-' + str(r['nprobe']) + '.npy').astype(np.int64) - 1):.3f} | "
            f"{r['single_queries_per_second']:,.0f} | {r['batch_queries_per_second']:,.0f} | {recall(found):.3f} | {single:,.0f} | {batch:,.0f} |"
        )
    shutil.rmtree(work, ignore_errors=True)
    return "\n".join(lines)


def ann_interleaved(
    indexes: str, name: str, faiss_index: str, queries: str, probes: int, threads: int, rounds: int = 5
) -> dict:
    """Batch q/s of Kith and FAISS IVF-SQ8 at the same probes and threads, alternating fresh
    processes round by round (each answers the batch once to warm up, then times it twice);
    the median of each, so that the machine's drifts hit both alike."""
    faiss_code = (
        "import faiss, numpy as np, sys, time\n"
        "index = faiss.read_index(sys.argv[1]); index.nprobe = int(sys.argv[3]); q = np.load(sys.argv[2])\n"
        "faiss.omp_set_num_threads(int(sys.argv[4])); index.search(q, 10)\n"
        "for _ in range(2):\n"
        "    t = time.perf_counter(); index.search(q, 10); print(len(q) / (time.perf_counter() - t))\n"
    )
    kith, theirs = [], []
    for _ in range(rounds):
        out = subprocess.run(
            [
                KITH_BENCH,
                "ann",
                name,
                "--indexes",
                indexes,
                "--queries",
                queries,
                "--json",
                "--singles",
                "0",
                "--threads",
                str(threads),
                "--nprobe",
                str(probes),
                str(probes),
                str(probes),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        kith += [
            json.loads(line)["batch_queries_per_second"]
            for line in out.splitlines()
            if json.loads(line)["kind"] == "ann"
        ][1:]
        out = subprocess.run(
            [sys.executable, "-c", faiss_code, faiss_index, queries, str(probes), str(threads)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        theirs += [float(v) for v in out.split()]
    return {
        "kith": float(np.median(kith)),
        "faiss": float(np.median(theirs)),
        "rounds": rounds,
        "kith_all": kith,
        "faiss_all": theirs,
    }


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
    run = kith_at(indexes)
    run("index", "create", "ann", "--dimension", str(d))
    t = time.perf_counter()
    for c in chunks:
        run(
            "index",
            "add-vectors",
            "ann",
            os.path.join(folder, c),
            "--labels",
            os.path.join(folder, c.replace(".npy", ".txt")),
            "--batch-size",
            "5000",
        )
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
        out = subprocess.run(
            [
                KITH_BENCH,
                "ann",
                "ann",
                "--indexes",
                indexes,
                "--queries",
                os.path.join(folder, "queries.npy"),
                "--json",
                "--singles",
                "200",
                *extra,
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
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
    for line in kith_bench(
        "--nprobe",
        str(status["configuration"]["probes"]),
        "--threads",
        "2",
        "--label",
        "l7",
        "--ids",
        ids_prefix + "-l7",
    ):
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
            index = (
                faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
                if name == "IVF-Flat"
                else faiss.IndexIVFScalarQuantizer(
                    quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
                )
            )
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
                    index.search(q[i : i + 1], k)
                single = 200 / (time.perf_counter() - t)
                t = time.perf_counter()
                _, found = index.search(q, k)
                batch = nq / (time.perf_counter() - t)
                rows.append(
                    {
                        "knob": knob,
                        "threads": threads,
                        "single_queries_per_second": single,
                        "batch_queries_per_second": batch,
                        "recall": recall(found, truth),
                    }
                )
        faiss_rows[name] = rows
        del index
    del x
    # Resident memory like for like: a fresh process of each answers the batch at the calibrated
    # probes (FAISS reads its index file into its own memory; Kith maps the index).
    probes = status["configuration"]["probes"]
    memory_rows = kith_bench("--nprobe", str(probes), "--threads", "2", "--mapped-pages")
    kith_memory = [r for r in memory_rows if r["kind"] == "ann"][0]
    kith_mapped = [r for r in memory_rows if r["kind"] == "mapped"][0]
    faiss_memory = json.loads(
        subprocess.run(
            [
                sys.executable,
                "-c",
                (
                    "import faiss, json, numpy as np, sys\n"
                    "index = faiss.read_index(sys.argv[1]); index.nprobe = int(sys.argv[3]); index.search(np.load(sys.argv[2]), 10)\n"
                    "status = dict(line.split(':', 1) for line in open('/proc/self/status') if ':' in line)\n"
                    "print(json.dumps({k: int(status[k].split()[0]) * 1024 for k in ('VmRSS', 'RssAnon', 'RssFile')}))"
                ),
                os.path.join(indexes, "faiss-sq8.index"),
                os.path.join(folder, "queries.npy"),
                str(probes),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    interleaved = {
        t: ann_interleaved(
            indexes, "ann", os.path.join(indexes, "faiss-sq8.index"), os.path.join(folder, "queries.npy"), probes, t
        )
        for t in (1, 2)
    }
    # Half-precision codes: the same index rebuilt with --codes fp16 (same lists and probes), last,
    # so that every comparison above is of the 8-bit codes.
    half_seconds, _ = build_ann("--codes", "fp16", "--probes", str(status["configuration"]["probes"]))
    half_size = os.path.getsize(data_mdb)
    half_rows = []
    for line in kith_bench(
        "--nprobe", *map(str, probes_list[:6]), "--threads", "1", "2", "--ids", ids_prefix + "-fp16"
    ):
        if line["kind"] == "ann":
            found = np.load(f"{ids_prefix}-fp16.nprobe-{line['nprobe']}.npy").astype(np.int64) - 1
            half_rows.append(dict(line, recall=recall(found, truth)))
    shutil.rmtree(indexes, ignore_errors=True)

    lines = [
        f"Measured by `tools/bench ann --ann-items {n}` on {time.strftime('%Y-%m-%d')}: {n:,} clustered unit vectors of {d} "
        f"float32 (a mixture of {max(2, n // 500):,} directions, cosine 0.67-0.86 to their direction; tools/benchmarks/ann.py "
        f"`ann_data`), {nq:,} queries from the same mixture, recall@{k} against exact search. Kith: `kith index build-ann` "
        f"defaults ({nlist:,} lists, trained on {status['configuration']['training_sample']:,} items, 10 rounds; 8-bit codes "
        f"scanned in the memory map, the best {max(4 * k, 32)} re-ranked from float32), `kith-bench ann`; FAISS "
        f"{faiss.__version__}: IVF-Flat and IVF-SQ8 with the same lists, sample and rounds, HNSW32 (efConstruction 40). "
        "Single queries one after another, then one batch; q/s.",
        "",
    ]
    lines += [
        "| index | build s | knob | recall@10 | single q/s, 1 thread | single q/s, 2 threads | batch q/s, 1 thread | batch q/s, 2 threads |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def table(name: str, build: float, rows: list[dict], knob: str) -> None:
        by_knob: dict = {}
        for r in rows:
            by_knob.setdefault(r[knob], {})[r["threads"]] = r
        for value, per in sorted(by_knob.items()):
            one, two = per.get(1, {}), per.get(2, {})
            lines.append(
                f"| {name} | {build:.0f} | {knob} {value} | {two.get('recall', one.get('recall', 0)):.3f} | "
                f"{one.get('single_queries_per_second', 0):,.0f} | {two.get('single_queries_per_second', 0):,.0f} | "
                f"{one.get('batch_queries_per_second', 0):,.0f} | {two.get('batch_queries_per_second', 0):,.0f} |"
            )

    table("Kith IVF, 8-bit + re-rank", build_seconds, kith_rows, "nprobe")
    table("Kith IVF, fp16 + re-rank", half_seconds, half_rows, "nprobe")
    for name, rows in faiss_rows.items():
        table(
            f"FAISS {name}",
            builds[name],
            [dict(r, nprobe=r["knob"]) if name != "HNSW32" else dict(r, efSearch=r["knob"]) for r in rows],
            "nprobe" if name != "HNSW32" else "efSearch",
        )
    lines += [
        "",
        "At recall@10 ≥ 0.95, the fastest setting of each (q/s; Kith's ratio to it):",
        "",
        "| index | single, 1 thread | single, 2 threads | batch, 1 thread | batch, 2 threads |",
        "|---|---|---|---|---|",
    ]
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

    cells = [fmt(kith_best[(m, t)], f"{m}_queries_per_second") for t in (1, 2) for m in ("single",)] + [
        fmt(kith_best[(m, t)], f"{m}_queries_per_second") for t in (1, 2) for m in ("batch",)
    ]
    lines.append("| Kith | " + " | ".join(cells) + " |")
    for name, rows in faiss_rows.items():
        cells = []
        for m in ("single", "batch"):
            for t in (1, 2):
                key = f"{m}_queries_per_second"
                cells.append(fmt(best_at([r for r in rows if r["threads"] == t], key), key, kith_best[(m, t)]))
        lines.append(f"| FAISS {name} | " + " | ".join(cells) + " |")

    def mib(b):
        return f"{b / 2**20:,.0f} MiB"

    lines += [
        "",
        f"Kith: adding the vectors {add_seconds:.0f} s (`add-vectors`, 5,000 per transaction); build-ann {build_seconds:.0f} s "
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
        f"and B-tree pages (`kith-bench ann --mapped-pages`); FAISS IVF-SQ8 after `read_index` {mib(faiss_memory['RssAnon'])} of its own "
        f"(VmRSS {mib(faiss_memory['VmRSS'])}). "
        f"After the 8-bit sweep (9 settings × 1,200 queries) the process held {mib(kith_rows[-1]['rss_anon_bytes'])} of its own "
        f"and {mib(kith_rows[-1]['rss_file_bytes'])} of the index's pages (the page cache's, shared with any other process "
        "that opens the index; FAISS holds its codes in its own memory). "
        f"Exact search on the same index: {exact_rows[1]['single_queries_per_second']:,.1f} single q/s, "
        f"{exact_rows[1]['batch_queries_per_second']:,.1f} batch q/s (2 threads).",
    ]
    lines += [
        "",
        f"Interleaved: batches of the 1,000 queries at {probes} probes, Kith and FAISS IVF-SQ8 in alternating fresh "
        "processes, 5 rounds of two timed batches each (after one to warm up); medians, Kith's ratio, and the ranges:",
        "",
        "| threads | Kith batch q/s | FAISS IVF-SQ8 batch q/s | ratio | Kith's range | FAISS's range |",
        "|---|---|---|---|---|---|",
    ]
    for t, r in interleaved.items():
        lines.append(
            f"| {t} | {r['kith']:,.0f} | {r['faiss']:,.0f} | {r['kith'] / r['faiss']:.2f} | "
            f"{min(r['kith_all']):,.0f}–{max(r['kith_all']):,.0f} | {min(r['faiss_all']):,.0f}–{max(r['faiss_all']):,.0f} |"
        )
    if args.ann_real:
        lines += ["", ann_real(probes_list)]
    if filtered:
        f = filtered[0]
        lines += [
            "",
            f"Filtered (label l7 of 100, {n // 100:,} items): recall@10 {f['recall']:.3f} against exact search "
            f"within the label, {f['single_queries_per_second']:,.0f} single and {f['batch_queries_per_second']:,.0f} batch q/s (2 threads).",
        ]
    return "\n".join(lines)
