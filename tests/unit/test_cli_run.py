"""``hpcorch run`` refuses bad input with exit 2, one line, and nothing submitted."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from hpcorch.journal import Journal
from tests.unit.cli_helpers import hpcorch_exit, no_runs_home


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return no_runs_home(tmp_path, monkeypatch)


_hpcorch = hpcorch_exit


def _refused(
    tmp_path: Path,
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    yaml_text: str,
) -> str:
    path = tmp_path / "wf.yaml"
    path.write_text(yaml_text)
    assert _hpcorch(monkeypatch, "run", str(path), "--site", "local") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert not (home / "runs").exists(), "a run directory was created for bad input"
    return err


def test_cycle(tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    err = _refused(
        tmp_path,
        home,
        monkeypatch,
        capsys,
        "tasks:\n"
        "  - {id: a, command: ['true'], after: [c]}\n"
        "  - {id: b, command: ['true'], after: [a]}\n"
        "  - {id: c, command: ['true'], after: [b]}\n",
    )
    assert "the workflow has a cycle: " in err
    assert any(c in err for c in ("a -> b -> c -> a", "b -> c -> a -> b", "c -> a -> b -> c"))


def test_unknown_dependency(tmp_path: Path, home: Path, monkeypatch, capsys) -> None:
    err = _refused(
        tmp_path,
        home,
        monkeypatch,
        capsys,
        "tasks:\n  - {id: sim, command: ['true'], after: [prep]}\n",
    )
    assert "task 'sim' depends on unknown task 'prep'" in err


def test_unknown_key(tmp_path: Path, home: Path, monkeypatch, capsys) -> None:
    err = _refused(
        tmp_path, home, monkeypatch, capsys, "tasks:\n  - {id: a, command: ['true'], retires: 2}\n"
    )
    assert "unknown key 'retires'" in err and "valid keys: id, kind, command" in err


def test_impossible_resources(tmp_path: Path, home: Path, monkeypatch, capsys) -> None:
    err = _refused(
        tmp_path,
        home,
        monkeypatch,
        capsys,
        "tasks:\n  - {id: huge, command: ['true'], resources: {cpus: 4096, memory: 64TiB}}\n",
    )
    assert "task 'huge' needs 4096 cpus" in err and "no partition of site 'local'" in err
    assert "lower the request or choose another --site" in err


def test_gpus_on_a_gpu_less_site(tmp_path: Path, home: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    err = _refused(
        tmp_path,
        home,
        monkeypatch,
        capsys,
        "tasks:\n  - {id: g, command: ['true'], resources: {gpus: 1}}\n",
    )
    assert "task 'g' needs 1 cpus, 1 gpus" in err


def test_unknown_site(tmp_path: Path, home: Path, monkeypatch, capsys) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text("tasks:\n  - {id: a, command: ['true']}\n")
    assert _hpcorch(monkeypatch, "run", str(path), "--site", "nowhere") == 2
    assert "unknown site 'nowhere'" in capsys.readouterr().err
    assert not (home / "runs").exists()


def _journal(run_dir: Path) -> None:
    with Journal.create(
        run_dir, run_id="r1", name="demo", source=None, site="local", time_scale=None
    ) as j:
        j.add_tasks([("a", "command", "pending", 0), ("b", "command", "pending", 0)])
        j.set_states([("a", "succeeded")])


def test_status_json_prints_json_only(tmp_path: Path, monkeypatch, capsys) -> None:
    _journal(tmp_path / "run")
    assert _hpcorch(monkeypatch, "status", str(tmp_path / "run"), "--json") == 0
    out, _ = capsys.readouterr()
    data = json.loads(out)
    assert data["run_id"] == "r1" and data["counts"]["succeeded"] == 1


def test_status_by_run_id(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("HPCORCH_HOME", str(tmp_path))
    _journal(tmp_path / "runs" / "r1")
    assert _hpcorch(monkeypatch, "status", "r1") == 0
    assert "run r1: running (1 pending, 1 succeeded)" in capsys.readouterr().out


def test_unknown_run(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("HPCORCH_HOME", str(tmp_path))
    assert _hpcorch(monkeypatch, "status", "nope") == 2
    assert "no run 'nope'" in capsys.readouterr().err


def test_cancel_with_dead_driver_marks_journal(tmp_path: Path, monkeypatch, capsys) -> None:

    _journal(tmp_path / "run")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    conn = sqlite3.connect(tmp_path / "run" / "journal.sqlite")
    conn.execute("UPDATE runs SET driver_pid = ?", (dead.pid,))
    conn.commit()
    conn.close()
    assert _hpcorch(monkeypatch, "cancel", str(tmp_path / "run")) == 0
    assert _hpcorch(monkeypatch, "status", str(tmp_path / "run"), "--json") == 0
    data = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert data["state"] == "cancelled"
    assert {t["id"]: t["state"] for t in data["tasks"]} == {"a": "succeeded", "b": "cancelled"}


def test_logs_of_a_task_without_logs(tmp_path: Path, monkeypatch, capsys) -> None:
    _journal(tmp_path / "run")
    assert _hpcorch(monkeypatch, "logs", str(tmp_path / "run"), "a") == 2
    assert "no logs for task 'a'" in capsys.readouterr().err


def test_logs_prints_last_attempt(tmp_path: Path, monkeypatch, capsys) -> None:
    _journal(tmp_path / "run")
    logs = tmp_path / "run" / "logs"
    logs.mkdir()
    for n in (1, 2):
        (logs / f"a.{n}.out").write_text(f"out {n}\n")
        (logs / f"a.{n}.err").write_text("")
    assert _hpcorch(monkeypatch, "logs", str(tmp_path / "run"), "a") == 0
    assert "out 2" in capsys.readouterr().out


def test_logs_of_a_function_attempt_with_only_stderr(tmp_path: Path, monkeypatch, capsys) -> None:
    _journal(tmp_path / "run")
    logs = tmp_path / "run" / "logs"
    logs.mkdir()
    (logs / "a.1.err").write_text("Traceback\nRuntimeError: boom\n")
    (logs / "a.2.out").write_text("second\n")
    assert _hpcorch(monkeypatch, "logs", str(tmp_path / "run"), "a", "--attempt", "1") == 0
    out = capsys.readouterr().out
    assert "attempt 1 stderr" in out and "RuntimeError: boom" in out
    assert _hpcorch(monkeypatch, "logs", str(tmp_path / "run"), "a", "--attempt", "0") == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--attempt" in err
