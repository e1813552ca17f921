"""Helpers of the scaling and region tests on dev: fast scaling settings, journal events."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from hpcorch.journal import JOURNAL_NAME

INTERVAL_S = 2.0
IDLE_S = 10.0


def fast_scaling(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Poll every 2 s, release after 10 s idle, cool down 5 s; no region, no budget."""
    monkeypatch.setenv("HPCORCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HPCORCH_SCALE_INTERVAL", str(INTERVAL_S))
    monkeypatch.setenv("HPCORCH_IDLE_TIMEOUT", str(IDLE_S))
    monkeypatch.setenv("HPCORCH_SCALE_COOLDOWN", "5")
    monkeypatch.delenv("HPCORCH_REGIONS", raising=False)
    monkeypatch.delenv("HPCORCH_BUDGET", raising=False)


def events(run_dir: Path, kind: str = "scale") -> list[dict[str, Any]]:
    """The journal's events of one kind, oldest first, each with its time."""
    conn = sqlite3.connect(f"file:{run_dir / JOURNAL_NAME}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT time, payload FROM events WHERE kind = ? ORDER BY id", (kind,)
        ).fetchall()
    finally:
        conn.close()
    return [{"time": t, **json.loads(p)} for t, p in rows]


def burst(n: int, seconds: float, prefix: str = "t") -> dict[str, Any]:
    """``n`` one-core tasks of ``seconds`` each, estimated (walltime) at twice that + 5 s.

    The estimate is also the task's walltime, which the engine enforces: leave room.
    """
    return {
        "name": "burst",
        "tasks": [
            {
                "id": f"{prefix}{i}",
                "command": ["sleep", str(seconds)],
                "resources": {"cpus": 1, "walltime": f"{2 * seconds + 5:g}s"},
            }
            for i in range(n)
        ],
    }
