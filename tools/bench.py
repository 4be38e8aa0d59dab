#!/usr/bin/env python3
"""Benchmarks for the foundation issue, run side by side and written to BENCHMARKS.md.

EfficientNet-Lite0 inference, images per second at batch 1 and 16 with 1 and 2 threads: Kith
(`kith bench`) against onnxruntime on an ONNX graph built from the same converted weights
(tools/onnx_export.py). The two alternate in rounds, each round timing every configuration, and the
best round counts, so that both see the same load on a shared machine. Also: JPEG decode + resize
of a 4000 × 3000 photo with and without DCT scaling.

  tools/bench [--rounds 3] [--seconds 3] [--no-write]
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
MARK_BEGIN, MARK_END = "<!-- bench:foundation:begin -->", "<!-- bench:foundation:end -->"
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

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
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    import onnxruntime
    lines = [MARK_BEGIN, "",
             f"Measured by `tools/bench --rounds {args.rounds} --seconds {args.seconds:g}` on "
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
    lines += ["", MARK_END]
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        path = os.path.join(ROOT, "BENCHMARKS.md")
        text = open(path).read() if os.path.exists(path) else "# Benchmarks\n\n"
        if MARK_BEGIN in text:
            text = text[: text.index(MARK_BEGIN)] + table + text[text.index(MARK_END) + len(MARK_END):]
        else:
            text += "## Foundation: EfficientNet-Lite0 inference and JPEG decoding\n\n" + table + "\n"
        with open(path, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
