"""The dev Slurm cluster on a shared login node (issue 19): another user reaches no
listener of a run, the workers' keys are private, no secret (whatever the site calls
its token) reaches a task, a job or the run directory, and no task process outlives
``hpcorch cancel`` or a killed driver."""

from __future__ import annotations

import signal
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from hpcorch.engine import start_run
from hpcorch.loaders import load_workflow
from tests.integration.final_logs import final_log
from tests.integration.login_node import (
    listeners,
    probe_as_nobody,
    processes_with,
    tree_workflow,
    wait_gone,
)

HPCORCH = Path(sys.executable).with_name("hpcorch")
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slurm


def _wait_for(check: Any, what: str, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.5)


def test_another_user_reaches_no_listener_and_keys_are_private(
    dev_cluster: Any, tmp_path: Path
) -> None:
    gate = tmp_path / "open"
    workflow = tmp_path / "gated.yaml"
    workflow.write_text(
        "name: gated\ntasks:\n"
        f"  - {{id: gate, command: [bash, -c, 'while [ ! -e {gate} ]; do sleep 0.2; done']}}\n"
    )
    run_dir = tmp_path / "run"
    with start_run(load_workflow(workflow), site="dev", run_dir=run_dir) as handle:
        client = handle.engine.client
        _wait_for(lambda: client.scheduler_info()["workers"], "a worker joining")
        comms, ports = listeners(client)
        got_through = probe_as_nobody(comms, ports)
        gate.touch()
        handle.wait(timeout=300)
    assert all(a.startswith("tls://") for a in comms), comms
    assert len(comms) >= 3, comms  # scheduler, worker, nanny
    assert got_through and not any(got_through.values()), got_through
    tls = run_dir / "tls"
    assert stat.S_IMODE(tls.stat().st_mode) == 0o700
    keys = [p for p in tls.iterdir() if p.is_file()]
    assert keys, "the workers' certificates were never written"
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in keys), keys


def test_no_secret_reaches_a_task_a_job_or_the_run_directory(
    dev_cluster: Any, tmp_path: Path
) -> None:
    # The site calls its token something no pattern would catch.
    site = yaml.safe_load((REPO / "site-configs" / "dev.yaml").read_text())
    site["name"] = "dev-custom-token"
    site["slurm"]["rest"]["token"]["env"] = "DEV_REST_AUTH"
    site_file = tmp_path / "dev-custom-token.yaml"
    site_file.write_text(yaml.safe_dump(site))
    secrets = {
        "DEV_REST_AUTH": dev_cluster.jwt,
        "GITHUB_TOKEN": f"gh-{uuid.uuid4().hex}",
        "DB_PASSWORD": f"pw-{uuid.uuid4().hex}",
    }
    workflow = tmp_path / "env.yaml"
    workflow.write_text(
        "name: env\ntasks:\n"
        "  - {id: cmd, command: [env]}\n"
        "  - {id: fn, function: os:getenv, args: [DEV_REST_AUTH], after: [cmd]}\n"
    )
    run_dir = tmp_path / "run"
    env = {**dev_cluster.cli_env(), **secrets}
    done = subprocess.run(
        [str(HPCORCH), "run", str(workflow), "--site", str(site_file), "--run-dir", str(run_dir)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    printed = final_log(run_dir, "cmd")
    assert "HPCORCH_RUN_ID=" in printed and "SLURM_JOB_ID=" in printed  # it ran in a job
    for path in run_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for name, value in secrets.items():
                assert value.encode() not in data, f"{name} in {path}"
    for name, value in secrets.items():
        assert value not in done.stdout + done.stderr, name


@pytest.mark.parametrize("how", ["cancel", "sigkill"])
def test_no_task_process_outlives_cancel_or_a_killed_driver_on_slurm(
    dev_cluster: Any, tmp_path: Path, how: str
) -> None:
    run_id = f"tree-{uuid.uuid4().hex[:8]}"
    marker = f"MARK-{run_id}"
    workflow = tree_workflow(tmp_path, marker)
    run_dir = tmp_path / "run"
    argv = [str(HPCORCH), "run", str(workflow), "--site", "dev", "--run-dir", str(run_dir)]
    driver = subprocess.Popen(
        [*argv, "--run-id", run_id],
        cwd=tmp_path,
        env=dev_cluster.cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(
            lambda: len(processes_with(f"HPCORCH_RUN_ID={run_id}")) >= 3 and processes_with(marker),
            "the tasks' processes starting",
        )
        if how == "cancel":
            done = subprocess.run(
                [str(HPCORCH), "cancel", str(run_dir)],
                cwd=tmp_path,
                env=dev_cluster.cli_env(),
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            wait_s = 30.0
        else:
            driver.send_signal(signal.SIGKILL)
            # the workers notice their scheduler is gone (jobqueue's death-timeout, 60 s)
            wait_s = 150.0
        driver.wait(timeout=120)
        left = wait_gone(f"HPCORCH_RUN_ID={run_id}", wait_s) + wait_gone(marker, 10)
        assert not left, left
    finally:
        if driver.poll() is None:
            driver.kill()
        subprocess.run(
            [str(HPCORCH), "cancel", str(run_dir)],
            cwd=tmp_path,
            env=dev_cluster.cli_env(),
            capture_output=True,
            timeout=120,
            check=False,
        )
