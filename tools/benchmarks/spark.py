"""spark: the Spark job on a standalone cluster on 127.0.0.1 against one process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from .common import KITH, ROOT


def spark(args) -> str:
    """The Spark job on a standalone cluster of 1-core workers on 127.0.0.1, against one process."""
    tmp = tempfile.mkdtemp(prefix="kith-bench-spark-")
    folder = os.path.join(tmp, "fashion-mnist")
    count = args.spark_images
    subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "make_fashion_mnist.py"), folder, "--count", str(count)],
        check=True,
        capture_output=True,
    )
    python = sys.executable
    home = os.path.dirname(__import__("pyspark").__file__)
    env = dict(
        os.environ,
        KITH_CLUSTER_DIR=os.path.join(tmp, "cluster"),
        KITH_CLUSTER_PORT="7177",
        KITH_CLUSTER_UI_PORT="8181",
        PYTHON=python,
        PYTHONPATH=os.path.join(ROOT, "clients", "python"),
        SPARK_LOCAL_IP="127.0.0.1",
    )
    cluster = os.path.join(ROOT, "spark", "local-cluster")
    url = subprocess.run(
        [cluster, "start", "--workers", "2", "--cores", "1"], check=True, capture_output=True, text=True, env=env
    ).stdout.strip()
    models = os.path.join(ROOT, "models")
    runs: dict[str, list[dict]] = {}
    try:
        for r in range(args.rounds):
            for threads in (1, 2):
                indexes = os.path.join(tmp, f"indexes-{r}-{threads}")
                subprocess.run([KITH, "index", "create", "fm", "--indexes", indexes], check=True, capture_output=True)
                t0 = time.time()
                subprocess.run(
                    [
                        KITH,
                        "index",
                        "add",
                        "fm",
                        folder,
                        "--indexes",
                        indexes,
                        "--threads",
                        str(threads),
                        "--thumbnail-size",
                        "0",
                    ],
                    check=True,
                    capture_output=True,
                )
                runs.setdefault(f"add-{threads}", []).append({"seconds": time.time() - t0})
            for executors in (1, 2):
                out = os.path.join(tmp, f"shards-{r}-{executors}")
                t0 = time.time()
                job = subprocess.run(
                    [
                        os.path.join(home, "bin", "spark-submit"),
                        "--master",
                        url,
                        "--conf",
                        "spark.ui.enabled=false",
                        "--conf",
                        f"spark.pyspark.python={python}",
                        "--executor-cores",
                        "1",
                        "--total-executor-cores",
                        str(executors),
                        os.path.join(ROOT, "spark", "kith_embed.py"),
                        "--input",
                        folder,
                        "--output",
                        out,
                        "--kith",
                        KITH,
                        "--models",
                        models,
                        "--partition-size",
                        "250",
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                    env=env,
                )
                summary = json.loads(job.stdout.strip().splitlines()[-1])
                summary["wall"] = time.time() - t0
                runs.setdefault(f"spark-{executors}", []).append(summary)
                indexes = os.path.join(tmp, f"indexes-parquet-{r}-{executors}")
                subprocess.run([KITH, "index", "create", "fm", "--indexes", indexes], check=True, capture_output=True)
                t0 = time.time()
                subprocess.run(
                    [KITH, "index", "add-parquet", "fm", out, "--indexes", indexes],
                    check=True,
                    capture_output=True,
                    env=dict(env, KITH_PYTHON=python),
                )
                runs.setdefault("add-parquet", []).append({"seconds": time.time() - t0})
            print(f"spark: round {r + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        subprocess.run([cluster, "stop"], env=env)
        shutil.rmtree(tmp, ignore_errors=True)
    best = {k: min(v, key=lambda x: x.get("wall", x["seconds"])) for k, v in runs.items()}
    add1, add2 = count / best["add-1"]["seconds"], count / best["add-2"]["seconds"]
    lines = [
        f"Measured by `tools/bench spark --rounds {args.rounds}` on {time.strftime('%Y-%m-%d')}: {count:,} Fashion-MNIST test "
        "images as 28 × 28 JPEGs, EfficientNet-Lite0. Spark: `spark/local-cluster` (a master and two workers of one core "
        "each on 127.0.0.1), `spark/kith_embed.py` with partitions of 250 images and `--threads 1` per task, "
        "`--executor-cores 1` and 1 or 2 executors; wall time of `spark-submit` from start to exit, so JVM start-up, "
        "scheduling and writing the Parquet shards are in it. Task time: the tasks' own time (kith start-up, embedding, "
        "writing a shard), summed. Beside it `kith index add` (no thumbnails) of the same folder in one process, with 1 and "
        "2 threads, and `kith index add-parquet` of the shards. Best of the rounds.",
        "",
        "| run | wall s | images/s | against `kith index add`, same cores | images/s per task-second |",
        "|---|---|---|---|---|",
    ]
    lines.append(f"| `kith index add`, 1 thread | {best['add-1']['seconds']:.1f} | {add1:.1f} | 1.00 | |")
    lines.append(f"| `kith index add`, 2 threads | {best['add-2']['seconds']:.1f} | {add2:.1f} | 1.00 | |")
    for executors, anchor in ((1, add1), (2, add2)):
        b = best[f"spark-{executors}"]
        rate = count / b["wall"]
        lines.append(
            f"| Spark, {executors} executor{'s' if executors > 1 else ''} of 1 core | {b['wall']:.1f} | {rate:.1f} | "
            f"{rate / anchor:.2f} | {count / b['task_seconds']:.1f} |"
        )
    lines.append(
        f"| `kith index add-parquet` of the shards | {best['add-parquet']['seconds']:.1f} | "
        f"{count / best['add-parquet']['seconds']:.0f} | | |"
    )
    return "\n".join(lines)
