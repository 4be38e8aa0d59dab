#!/usr/bin/env python3
"""An independent reference for Kith's image pipeline, in numpy and Pillow (no torch).

Written from the architectures' published definitions, in NCHW with unfolded BatchNorm, so that it
shares no code and no layout decisions with the Swift implementation:
  - preprocessing: Pillow decodes, applies EXIF orientation, composites alpha on white, crops the
    centre square (224/256 of the shorter side, TF-style offsets) and resizes with Pillow's
    antialiased BICUBIC (EfficientNet) or BILINEAR (torchvision models);
  - forward passes of EfficientNet-Lite0/2 (TF "SAME" padding), MobileNetV2 and ResNet-18/34/50.

  kith_reference.py embed --model efficientnet-lite0 [--models models] IMAGE...   prints top-5 classes
"""

from __future__ import annotations

import argparse
import json
import math
import os

import numpy as np
from PIL import Image, ImageOps
from safetensors.numpy import load_file

IMAGENET_MEAN = [0.485 * 255, 0.456 * 255, 0.406 * 255]
IMAGENET_STD = [0.229 * 255, 0.224 * 255, 0.225 * 255]
PREPROCESSING = {
    "efficientnet-lite0": dict(size=224, filter="bicubic", mean=[127.0] * 3, std=[128.0] * 3),
    "efficientnet-lite2": dict(size=260, filter="bicubic", mean=[127.0] * 3, std=[128.0] * 3),
    "mobilenetv2": dict(size=224, filter="bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD),
    "resnet18": dict(size=224, filter="bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD),
    "resnet34": dict(size=224, filter="bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD),
    "resnet50": dict(size=224, filter="bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD),
}
CROP_FRACTION = 224 / 256


# ---------------------------------------------------------------- preprocessing


def load_rgb(path: str) -> Image.Image:
    img = ImageOps.exif_transpose(Image.open(path))
    # Alpha, and a PNG's tRNS colour key (palette, grey or RGB), is composited onto white.
    if img.mode in ("RGBA", "LA", "PA") or (img.mode in ("P", "1", "L", "RGB") and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if img.mode == "I;16" or img.mode == "I":
        arr = np.asarray(img, dtype=np.float64)
        grey = np.clip(np.round(arr / 257), 0, 255).astype(np.uint8)
        if "transparency" in img.info:
            grey[arr == img.info["transparency"]] = 255
        img = Image.fromarray(grey, "L")
    return img.convert("RGB")


def crop_box(width: int, height: int) -> tuple[int, int, int, int]:
    side = max(1, int(CROP_FRACTION * min(width, height)))
    x, y = (width - side + 1) // 2, (height - side + 1) // 2
    return x, y, x + side, y + side


def preprocess(path: str, arch: str) -> np.ndarray:
    """The network input for one image: float32 [3, size, size]."""
    p = PREPROCESSING[arch]
    img = load_rgb(path)
    resample = Image.BICUBIC if p["filter"] == "bicubic" else Image.BILINEAR
    # Each channel is resized in Pillow's float mode ("F"): the same antialiased filter without
    # rounding to 8 bits between the passes, then clipped to the pixel range.
    box, size = crop_box(*img.size), (p["size"], p["size"])
    x = np.stack(
        [
            np.asarray(Image.fromarray(np.asarray(ch, np.float32), "F").resize(size, resample, box=box))
            for ch in img.split()
        ],
        axis=-1,
    )
    x = np.clip(x, 0, 255)
    x = (x - np.array(p["mean"], np.float32)) / np.array(p["std"], np.float32)
    return x.transpose(2, 0, 1)


# ---------------------------------------------------------------- layers (NCHW)


def pad_same(x: np.ndarray, k: int, s: int) -> np.ndarray:
    """TensorFlow SAME padding: total = max((ceil(n/s)-1)*s + k - n, 0), the extra pixel after."""
    pads = []
    for n in x.shape[2:]:
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, ((0, 0), (0, 0), pads[0], pads[1]))


def conv2d(x, w, stride=1, padding=0, same=False, groups=1):
    """Cross-correlation as in torch.nn.functional.conv2d; w is [out, in/groups, k, k]."""
    k = w.shape[2]
    x = pad_same(x, k, stride) if same else np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    n, c, h, wd = x.shape
    oh, ow = (h - k) // stride + 1, (wd - k) // stride + 1
    sn, sc, sh, sw = x.strides
    windows = np.lib.stride_tricks.as_strided(
        x, (n, c, oh, ow, k, k), (sn, sc, sh * stride, sw * stride, sh, sw), writeable=False
    )
    if groups == 1:
        return np.einsum("nchwij,ocij->nohw", windows, w, optimize=True).astype(np.float32)
    assert groups == c == w.shape[0]
    return np.einsum("nchwij,cij->nchw", windows, w[:, 0], optimize=True).astype(np.float32)


def batch_norm(x, sd, name, eps):
    g, b = sd[f"{name}.weight"], sd[f"{name}.bias"]
    m, v = sd[f"{name}.running_mean"], sd[f"{name}.running_var"]
    return ((x - m[:, None, None]) / np.sqrt(v[:, None, None] + eps) * g[:, None, None] + b[:, None, None]).astype(
        np.float32
    )


def relu6(x):
    return np.clip(x, 0, 6)


def relu(x):
    return np.maximum(x, 0)


# ---------------------------------------------------------------- networks


def efficientnet_lite(x, sd, width, depth):
    eps = 1e-3
    base = [
        (3, 1, 1, 16, 1),
        (3, 2, 6, 24, 2),
        (5, 2, 6, 40, 2),
        (3, 2, 6, 80, 3),
        (5, 1, 6, 112, 3),
        (5, 2, 6, 192, 4),
        (3, 1, 6, 320, 1),
    ]

    def round_filters(f):
        f *= width
        new = max(8, int(f + 4) // 8 * 8)
        return new + 8 if new < 0.9 * f else new

    x = relu6(batch_norm(conv2d(x, sd["_conv_stem.weight"], 2, same=True), sd, "_bn0", eps))
    i, cin = 0, 32
    for stage, (_k, s, e, cout, r) in enumerate(base):
        repeats = r if stage in (0, len(base) - 1) else int(math.ceil(r * depth))
        cout = round_filters(cout)
        for j in range(repeats):
            p, stride = f"_blocks.{i}", s if j == 0 else 1
            h = x
            if e != 1:
                h = relu6(batch_norm(conv2d(h, sd[f"{p}._expand_conv.weight"], same=True), sd, f"{p}._bn0", eps))
            h = relu6(
                batch_norm(
                    conv2d(h, sd[f"{p}._depthwise_conv.weight"], stride, same=True, groups=h.shape[1]),
                    sd,
                    f"{p}._bn1",
                    eps,
                )
            )
            h = batch_norm(conv2d(h, sd[f"{p}._project_conv.weight"], same=True), sd, f"{p}._bn2", eps)
            x = x + h if stride == 1 and cin == cout else h
            cin, i = cout, i + 1
    x = relu6(batch_norm(conv2d(x, sd["_conv_head.weight"], same=True), sd, "_bn1", eps))
    return x.mean(axis=(2, 3)), "_fc"


def mobilenet_v2(x, sd):
    eps = 1e-5
    x = relu6(batch_norm(conv2d(x, sd["features.0.0.weight"], 2, 1), sd, "features.0.1", eps))
    i, cin = 1, 32
    for t, c, n, s in [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ]:
        for j in range(n):
            p, stride, h = f"features.{i}.conv", s if j == 0 else 1, x
            d = 0
            if t != 1:
                h = relu6(batch_norm(conv2d(h, sd[f"{p}.0.weight"]), sd, f"{p}.1", eps))
                d = 3
            h = relu6(
                batch_norm(conv2d(h, sd[f"{p}.{d}.weight"], stride, 1, groups=h.shape[1]), sd, f"{p}.{d + 1}", eps)
            )
            h = batch_norm(conv2d(h, sd[f"{p}.{d + 3}.weight"]), sd, f"{p}.{d + 4}", eps)
            x = x + h if stride == 1 and cin == c else h
            cin, i = c, i + 1
    x = relu6(batch_norm(conv2d(x, sd[f"features.{i}.0.weight"]), sd, f"features.{i}.1", eps))
    return x.mean(axis=(2, 3)), "classifier.1"


def max_pool_3x3_s2(x):
    x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    n, c, h, w = x.shape
    oh, ow = (h - 3) // 2 + 1, (w - 3) // 2 + 1
    sn, sc, sh, sw = x.strides
    win = np.lib.stride_tricks.as_strided(x, (n, c, oh, ow, 3, 3), (sn, sc, sh * 2, sw * 2, sh, sw))
    return win.max(axis=(4, 5))


def resnet(x, sd, blocks, bottleneck):
    eps = 1e-5
    x = max_pool_3x3_s2(relu(batch_norm(conv2d(x, sd["conv1.weight"], 2, 3), sd, "bn1", eps)))
    for stage, count in enumerate(blocks):
        for b in range(count):
            p, stride = f"layer{stage + 1}.{b}", 2 if b == 0 and stage > 0 else 1
            identity = x
            if f"{p}.downsample.0.weight" in sd:
                identity = batch_norm(conv2d(x, sd[f"{p}.downsample.0.weight"], stride), sd, f"{p}.downsample.1", eps)
            if bottleneck:
                h = relu(batch_norm(conv2d(x, sd[f"{p}.conv1.weight"]), sd, f"{p}.bn1", eps))
                h = relu(batch_norm(conv2d(h, sd[f"{p}.conv2.weight"], stride, 1), sd, f"{p}.bn2", eps))
                h = batch_norm(conv2d(h, sd[f"{p}.conv3.weight"]), sd, f"{p}.bn3", eps)
            else:
                h = relu(batch_norm(conv2d(x, sd[f"{p}.conv1.weight"], stride, 1), sd, f"{p}.bn1", eps))
                h = batch_norm(conv2d(h, sd[f"{p}.conv2.weight"], 1, 1), sd, f"{p}.bn2", eps)
            x = relu(h + identity)
    return x.mean(axis=(2, 3)), "fc"


def forward(arch: str, sd: dict, x: np.ndarray):
    """(pooled features [n, d], logits [n, classes] or None) for a batch x [n, 3, s, s]."""
    x = x.astype(np.float32)
    if arch == "efficientnet-lite0":
        feats, fc = efficientnet_lite(x, sd, 1.0, 1.0)
    elif arch == "efficientnet-lite2":
        feats, fc = efficientnet_lite(x, sd, 1.1, 1.2)
    elif arch == "mobilenetv2":
        feats, fc = mobilenet_v2(x, sd)
    else:
        feats, fc = resnet(
            x,
            sd,
            {"resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3], "resnet50": [3, 4, 6, 3]}[arch],
            arch == "resnet50",
        )
    logits = feats @ sd[f"{fc}.weight"].T + sd[f"{fc}.bias"] if f"{fc}.weight" in sd else None
    return feats, logits


def load_model(models: str, name: str):
    with open(os.path.join(models, f"{name}.json")) as f:
        manifest = json.load(f)
    return manifest, load_file(os.path.join(models, manifest["weights"]))


def embed(models: str, name: str, paths: list[str]):
    """L2-normalised embeddings and logits for image files."""
    manifest, sd = load_model(models, name)
    arch = manifest["architecture"]
    x = np.stack([preprocess(p, arch) for p in paths])
    feats, logits = forward(arch, sd, x)
    feats = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    return feats.astype(np.float32), (None if logits is None else logits.astype(np.float32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("embed")
    p.add_argument("--model", default="efficientnet-lite0")
    p.add_argument("--models", default="models")
    p.add_argument("images", nargs="+")
    args = parser.parse_args()
    feats, logits = embed(args.models, args.model, args.images)
    names = None
    if logits is not None and os.path.exists(os.path.join(args.models, "imagenet1k-classes.json")):
        names = json.load(open(os.path.join(args.models, "imagenet1k-classes.json")))
    for i, path in enumerate(args.images):
        line = f"{path}: dim {feats.shape[1]}, first {np.round(feats[i, :4], 5).tolist()}"
        if logits is not None:
            z = logits[i] - logits[i].max()
            prob = np.exp(z) / np.exp(z).sum()
            top = np.argsort(-prob)[:5]
            line += "; " + ", ".join(f"{names[t] if names else t} {prob[t]:.3f}" for t in top)
        print(line)


if __name__ == "__main__":
    main()
