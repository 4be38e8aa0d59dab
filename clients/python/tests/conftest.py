"""A real `kith serve` on a free loopback port, over temporary folders, for the whole session."""

from __future__ import annotations

import os
import pathlib
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

import kith

REPOSITORY = pathlib.Path(__file__).resolve().parents[3]


def kith_binary() -> str:
    """$KITH_BINARY, else the newer of the release and debug builds."""
    if os.environ.get("KITH_BINARY"):
        return os.environ["KITH_BINARY"]
    builds = [REPOSITORY / ".build" / kind / "kith" for kind in ("release", "debug")]
    found = [b for b in builds if b.exists()]
    if not found:
        pytest.fail("no kith binary: run the set-up (tools/setup) or swift build first")
    return str(max(found, key=lambda b: b.stat().st_mtime))


class Server:
    def __init__(self, extra: list[str] = ()) -> None:
        self.folder = tempfile.TemporaryDirectory(prefix="kith-pytest-")
        root = pathlib.Path(self.folder.name)
        arguments = [
            kith_binary(),
            "serve",
            "--port",
            "0",
            "--indexes",
            str(root / "indexes"),
            "--models",
            os.environ.get("KITH_MODELS", str(REPOSITORY / "models")),
            *extra,
        ]
        self.process = subprocess.Popen(arguments, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.process.stdout.readline().strip()  # "listening on 127.0.0.1:PORT"
        if not line.startswith("listening on "):
            self.process.kill()
            raise RuntimeError(f"kith serve did not start: {line!r}")
        self.url = "http://" + line.removeprefix("listening on ")
        self.root = root

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.folder.cleanup()


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="kith-pytest-snapshots-") as snapshots:
        s = Server(["--snapshots", snapshots])
        yield s
        s.stop()


@pytest.fixture()
def client(server: Server) -> Iterator[kith.Client]:
    with kith.Client(server.url) as c:
        yield c


@pytest.fixture()
def name(request: pytest.FixtureRequest) -> str:
    """An index name unique to the test."""
    return request.node.name.replace("[", "-").replace("]", "")[:80]
