"""Per-attempt logs of function tasks, on site ``local`` and on the dev Slurm cluster.

A task prints to both streams, logs and raises, with one retry, while a sibling
prints in the same worker: ``hpcorch logs`` shows each attempt's streams, records
and traceback and nothing of the sibling's; ``hpcorch report`` names the logs.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
HPCORCH = Path(sys.executable).with_name("hpcorch")

WORKFLOW = """\
tasks:
  - {id: noisy, function: tests.integration.logged_tasks:noisy, args: [hello], retries: 1}
  - {id: chatty, function: tests.integration.logged_tasks:chatty, args: [sibling]}
"""


def _hpcorch(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # the workers import tests.integration.logged_tasks; the scaler looks every second
    env = (env if env is not None else dict(os.environ)) | {
        "PYTHONPATH": str(REPO),
        "HPCORCH_SCALE_INTERVAL": "1",
    }
    return subprocess.run(
        [str(HPCORCH), *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


def _check_logs(run_dir: Path, env: dict[str, str] | None = None) -> None:
    for n in (1, 2):
        proc = _hpcorch("logs", str(run_dir), "noisy", "--attempt", str(n), env=env)
        assert proc.returncode == 0, proc.stderr
        out = proc.stdout
        assert f"--- noisy attempt {n} stdout ---\nprint hello\n" in out
        assert f"--- noisy attempt {n} stderr ---" in out
        assert "stderr hello" in out
        assert "INFO noisy: info hello" in out and "WARNING noisy: warn hello" in out
        assert "Traceback (most recent call last)" in out and "RuntimeError: boom hello" in out
        assert "sibling" not in out  # the task that ran beside it kept its own output
    chatty = _hpcorch("logs", str(run_dir), "chatty", env=env).stdout
    assert "sibling line 19" in chatty and "hello" not in chatty
    for path in (run_dir / "logs").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    report = _hpcorch("report", str(run_dir), env=env)
    assert report.returncode == 0, report.stderr
    assert "noisy.1.err" in report.stdout and "noisy.2.err" in report.stdout


@pytest.mark.slow
def test_function_task_logs_per_attempt_local(tmp_path: Path) -> None:
    workflow = tmp_path / "logged.yaml"
    workflow.write_text(WORKFLOW)
    run_dir = tmp_path / "run"
    proc = _hpcorch("run", str(workflow), "--site", "local", "--run-dir", str(run_dir))
    assert proc.returncode == 1, proc.stderr
    _check_logs(run_dir)


@pytest.mark.slurm
def test_function_task_logs_per_attempt_dev(dev_cluster: Any, tmp_path: Path) -> None:
    workflow = tmp_path / "logged.yaml"
    workflow.write_text(WORKFLOW)
    run_dir = tmp_path / "run"
    env = dev_cluster.cli_env()
    proc = _hpcorch("run", str(workflow), "--site", "dev", "--run-dir", str(run_dir), env=env)
    assert proc.returncode == 1, proc.stderr
    # the attempts ran in Slurm jobs on the cluster's nodes and wrote to the shared run dir
    status = json.loads(_hpcorch("status", str(run_dir), "--json", env=env).stdout)
    noisy = next(t for t in status["tasks"] if t["id"] == "noisy")
    assert [a["n"] for a in noisy["attempts"]] == [1, 2]
    assert all(a["job_id"] and a["node"] for a in noisy["attempts"]), noisy["attempts"]
    _check_logs(run_dir, env)
