"""A bundle lost as a whole (its worker died) is one failure, not one per task."""

from __future__ import annotations

import sqlite3
from collections import deque
from pathlib import Path

import hpcorch
from hpcorch.engine.runner import Engine
from hpcorch.journal import Journal
from hpcorch.sites.resolve import local_site


def noop(i: int) -> int:
    return i


def _engine(tmp_path: Path, retries: int) -> tuple[Engine, Journal]:
    wf = hpcorch.Workflow("lost", bundle=True)
    wf.map(noop, range(3), id="t", retries=retries)
    journal = Journal.create(
        tmp_path, run_id="lost", name="lost", source=None, site="local", time_scale=None
    )
    engine = Engine(wf.spec(), client=None, journal=journal, run_id="lost", run_dir=tmp_path,
                    site=local_site())  # fmt: skip
    for tid in engine.order:  # as if one bundle had taken them: attempt 1 each
        engine.n[tid] = 1
        engine.key[tid] = "bundle-lost-1"
    return engine, journal


def test_retried_first_task_puts_its_mates_back_in_line(tmp_path: Path) -> None:
    engine, journal = _engine(tmp_path, retries=1)
    updates: list[tuple[str, str]] = []
    try:
        engine._bundle_lost(["t-0", "t-1", "t-2"], RuntimeError("worker gone"), updates)
        assert engine._timers  # t-0 retries after its backoff, alone
        assert engine._n_waiting == 2
        assert [list(q) for q in engine._waiting.values()] == [["t-1", "t-2"]]
        # t-0 waits for its retry as pending (not running: the scaler must not count it)
        assert updates == [("t-0", "pending")] and engine.state["t-1"] == "pending"
    finally:
        for timer in engine._timers.values():
            timer.cancel()
        journal.close()
    conn = sqlite3.connect(tmp_path / "journal.sqlite")
    rows = dict(conn.execute("SELECT task_id, message FROM attempts WHERE n = 1").fetchall())
    retries = conn.execute("SELECT count(*) FROM events WHERE kind = 'retry'").fetchone()[0]
    conn.close()
    assert "its bundle was lost with t-0" in rows["t-2"]
    assert retries == 1


def test_not_retried_fails_them_all(tmp_path: Path) -> None:
    engine, journal = _engine(tmp_path, retries=0)
    updates: list[tuple[str, str]] = []
    try:
        engine._bundle_lost(["t-0", "t-1", "t-2"], RuntimeError("worker gone"), updates)
    finally:
        journal.close()
    assert {engine.state[t] for t in engine.order} == {"failed"}
    assert engine._n_waiting == 0


class _Cancelled:
    """A bundle's future that distributed cancelled, with the reason it gives."""

    status = "cancelled"

    def __init__(self, key: str, reason: str) -> None:
        from distributed.client import FutureCancelledError  # noqa: PLC0415  # heavy

        self.key = key
        self._state = type("State", (), {"exception": FutureCancelledError(key, reason)})()

    def release(self) -> None:
        pass


def test_a_bundle_cancelled_at_the_budgets_end_cancels_what_waits_too(tmp_path: Path) -> None:
    """Not a lost connection (that resubmits): the stranded budget's cancel ends the bundle's
    tasks and the tasks still waiting in the driver, so the run ends instead of waiting on
    bundles no worker will ever take."""
    engine, journal = _engine(tmp_path, retries=3)
    updates: list[tuple[str, str]] = []
    try:
        fut = _Cancelled("bundle-lost-1", "budget-spent")
        engine._bundles[fut.key] = (fut, ["t-0"])
        engine._waiting[("g",)] = deque(["t-1", "t-2"])
        engine._n_waiting = 2
        assert engine._bundle_done(fut, None, updates) == []
    finally:
        journal.close()
    assert {engine.state[t] for t in engine.order} == {"cancelled"}
    assert engine._n_waiting == 0 and not engine._timers
