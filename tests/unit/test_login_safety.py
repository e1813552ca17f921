"""Pieces of issue 19 that need no cluster: the journal writer never strands a waiter,
secrets never enter a child's environment, the guardian ends what a dead worker left."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hpcorch.childenv import child_env, is_secret, secret_names, site_secrets
from hpcorch.engine import watchdog
from hpcorch.engine.worker import Payload, _task_env
from hpcorch.errors import InfrastructureError, JournalError
from hpcorch.guardian import end_groups, start_ticks
from hpcorch.journal import Journal
from hpcorch.provision.slurm_pool import _job_class, job_options, plan_pools
from hpcorch.sites import load_site
from hpcorch.spec import WorkflowSpec

# -- the journal writer --------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (PermissionError(13, "Operation not permitted"), JournalError),
        (RuntimeError("something else"), JournalError),
        (OSError(28, "No space left on device"), InfrastructureError),
    ],
)
def test_any_writer_error_releases_waiters_and_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception, expected: type
) -> None:
    """Not only sqlite3.Error: a chmod on a foreign run directory hung resume for 10 min."""
    with Journal.create(
        tmp_path, run_id="r", name="n", source=None, site="local", time_scale=None
    ) as j:
        j.add_tasks([("a", "command", "pending", 0)])

    def fail(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(Path, "chmod", fail)
    (tmp_path / "journal.sqlite-wal").touch()
    started = time.monotonic()
    with pytest.raises(expected) as raised:
        Journal.open(tmp_path)
    assert time.monotonic() - started < 5
    assert "cannot write the journal" in str(raised.value)


def test_a_failed_batch_releases_flush_and_later_writes_raise(tmp_path: Path) -> None:
    journal = Journal.create(
        tmp_path, run_id="r", name="n", source=None, site="local", time_scale=None
    )
    journal._execute("INSERT INTO no_such_table VALUES (?)", [(1,)])
    done = threading.Event()

    def flush() -> None:
        try:
            journal.flush()
        except JournalError:
            done.set()

    threading.Thread(target=flush, daemon=True).start()
    assert done.wait(5), "flush() never returned after a failed write"
    with pytest.raises(JournalError):
        journal.event("x")
    with pytest.raises(JournalError):
        journal.close()
    assert not journal._thread.is_alive()


# -- secrets -------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "SLURM_JWT",
        "GITHUB_TOKEN",
        "AWS_SECRET_ACCESS_KEY",
        "DB_PASSWORD",
        "MYPASSWD",
        "HF_API_KEY",
        "TOKEN",
    ],
)
def test_secret_names(name: str) -> None:
    assert is_secret(name)


@pytest.mark.parametrize(
    "name", ["PATH", "HOME", "SLURM_CONF", "TOKENIZERS_PARALLELISM", "HPCORCH_RUN_ID"]
)
def test_not_secret_names(name: str) -> None:
    assert not is_secret(name)


def _custom_token_site(tmp_path: Path) -> object:
    text = (Path(__file__).resolve().parents[2] / "site-configs" / "dev.yaml").read_text()
    path = tmp_path / "custom.yaml"
    path.write_text(
        text.replace("env: SLURM_JWT", "env: SITE_AUTH").replace("name: dev", "name: custom")
    )
    return load_site(str(path))


def test_a_sites_own_token_name_is_secret_everywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = _custom_token_site(tmp_path)
    names = site_secrets(site)  # type: ignore[arg-type]
    assert names == ("SITE_AUTH", "SLURM_JWT")
    env = {"SITE_AUTH": "s3cret", "SLURM_JWT": "jwt", "PATH": "/bin", "GITHUB_TOKEN": "gh"}
    assert child_env(env, names) == {"PATH": "/bin"}
    assert secret_names(env, names) == ["GITHUB_TOKEN", "SITE_AUTH", "SLURM_JWT"]
    # a task's environment (a command task, an MPI function step)
    monkeypatch.setattr(os, "environ", {**env, "HOME": "/h"})
    payload = Payload("r", "t", 1, "command", ("env",), secrets=names, env={"MINE": "1"})
    task_env = _task_env(payload, "/run")
    assert "SITE_AUTH" not in task_env and "SLURM_JWT" not in task_env
    assert "GITHUB_TOKEN" not in task_env and task_env["MINE"] == "1"


def test_worker_jobs_are_submitted_without_the_sites_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = _custom_token_site(tmp_path)
    monkeypatch.setenv("SITE_AUTH", "s3cret")
    monkeypatch.setenv("MY_API_KEY", "k")
    job = _job_class(site)
    for name in ("SITE_AUTH", "SLURM_JWT", "MY_API_KEY"):
        assert f"-u {name}" in job.submit_command
    spec = WorkflowSpec.model_validate({"name": "w", "tasks": [{"id": "a", "command": ["true"]}]})
    plan = plan_pools(spec, site)[0]  # type: ignore[arg-type]
    prologue = job_options(plan, site, tmp_path)["job_script_prologue"]  # type: ignore[arg-type]
    assert "unset SITE_AUTH SLURM_JWT" in prologue
    assert "s3cret" not in "\n".join(prologue)


# -- the guardian --------------------------------------------------------------


def test_guardian_ends_a_dead_workers_groups_and_processes() -> None:
    """The worker dies without clean-up: its guardian's stdin ends, it ends what it was told."""
    group = subprocess.Popen(["bash", "-c", "sleep 300 & sleep 301; wait"], start_new_session=True)
    loose = subprocess.Popen(["sleep", "302"])
    guardian = subprocess.Popen(
        [sys.executable, "-m", "hpcorch.guardian"], stdin=subprocess.PIPE, start_new_session=True
    )
    assert guardian.stdin is not None
    guardian.stdin.write(f"g {group.pid}\ns {loose.pid}:{start_ticks(loose.pid)}\n".encode())
    guardian.stdin.close()  # what a worker's death does
    assert guardian.wait(timeout=30) == 0
    assert group.wait(timeout=10) != 0 and loose.wait(timeout=10) != 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(group.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the task's child outlived its group")


def test_guardian_never_signals_a_reused_pid() -> None:
    stranger = subprocess.Popen(["sleep", "300"])
    try:
        guardian = subprocess.Popen(
            [sys.executable, "-m", "hpcorch.guardian"], stdin=subprocess.PIPE
        )
        assert guardian.stdin is not None
        ticks = start_ticks(stranger.pid)
        assert ticks is not None
        guardian.stdin.write(f"s {stranger.pid}:{ticks + 1}\n".encode())
        guardian.stdin.close()
        assert guardian.wait(timeout=30) == 0
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_end_groups_kills_what_ignores_sigterm() -> None:
    proc = subprocess.Popen(
        ["bash", "-c", "trap '' TERM; sleep 300 & wait"], start_new_session=True
    )
    time.sleep(0.3)
    started = time.monotonic()
    end_groups([proc.pid], grace_s=0.5)
    assert proc.wait(timeout=10) != 0
    assert time.monotonic() - started < 5


def test_a_timed_out_command_leaves_no_process_even_one_that_left_its_tree() -> None:
    """Past its walltime the whole group goes, with a grandchild re-parented to init."""
    proc = subprocess.Popen(["bash", "-c", "(sleep 300 &) ; sleep 301"], start_new_session=True)
    ended = watchdog.wait(proc, timeout=1.0)
    assert ended.timed_out
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError("a process of the timed-out command's group is still alive")
