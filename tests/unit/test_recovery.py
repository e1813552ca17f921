"""Recovery: evidence from the worker and the monitor, classified, decided, remembered."""

from __future__ import annotations

import signal
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest
from distributed import KilledWorker

from hpcorch.engine import watchdog
from hpcorch.engine.monitor import Monitor
from hpcorch.engine.recovery import Recovery
from hpcorch.engine.retry import TaskFailed, policy_resources
from hpcorch.failures import FailureClass
from hpcorch.sites.resolve import resolve_site
from hpcorch.slurm.fake import FakeSlurm
from hpcorch.slurm.script import JobRequest
from hpcorch.slurm.states import JobState
from hpcorch.spec import TaskSpec

MIB = 2**20


class FakeDask:
    def __init__(self, workers: dict[str, tuple[str, str]], sites: dict[str, str] | None = None):
        self.workers = workers  # address -> (node, job id)
        self.sites = sites or {}  # address -> its job's site (HPCORCH_SITE)

    def scheduler_info(self, n_workers: int = -1) -> dict[str, Any]:
        return {"workers": {a: {"name": a} for a in self.workers}}

    def run(self, fn: Any, workers: list[str], on_error: str) -> dict[str, Any]:
        return {
            a: {"node": self.workers[a][0], "job_id": self.workers[a][1], "site": self.sites.get(a)}
            for a in workers
        }


def _task(**kw: Any) -> TaskSpec:
    return TaskSpec.model_validate({"id": "t", "command": ["true"], **kw})


def _killed(address: str) -> KilledWorker:
    return KilledWorker("t-key", SimpleNamespace(address=address), 0)  # type: ignore[arg-type]


def _dev_with_two_workers() -> tuple[FakeSlurm, Monitor, FakeDask, dict[str, str]]:
    fake = FakeSlurm()
    client = fake.client()
    jobs = {
        n: client.submit(JobRequest(command="dask worker", partition="cpu")) for n in ("1", "2")
    }
    fake.start(jobs["1"], "cpu1")
    fake.start(jobs["2"], "cpu2")
    dask = FakeDask({"tcp://w1": ("cpu1", jobs["1"]), "tcp://w2": ("cpu2", jobs["2"])})
    monitor = Monitor(None, slurm=client, dask_client=dask)
    monitor.tick()
    return fake, monitor, dask, jobs


def test_memory_over_the_request_is_out_of_memory_and_the_retry_asks_for_more() -> None:
    task = _task(resources={"memory": "200MiB"})
    recovery = Recovery(resolve_site("dev"))
    exc = TaskFailed("python used 260 MiB", None, signal.SIGKILL, memory_peak=260 * MIB)
    out = recovery.failed(task, 1, exc, policy_resources(task), partition="cpu")
    assert out.diagnosis.failure is FailureClass.OUT_OF_MEMORY
    assert out.decision.retry and out.decision.resources.memory == 312 * MIB  # 1.2 x peak
    assert out.record["failure_class"] == "out_of_memory"


def test_walltime_kill_is_a_timeout_retried_longer() -> None:
    task = _task(resources={"walltime": 2})
    recovery = Recovery(resolve_site("dev"))
    exc = TaskFailed("ran past its walltime of 2s", timed_out=True)
    out = recovery.failed(task, 1, exc, policy_resources(task), partition="cpu")
    assert out.diagnosis.failure is FailureClass.TIMEOUT
    # classified by failures.diagnose like every other failure, under its own rule id
    assert out.diagnosis.rule == "R18" and out.diagnosis.reason == str(exc)
    assert out.decision.retry and out.decision.resources.walltime_s == 4


def test_user_error_uses_the_retries_then_says_what_to_change() -> None:
    task = _task(retries=1)
    recovery = Recovery(resolve_site("local"))
    request = policy_resources(task)
    first = recovery.failed(task, 1, TaskFailed("exited with 3", 3), request)
    assert first.decision.retry and first.decision.counts_against_budget
    assert first.decision.delay_s > 0
    second = recovery.failed(task, 2, TaskFailed("exited with 3", 3), request)
    assert not second.decision.retry
    assert "hpcorch logs" in second.decision.reason


def test_lost_worker_on_a_failed_node_reruns_elsewhere_excluding_the_node() -> None:
    fake, monitor, _, jobs = _dev_with_two_workers()
    recovery = Recovery(resolve_site("dev"), monitor=monitor)
    fake.fail_node("cpu2")
    task = _task()
    out = recovery.failed(task, 1, _killed("tcp://w2"), policy_resources(task), partition="cpu")
    assert out.diagnosis.failure is FailureClass.NODE_FAILURE
    assert out.decision.retry and not out.decision.counts_against_budget
    assert out.exclude_nodes == {"cpu2"} and out.job_id == jobs["2"]
    assert out.record["node"] == "cpu2"
    assert recovery.allowed_workers("t") == ["tcp://w1"]
    assert recovery.allowed_workers("other") is None
    assert recovery.strikes and recovery.strikes[0].node == "cpu2"


def test_a_multi_node_jobs_failure_blames_the_node_that_went_down_not_rank_0s() -> None:
    # A 2-node allocation (an MPI step or a training): its worker runs on cpu1, rank 0's
    # node; cpu2 fails and the whole job with it. The rerun must avoid cpu2, not cpu1.
    fake = FakeSlurm()
    client = fake.client()
    job = client.submit(JobRequest(command="dask worker", partition="cpu", nodes=2))
    fake.start(job, "cpu1", "cpu2")
    dask = FakeDask({"tcp://w1": ("cpu1", job)})
    monitor = Monitor(None, slurm=client, dask_client=dask)
    monitor.tick()
    recovery = Recovery(resolve_site("dev"), monitor=monitor)
    fake.fail_node("cpu2")
    task = _task()
    out = recovery.failed(task, 1, _killed("tcp://w1"), policy_resources(task), partition="cpu")
    assert out.diagnosis.failure is FailureClass.NODE_FAILURE
    assert out.exclude_nodes == {"cpu2"} and out.record["node"] == "cpu2"


@pytest.mark.parametrize(
    ("state", "nodes"), [(JobState.COMPLETING, ("cpu1",)), (JobState.PENDING, ())]
)
def test_a_requeued_multi_node_job_still_blames_the_node_that_went_down(
    state: JobState, nodes: tuple[str, ...]
) -> None:
    # When cpu2 fails Slurm lists the batch job COMPLETING on cpu1 alone, then requeues
    # it (PENDING, BeginTime, no nodes): the worker on cpu1 dies with it, and the rerun
    # must still avoid cpu2 (seen on the dev cluster: a training excluded cpu1)
    fake = FakeSlurm()
    client = fake.client()
    job = client.submit(JobRequest(command="dask worker", partition="cpu", nodes=2))
    fake.start(job, "cpu1", "cpu2")
    dask = FakeDask({"tcp://w1": ("cpu1", job)})
    monitor = Monitor(None, slurm=client, dask_client=dask)
    monitor.tick()
    recovery = Recovery(resolve_site("dev"), monitor=monitor)
    fake.fail_node("cpu2")
    fake.set_state(job, state, nodes=nodes, reason="BeginTime")
    task = _task()
    out = recovery.failed(task, 1, _killed("tcp://w1"), policy_resources(task), partition="cpu")
    assert out.diagnosis.failure is FailureClass.NODE_FAILURE
    assert out.exclude_nodes == {"cpu2"} and out.record["node"] == "cpu2"
    # the worker on cpu1 is still live for Dask, but its allocation is ending: the rerun
    # is not held to it (it would wait for a dead worker forever)
    assert recovery.allowed_workers("t") is None


def test_lost_worker_of_a_cancelled_allocation_is_requeued_without_excluding_the_node() -> None:
    fake, monitor, _, jobs = _dev_with_two_workers()
    recovery = Recovery(resolve_site("dev"), monitor=monitor)
    fake.client().cancel([jobs["1"]])  # scancel of one allocation
    task = _task()
    out = recovery.failed(task, 1, _killed("tcp://w1"), policy_resources(task), partition="cpu")
    assert out.diagnosis.failure is FailureClass.CANCELLED
    assert out.diagnosis.scope == "allocation"
    assert out.decision.retry and not out.exclude_nodes


def test_another_sites_worker_is_not_judged_by_this_sites_slurm() -> None:
    # dev2's worker runs dev2's job 1; dev's own job 1 was cancelled. That says nothing
    # about the dev2 worker (job ids repeat across clusters): its loss is judged on what
    # Dask saw alone, not as an allocation cancelled
    fake = FakeSlurm()
    client = fake.client()
    job = client.submit(JobRequest(command="dask worker", partition="cpu"))
    fake.start(job, "cpu1")
    dask = FakeDask({"tcp://w1": ("cpu1", job)}, sites={"tcp://w1": "dev2"})
    monitor = Monitor(None, slurm=client, dask_client=dask, site="dev")
    monitor.tick()
    assert monitor.allocation(job) is None  # not watched: it is dev2's job
    client.cancel([job])
    recovery = Recovery(resolve_site("dev"), monitor=monitor)
    task = _task()
    out = recovery.failed(task, 1, _killed("tcp://w1"), policy_resources(task), partition="cpu")
    assert out.diagnosis.failure is not FailureClass.CANCELLED
    assert out.diagnosis.reason.startswith("worker lost")
    assert out.job_id == job and out.site == "dev2"


def test_cancel_requested_by_the_run_is_not_retried() -> None:
    task = _task()
    recovery = Recovery(resolve_site("local"))
    out = recovery.failed(
        task, 1, TaskFailed("killed", None, 15), policy_resources(task), cancel_requested=True
    )
    assert out.diagnosis.failure is FailureClass.CANCELLED and not out.decision.retry


def test_watchdog_kills_a_tree_above_its_memory_and_reports_the_peak() -> None:
    code = (
        "import time; b = bytearray(120 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(5)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    ended = watchdog.wait(proc, timeout=30, memory_limit=60 * MIB, interval_s=0.05)
    assert ended.over_memory and not ended.timed_out
    assert ended.returncode == -signal.SIGKILL
    assert ended.memory_peak is not None and ended.memory_peak > 60 * MIB


def test_watchdog_kills_past_the_walltime_and_lets_a_small_task_finish() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    ended = watchdog.wait(proc, timeout=0.5, memory_limit=500 * MIB, interval_s=0.05)
    assert ended.timed_out
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    ended = watchdog.wait(proc, timeout=30, memory_limit=500 * MIB, interval_s=0.05)
    assert ended.returncode == 0 and not ended.over_memory
    assert ended.memory_peak is not None and ended.memory_peak < 500 * MIB
