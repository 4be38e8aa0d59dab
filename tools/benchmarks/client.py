"""client: the NNCLR queue step of examples/nnclr_queue.py over loopback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from .common import KITH, ROOT


def client(args) -> str:
    """The NNCLR queue step of examples/nnclr_queue.py over loopback, beside the same NN in numpy."""
    import signal

    tmp = tempfile.mkdtemp(prefix="kith-bench-client-")
    env = dict(os.environ, KITH_INDEXES=os.path.join(tmp, "indexes"))
    serve = subprocess.Popen(
        [KITH, "serve", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    url = "http://" + serve.stdout.readline().strip().rsplit(" ", 1)[1]
    example = os.path.join(ROOT, "examples", "nnclr_queue.py")
    reports = []
    try:
        for r in range(args.rounds):
            out = subprocess.run(
                [sys.executable, example, "--url", url, "--index", f"nnclr-{r}", "--steps", "30"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            reports.append(json.loads(out))
            print(f"client: round {r + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=30)
        shutil.rmtree(tmp)
    lines = [
        f"Measured by `tools/bench client --rounds {args.rounds}` on {time.strftime('%Y-%m-%d')}: `examples/nnclr_queue.py` "
        "against `kith serve` on 127.0.0.1, a vector index (256-d) whose queue holds 65,536 entries; each step asks NN(z, Q) for a batch "
        "of 256 (an .npy body each way) and enqueues the batch (evicting 256). numpy: the same NN (z @ Qᵀ, argmax) on the client's "
        "mirror of the queue, in process; floor: an empty request's round trip. Medians of 30 steps per round; every answer "
        "agreed with numpy's.",
        "",
        "| round | step ms (NN + enqueue) | NN ms | enqueue ms | numpy NN ms | floor ms | NN / (numpy + floor) | agreement |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r, rep in enumerate(reports):
        lines.append(
            f"| {r + 1} | {rep['step_ms']:.1f} | {rep['nn_ms']:.1f} | {rep['enqueue_ms']:.1f} | {rep['numpy_nn_ms']:.1f} | "
            f"{rep['network_floor_ms']:.2f} | {rep['nn_over_numpy_plus_floor']:.2f} | {rep['agreement']:.2f} |"
        )
    return "\n".join(lines)
