"""The journal: private files, WAL, batched writes, and the status --json object."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from hpcorch.errors import JournalError
from hpcorch.journal import Journal, read_run, status, task_states


def _journal(run_dir: Path) -> Journal:
    return Journal.create(
        run_dir, run_id="r1", name="demo", source="/x/wf.yaml", site="local", time_scale=None
    )


def test_files_are_private_and_wal(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with _journal(run_dir) as j:
        j.add_tasks([("a", "command", "pending", 1)])
    mode = stat.S_IMODE((run_dir / "journal.sqlite").stat().st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    conn = sqlite3.connect(run_dir / "journal.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_status_object_shape(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with _journal(run_dir) as j:
        j.add_tasks([("a", "command", "pending", 2), ("b", "function", "pending", 1)])
        j.record_attempts([{"task_id": "a", "n": 1, "start": 10.0, "worker": "tcp://w"}])
        # A later piece of the same attempt fills in what it knows, keeps the rest.
        j.record_attempts(
            [{"task_id": "a", "n": 1, "end": 12.0, "exit_code": 1, "failure_class": "user_error"}]
        )
        j.record_attempts(
            [
                {
                    "task_id": "a",
                    "n": 2,
                    "start": 13.0,
                    "end": 14.0,
                    "exit_code": 0,
                    "node": "cpu1",
                    "job_id": "42",
                    "cores": "0,1",
                    "gpus": "2",
                }
            ]
        )
        j.set_states([("a", "succeeded"), ("b", "upstream_failed")])
        j.record_allocation(
            job_id="42",
            site="dev",
            partition="cpu",
            nodes=1,
            state="RUNNING",
            start=5.0,
            end=None,
            pool="cpu-small",
        )
        j.set_run_state("failed")
    data = status(run_dir)
    assert set(data) >= {"run_id", "state", "counts", "tasks", "allocations"}
    assert data["run_id"] == "r1" and data["state"] == "failed"
    assert data["counts"]["succeeded"] == 1 and data["counts"]["upstream_failed"] == 1
    a = data["tasks"][0]
    assert a["id"] == "a" and a["state"] == "succeeded"
    assert a["attempts"][0] == {
        "n": 1,
        "start": 10.0,
        "end": 12.0,
        "exit_code": 1,
        "failure_class": "user_error",
        "job_id": None,
        "node": None,
        "gpus": None,
        "cores": None,
    }
    assert a["attempts"][1]["cores"] == [0, 1] and a["attempts"][1]["gpus"] == [2]
    assert data["allocations"] == [
        {
            "job_id": "42",
            "site": "dev",
            "partition": "cpu",
            "nodes": 1,
            "state": "RUNNING",
            "start": 5.0,
            "end": None,
        }
    ]
    assert task_states(run_dir)["a"]["attempts"] == 2
    assert read_run(run_dir)["source"] == "/x/wf.yaml"


def test_many_events_are_batched(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with _journal(run_dir) as j:
        j.add_tasks((f"t{i}", "function", "pending", 0) for i in range(20_000))
        for i in range(0, 20_000, 500):
            j.set_states((f"t{k}", "succeeded") for k in range(i, i + 500))
    assert status(run_dir)["counts"]["succeeded"] == 20_000


def test_reopening_keeps_task_state(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with _journal(run_dir) as j:
        j.add_tasks([("a", "command", "pending", 0)])
        j.set_states([("a", "succeeded")])
    with Journal.open(run_dir) as j:
        j.add_tasks([("a", "command", "pending", 5)])
    assert task_states(run_dir)["a"]["state"] == "succeeded"


def test_missing_run_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="no journal found"):
        status(tmp_path)
    with pytest.raises(JournalError, match="no journal found"):
        Journal.open(tmp_path)
