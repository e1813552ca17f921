"""Site ``local`` on a shared login node (issue 19): another user cannot reach the run's
listeners, one driver per run, no task process outlives a cancel or a killed driver,
no secret reaches a task, a read-only run directory fails fast, a big cancel is quick."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from hpcorch.engine import start_run
from hpcorch.loaders import load_workflow
from tests.integration.final_logs import final_log
from tests.integration.login_node import (
    as_nobody,
    listeners,
    probe_as_nobody,
    processes_with,
    tree_workflow,
    wait_gone,
)

HPCORCH = Path(sys.executable).with_name("hpcorch")


def _hpcorch(
    *argv: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HPCORCH), *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _start(*argv: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """A background hpcorch whose output goes to a file (a pipe nobody reads would fill up
    and block it); :func:`_output` reads it."""
    log = cwd / f"hpcorch-{uuid.uuid4().hex[:8]}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(HPCORCH), *argv], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True
        )
    _LOGS[proc.pid] = log
    return proc


_LOGS: dict[int, Path] = {}


def _output(proc: subprocess.Popen[str]) -> str:
    return _LOGS[proc.pid].read_text()


def _wait_until(check: Callable[[], bool], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{check} never held"
        time.sleep(0.2)


def _wait_for(path: Path, timeout_s: float = 120) -> None:
    _wait_until(path.exists, timeout_s)


def test_another_user_reaches_no_listener_of_a_local_run(tmp_path: Path) -> None:
    spec = load_workflow(_gate_workflow(tmp_path, 2))
    with start_run(spec, site="local", run_dir=tmp_path / "run") as handle:
        comms, ports = listeners(handle.engine.client)
        assert all(a.startswith("tls://127.0.0.1:") for a in comms), comms
        assert len(comms) >= 3 and ports  # scheduler, worker, nanny; their HTTP ports
        got_through = probe_as_nobody(comms, ports)
        handle.cancel()
    assert got_through and not any(got_through.values()), got_through


def _gate_workflow(tmp_path: Path, n: int) -> Path:
    """``gate`` waits for a file; then ``n`` tasks each append their id to ``ran.txt``."""
    gate, ran = tmp_path / "open", tmp_path / "ran.txt"
    lines = [
        "name: gated",
        "tasks:",
        "  - id: gate",
        f"    command: [bash, -c, 'while [ ! -e {gate} ]; do sleep 0.2; done']",
    ]
    for i in range(n):
        lines += [
            f"  - id: t{i}",
            "    after: [gate]",
            f"    command: [bash, -c, 'echo t{i} >> {ran}']",
        ]
    workflow = tmp_path / "gated.yaml"
    workflow.write_text("\n".join(lines) + "\n")
    return workflow


def _ran(tmp_path: Path) -> list[str]:
    return (tmp_path / "ran.txt").read_text().split()


def test_resume_while_the_driver_lives_is_refused_and_each_task_runs_once(
    tmp_path: Path,
) -> None:
    workflow, run_dir = _gate_workflow(tmp_path, 20), tmp_path / "run"
    driver = _start(
        "run", str(workflow), "--site", "local", "--run-dir", str(run_dir), cwd=tmp_path
    )
    _wait_for(run_dir / "logs" / "gate.1.out")
    second = _hpcorch("resume", str(run_dir), cwd=tmp_path, timeout=60)
    assert second.returncode == 2, second.stderr
    line = second.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert f"pid {driver.pid} on {os.uname()[1]}" in line and "since" in line
    (tmp_path / "open").touch()
    assert driver.wait(timeout=300) == 0
    ran = _ran(tmp_path)
    assert sorted(ran) == sorted(f"t{i}" for i in range(20))


def test_two_resumes_at_once_run_each_task_once(tmp_path: Path) -> None:
    workflow, run_dir = _gate_workflow(tmp_path, 20), tmp_path / "run"
    driver = _start(
        "run", str(workflow), "--site", "local", "--run-dir", str(run_dir), cwd=tmp_path
    )
    _wait_for(run_dir / "logs" / "gate.1.out")
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    resumes = [_start("resume", str(run_dir), cwd=tmp_path) for _ in range(2)]
    time.sleep(1)
    (tmp_path / "open").touch()
    outcomes = sorted(p.wait(timeout=300) for p in resumes)
    assert outcomes == [0, 2], [_output(p) for p in resumes]
    ran = _ran(tmp_path)
    assert sorted(ran) == sorted(f"t{i}" for i in range(20)), ran


@pytest.mark.parametrize("how", ["cancel", "sigkill"])
def test_no_task_process_outlives_cancel_or_a_killed_driver(tmp_path: Path, how: str) -> None:
    run_id = f"tree-{uuid.uuid4().hex[:8]}"
    marker = f"MARK-{run_id}"
    workflow, run_dir = tree_workflow(tmp_path, marker), tmp_path / "run"
    driver = _start(
        "run",
        str(workflow),
        "--site",
        "local",
        "--run-dir",
        str(run_dir),
        "--run-id",
        run_id,
        cwd=tmp_path,
    )
    _wait_for(tmp_path / "started")
    deadline = time.monotonic() + 60
    while len(processes_with(f"HPCORCH_RUN_ID={run_id}")) < 3 or not processes_with(marker):
        assert time.monotonic() < deadline, "the tasks' processes never all started"
        time.sleep(0.2)
    if how == "cancel":
        done = _hpcorch("cancel", str(run_dir), cwd=tmp_path, timeout=60)
        assert done.returncode == 0, done.stderr
    else:
        driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=60)
    left = wait_gone(f"HPCORCH_RUN_ID={run_id}", 15) + wait_gone(marker, 15)
    assert not left, left


def test_no_secret_reaches_a_task_or_the_run_directory(tmp_path: Path) -> None:
    secrets = {
        "SLURM_JWT": f"jwt-{uuid.uuid4().hex}",
        "GITHUB_TOKEN": f"gh-{uuid.uuid4().hex}",
        "DB_PASSWORD": f"pw-{uuid.uuid4().hex}",
        "AWS_SECRET_ACCESS_KEY": f"aws-{uuid.uuid4().hex}",
    }
    workflow = tmp_path / "env.yaml"
    workflow.write_text(
        "name: env\n"
        "tasks:\n"
        "  - {id: cmd, command: [env]}\n"
        "  - {id: fn, function: os:getenv, args: [SLURM_JWT]}\n"
        "  - {id: fn2, function: os:getenv, args: [GITHUB_TOKEN], after: [fn]}\n"
    )
    spec = load_workflow(workflow)
    saved = {k: os.environ.get(k) for k in secrets}
    os.environ.update(secrets)
    try:
        with start_run(spec, site="local", run_dir=tmp_path / "run") as handle:
            handle.wait(timeout=120)
            values = [handle.result("fn"), handle.result("fn2")]
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert values == [None, None]
    printed = final_log(tmp_path / "run", "cmd")
    assert "HPCORCH_RUN_ID=" in printed and "PATH=" in printed  # it did print its environment
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for name, value in secrets.items():
                assert value.encode() not in data, f"{name} in {path}"


def test_a_read_only_run_directory_fails_within_seconds(tmp_path: Path) -> None:
    # Another user's run directory, readable but not writable: chmod means nothing to
    # root, so resume and cancel run as that other user (nobody), who can reach it.
    base = Path(tempfile.mkdtemp(prefix="hpcorch-ro-", dir="/tmp"))
    try:
        workflow, run_dir = _gate_workflow(base, 1), base / "run"
        (base / "open").touch()
        done = _hpcorch(
            "run", str(workflow), "--site", "local", "--run-dir", str(run_dir), cwd=base
        )
        assert done.returncode == 0, done.stderr
        # a run left "running" by a crash: resume and cancel both have work to do
        subprocess.run(
            ["sqlite3", str(run_dir / "journal.sqlite"), "UPDATE runs SET state='running'"],
            check=True,
        )
        subprocess.run(["chmod", "-R", "a+rX,a-w", str(base)], check=True)
        for command in ("resume", "cancel"):
            started = time.monotonic()
            done = as_nobody(command, str(run_dir))
            took = time.monotonic() - started
            assert done.returncode == 2, (command, done.returncode, done.stderr)
            line = done.stderr.strip()
            assert "\n" not in line and "Traceback" not in line, line
            assert "run hpcorch as the user who owns" in line, line
            assert took < 20, (command, took)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_cancel_of_a_100000_task_run_returns_within_30s(tmp_path: Path) -> None:
    """A flat run, and a chain (whose cancel overflowed Dask's recursion before)."""
    for shape in ("flat", "chain"):
        workflow = tmp_path / f"{shape}.yaml"
        with workflow.open("w") as out:
            out.write(f"name: {shape}\ntasks:\n")
            for i in range(100_000):
                after = f", after: [t{i - 1}]" if shape == "chain" and i else ""
                out.write(f"  - {{id: t{i}, command: [sleep, '600']{after}}}\n")
        run_dir = tmp_path / shape
        driver = _start(
            "run", str(workflow), "--site", "local", "--run-dir", str(run_dir), cwd=tmp_path
        )
        try:
            # tasks of equal priority start in no particular order: wait for any
            logs = run_dir / "logs"
            _wait_until(lambda: any(logs.glob("*.out")), timeout_s=600)  # noqa: B023
            started = time.monotonic()
            done = _hpcorch("cancel", str(run_dir), cwd=tmp_path, timeout=120)
            took = time.monotonic() - started
            assert done.returncode == 0, done.stderr
            assert driver.wait(timeout=120) == 1  # cancelled
        finally:
            if driver.poll() is None:
                driver.kill()
        assert took < 30, (shape, took)
        status = _hpcorch("status", str(run_dir), "--json", cwd=tmp_path)
        assert '"cancelled": 100000' in status.stdout


def test_another_users_run_directory_is_refused_in_one_line(tmp_path: Path) -> None:
    base = Path(tempfile.mkdtemp(prefix="hpcorch-foreign-", dir="/tmp"))
    try:
        run_dir = base / "run"
        run_dir.mkdir(mode=0o700)
        (run_dir / "journal.sqlite").touch()
        base.chmod(0o755)
        for command in ("resume", "cancel", "status"):
            done = as_nobody(command, str(run_dir))
            line = done.stderr.strip()
            assert done.returncode == 2 and "\n" not in line, (command, line)
            assert "permission denied; run hpcorch as the user who owns" in line, line
    finally:
        shutil.rmtree(base, ignore_errors=True)
