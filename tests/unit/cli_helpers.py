"""Running the real ``hpcorch`` entry point in this process, with runs kept under tmp."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hpcorch.cli.main import main


def no_runs_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Runs go under tmp; starting any worker pool fails the test."""
    monkeypatch.setenv("HPCORCH_HOME", str(tmp_path / "home"))

    def no_pools(*args: object, **kwargs: object) -> None:
        raise AssertionError("a worker pool was started for bad input")

    monkeypatch.setattr("hpcorch.engine.session.open_workers", no_pools)
    return tmp_path / "home"


def hpcorch_exit(monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    """The exit code of ``hpcorch ARGV`` run through the console script's entry point."""
    monkeypatch.setattr(sys, "argv", ["hpcorch", *argv])
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
