"""`hpcorch submit` on the dev cluster: the driver is a Slurm job; the run survives the
submitting shell and its own walltime (it requeues itself and resumes from the journal)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import DevCluster

HPCORCH = [sys.executable, "-m", "hpcorch"]


def hpcorch(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Each call is a new process, as from a new login shell."""
    return subprocess.run(
        [*HPCORCH, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False,
        timeout=120,
    )  # fmt: skip


def wait_for_run(run_id: str, cwd: Path, env: dict[str, str], timeout: float) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    status: dict = {}  # type: ignore[type-arg]
    while time.monotonic() < deadline:
        proc = hpcorch("status", run_id, "--json", cwd=cwd, env=env)
        if proc.returncode == 0:
            status = json.loads(proc.stdout)
            if status["state"] in ("succeeded", "failed", "cancelled"):
                return status
        time.sleep(2)
    raise AssertionError(f"run {run_id} did not finish in {timeout:.0f}s: {status}")


def write_workflow(path: Path, steps: int, seconds: int) -> Path:
    tasks = []
    for i in range(steps):
        after = f"\n    after: [s{i - 1}]" if i else ""
        tasks.append(f"  - id: s{i}\n    command: [sleep, '{seconds}']{after}")
    path.write_text("name: chain\ntasks:\n" + "\n".join(tasks) + "\n")
    return path


@contextlib.contextmanager
def submitted(
    cluster: DevCluster, wf: Path, cwd: Path, env: dict[str, str], *extra: str
) -> Iterator[dict[str, str]]:
    """Submit; whatever happens, leave no driver or allocation of the run behind."""
    job = submit(wf, cwd, env, *extra)
    try:
        yield job
    finally:
        hpcorch("cancel", job["run_id"], cwd=cwd, env=env)
        cluster.run("scancel", job["job_id"], check=False)


def submit(wf: Path, cwd: Path, env: dict[str, str], *extra: str) -> dict[str, str]:
    proc = hpcorch("submit", str(wf), "--site", "dev", "--partition", "gpu", "--json", *extra,
                   cwd=cwd, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_submit_runs_the_driver_as_a_job_and_the_run_completes(
    dev_cluster: DevCluster, tmp_path: Path
) -> None:
    env = dev_cluster.cli_env()
    env["SLURM_JWT"] = dev_cluster.jwt  # a login shell after `eval "$(dev-cluster env)"`
    wf = write_workflow(tmp_path / "wf.yaml", 3, 1)
    with submitted(dev_cluster, wf, tmp_path, env) as job:
        # The submitting process has exited; the driver is a Slurm job of its own.
        squeue = dev_cluster.run("squeue", "-h", "-j", job["job_id"], "-o", "%j %T").stdout
        assert f"hpcorch-driver-{job['run_id']}" in squeue
        status = wait_for_run(job["run_id"], tmp_path, env, timeout=300)
    assert status["state"] == "succeeded", status
    assert status["counts"]["succeeded"] == 3
    report = hpcorch("report", job["run_id"], "--png", str(tmp_path / "gantt.png"),
                     cwd=tmp_path, env=env)  # fmt: skip
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "gantt.png").stat().st_size > 1000


def test_driver_requeues_itself_at_its_walltime_and_resumes(
    dev_cluster: DevCluster, tmp_path: Path
) -> None:
    env = dev_cluster.cli_env()
    # A 1-minute driver requeues itself after 45 s; the chain needs ~60 s of work.
    wf = write_workflow(tmp_path / "wf.yaml", 6, 10)
    with submitted(dev_cluster, wf, tmp_path, env, "--walltime", "1m") as job:
        # Slurm holds a requeued job for about two minutes before it may start again.
        status = wait_for_run(job["run_id"], tmp_path, env, timeout=480)
    assert status["state"] == "succeeded", status
    log = (Path(job["run_dir"]) / "driver.log").read_text()
    assert "requeueing job" in log
    restarts = dev_cluster.run("scontrol", "show", "job", job["job_id"], check=False).stdout
    assert "Restarts=0" not in restarts or "requeueing job" in log
    # No task that completed before the requeue ran again after it.
    for task in status["tasks"]:
        succeeded = [a for a in task["attempts"] if a["exit_code"] == 0]
        assert len(succeeded) == 1, task
