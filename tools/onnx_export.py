#!/usr/bin/env python3
"""Build an ONNX graph of EfficientNet-Lite0/2 from Kith's converted weights (for the benchmark).

The graph mirrors the network exactly (Conv with TF "SAME" = ONNX SAME_UPPER padding, BatchNorm,
ReLU6 as Clip, residual Add, global average pooling) and takes NCHW float32 input; onnxruntime
folds the BatchNorms itself. The check at the end compares its output with tools/kith_reference.py.

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
    width, depth = {"efficientnet-lite0": (1.0, 1.0), "efficientnet-lite2": (1.1, 1.2)}[arch]
    nodes, inits = [], []
    counter = [0]

    def name(prefix):
        counter[0] += 1
        return f"{prefix}_{counter[0]}"

    def const(value, n):
        inits.append(numpy_helper.from_array(np.asarray(value, np.float32), n))
        return n

    for k, v in sd.items():
        inits.append(numpy_helper.from_array(v, k))
    const(0.0, "zero")
    const(6.0, "six")

    def conv_bn(x, conv, bn, stride=1, groups=1, act=True):
        w = sd[f"{conv}.weight"]
        y = name("conv")
        nodes.append(helper.make_node("Conv", [x, f"{conv}.weight"], [y], auto_pad="SAME_UPPER",
                                      strides=[stride, stride], group=groups, kernel_shape=list(w.shape[2:])))
        z = name("bn")
        nodes.append(helper.make_node("BatchNormalization", [y, f"{bn}.weight", f"{bn}.bias", f"{bn}.running_mean",
                                                             f"{bn}.running_var"], [z], epsilon=1e-3))
        if not act:
            return z
        r = name("relu6")
        nodes.append(helper.make_node("Clip", [z, "zero", "six"], [r]))
        return r

    def round_filters(f):
        f *= width
        new = max(8, int(f + 4) // 8 * 8)
        return new + 8 if new < 0.9 * f else new

    x = conv_bn("input", "_conv_stem", "_bn0", 2)
    base = [(3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3),
            (5, 1, 6, 112, 3), (5, 2, 6, 192, 4), (3, 1, 6, 320, 1)]
    i, cin = 0, 32
    for stage, (k, s, e, cout, r) in enumerate(base):
        repeats = r if stage in (0, len(base) - 1) else int(math.ceil(r * depth))
        cout = round_filters(cout)
        for j in range(repeats):
            p, stride, h = f"_blocks.{i}", s if j == 0 else 1, x
            hidden = cin * e
            if e != 1:
                h = conv_bn(h, f"{p}._expand_conv", f"{p}._bn0")
            h = conv_bn(h, f"{p}._depthwise_conv", f"{p}._bn1", stride, groups=hidden)
            h = conv_bn(h, f"{p}._project_conv", f"{p}._bn2", act=False)
            if stride == 1 and cin == cout:
                y = name("add")
                nodes.append(helper.make_node("Add", [x, h], [y]))
                h = y
            x, cin, i = h, cout, i + 1
    x = conv_bn(x, "_conv_head", "_bn1")
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["features"], axis=1))
    used = {n for node in nodes for n in node.input}
    inits = [t for t in inits if t.name in used]
    graph = helper.make_graph(
        nodes, arch, [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 1280])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


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
    print(f"{args.out}: worst relative difference to the numpy reference {check(args.out, args.models, args.model):.2e}")


if __name__ == "__main__":
    main()
