#!/usr/bin/env python3
"""Fuzzes a live `kith serve` with schemathesis against the committed OpenAPI document.

    .venv/bin/python tools/api_fuzz.py --url http://127.0.0.1:8080 [--seed 1] [--max-examples 30] [--max-time 75]

First sets up a few indexes over HTTP (one `resnet18-random` index with labelled vectors, an
image and queue entries, one partitioned by label, and some to be dropped), so that generated
requests reach real data; then runs the schemathesis CLI of this interpreter's environment with
a fixed seed and a time budget (`--max-time`: fuzzing repeats until it is spent), with this file
as its hooks module. The hooks steer some generated requests to the indexes, item ids, models,
vector sizes, images and .npy matrices that exist (chosen from a hash of the case, so a seed
gives the same requests), the rest stay as generated.

Checks: not_a_server_error (no 5xx), status_code_conformance (every status documented),
content_type_conformance and response_schema_conformance (bodies as documented). Exits non-zero
when schemathesis reports a failure or an error, or when /healthz does not answer afterwards.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
SCHEMA = REPOSITORY / "Sources/KithServer/openapi.json"
MODEL = "resnet18-random"
DIMENSION = 512
MAIN = "fuzz-r18"  # resnet18-random: labelled vectors, an image, queue entries
PARTITIONED = "fuzz-part"  # resnet18-random, one queue per label, capacity 4
DROPPABLE = ["fuzz-drop-1", "fuzz-drop-2", "fuzz-drop-3"]  # for DELETE /v1/indexes/{index}
LABELS = ["cat", "dog", "bird", "fish", "frog"]
PER_LABEL = 6
CHECKS = ["not_a_server_error", "status_code_conformance", "content_type_conformance", "response_schema_conformance"]
ENV = "KITH_FUZZ_STATE"


# MARK: - Payloads


def png(width: int, height: int, seed: int) -> bytes:
    """A small RGB PNG (a gradient that depends on `seed`), without any imaging library."""
    rows = bytearray()
    for y in range(height):
        rows.append(0)
        for x in range(width):
            rows += bytes(((x * 8 + seed * 40) % 256, (y * 8 + seed * 90) % 256, (x * y + seed * 17) % 256))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(rows))) + chunk(b"IEND", b"")
    )


def npy(rows: list[list[float]]) -> bytes:
    """A float32 C-order .npy matrix."""
    columns = len(rows[0]) if rows else DIMENSION
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({len(rows)}, {columns}), }}"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    data = b"".join(struct.pack(f"<{len(r)}f", *r) for r in rows)
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + data


def vector(rng: random.Random, label: int | None = None) -> list[float]:
    v = [rng.gauss(0, 0.1) for _ in range(DIMENSION)]
    if label is not None:
        v[label] += 1.0
    return [round(x, 5) for x in v]


# MARK: - Setting up over HTTP


def call(
    base: str,
    method: str,
    path: str,
    body=None,
    data: bytes | None = None,
    content_type: str | None = None,
    expect=(200, 201, 204),
):
    headers = {}
    if body is not None:
        data, content_type = json.dumps(body).encode(), "application/json"
    if content_type:
        headers["Content-Type"] = content_type
    request = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, text = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read()
    if status not in expect:
        raise SystemExit(f"set-up: {method} {path} answered {status}: {text[:300]!r}")
    return json.loads(text) if text and text[:1] in b"{[" else None


def wait_for_health(base: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=5) as response:
                if response.status == 200 and json.loads(response.read()).get("status") == "ok":
                    return True
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    return False


def set_up(base: str, seed: int) -> dict:
    rng = random.Random(seed)
    existing = {entry["name"] for entry in call(base, "GET", "/v1/indexes")["indexes"]}
    for name in [MAIN, PARTITIONED] + DROPPABLE:
        if name in existing:
            call(base, "DELETE", f"/v1/indexes/{name}")
    call(base, "POST", "/v1/indexes", {"name": MAIN, "model": MODEL, "queue_capacity": 64})
    call(
        base,
        "POST",
        "/v1/indexes",
        {"name": PARTITIONED, "model": MODEL, "queue_capacity": 4, "queue_partition": "label"},
    )
    for name in DROPPABLE:
        call(base, "POST", "/v1/indexes", {"name": name, "model": MODEL})
    items = [
        {
            "vector": vector(rng, i % len(LABELS)),
            "source": f"fuzz-{i}",
            "label": LABELS[i % len(LABELS)],
            "coarse_label": "pet" if i % len(LABELS) < 2 else "wild",
            "metadata": {"i": i, "tags": ["fuzz"]},
        }
        for i in range(PER_LABEL * len(LABELS))
    ]
    ids = []
    for name in (MAIN, PARTITIONED):
        added = call(base, "POST", f"/v1/indexes/{name}/vectors", {"items": items})["items"]
        ids = [item["id"] for item in added]
    image = call(
        base,
        "POST",
        f"/v1/indexes/{MAIN}/items?source=gradient.png&label=cat",
        data=png(32, 32, 0),
        content_type="image/png",
    )
    ids.append(image["items"][0]["id"])
    for name in (MAIN, PARTITIONED):
        entries = [
            {"vector": vector(rng, i % len(LABELS)), "item": ids[i], "label": LABELS[i % len(LABELS)]} for i in range(8)
        ]
        call(base, "POST", f"/v1/indexes/{name}/queue", {"entries": entries})
    return {"indexes": [MAIN, PARTITIONED], "droppable": DROPPABLE, "ids": ids, "labels": LABELS}


# MARK: - Schemathesis hooks (this file, loaded by schemathesis through SCHEMATHESIS_HOOKS)


def register_hooks() -> None:
    import schemathesis

    state = json.loads(os.environ.get(ENV, "{}"))
    indexes, droppable, ids = state.get("indexes", [MAIN]), state.get("droppable", DROPPABLE), state.get("ids", [1])
    images = [png(32, 32, 1), png(48, 24, 2)]

    def choice(case, salt: str) -> int:
        """A number that depends only on the generated case (so a seed gives the same requests)."""
        text = repr((case.method, case.path, case.path_parameters, case.query, case.body, salt))
        return int.from_bytes(hashlib.sha256(text.encode("utf-8", "backslashreplace")).digest()[:4], "little")

    def resize(values, n: int):
        """A vector of the index's dimension made from generated numbers (not all zero)."""
        numbers = (
            [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
            if isinstance(values, list)
            else []
        )
        out = [float(numbers[i % len(numbers)]) if numbers else 0.0 for i in range(DIMENSION)]
        out[n % DIMENSION] += 1.0
        return out

    @schemathesis.hook
    def map_case(context, case):
        h = choice(case, "")
        path = case.operation.path
        if "index" in (case.path_parameters or {}) and h % 4 != 0:
            pool = droppable if (case.method.upper() == "DELETE" and path == "/v1/indexes/{index}") else indexes
            case.path_parameters["index"] = pool[(h >> 2) % len(pool)]
        if (
            case.method.upper() == "DELETE"
            and path == "/v1/indexes/{index}"
            and (case.path_parameters or {}).get("index") in indexes
        ):
            case.path_parameters["index"] = droppable[h % len(droppable)]  # the indexes with data stay
        if "id" in (case.path_parameters or {}) and (h >> 8) % 3 != 0:
            case.path_parameters["id"] = ids[(h >> 10) % len(ids)]
        steer = (h >> 16) % 3 != 0
        body = case.body
        if isinstance(body, dict) and steer:
            if path == "/v1/indexes" and "model" in body:
                body["model"] = MODEL
            for key in ("vectors",):
                if isinstance(body.get(key), list):
                    body[key] = [resize(v, i) for i, v in enumerate(body[key][:8])]
            for key in ("items", "entries"):
                if isinstance(body.get(key), list):
                    for i, entry in enumerate(body[key][:8]):
                        if isinstance(entry, dict) and "vector" in entry:
                            entry["vector"] = resize(entry["vector"], i)
                        if isinstance(entry, dict) and "id" in entry:
                            entry["id"] = ids[(h + i) % len(ids)]
            if path.endswith("/eval/fewshot"):
                # Shapes the labelled items allow (5 labels of 6), and few episodes.
                body.update(way=2 + h % 3, shot=1 + (h >> 3) % 2, queries=1 + (h >> 5) % 3, episodes=1 + (h >> 7) % 50)
            if isinstance(body.get("ids"), list):
                body["ids"] = [ids[(h + i) % len(ids)] for i in range(len(body["ids"][:8]))] or [ids[0]]
        elif isinstance(body, (bytes, bytearray)) and steer:
            if case.media_type == "application/x-npy":
                rng = random.Random(h)
                case.body = npy([vector(rng, i) for i in range(1 + h % 3)])
            elif case.media_type and (
                case.media_type.startswith("image/") or case.media_type == "application/octet-stream"
            ):
                case.body = images[h % len(images)]
        if case.query and steer and "model" in case.query:
            case.query["model"] = MODEL
        return case


# MARK: - The run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the server's base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--schema", default=str(SCHEMA), help="the OpenAPI document (default: the committed one)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-examples", type=int, default=25, help="test cases per operation and cycle")
    parser.add_argument("--max-time", type=int, default=75, help="time budget of the schemathesis run, in seconds")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--request-timeout", type=float, default=30)
    parser.add_argument("--phases", default="examples,coverage,fuzzing,stateful")
    parser.add_argument("--checks", default=",".join(CHECKS))
    parser.add_argument("--report-dir", help="keep schemathesis's reports (JUnit, NDJSON, HAR with every request) here")
    args = parser.parse_args()
    base = args.url.rstrip("/")

    started = time.monotonic()
    if not wait_for_health(base, 30):
        print(f"api_fuzz: {base}/healthz does not answer", file=sys.stderr)
        return 2
    state = set_up(base, args.seed)
    print(
        f"api_fuzz: set up {', '.join(state['indexes'] + state['droppable'])} ({len(state['ids'])} items in {MAIN})",
        flush=True,
    )

    schemathesis = Path(sys.executable).parent / "schemathesis"
    with tempfile.TemporaryDirectory(prefix="kith-fuzz-") as scratch:
        reports = Path(args.report_dir) if args.report_dir else Path(scratch)
        reports.mkdir(parents=True, exist_ok=True)
        command = [
            str(schemathesis),
            "run",
            args.schema,
            "--url",
            base,
            "--checks",
            args.checks,
            "--phases",
            args.phases,
            "--seed",
            str(args.seed),
            "--max-examples",
            str(args.max_examples),
            "--max-time",
            str(args.max_time),
            "--workers",
            str(args.workers),
            "--request-timeout",
            str(args.request_timeout),
            "--generation-database",
            "none",
            "--suppress-health-check",
            "all",
            "--no-color",
            "--report",
            "junit,ndjson,har" if args.report_dir else "ndjson",
            "--report-dir",
            str(reports),
        ]
        environment = dict(os.environ, SCHEMATHESIS_HOOKS=str(Path(__file__).resolve()), **{ENV: json.dumps(state)})
        print("api_fuzz: " + " ".join(command), flush=True)
        # Its own working directory, so that nothing (a .hypothesis folder) lands in the checkout.
        run = subprocess.run(command, env=environment, cwd=scratch)
        summary = summarise(reports)

    healthy = wait_for_health(base, 10)
    print(
        f"api_fuzz: schemathesis exited {run.returncode}; {summary}; /healthz {'ok' if healthy else 'NOT answering'}; "
        f"{time.monotonic() - started:.0f} s in all",
        flush=True,
    )
    if run.returncode != 0:
        return 1
    return 0 if healthy else 3


def summarise(reports: Path) -> str:
    """Operations, test cases and requests from the NDJSON events, and statuses seen."""
    files = sorted(reports.glob("*.ndjson"))
    if not files:
        return "no report"
    operations: set[str] = set()
    requests = 0
    statuses: dict[int, int] = {}
    failures: dict[str, int] = {}
    for line in files[-1].read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        for name, payload in event.items():
            if not isinstance(payload, dict):
                continue
            if name == "ScenarioFinished":
                recorder = payload.get("recorder") or {}
                label = recorder.get("label")
                if label and " /" in label:  # "METHOD /path" (not "Stateful tests")
                    operations.add(label)
                for interaction in (recorder.get("interactions") or {}).values():
                    response = (interaction or {}).get("response")
                    if response:
                        requests += 1
                        statuses[response.get("status_code")] = statuses.get(response.get("status_code"), 0) + 1
                for results in (recorder.get("checks") or {}).values():
                    for result in results or []:
                        if str(result.get("status", "")).lower() == "failure":
                            failures[result.get("name")] = failures.get(result.get("name"), 0) + 1
    by_status = ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items(), key=lambda kv: str(kv[0])))
    failed = ", ".join(f"{k}: {v}" for k, v in sorted(failures.items())) or "none"
    return f"{len(operations)} operations, {requests} requests (statuses {by_status}), failed checks: {failed}"


if __name__ == "__main__":
    sys.exit(main())
else:
    register_hooks()
