"""EfficientNet-Lite0 (random weights) as an ONNX model, timed with onnxruntime.

Same graph as tools/engines/onednn_bench.c: TF SAME padding as explicit Conv pads, BatchNorm
folded (every Conv has a bias), ReLU6 = Clip(0, 6), residual Add, GlobalAveragePool, NCHW
float32 input with a dynamic batch dimension.

  .venv/bin/python tools/engines/ort_lite0_random.py [--threads 1,2] [--batch 1,16]
        [--secs 1.0] [--rounds 3] [--warmup 0.3] [--dump-opt] [--check]

--check regenerates the oneDNN benchmark's xorshift weights/input (slow, pure Python) and
prints the batch-1 output so it can be compared with `onednn_bench --impls`.
"""

import argparse
import math
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

STAGES = [
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
]


class XorShift:
    """The xorshift64 stream of onednn_bench.c (frand: uniform [0,1))."""

    def __init__(self):
        self.s = 0x9E3779B97F4A7C15
        self.m = (1 << 64) - 1

    def take(self, n):
        s, m = self.s, self.m
        out = np.empty(n, dtype=np.float64)
        for i in range(n):
            s ^= (s << 13) & m
            s ^= s >> 7
            s ^= (s << 17) & m
            out[i] = (s >> 40) * (1.0 / 16777216.0)
        self.s = s
        return out.astype(np.float32)


def build_model(check):
    rng = XorShift() if check else None
    nprng = np.random.default_rng(0)
    inits, nodes = [], []
    counter = [0]
    stats = {"macs": 0, "params": 0}

    def uniform(shape, fan_in):
        a = math.sqrt(3.0 / fan_in)
        n = int(np.prod(shape))
        u = rng.take(n) if rng else nprng.random(n, dtype=np.float32)
        stats["params"] += n
        return ((2.0 * u - 1.0) * a).astype(np.float32).reshape(shape)

    def name(p):
        counter[0] += 1
        return f"{p}{counter[0]}"

    def conv(x, shape, oc, k, stride, groups, relu6):
        ic, h, w = shape
        oh, ow = -(-h // stride), -(-w // stride)
        ph = max((oh - 1) * stride + k - h, 0)
        pw = max((ow - 1) * stride + k - w, 0)
        wn, bn, y = name("w"), name("b"), name("conv")
        inits.append(numpy_helper.from_array(uniform((oc, ic // groups, k, k), ic // groups * k * k), wn))
        inits.append(numpy_helper.from_array(uniform((oc,), 16), bn))
        nodes.append(
            helper.make_node(
                "Conv",
                [x, wn, bn],
                [y],
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[ph // 2, pw // 2, ph - ph // 2, pw - pw // 2],
                group=groups,
            )
        )
        stats["macs"] += oh * ow * oc * (ic // groups) * k * k
        if relu6:
            z = name("relu6")
            nodes.append(helper.make_node("Clip", [y, "zero", "six"], [z]))
            y = z
        return y, (oc, oh, ow)

    inits.append(numpy_helper.from_array(np.array(0.0, np.float32), "zero"))
    inits.append(numpy_helper.from_array(np.array(6.0, np.float32), "six"))
    x, shape = conv("input", (3, 224, 224), 32, 3, 2, 1, True)
    for k, s, e, oc, reps in STAGES:
        for r in range(reps):
            stride = s if r == 0 else 1
            ic = shape[0]
            h, hs = x, shape
            if e != 1:
                h, hs = conv(h, hs, ic * e, 1, 1, 1, True)
            h, hs = conv(h, hs, ic * e, k, stride, ic * e, True)
            h, hs = conv(h, hs, oc, 1, 1, 1, False)
            if stride == 1 and ic == oc:
                y = name("add")
                nodes.append(helper.make_node("Add", [x, h], [y]))
                h = y
            x, shape = h, hs
    x, shape = conv(x, shape, 1280, 1, 1, 1, True)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["features"], axis=1))
    graph = helper.make_graph(
        nodes,
        "efficientnet_lite0_random",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 1280])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    user_input = rng.take(224 * 224 * 3).reshape(1, 224, 224, 3).transpose(0, 3, 1, 2) if rng else None
    return model, stats, user_input


def session(model_bytes, threads, opt_path=None):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if opt_path:
        so.optimized_model_filepath = opt_path
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--batch", default="1,16")
    ap.add_argument("--secs", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=float, default=0.3)
    ap.add_argument("--dump-opt", action="store_true")
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    model, stats, user_input = build_model(a.check)
    mb = model.SerializeToString()
    print(
        f"# onnxruntime {ort.__version__}, {len(model.graph.node)} nodes, "
        f"{stats['macs'] / 1e6:.1f} MMAC/img, {stats['params'] / 1e6:.3f} M params",
        flush=True,
    )
    if a.check:
        sess = session(mb, 1)
        o = sess.run(None, {"input": np.ascontiguousarray(user_input, dtype=np.float32)})[0]
        print(f"# output[0][0:4] = {' '.join(f'{v:.6f}' for v in o[0, :4])}  sum = {o.sum():.6f}")
        return
    if a.dump_opt:
        session(mb, 1, "/tmp/ort_lite0_opt.onnx")
        opt = onnx.load("/tmp/ort_lite0_opt.onnx")
        counts = {}
        for n in opt.graph.node:
            key = n.op_type
            if n.op_type == "FusedConv" or n.op_type == "Conv":
                act = [at.s.decode() for at in n.attribute if at.name == "activation"]
                key += f"[{n.domain or 'ai.onnx'}{',' + act[0] if act else ''}{',+sum' if len(n.input) > 3 else ''}]"
            counts[key] = counts.get(key, 0) + 1
        print("# optimized graph:", ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())))
    for t in [int(v) for v in a.threads.split(",")]:
        sess = session(mb, t)
        for n in [int(v) for v in a.batch.split(",")]:
            x = np.random.default_rng(1).random((n, 3, 224, 224), dtype=np.float32)
            feeds = {"input": x}
            t0, it = time.perf_counter(), 0
            while it < 2 or time.perf_counter() - t0 < a.warmup:
                sess.run(None, feeds)
                it += 1
            best, ratio = 0.0, 0.0
            for _ in range(a.rounds):
                c0, w0 = time.process_time(), time.perf_counter()
                iters = 0
                while True:
                    sess.run(None, feeds)
                    iters += 1
                    w1 = time.perf_counter()
                    if w1 - w0 >= a.secs:
                        break
                ips = iters * n / (w1 - w0)
                if ips > best:
                    best, ratio = ips, (time.process_time() - c0) / (w1 - w0)
            print(
                f"RESULT ort threads={t} batch={n} ips={best:.2f} ms_per_batch={1e3 * n / best:.3f} "
                f"cpu/wall={ratio:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    sys.exit(main())
