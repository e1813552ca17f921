"""The journal: private files, WAL, batched writes, and the status --json object."""

from __future__ import annotations

import re
import sqlite3
import stat
from pathlib import Path

import pytest

from hpcorch.errors import JournalError
from hpcorch.journal import (
    ENDED_ALLOCATION_STATES,
    Journal,
    allocation_ended,
    read_run,
    state_of_tasks,
    status,
    task_states,
)
from hpcorch.slurm.states import JobState


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
        "site": None,
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
    assert state_of_tasks(run_dir) == {"a": "succeeded"}


def test_missing_run_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="no journal found"):
        status(tmp_path)
    with pytest.raises(JournalError, match="no journal found"):
        Journal.open(tmp_path)


def _alloc(job_id: str, site: str, **more: object) -> dict[str, object]:
    row: dict[str, object] = {"job_id": job_id, "site": site, "partition": "cpu", "nodes": 1}
    row.update(state="RUNNING", start=5.0, end=None, pool="cpu")
    return {**row, **more}


def test_same_job_id_on_two_sites_keeps_both(tmp_path: Path) -> None:
    # Job ids are per Slurm cluster: job 685 of dev and job 685 of dev2 are two allocations.
    run_dir = tmp_path / "run"
    with _journal(run_dir) as j:
        j.record_allocation(**_alloc("685", "dev"))
        j.record_allocation(**_alloc("685", "dev2", partition="gpu", nodes=2))
        j.record_allocation(job_id="685", site="dev2", state="COMPLETED", end=9.0)
        j.record_attempts([{"task_id": "a", "n": 1, "start": 6.0, "job_id": "685", "site": "dev2"}])
        j.record_attempts([{"task_id": "a", "n": 1, "end": 8.0}])  # the site is kept
    data = status(run_dir)
    by_site = {a["site"]: a for a in data["allocations"]}
    assert set(by_site) == {"dev", "dev2"}
    assert by_site["dev"]["state"] == "RUNNING" and by_site["dev"]["partition"] == "cpu"
    assert by_site["dev2"]["state"] == "COMPLETED" and by_site["dev2"]["nodes"] == 2
    assert by_site["dev2"]["end"] == 9.0
    assert data["tasks"] == []  # attempts of a task not registered are not listed
    conn = sqlite3.connect(run_dir / "journal.sqlite")
    assert conn.execute("SELECT site, end FROM attempts").fetchall() == [("dev2", 8.0)]


# The tables as hpcorch wrote them before allocations were keyed by site.
_OLD_SCHEMA = """
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY, name TEXT, source TEXT, site TEXT, time_scale REAL,
    state TEXT, created REAL, ended REAL, driver_pid INTEGER, driver_host TEXT
);
CREATE TABLE tasks (
    task_id TEXT PRIMARY KEY, kind TEXT, state TEXT, priority INTEGER,
    result TEXT, memo_key TEXT, updated REAL
);
CREATE TABLE attempts (
    task_id TEXT, n INTEGER, start REAL, end REAL, exit_code INTEGER, failure_class TEXT,
    worker TEXT, job_id TEXT, node TEXT, gpus TEXT, cores TEXT, message TEXT,
    PRIMARY KEY (task_id, n)
);
CREATE TABLE allocations (
    job_id TEXT PRIMARY KEY, site TEXT, partition TEXT, nodes INTEGER, state TEXT,
    start REAL, end REAL, pool TEXT
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL, kind TEXT, payload TEXT
);
INSERT INTO runs VALUES ('old', 'demo', NULL, 'dev', NULL, 'running', 1.0, NULL, 1, 'h');
INSERT INTO tasks VALUES ('a', 'command', 'succeeded', 0, NULL, NULL, 2.0);
INSERT INTO attempts VALUES ('a', 1, 3.0, 4.0, 0, NULL, 'tcp://w', '685', 'c1', NULL, NULL,
                             NULL);
INSERT INTO allocations VALUES ('685', 'dev', 'cpu', 1, 'COMPLETED', 2.0, 5.0, 'cpu');
INSERT INTO allocations VALUES ('686', NULL, 'cpu', 1, 'COMPLETED', 2.0, 5.0, 'cpu');
"""


def _old_journal(run_dir: Path) -> None:
    run_dir.mkdir(mode=0o700)
    conn = sqlite3.connect(run_dir / "journal.sqlite")
    conn.executescript(_OLD_SCHEMA)
    conn.close()


def test_old_journal_is_read_as_it_is(tmp_path: Path) -> None:
    # status opens journals read-only: an old one, not migrated yet, still reads.
    run_dir = tmp_path / "run"
    _old_journal(run_dir)
    data = status(run_dir)
    assert data["tasks"][0]["attempts"][0]["job_id"] == "685"
    assert data["tasks"][0]["attempts"][0]["site"] is None
    assert [a["site"] for a in data["allocations"]] == ["dev", None]


def test_old_journal_is_migrated_to_site_keys(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    _old_journal(run_dir)
    with Journal.open(run_dir) as j:
        j.record_allocation(**_alloc("685", "dev2", start=6.0))
        j.record_allocation(job_id="686", state="CANCELLED")  # the old row with no site
        j.record_attempts([{"task_id": "a", "n": 2, "start": 7.0, "job_id": "685", "site": "dev2"}])
    with Journal.open(run_dir) as j:  # a second open finds the new schema and keeps it
        pass
    data = status(run_dir)
    rows = {(a["site"], a["job_id"]): a for a in data["allocations"]}
    assert set(rows) == {("dev", "685"), ("dev2", "685"), (None, "686")}
    assert rows[("dev", "685")]["end"] == 5.0 and rows[("dev2", "685")]["start"] == 6.0
    assert rows[(None, "686")]["state"] == "CANCELLED"
    attempts = data["tasks"][0]["attempts"]
    assert [(a["job_id"], a["site"]) for a in attempts] == [("685", None), ("685", "dev2")]
    conn = sqlite3.connect(run_dir / "journal.sqlite")
    pk = {r[1]: r[5] for r in conn.execute("PRAGMA table_info(allocations)")}
    assert pk["site"] == 1 and pk["job_id"] == 2
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "allocations_new" not in tables


def test_ended_allocation_states_are_slurms_terminal_ones_and_the_journals_own() -> None:
    terminal = {s.value for s in JobState if s.terminal}
    assert terminal | {"CLOSED", "ENDED"} == ENDED_ALLOCATION_STATES
    assert allocation_ended("CANCELLED by 0") and allocation_ended("OUT_OF_MEMORY")
    assert not allocation_ended("RUNNING") and not allocation_ended(None)


def test_only_the_journal_speaks_sql() -> None:
    package = Path(__file__).resolve().parents[2] / "hpcorch"
    # SQL text or a connection of its own (the CLI may still name sqlite3's errors)
    sql = re.compile(r"sqlite3\.connect\(|\bSELECT\b.+\bFROM\b|\bINSERT INTO\b|\bDELETE FROM\b")
    speakers = {
        p.relative_to(package).as_posix()
        for p in package.rglob("*.py")
        if sql.search(p.read_text())
    }
    assert speakers == {"journal.py"}, speakers
