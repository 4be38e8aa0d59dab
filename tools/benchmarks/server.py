"""server: `kith serve` under wrk against the same calls on the library."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from .common import KITH, KITH_BENCH, ROOT


def parse_wrk(text: str) -> dict:
    import re

    def ms(v, unit):
        return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    out = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))}
    for p in ("50", "99"):
        m = re.search(rf"\s{p}(?:\.000)?%\s+([\d.]+)(us|ms|s)", text)
        out[f"p{p}"] = ms(m.group(1), m.group(2)) if m else float("nan")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    out["errors"] = int(errors.group(1)) if errors else 0
    return out


def server(args) -> str:
    import shutil
    import signal

    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: tools/setup installs it")
    tmp = tempfile.mkdtemp(prefix="kith-bench-server-")
    env = dict(os.environ, KITH_INDEXES=os.path.join(tmp, "indexes"))
    n, d = 100_000, 1280
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    np.save(os.path.join(tmp, "vectors.npy"), x)
    with open(os.path.join(tmp, "labels.txt"), "w") as f:
        f.write("\n".join(f"c{i % 10}" if i < 1000 else "" for i in range(n)) + "\n")
    q = rng.standard_normal((1, d), dtype=np.float32)
    np.save(os.path.join(tmp, "query.npy"), q)
    del x
    subprocess.run([KITH, "index", "create", "big"], check=True, capture_output=True, env=env)
    subprocess.run(
        [
            KITH,
            "index",
            "add-vectors",
            "big",
            os.path.join(tmp, "vectors.npy"),
            "--labels",
            os.path.join(tmp, "labels.txt"),
        ],
        check=True,
        capture_output=True,
        env=env,
    )
    image = os.path.join(ROOT, "Tests", "Fixtures", "images", "chelsea.jpg")
    vector = json.dumps(q[0].tolist())
    query_npy = os.path.join(tmp, "query.npy")

    def binary(path, content_type):
        return f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "{content_type}"\nlocal f = io.open("{path}", "rb")\nwrk.body = f:read("*a")\nf:close()\n'

    # operation -> (path, wrk script, library operation)
    scripts = {
        "search (.npy body)": ("/v1/indexes/big/search?k=10", binary(query_npy, "application/x-npy"), "search"),
        "classify (.npy body)": (
            "/v1/indexes/big/classify?head=logreg",
            binary(query_npy, "application/x-npy"),
            "classify",
        ),
        "classify (JSON body)": (
            "/v1/indexes/big/classify",
            f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = [==[{{"vectors": [{vector}], "head": "logreg"}}]==]\n',
            "classify",
        ),
        "embed (JPEG body)": ("/v1/embed", binary(image, "image/jpeg"), "embed"),
    }
    lua_files = {}
    for i, (name, (_, lua, _)) in enumerate(scripts.items()):
        lua_files[name] = os.path.join(tmp, f"script-{i}.lua")
        with open(lua_files[name], "w") as f:
            f.write(lua)
    best = {op: {"library": None, "server": None} for op in scripts}
    seconds = max(3, int(args.seconds * 2))
    for r in range(args.rounds):
        library: dict = {}
        for op in ("search", "classify", "embed"):
            cmd = [
                KITH_BENCH,
                "engine",
                "--json",
                "--operation",
                op,
                "--concurrency",
                "8",
                "--seconds",
                str(seconds),
            ]
            cmd += ["--image", image] if op == "embed" else ["--index", "big", "--vector", query_npy]
            row = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout)
            library[op] = {
                "rps": row.get("requests_per_second", row.get("images_per_second")),
                "p50": row.get("p50_ms"),
                "p99": row.get("p99_ms"),
            }
        for name, (_, _, op) in scripts.items():
            if best[name]["library"] is None or library[op]["rps"] > best[name]["library"]["rps"]:
                best[name]["library"] = library[op]
        serve = subprocess.Popen(
            [KITH, "serve", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
        )
        port = int(serve.stdout.readline().strip().rsplit(":", 1)[1])
        base = f"http://127.0.0.1:{port}"
        for op, (path, _, _) in scripts.items():  # warm up: load the snapshot, fit the head, load the backbone
            subprocess.run(
                ["wrk", "-t1", "-c1", "-d1s", "-s", lua_files[op], base + path], check=True, capture_output=True
            )
        for op, (path, _, _) in scripts.items():
            out = subprocess.run(
                ["wrk", "-t2", "-c8", f"-d{seconds}s", "--latency", "-s", lua_files[op], base + path],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            res = parse_wrk(out)
            if best[op]["server"] is None or res["rps"] > best[op]["server"]["rps"]:
                best[op]["server"] = res
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=30)
        print(f"server: round {r + 1}/{args.rounds} done", file=sys.stderr)
    shutil.rmtree(tmp)
    lines = [
        f"Measured by `tools/bench server --rounds {args.rounds}` on {time.strftime('%Y-%m-%d')}: `kith serve` on 127.0.0.1 "
        f"under `wrk -t2 -c8 -d{seconds}s` (8 connections, one query or one image per request; wrk runs on the same 2 cores), "
        "against the same operations called on the library by 8 concurrent callers in one process (`kith-bench engine`; "
        "embed there is the encoder on batches of 16). Search: top-10 over 100,000 random 1280-d items; classify: the "
        "logistic-regression head fitted once on 1,000 labelled items and cached; embed: a 451 × 300 JPEG. Best of the rounds.",
        "",
        "| operation | library req/s | server req/s | server / library | server p50 ms | server p99 ms | library p50 ms | library p99 ms | non-2xx |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for op, b in best.items():
        lib, srv = b["library"], b["server"]

        def fmt(v):
            return "–" if v is None else f"{v:.2f}"

        lines.append(
            f"| {op} | {lib['rps']:,.1f} | {srv['rps']:,.1f} | {srv['rps'] / lib['rps']:.2f} | {srv['p50']:.2f} | {srv['p99']:.2f} | "
            f"{fmt(lib['p50'])} | {fmt(lib['p99'])} | {srv['errors']} |"
        )
    return "\n".join(lines)
