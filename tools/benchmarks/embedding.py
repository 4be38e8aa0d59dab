"""embedding: `kith embed` of a folder of photos against Pillow + onnxruntime, and peak memory."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import onnx_export

from .common import KITH, ROOT, max_rss_mib, ort_session


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
    subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "make_photos.py"), folder, "--count", "500"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "make_photos.py"), big, "--count", "500", "--link", "9"],
        check=True,
        capture_output=True,
    )
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
    rss = {
        n: max_rss_mib([KITH, "embed", f, "--format", "npy", "-o", os.path.join(tmp, f"rss-{n}.npy")])
        for n, f in ((500, folder), (5000, big))
    }
    lines = [
        f"Measured by `tools/bench embedding --rounds {args.rounds}` on {time.strftime('%Y-%m-%d')}: 500 JPEGs of "
        "tools/make_photos.py (400 at 640 × 480, 100 at 4000 × 3000, quality 90), EfficientNet-Lite0, 2 threads, "
        "best of the rounds. Kith: `kith embed FOLDER --format npy -o FILE` (the whole command, loading the model "
        "included). Python: Pillow decoding and the same crop and bicubic resize on 2 threads feeding batches of 16 "
        "to onnxruntime with 2 intra-op threads (tools/benchmarks/embedding.py `python_embed`). The two sets of embeddings agree to "
        f"cosine {cosine.min():.4f} at worst (mean {cosine.mean():.4f}): Pillow resizes in 8 bits, Kith in float, "
        "and Kith decodes large JPEGs at reduced DCT scale.",
        "",
        "| pipeline | images/s | Kith / Python |",
        "|---|---|---|",
        f"| Kith `kith embed` | {kith_rate:.1f} | {kith_rate / python_rate:.2f} |",
        f"| Pillow + onnxruntime | {python_rate:.1f} | 1.00 |",
        "",
        "Peak resident memory of `kith embed` (maximum RSS of the process):",
        "",
        "| images | seconds | peak RSS MiB |",
        "|---|---|---|",
    ]
    for n, (seconds, mib) in rss.items():
        lines.append(f"| {n:,} | {seconds:.1f} | {mib:.0f} |")
    return "\n".join(lines)
