#!/usr/bin/env python3
"""Build an ONNX graph of a Kith backbone from its converted weights (for the benchmark).

EfficientNet-Lite0/2, MobileNetV2 and the ResNets. The graph mirrors the network exactly (Conv with
TF "SAME" = ONNX SAME_UPPER padding for EfficientNet, explicit pads for the others, BatchNorm,
ReLU6 as Clip, ReLU, residual Add, max and global average pooling) and takes NCHW float32 input;
onnxruntime folds the BatchNorms itself. The check at the end compares its output with
tools/kith_reference.py.

  onnx_export.py --model efficientnet-lite0 [--models models] --out /tmp/lite0.onnx
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kith_reference as ref  # noqa: E402


def build(sd: dict, arch: str, size: int) -> onnx.ModelProto:
    nodes, inits = [], []
    counter = [0]

    def name(prefix):
        counter[0] += 1
        return f"{prefix}_{counter[0]}"

    for k, v in sd.items():
        inits.append(numpy_helper.from_array(v, k))
    inits.append(numpy_helper.from_array(np.asarray(0.0, np.float32), "zero"))
    inits.append(numpy_helper.from_array(np.asarray(6.0, np.float32), "six"))
    eps = 1e-3 if arch.startswith("efficientnet") else 1e-5

    def conv_bn(x, conv, bn, stride=1, groups=1, act="relu6", pad=None):
        """pad None: TensorFlow SAME; else that many pixels on every side."""
        w = sd[f"{conv}.weight"]
        y = name("conv")
        padding = {"auto_pad": "SAME_UPPER"} if pad is None else {"pads": [pad] * 4}
        nodes.append(
            helper.make_node(
                "Conv",
                [x, f"{conv}.weight"],
                [y],
                strides=[stride, stride],
                group=groups,
                kernel_shape=list(w.shape[2:]),
                **padding,
            )
        )
        z = name("bn")
        nodes.append(
            helper.make_node(
                "BatchNormalization",
                [y, f"{bn}.weight", f"{bn}.bias", f"{bn}.running_mean", f"{bn}.running_var"],
                [z],
                epsilon=eps,
            )
        )
        return activate(z, act)

    def activate(z, act):
        if act is None:
            return z
        r = name(act)
        nodes.append(
            helper.make_node("Clip", [z, "zero", "six"], [r]) if act == "relu6" else helper.make_node("Relu", [z], [r])
        )
        return r

    def add(a, b, act=None):
        y = name("add")
        nodes.append(helper.make_node("Add", [a, b], [y]))
        return activate(y, act)

    if arch.startswith("efficientnet"):
        x, dim = efficientnet_lite(sd, arch, conv_bn, add), 1280
    elif arch == "mobilenetv2":
        x, dim = mobilenet_v2(conv_bn, add), 1280
    else:
        blocks = {"resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3], "resnet50": [3, 4, 6, 3]}[arch]
        x = conv_bn("input", "conv1", "bn1", 2, act="relu", pad=3)
        pooled = name("maxpool")
        nodes.append(helper.make_node("MaxPool", [x], [pooled], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4))
        x, dim = resnet(sd, pooled, blocks, arch == "resnet50", conv_bn, add)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["features"], axis=1))
    used = {n for node in nodes for n in node.input}
    inits = [t for t in inits if t.name in used]
    graph = helper.make_graph(
        nodes,
        arch,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", dim])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def efficientnet_lite(sd, arch, conv_bn, add):
    width, depth = {"efficientnet-lite0": (1.0, 1.0), "efficientnet-lite2": (1.1, 1.2)}[arch]

    def round_filters(f):
        f *= width
        new = max(8, int(f + 4) // 8 * 8)
        return new + 8 if new < 0.9 * f else new

    x = conv_bn("input", "_conv_stem", "_bn0", 2)
    base = [
        (3, 1, 1, 16, 1),
        (3, 2, 6, 24, 2),
        (5, 2, 6, 40, 2),
        (3, 2, 6, 80, 3),
        (5, 1, 6, 112, 3),
        (5, 2, 6, 192, 4),
        (3, 1, 6, 320, 1),
    ]
    i, cin = 0, 32
    for stage, (_k, s, e, cout, r) in enumerate(base):
        repeats = r if stage in (0, len(base) - 1) else int(math.ceil(r * depth))
        cout = round_filters(cout)
        for j in range(repeats):
            p, stride, h = f"_blocks.{i}", s if j == 0 else 1, x
            hidden = cin * e
            if e != 1:
                h = conv_bn(h, f"{p}._expand_conv", f"{p}._bn0")
            h = conv_bn(h, f"{p}._depthwise_conv", f"{p}._bn1", stride, groups=hidden)
            h = conv_bn(h, f"{p}._project_conv", f"{p}._bn2", act=None)
            x, cin, i = add(x, h) if stride == 1 and cin == cout else h, cout, i + 1
    return conv_bn(x, "_conv_head", "_bn1")


def mobilenet_v2(conv_bn, add):
    x = conv_bn("input", "features.0.0", "features.0.1", 2, pad=1)
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
            p, stride, h, d = f"features.{i}.conv", s if j == 0 else 1, x, 0
            if t != 1:
                h, d = conv_bn(h, f"{p}.0", f"{p}.1", pad=0), 3
            h = conv_bn(h, f"{p}.{d}", f"{p}.{d + 1}", stride, groups=cin * t, pad=1)
            h = conv_bn(h, f"{p}.{d + 3}", f"{p}.{d + 4}", act=None, pad=0)
            x, cin, i = add(x, h) if stride == 1 and cin == c else h, c, i + 1
    return conv_bn(x, f"features.{i}.0", f"features.{i}.1", pad=0)


def resnet(sd, x, blocks, bottleneck, conv_bn, add):
    channels = 64
    for stage, count in enumerate(blocks):
        for b in range(count):
            p, stride = f"layer{stage + 1}.{b}", 2 if b == 0 and stage > 0 else 1
            identity = x
            if f"{p}.downsample.0.weight" in sd:
                identity = conv_bn(x, f"{p}.downsample.0", f"{p}.downsample.1", stride, act=None, pad=0)
            if bottleneck:
                h = conv_bn(x, f"{p}.conv1", f"{p}.bn1", act="relu", pad=0)
                h = conv_bn(h, f"{p}.conv2", f"{p}.bn2", stride, act="relu", pad=1)
                h = conv_bn(h, f"{p}.conv3", f"{p}.bn3", act=None, pad=0)
            else:
                h = conv_bn(x, f"{p}.conv1", f"{p}.bn1", stride, act="relu", pad=1)
                h = conv_bn(h, f"{p}.conv2", f"{p}.bn2", act=None, pad=1)
            x = add(h, identity, act="relu")
            channels = sd[f"{p}.bn{3 if bottleneck else 2}.weight"].shape[0]
    return x, channels


def export(models: str, name: str, out: str) -> str:
    manifest, sd = ref.load_model(models, name)
    arch = manifest["architecture"]
    size = ref.PREPROCESSING[arch]["size"]
    onnx.save(build(sd, arch, size), out)
    return out


def check(path: str, models: str, name: str) -> float:
    """Worst relative difference between onnxruntime and the numpy reference on random input."""
    import onnxruntime as ort

    manifest, sd = ref.load_model(models, name)
    size = ref.PREPROCESSING[manifest["architecture"]]["size"]
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, size, size)).astype(np.float32)
    ours = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    theirs, _ = ref.forward(manifest["architecture"], sd, x)
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--models", default="models")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    export(args.models, args.model, args.out)
    print(
        f"{args.out}: worst relative difference to the numpy reference {check(args.out, args.models, args.model):.2e}"
    )


if __name__ == "__main__":
    main()
