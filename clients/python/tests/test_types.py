"""The package is typed: mypy finds no error in it (and its users' checkers get py.typed)."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPOSITORY


def test_mypy_finds_nothing() -> None:
    package = REPOSITORY / "clients" / "python"
    assert (package / "kith" / "py.typed").exists()
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--ignore-missing-imports", "--no-incremental", "kith"],
        cwd=package,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
