"""inference: Kith (`kith-bench`) against onnxruntime on the same weights, and JPEG decoding."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

import onnx_export

from .common import KITH_BENCH, ROOT, ort_session

CONFIGS = [(threads, batch) for threads in (1, 2) for batch in (1, 16)]


# (model, input size, configurations (threads, batch)) of the inference section.
INFERENCE_MODELS = [
    ("efficientnet-lite0", 224, CONFIGS),
    ("mobilenetv2", 224, [(2, 1), (2, 16)]),
    ("efficientnet-lite2", 260, [(2, 1), (2, 16)]),
    ("resnet50-random", 224, [(2, 1), (2, 16)]),
]


def kith_round(model: str, configs: list, seconds: float, decode: str | None = None) -> list[dict]:
    cmd = [
        KITH_BENCH,
        "inference",
        "--json",
        "--model",
        model,
        "--seconds",
        str(seconds),
        "--repeats",
        "1",
        "--batch-sizes",
        *sorted({str(b) for _, b in configs}),
        "--thread-counts",
        *sorted({str(t) for t, _ in configs}),
    ]
    if decode:
        cmd += ["--decode", decode]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


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
    out = subprocess.run(
        [KITH_BENCH, "inference", "--seconds", "0", "--repeats", "1", "--batch-sizes", "1", "--thread-counts", "1"],
        capture_output=True,
        text=True,
        env=dict(os.environ, DNNL_VERBOSE="1"),
    ).stdout
    info = [
        line.split(",", 3)[-1]
        for line in out.splitlines()
        if line.startswith("onednn_verbose,info,") and ("oneDNN v" in line or "isa:" in line)
    ]
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
            for row in kith_round(
                model, configs, args.seconds, photo if r == 0 and model == "efficientnet-lite0" else None
            ):
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
    lines = [
        f"Measured by `tools/bench inference --rounds {args.rounds} --seconds {args.seconds:g}` on "
        f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, a shared machine, with its "
        f"environment as it is (OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}); best of {args.rounds} "
        f"alternating rounds. Kith runs on oneDNN ({onednn_info()}). onnxruntime {onnxruntime.__version__} runs ONNX "
        f"graphs built from the same converted weights (tools/onnx_export.py; their features differ from the numpy "
        f"reference by at most {worst:.1e} relative) with intra-op threads = threads. ResNet-50 has random weights "
        "(timing does not depend on them).",
        "",
        "| model | threads | batch | Kith images/s | onnxruntime images/s | Kith / onnxruntime |",
        "|---|---|---|---|---|---|",
    ]
    for model, _, configs in INFERENCE_MODELS:
        for threads, batch in configs:
            key = (model, threads, batch)
            lines.append(
                f"| {model} | {threads} | {batch} | {kith_best[key]:.1f} | {ort_best[key]:.1f} | "
                f"{kith_best[key] / ort_best[key]:.2f} |"
            )
    lines += [
        "",
        "JPEG decode + preprocessing of a 4000 × 3000 photo (quality 90) to the 224 × 224 input, one thread:",
        "",
        "| DCT scaling | decoded at | milliseconds |",
        "|---|---|---|",
    ]
    for scaled in (False, True):
        row = decode[scaled]
        lines.append(f"| {'yes' if scaled else 'no'} | {row['decoded']} | {row['milliseconds']:.1f} |")
    return "\n".join(lines)
