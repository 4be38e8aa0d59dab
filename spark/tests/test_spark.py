"""The Spark job for real: local[2], a standalone cluster on 127.0.0.1 (spark/local-cluster), and
the shards into an index with `kith index add-parquet` and back out with `kith export parquet`."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import socket
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

REPOSITORY = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPOSITORY / "tools"))
sys.path.insert(0, str(REPOSITORY / "clients" / "python" / "tests"))
from conftest import kith_binary  # noqa: E402  (the client tests' one way to find the binary)
from make_fashion_mnist import CLASSES, load  # noqa: E402

PYTHON = sys.executable
MODELS = pathlib.Path(os.environ.get("KITH_MODELS", REPOSITORY / "models"))
MODEL = "efficientnet-lite0"
JOB = str(REPOSITORY / "spark" / "kith_embed.py")
IMAGES = 250


KITH = kith_binary()


def spark_submit(
    *arguments: str, master: str = "local[2]", env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    # The documented command, spark/submit, which points the driver and the executors at .venv's Python.
    environment = {
        **os.environ,
        "PYTHON": PYTHON,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYTHONPATH": str(REPOSITORY / "clients" / "python"),
        **(env or {}),
    }
    run = subprocess.run(
        [str(REPOSITORY / "spark" / "submit"), "--master", master, "--conf", "spark.ui.enabled=false", *arguments],
        capture_output=True,
        text=True,
        env=environment,
        timeout=600,
    )
    if check and run.returncode != 0:
        raise AssertionError(f"spark-submit failed ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-6000:]}")
    return run


def summary(run: subprocess.CompletedProcess) -> dict:
    """The job's last line: its JSON summary."""
    return json.loads(run.stdout.strip().splitlines()[-1])


def kith(*arguments: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "KITH_PYTHON": PYTHON, "PYTHONPATH": str(REPOSITORY / "clients" / "python")}
    run = subprocess.run([KITH, *arguments], capture_output=True, text=True, env=env, timeout=600)
    if check and run.returncode != 0:
        raise AssertionError(f"kith {' '.join(arguments)} failed ({run.returncode}): {run.stderr[-3000:]}")
    return run


def shards(folder: pathlib.Path) -> tuple[list[str], list[str], list[str], np.ndarray]:
    """(paths, sha256s, labels, embeddings) of every embeddings shard, in partition order."""
    table = pq.read_table(folder / "embeddings")
    embedding = table.column("embedding").combine_chunks()
    matrix = embedding.flatten().to_numpy().reshape(table.num_rows, embedding.type.list_size)
    return (
        table.column("path").to_pylist(),
        table.column("sha256").to_pylist(),
        table.column("label").to_pylist(),
        matrix,
    )


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """Fashion-MNIST test images as JPEGs in class folders, and one file that is not an image."""
    root = tmp_path_factory.mktemp("images")
    pixels, labels = load("t10k")
    for i in range(IMAGES):
        folder = root / CLASSES[labels[i]]
        folder.mkdir(exist_ok=True)
        Image.fromarray(pixels[i], "L").save(folder / f"{i:05d}.jpg", quality=90)
    (root / "bag" / "broken.jpg").write_bytes(b"this is not a JPEG")
    return root


@pytest.fixture(scope="module")
def job(images: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The job run once on local[2], partitions of 64 images."""
    out = tmp_path_factory.mktemp("shards") / "out"
    run = spark_submit(
        JOB,
        "--input",
        str(images),
        "--output",
        str(out),
        "--kith",
        KITH,
        "--models",
        str(MODELS),
        "--label-from-folder",
        "--partition-size",
        "64",
    )
    s = summary(run)
    assert (s["images"], s["partitions"], s["ran"], s["embedded"], s["failed"]) == (IMAGES + 1, 4, 4, IMAGES, 1)
    return out


def listing(images: pathlib.Path) -> list[str]:
    return sorted(str(p) for p in images.rglob("*.jpg"))


def test_shards_match_kith_embed_row_for_row(images: pathlib.Path, job: pathlib.Path, tmp_path: pathlib.Path) -> None:
    paths, hashes, labels, matrix = shards(job)
    good = [p for p in listing(images) if not p.endswith("broken.jpg")]
    assert paths == good
    assert hashes == [hashlib.sha256(pathlib.Path(p).read_bytes()).hexdigest() for p in good]
    assert labels == [pathlib.Path(p).parent.name for p in good]
    kith("embed", "--models", str(MODELS), "--format", "npy", "--output", str(tmp_path / "e.npy"), *good)
    reference = np.load(tmp_path / "e.npy")
    assert (tmp_path / "e.npy.paths.txt").read_text().split("\n")[:-1] == good
    assert matrix.dtype == np.float32 and matrix.shape == reference.shape == (IMAGES, 1280)
    assert np.array_equal(matrix, reference)  # bit for bit: the same encoder on the same bytes
    table = pq.read_table(job / "embeddings")
    assert set(table.column("model").to_pylist()) == {MODEL}
    info = json.loads(kith("models", "--models", str(MODELS), "--json").stdout)
    digest = next(m["weights_sha256"] for m in info["models"] if m["name"] == MODEL)
    assert set(table.column("weights_sha256").to_pylist()) == {digest}


def test_failed_images_go_to_the_error_table(images: pathlib.Path, job: pathlib.Path) -> None:
    errors = pq.read_table(job / "errors").to_pylist()
    assert [(e["path"], e["label"], e["code"], e["model"]) for e in errors] == [
        (str(images / "bag" / "broken.jpg"), "bag", "unsupported_format", MODEL)
    ]
    assert "broken.jpg" in errors[0]["message"]


def test_rerun_skips_complete_partitions_and_a_retried_task_adds_no_rows(
    images: pathlib.Path, job: pathlib.Path
) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in (job / "embeddings").iterdir()}
    run = spark_submit(
        JOB,
        "--input",
        str(images),
        "--output",
        str(job),
        "--kith",
        KITH,
        "--models",
        str(MODELS),
        "--label-from-folder",
        "--partition-size",
        "64",
    )
    assert (summary(run)["ran"], summary(run)["skipped"]) == (0, 4)
    assert {p.name: p.stat().st_mtime_ns for p in (job / "embeddings").iterdir()} == before
    # Partition 1's shards lost, then its first attempt fails after Spark started it: the retry
    # (local[2,2]: two attempts per task) writes it once, and nothing else is run again.
    (job / "embeddings" / "part-00001.parquet").unlink()
    run = spark_submit(
        JOB,
        "--input",
        str(images),
        "--output",
        str(job),
        "--kith",
        KITH,
        "--models",
        str(MODELS),
        "--label-from-folder",
        "--partition-size",
        "64",
        master="local[2,2]",
        env={"KITH_SPARK_FAIL_FIRST_ATTEMPT": "1"},
    )
    assert (summary(run)["ran"], summary(run)["skipped"]) == (1, 3)
    assert "injected failure of partition 1" in run.stdout + run.stderr
    after = {p.name: p.stat().st_mtime_ns for p in (job / "embeddings").iterdir()}
    assert sorted(after) == sorted(before) and all(after[n] == before[n] for n in before if n != "part-00001.parquet")
    paths, _, _, _ = shards(job)
    assert len(paths) == len(set(paths)) == IMAGES
    assert not [p for p in (job / "embeddings").iterdir() if p.name.startswith(".")]  # no temporary files left


def test_a_rerun_over_another_listing_is_refused(images: pathlib.Path, job: pathlib.Path) -> None:
    run = spark_submit(
        JOB,
        "--input",
        str(images),
        "--output",
        str(job),
        "--kith",
        KITH,
        "--models",
        str(MODELS),
        "--partition-size",
        "64",
        check=False,
    )  # no labels now: another listing
    assert run.returncode != 0 and "holds shards of another job (listing_sha256 differ)" in run.stdout + run.stderr


def test_parquet_listing_with_labels(images: pathlib.Path, tmp_path: pathlib.Path) -> None:
    import pyarrow as pa

    chosen = listing(images)[:40]
    pq.write_table(pa.table({"path": chosen, "label": [f"c{i % 3}" for i in range(40)]}), tmp_path / "listing.parquet")
    out = tmp_path / "out"
    run = spark_submit(
        JOB,
        "--input",
        str(tmp_path / "listing.parquet"),
        "--output",
        str(out),
        "--kith",
        KITH,
        "--models",
        str(MODELS),
        "--partition-size",
        "16",
    )
    assert (summary(run)["partitions"], summary(run)["embedded"]) == (3, 40)
    paths, _, labels, _ = shards(out)
    assert paths == chosen and labels == [f"c{i % 3}" for i in range(40)]


def test_add_parquet_builds_the_index_kith_index_add_builds(
    images: pathlib.Path, job: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    indexes = str(tmp_path / "indexes")
    for name in ("fromshards", "fromimages"):
        kith("index", "create", name, "--indexes", indexes, "--models", str(MODELS))
    added = kith("index", "add-parquet", "fromshards", str(job), "--indexes", indexes).stdout
    assert f"added {IMAGES}, skipped 0 duplicates, from 4 shards" in added
    again = kith("index", "add-parquet", "fromshards", str(job), "--indexes", indexes).stdout
    assert f"added 0, skipped {IMAGES} duplicates" in again
    kith(
        "index",
        "add",
        "fromimages",
        str(images),
        "--label-from-folder",
        "--indexes",
        indexes,
        "--models",
        str(MODELS),
        check=False,
    )
    # The same content hashes: the shards of images already indexed add nothing.
    assert (
        f"added 0, skipped {IMAGES} duplicates"
        in kith("index", "add-parquet", "fromimages", str(job), "--indexes", indexes).stdout
    )
    # And the two indexes answer alike: the same neighbours with the same scores.
    query = str(images / "bag" / next(p.name for p in (images / "bag").iterdir() if p.name != "broken.jpg"))
    answers = [
        json.loads(
            kith("search", name, query, "-k", "10", "--json", "--indexes", indexes, "--models", str(MODELS)).stdout
        )
        for name in ("fromshards", "fromimages")
    ]
    hits = [[(h["source"], h["label"], h["score"]) for h in a["results"]] for a in answers]
    assert hits[0] == hits[1] and len(hits[0]) == 10
    for name in ("fromshards", "fromimages"):
        assert kith("index", "check", name, "--indexes", indexes).returncode == 0


def test_add_parquet_refuses_another_models_vectors_and_error_tables(job: pathlib.Path, tmp_path: pathlib.Path) -> None:
    indexes = str(tmp_path / "indexes")
    kith("index", "create", "other", "--model", "mobilenetv2", "--indexes", indexes, "--models", str(MODELS))
    run = kith("index", "add-parquet", "other", str(job), "--indexes", indexes, check=False)
    assert run.returncode != 0
    assert "part-00000.parquet: incompatible index: 'other' holds 1280-d embeddings of 'mobilenetv2'" in run.stderr
    assert "nothing was added" in run.stderr
    kith("index", "create", "own", "--dimension", "1280", "--indexes", indexes)
    run = kith("index", "add-parquet", "own", str(job), "--indexes", indexes, check=False)
    assert run.returncode != 0 and "'own' holds vectors of your own" in run.stderr
    run = kith(
        "index", "add-parquet", "other", str(job / "errors" / "part-00000.parquet"), "--indexes", indexes, check=False
    )
    assert run.returncode != 0 and "a table of images that could not be embedded" in run.stderr
    stats = json.loads(kith("index", "stats", "other", "--json", "--indexes", indexes).stdout)
    assert stats["stats"]["items"] == 0


def test_export_then_add_parquet_round_trips(job: pathlib.Path, tmp_path: pathlib.Path) -> None:
    indexes = str(tmp_path / "indexes")
    kith("index", "create", "a", "--indexes", indexes, "--models", str(MODELS))
    kith("index", "add-parquet", "a", str(job), "--indexes", indexes)
    kith("index", "relabel", "a", "3", "--label", "relabelled", "--coarse-label", "clothes", "--indexes", indexes)
    exported = tmp_path / "a.parquet"
    assert f"exported {IMAGES} items" in kith("export", "parquet", "a", str(exported), "--indexes", indexes).stdout
    table = pq.read_table(exported)
    paths, hashes, labels, matrix = shards(job)
    assert table.column("id").to_pylist() == sorted(table.column("id").to_pylist()) and table.num_rows == IMAGES
    assert table.column("path").to_pylist() == paths and table.column("sha256").to_pylist() == hashes
    relabelled = table.column("id").to_pylist().index(3)
    assert table.column("label").to_pylist() == labels[:relabelled] + ["relabelled"] + labels[relabelled + 1 :]
    assert table.column("coarse_label").to_pylist() == [None] * relabelled + ["clothes"] + [None] * (
        IMAGES - relabelled - 1
    )
    exported_matrix = table.column("embedding").combine_chunks().flatten().to_numpy().reshape(IMAGES, 1280)
    assert np.allclose(exported_matrix, matrix, atol=1e-6)
    kith("index", "create", "b", "--indexes", indexes, "--models", str(MODELS))
    assert f"added {IMAGES}, skipped 0" in kith("index", "add-parquet", "b", str(exported), "--indexes", indexes).stdout
    kith("export", "parquet", "b", str(tmp_path / "b.parquet"), "--indexes", indexes)
    b = pq.read_table(tmp_path / "b.parquet")
    for column in ("path", "sha256", "label", "coarse_label", "model", "weights_sha256"):
        assert b.column(column).to_pylist() == table.column(column).to_pylist(), column
    b_matrix = b.column("embedding").combine_chunks().flatten().to_numpy().reshape(IMAGES, 1280)
    assert np.allclose(b_matrix, exported_matrix, atol=1e-6)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """spark/local-cluster: a master and two workers of one core each, on 127.0.0.1."""
    env = {
        **os.environ,
        "KITH_CLUSTER_DIR": str(tmp_path_factory.mktemp("cluster")),
        "KITH_CLUSTER_PORT": str(free_port()),
        "KITH_CLUSTER_UI_PORT": str(free_port()),
        "PYTHON": PYTHON,
    }
    script = str(REPOSITORY / "spark" / "local-cluster")
    url = subprocess.run(
        [script, "start", "--workers", "2", "--cores", "1"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    ).stdout.strip()
    try:
        assert (
            "2 alive workers"
            in subprocess.run([script, "status"], check=True, capture_output=True, text=True, env=env).stdout
        )
        yield url
    finally:
        subprocess.run([script, "stop"], env=env, timeout=60)


def test_standalone_cluster_with_kith_and_the_model_shipped_by_spark(
    cluster: str, images: pathlib.Path, job: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    manifest = json.loads((MODELS / f"{MODEL}.json").read_text())
    files = [KITH, str(MODELS / f"{MODEL}.json"), str(MODELS / manifest["weights"])]
    if manifest.get("classNames"):
        files.append(str(MODELS / manifest["classNames"]))
    out = tmp_path / "out"
    run = spark_submit(
        "--executor-cores",
        "1",
        "--total-executor-cores",
        "2",
        "--files",
        ",".join(files),
        JOB,
        "--input",
        str(images),
        "--output",
        str(out),
        "--label-from-folder",
        "--partition-size",
        "64",
        master=cluster,
    )
    s = summary(run)
    assert (s["ran"], s["embedded"], s["failed"], s["settings"]["kith"], s["settings"]["models"]) == (
        4,
        IMAGES,
        1,
        None,
        None,
    )
    assert shards(out)[0] == shards(job)[0]
    assert np.array_equal(shards(out)[3], shards(job)[3])
