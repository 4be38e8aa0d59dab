"""Embeds a collection of images on Apache Spark with Kith's encoder, writing Parquet shards.

    spark-submit [--master URL] [--files kith,MODEL.json,MODEL.safetensors] spark/kith_embed.py \\
        --input IMAGES --output OUT [--model NAME] [--partition-size 500]

IMAGES is a folder (walked for .jpg/.jpeg/.png, in sorted order), a text file of paths (one per
line, optionally ``path<TAB>label``), or a Parquet table with a ``path`` column and an optional
``label`` column. The listing is cut into partitions of ``--partition-size`` rows in listing order;
each Spark task runs the ``kith`` binary on its partition (``kith embed --list``) and writes

    OUT/embeddings/part-NNNNN.parquet   path, sha256, label, model, weights_sha256, embedding
    OUT/errors/part-NNNNN.parquet       path, label, code, message, model (images that failed)

each through a temporary file and a rename (errors first, then embeddings, which marks the
partition complete). A retried or speculative task rewrites the same two files, so rows are never
duplicated; running the job again skips the partitions whose shards are complete, and
``OUT/_kith_job.json`` records the listing's digest so that a rerun over another listing is refused
(``--overwrite`` starts afresh). The schema is ``kith.parquet``'s; ``kith index add-parquet NAME
OUT`` builds an index from the shards.

Where the executors find Kith: ``--kith PATH`` (installed on every node), else a ``kith`` shipped
with ``spark-submit --files``, else ``kith`` on PATH; the models folder likewise (``--models``, else
the folder of shipped files when ``MODEL.json`` was shipped, else Kith's default). OUT and the
images must be paths every executor can read and write (one machine, or a shared file system).
The executors' Python needs numpy, pyarrow and Kith's Python package (spark/requirements.txt).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from kith import parquet as kp

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
JOB_RECORD = "_kith_job.json"


@dataclass(frozen=True)
class Settings:
    """What every task needs (pickled to the executors)."""

    output: str
    model: str
    kith: str | None
    models: str | None
    threads: int
    batch_size: int


def listing(source: str, path_column: str, label_column: str, label_from_folder: bool) -> list[tuple[str, str | None]]:
    """(path, label) rows of a folder, a text file of paths or a Parquet table, in listing order."""
    if os.path.isdir(source) and not any(f.endswith(".parquet") for f in os.listdir(source)):
        rows = []
        for folder, subfolders, files in os.walk(source):
            subfolders.sort()
            for name in sorted(files):
                if name.lower().endswith(IMAGE_EXTENSIONS):
                    path = os.path.abspath(os.path.join(folder, name))
                    rows.append((path, os.path.basename(folder) if label_from_folder else None))
        return sorted(rows)
    if source.endswith(".parquet") or os.path.isdir(source):
        import pyarrow.parquet as pq

        table = pq.read_table(source)
        if path_column not in table.column_names:
            raise SystemExit(
                f"kith_embed: {source} has no column '{path_column}' (columns: {', '.join(table.column_names)})"
            )
        paths = table.column(path_column).to_pylist()
        labels = table.column(label_column).to_pylist() if label_column in table.column_names else [None] * len(paths)
        return [(p, None if label is None else str(label)) for p, label in zip(paths, labels)]
    rows = []
    with open(source, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line:
                path, _, label = line.partition("\t")
                rows.append((path, label or None))
    return rows


def shard_name(partition: int) -> str:
    return f"part-{partition:05d}.parquet"


def complete(output: str, partition: int) -> bool:
    name = shard_name(partition)
    return os.path.exists(os.path.join(output, "errors", name)) and os.path.exists(
        os.path.join(output, "embeddings", name)
    )


def shipped(name: str) -> str | None:
    """The path of a file shipped with ``--files``, or None."""
    try:
        from pyspark import SparkFiles

        path = SparkFiles.get(name)
    except Exception:
        return None
    return path if os.path.exists(path) else None


def executable(path: str) -> str:
    """``path`` if it can be run, else an executable copy of it (``--files`` may drop the mode)."""
    if os.access(path, os.X_OK):
        return path
    copy = os.path.join(tempfile.mkdtemp(prefix="kith-bin-"), os.path.basename(path))
    shutil.copy(path, copy)
    os.chmod(copy, os.stat(copy).st_mode | stat.S_IXUSR)
    return copy


def kith_command(settings: Settings) -> tuple[str, list[str]]:
    """The kith binary and its --models arguments, as this executor finds them."""
    binary = settings.kith or shipped("kith") or shutil.which("kith")
    if not binary:
        raise RuntimeError("no kith binary: pass --kith PATH, ship it with spark-submit --files, or put it on PATH")
    models = settings.models
    if models is None:
        manifest = shipped(settings.model + ".json")
        models = os.path.dirname(manifest) if manifest else None
    return executable(binary), (["--models", models] if models else [])


def embed_partition(job: tuple[int, list[tuple[str, str | None]]], settings: Settings) -> dict[str, Any]:
    """Runs ``kith embed`` on one partition and writes its two shards; what it did."""
    partition, rows = job
    start = time.time()
    if os.environ.get("KITH_SPARK_FAIL_FIRST_ATTEMPT") == str(partition):
        from pyspark import TaskContext

        context = TaskContext.get()
        if context is not None and context.attemptNumber() == 0:
            raise RuntimeError(f"injected failure of partition {partition}'s first attempt")
    binary, models = kith_command(settings)
    with tempfile.TemporaryDirectory(prefix="kith-spark-") as work:
        listed = os.path.join(work, "list.txt")
        with open(listed, "w", encoding="utf-8") as f:
            f.writelines(path + "\n" for path, _ in rows)
        out, failed = os.path.join(work, "embeddings.jsonl"), os.path.join(work, "failures.jsonl")
        arguments = [
            binary,
            "embed",
            "--model",
            settings.model,
            *models,
            "--list",
            listed,
            "--format",
            "jsonl",
            "--output",
            out,
            "--failures",
            failed,
            "--threads",
            str(settings.threads),
            "--batch-size",
            str(settings.batch_size),
        ]
        run = subprocess.run(arguments, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        failures = [json.loads(line) for line in open(failed, encoding="utf-8")] if os.path.exists(failed) else []
        embedded = [json.loads(line) for line in open(out, encoding="utf-8")] if os.path.exists(out) else []
        # kith exits non-zero when nothing could be embedded: fine if every image is accounted for.
        if run.returncode != 0 and len(failures) != len(rows):
            raise RuntimeError(
                f"kith embed failed on partition {partition} (status {run.returncode}): {run.stderr.strip()[-2000:]}"
            )
        info = json.loads(
            subprocess.run([binary, "models", *models, "--json"], check=True, capture_output=True, text=True).stdout
        )
    model = next((m for m in info["models"] if m["name"] == settings.model), None)
    if model is None:
        raise RuntimeError(f"kith models lists no '{settings.model}'")
    by_path = {e["path"]: e for e in embedded}
    failed_paths = {f["path"]: f for f in failures}
    good = [(path, label) for path, label in rows if path in by_path]
    bad = [(path, label) for path, label in rows if path not in by_path]
    matrix = np.array([by_path[p]["embedding"] for p, _ in good], dtype=np.float32).reshape(
        len(good), model["dimension"]
    )
    table = kp.embeddings_table(
        {
            "path": [p for p, _ in good],
            "sha256": [by_path[p]["sha256"] for p, _ in good],
            "label": [label for _, label in good],
        },
        matrix,
        model["name"],
        model["weights_sha256"],
    )
    pa = kp._pyarrow()
    errors = pa.Table.from_arrays(
        [
            pa.array([p for p, _ in bad], pa.string()),
            pa.array([label for _, label in bad], pa.string()),
            pa.array([failed_paths.get(p, {}).get("code", "not_embedded") for p, _ in bad], pa.string()),
            pa.array(
                [failed_paths.get(p, {}).get("message", "kith embed gave no result") for p, _ in bad], pa.string()
            ),
            pa.array([model["name"]] * len(bad), pa.string()),
        ],
        schema=kp.errors_schema(),
    )
    # Errors first: the embeddings shard is what marks the partition complete.
    kp.write_atomically(errors, os.path.join(settings.output, "errors", shard_name(partition)))
    kp.write_atomically(table, os.path.join(settings.output, "embeddings", shard_name(partition)))
    return {"partition": partition, "embedded": len(good), "failed": len(bad), "seconds": time.time() - start}


def plan(rows: list[tuple[str, str | None]], partition_size: int) -> list[tuple[int, list[tuple[str, str | None]]]]:
    return [(i, rows[start : start + partition_size]) for i, start in enumerate(range(0, len(rows), partition_size))]


def job_record(rows: list[tuple[str, str | None]], settings: Settings, partition_size: int) -> dict[str, Any]:
    digest = hashlib.sha256()
    for path, label in rows:
        digest.update(f"{path}\t{label or ''}\n".encode())
    return {
        "version": 1,
        "listing_sha256": digest.hexdigest(),
        "rows": len(rows),
        "partition_size": partition_size,
        "partitions": (len(rows) + partition_size - 1) // partition_size,
        "model": settings.model,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kith_embed.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="folder of images, text file of paths, or Parquet table")
    parser.add_argument("--output", required=True, help="folder of the shards")
    parser.add_argument("--model", default="efficientnet-lite0", help="the backbone (see `kith models`)")
    parser.add_argument(
        "--kith", help="the kith binary on every executor (default: shipped with --files, else on PATH)"
    )
    parser.add_argument(
        "--models", help="Kith's models folder on every executor (default: shipped files, else Kith's default)"
    )
    parser.add_argument("--partition-size", type=int, default=500, help="images per Spark task (default 500)")
    parser.add_argument(
        "--threads", type=int, default=1, help="kith threads per task; match spark.task.cpus (default 1)"
    )
    parser.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default 16)")
    parser.add_argument("--path-column", default="path", help="Parquet listing: the column of paths")
    parser.add_argument("--label-column", default="label", help="Parquet listing: the column of labels, if any")
    parser.add_argument(
        "--label-from-folder", action="store_true", help="folder listing: label each image with its folder's name"
    )
    parser.add_argument("--overwrite", action="store_true", help="discard OUT's shards and start afresh")
    args = parser.parse_args(argv)
    if args.partition_size < 1 or args.threads < 1 or args.batch_size < 1:
        parser.error("--partition-size, --threads and --batch-size must be at least 1")

    rows = listing(args.input, args.path_column, args.label_column, args.label_from_folder)
    if not rows:
        parser.error(f"no images in {args.input}")
    bad = next((p for p, _ in rows if "\n" in p), None)
    if bad is not None:
        parser.error(f"a path contains a line break, which kith embed --list cannot take: {bad!r}")
    output = os.path.abspath(args.output)
    settings = Settings(
        output=output,
        model=args.model,
        kith=args.kith,
        models=args.models,
        threads=args.threads,
        batch_size=args.batch_size,
    )
    record = job_record(rows, settings, args.partition_size)
    record_path = os.path.join(output, JOB_RECORD)
    if args.overwrite:
        for folder in ("embeddings", "errors"):
            shutil.rmtree(os.path.join(output, folder), ignore_errors=True)
    elif os.path.exists(record_path):
        previous = json.load(open(record_path))
        if previous != record:
            changed = ", ".join(k for k in record if previous.get(k) != record[k])
            parser.error(
                f"{output} holds shards of another job ({changed} differ): use another --output, or --overwrite"
            )
    os.makedirs(output, exist_ok=True)
    with open(record_path + ".tmp", "w") as f:
        json.dump(record, f, indent=1)
    os.replace(record_path + ".tmp", record_path)

    partitions = plan(rows, args.partition_size)
    todo = [p for p in partitions if not complete(output, p[0])]
    print(
        f"kith_embed: {len(rows)} images in {len(partitions)} partitions; {len(partitions) - len(todo)} complete already, "
        f"{len(todo)} to run",
        flush=True,
    )
    started = time.time()
    results: list[dict[str, Any]] = []
    if todo:
        from pyspark.sql import SparkSession

        spark = SparkSession.builder.appName("kith-embed").getOrCreate()
        try:
            rdd = spark.sparkContext.parallelize(todo, len(todo))
            results = rdd.map(lambda job: embed_partition(job, settings)).collect()
        finally:
            spark.stop()
    seconds = time.time() - started
    embedded, failed = sum(r["embedded"] for r in results), sum(r["failed"] for r in results)
    summary = {
        "images": len(rows),
        "partitions": len(partitions),
        "ran": len(results),
        "skipped": len(partitions) - len(todo),
        "embedded": embedded,
        "failed": failed,
        "seconds": round(seconds, 3),
        "task_seconds": round(sum(r["seconds"] for r in results), 3),
        "images_per_second": round((embedded + failed) / seconds, 2) if results else None,
        "settings": asdict(settings),
    }
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
