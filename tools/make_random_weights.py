#!/usr/bin/env python3
"""Write ResNet-18/34/50 weights in torchvision's parameter names, drawn at random with a fixed seed.

No pretrained ResNet can be had on this machine; these files let Kith's ResNet code be checked
against the numpy reference (tools/kith_reference.py) on exactly the same weights. He-initialised
convolutions and BatchNorm statistics away from identity keep activations in a realistic range.

  make_random_weights.py [--out models] [--seed 0] [resnet18 resnet34 resnet50]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convert_weights import write_model  # noqa: E402

LAYOUT = {"resnet18": ([2, 2, 2, 2], False), "resnet34": ([3, 4, 6, 3], False), "resnet50": ([3, 4, 6, 3], True)}


def resnet_state(arch: str, seed: int) -> dict:
    blocks, bottleneck = LAYOUT[arch]
    rng = np.random.default_rng(seed)
    state: dict = {}

    def conv(name, cout, cin, k):
        state[f"{name}.weight"] = rng.standard_normal((cout, cin, k, k), dtype=np.float32) * np.float32(
            np.sqrt(2.0 / (cin * k * k))
        )

    def bn(name, c, gamma=1.0):
        state[f"{name}.weight"] = (gamma * rng.uniform(0.5, 1.5, c)).astype(np.float32)
        state[f"{name}.bias"] = rng.uniform(-0.2, 0.2, c).astype(np.float32)
        state[f"{name}.running_mean"] = rng.uniform(-0.2, 0.2, c).astype(np.float32)
        state[f"{name}.running_var"] = rng.uniform(0.5, 2.0, c).astype(np.float32)

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    expansion = 4 if bottleneck else 1
    channels = 64
    for stage, count in enumerate(blocks):
        planes = 64 << stage
        for b in range(count):
            p = f"layer{stage + 1}.{b}"
            stride = 2 if b == 0 and stage > 0 else 1
            out = planes * expansion
            if bottleneck:
                conv(f"{p}.conv1", planes, channels, 1)
                bn(f"{p}.bn1", planes)
                conv(f"{p}.conv2", planes, planes, 3)
                bn(f"{p}.bn2", planes)
                conv(f"{p}.conv3", out, planes, 1)
                bn(f"{p}.bn3", out, gamma=0.3)
            else:
                conv(f"{p}.conv1", planes, channels, 3)
                bn(f"{p}.bn1", planes)
                conv(f"{p}.conv2", out, planes, 3)
                bn(f"{p}.bn2", out, gamma=0.3)
            if stride != 1 or channels != out:
                conv(f"{p}.downsample.0", out, channels, 1)
                bn(f"{p}.downsample.1", out)
            channels = out
    state["fc.weight"] = (rng.standard_normal((1000, channels)) * 0.01).astype(np.float32)
    state["fc.bias"] = np.zeros(1000, dtype=np.float32)
    return state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("archs", nargs="*", default=list(LAYOUT))
    parser.add_argument("--out", default="models")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for arch in args.archs:
        name = f"{arch}-random"
        path = write_model(
            resnet_state(arch, args.seed),
            args.out,
            name,
            arch,
            f"random weights (seed {args.seed}) from tools/make_random_weights.py",
            None,
        )
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
