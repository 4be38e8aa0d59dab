"""What the sections share: the repository's paths, running kith and timing it, the few-shot evaluation,
and writing BENCHMARKS.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
KITH = os.path.join(ROOT, ".build", "release", "kith")
# The benchmarks' own executable (Sources/kith-bench), built beside kith.
KITH_BENCH = os.path.join(ROOT, ".build", "release", "kith-bench")


def kith_at(indexes: str):
    """`kith ARGUMENTS... --indexes INDEXES` as a function of the arguments that returns the command's output
    (and raises if it fails)."""

    def run(*arguments):
        return subprocess.run(
            [KITH, *arguments, "--indexes", indexes], check=True, capture_output=True, text=True
        ).stdout

    return run


def ort_session(model: str, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def max_rss_mib(cmd: list[str]) -> tuple[float, float]:
    """(seconds, peak resident MiB) of `cmd`, run in a child Python whose only child it is."""
    probe = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    seconds, kib = subprocess.run(
        [sys.executable, "-c", probe, *cmd], check=True, capture_output=True, text=True
    ).stdout.split()
    return float(seconds), int(kib) / 1024


def write_npy_labels(folder: str, name: str, x: np.ndarray, labels: list[str]) -> tuple[str, str]:
    path = os.path.join(folder, f"{name}.npy")
    np.save(path, x)
    with open(os.path.join(folder, f"{name}.txt"), "w") as f:
        f.write("\n".join(labels) + "\n")
    return path, os.path.join(folder, f"{name}.txt")


def embed_folder(folder: str, out: str) -> tuple[str, str, list[str]]:
    """`kith embed` of a folder tree: the .npy, a label file (parent folder names) and the paths."""
    subprocess.run([KITH, "embed", folder, "--format", "npy", "--output", out], check=True, capture_output=True)
    paths = open(out + ".paths.txt").read().splitlines()
    labels = [os.path.basename(os.path.dirname(p)) for p in paths]
    with open(out + ".labels.txt", "w") as f:
        f.write("\n".join(labels) + "\n")
    return out, out + ".labels.txt", paths


def kith_eval(npy: str, labels: str, out: str, shot: int, heads: list[str], *extra: str) -> dict:
    """`kith eval fewshot` of `heads` on 600 seeded 5-way episodes; the JSON it writes."""
    cmd = [
        KITH,
        "eval",
        "fewshot",
        npy,
        "--labels",
        labels,
        "--way",
        "5",
        "--shot",
        str(shot),
        "--episodes",
        "600",
        "--json",
        out,
        *extra,
    ]
    for head in heads:
        cmd += ["--head", head]
    subprocess.run(cmd, check=True, capture_output=True)
    return json.load(open(out))


def cell(values: list[float]) -> str:
    a = np.array(values)
    return f"{100 * a.mean():.2f} ± {100 * 1.96 * a.std() / np.sqrt(len(a)):.2f}"


def write_benchmarks(title: str, begin: str, end: str, table: str) -> None:
    """Puts `table` (which starts with `begin` and ends with `end`) into BENCHMARKS.md in place of the section's
    previous table, from `begin` to `end`, or at the end under `## title` the first time."""
    path = os.path.join(ROOT, "BENCHMARKS.md")
    text = (
        open(path).read()
        if os.path.exists(path)
        else "# Benchmarks\n\nEvery figure below comes from `tools/bench`, which runs Kith and its anchor side by side in one run.\n"
    )
    if begin in text:
        text = text[: text.index(begin)] + table + text[text.index(end) + len(end) :]
    else:
        text += f"\n## {title}\n\n{table}\n"
    with open(path, "w") as f:
        f.write(text)
