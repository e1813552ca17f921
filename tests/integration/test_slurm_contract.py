"""One contract for every Slurm backend: fake, cli, rest, pyslurm (the real ones on a dev cluster).

$HPCORCH_CONTRACT_BACKENDS names the backends (default ``fake,cli,rest``;
``fake,cli,rest,pyslurm`` where pyslurm matches the cluster, as inside the
Slurm 24.11 root) and $HPCORCH_DEV_CLUSTER_SLURM the release the cluster runs
(default 22.05; ``scripts/dev-cluster exec`` sets it).

Each case submits through the backend under test and checks what it reports:
a job that runs and is cancelled, one that fails (exit 3), one that times
out (--time=1, submitted at module start so the minute runs alongside the
other cases) and one whose node fails (gpu2, failed once for both real
backends and healed in a finally). A last test asks both real backends about
the same jobs and requires the same answers.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hpcorch.sites.model import TokenSource
from hpcorch.slurm.cli import CliClient
from hpcorch.slurm.client import SlurmClient
from hpcorch.slurm.fake import FakeSlurm, Outcome
from hpcorch.slurm.models import JobInfo
from hpcorch.slurm.pyslurm_ import PyslurmClient
from hpcorch.slurm.rest import RestClient
from hpcorch.slurm.script import JobRequest
from hpcorch.slurm.states import FailureClass, JobState
from hpcorch.slurm.token import TokenProvider

pytestmark = pytest.mark.slurm

BACKENDS = os.environ.get("HPCORCH_CONTRACT_BACKENDS", "fake,cli,rest").split(",")
REAL = [name for name in BACKENDS if name != "fake"]
RELEASE = os.environ.get("HPCORCH_DEV_CLUSTER_SLURM", "22.05")
WAIT_S = 240.0


def fake_behaviour(req: JobRequest) -> Outcome:
    """What the dev cluster would do with the scripts this suite submits."""
    command = req.command if isinstance(req.command, str) else " ".join(req.command)
    exit_match = re.search(r"exit (\d+)", command)
    sleep_match = re.search(r"sleep (\d+)", command)
    if exit_match:
        code = int(exit_match.group(1))
        return Outcome(JobState.FAILED if code else JobState.COMPLETED, code, "NonZeroExitCode")
    if sleep_match and req.time_s is not None and int(sleep_match.group(1)) > req.time_s:
        return Outcome(JobState.TIMEOUT, 0, "TimeLimit")
    if sleep_match and int(sleep_match.group(1)) >= 60:
        return Outcome(None)  # still running
    return Outcome(JobState.COMPLETED, 0)


@dataclass
class Harness:
    name: str
    client: SlurmClient
    workdir: Path
    fake: FakeSlurm | None = None
    submitted: list[str] = field(default_factory=list)

    def request(self, name: str, command: str, **kw: object) -> JobRequest:
        return JobRequest(
            name=f"contract-{self.name}-{name}",
            command=command,
            partition=kw.pop("partition", "cpu"),  # type: ignore[arg-type]
            ntasks=1,
            cpus_per_task=1,
            mem="100M",
            time_s=kw.pop("time_s", 300),  # type: ignore[arg-type]
            chdir=str(self.workdir),
            output=str(self.workdir / "%x-%j.out"),
            comment="hpcorch contract test",
            **kw,  # type: ignore[arg-type]
        )

    def submit(self, req: JobRequest) -> str:
        job_id = self.client.submit(req)
        self.submitted.append(job_id)
        return job_id

    def wait(
        self, job_id: str, until: Callable[[JobInfo], bool], timeout: float = WAIT_S
    ) -> JobInfo:
        deadline = time.monotonic() + timeout
        last: JobInfo | None = None
        while time.monotonic() < deadline:
            found = self.client.jobs([job_id])
            if found:
                last = found[0]
                if until(last):
                    return last
            if self.fake is None:
                time.sleep(1.0)
        raise AssertionError(f"{self.name}: job {job_id} never got there; last seen {last}")


def make_harness(name: str, workdir: Path, cluster: object | None) -> Harness:
    workdir.mkdir(parents=True, exist_ok=True)
    if name == "fake":
        fake = FakeSlurm(behaviour=fake_behaviour)
        return Harness(name, fake.client(), workdir, fake)
    assert cluster is not None
    cli = CliClient(env=cluster.cli_env())  # type: ignore[attr-defined]
    if name == "cli":
        return Harness(name, cli, workdir)
    if name == "pyslurm":
        return Harness(name, PyslurmClient(cli.version, env=cluster.cli_env()), workdir)  # type: ignore[attr-defined]
    env = {**cluster.cli_env(), "SLURM_JWT": cluster.jwt}  # type: ignore[attr-defined]
    rest = RestClient(
        cluster.rest_url,  # type: ignore[attr-defined]
        tokens=TokenProvider(TokenSource(), env=env),
        history=cli,
        env=cluster.cli_env(),  # type: ignore[attr-defined]
    )
    return Harness(name, rest, workdir)


@pytest.fixture(scope="module")
def harnesses(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Harness]]:
    cluster = request.getfixturevalue("dev_cluster")
    base = tmp_path_factory.mktemp("contract")
    made = {name: make_harness(name, base / name, cluster) for name in BACKENDS}
    yield made
    for h in made.values():
        if h.submitted:
            h.client.cancel(h.submitted)  # leave nothing behind on the shared cluster
        h.client.close()


@pytest.fixture(scope="module")
def timeout_jobs(harnesses: dict[str, Harness]) -> dict[str, str]:
    """Submitted first so the one-minute limit runs while the other cases do."""
    return {
        name: h.submit(h.request("timeout", "sleep 300", time_s=60))
        for name, h in harnesses.items()
    }


@pytest.fixture(params=BACKENDS)
def harness(
    request: pytest.FixtureRequest, harnesses: dict[str, Harness], timeout_jobs: dict[str, str]
) -> Harness:
    return harnesses[request.param]


def test_version(harness: Harness) -> None:
    # The fake stands in for the 22.05 dev cluster whatever the release under test.
    assert harness.client.version.startswith("22.05" if harness.fake else RELEASE)


def test_submit_query_cancel(harness: Harness) -> None:
    job_id = harness.submit(harness.request("cancel", "sleep 120"))
    running = harness.wait(job_id, lambda j: j.state is JobState.RUNNING)
    assert running.nodes and running.partition == "cpu"
    assert running.exit_code is None and not running.terminal
    harness.client.cancel([job_id])
    ended = harness.wait(job_id, lambda j: j.terminal)
    assert ended.state is JobState.CANCELLED
    assert ended.failure is FailureClass.CANCELLED
    harness.client.cancel([job_id])  # cancelling an ended job again is a no-op


def test_failed_job_exit_3(harness: Harness) -> None:
    job_id = harness.submit(harness.request("fail", "exit 3"))
    ended = harness.wait(job_id, lambda j: j.terminal)
    assert ended.state is JobState.FAILED
    assert ended.exit_code == 3
    assert ended.failure is FailureClass.USER_ERROR


def test_held_job_and_one_call_for_many(harness: Harness) -> None:
    ids = [harness.submit(harness.request(f"held{i}", "sleep 1", hold=True)) for i in range(3)]
    jobs = harness.client.jobs(ids)
    assert sorted(j.job_id for j in jobs) == sorted(ids)
    assert all(j.state is JobState.PENDING and j.start is None for j in jobs)
    harness.client.cancel(ids)
    assert {j.state for j in harness.client.jobs(ids)} <= {JobState.CANCELLED}


def test_nodes_and_partitions(harness: Harness) -> None:
    nodes = {n.name: n for n in harness.client.nodes()}
    assert {"cpu1", "cpu2", "gpu1", "gpu2"} <= nodes.keys()
    assert (nodes["gpu1"].sockets, nodes["gpu1"].cores_per_socket) == (2, 4)
    parts = {p.name: p for p in harness.client.partitions()}
    assert parts["cpu"].default and parts["gpu"].nodes == ("gpu1", "gpu2")


def test_timed_out_job(harness: Harness, timeout_jobs: dict[str, str]) -> None:
    ended = harness.wait(timeout_jobs[harness.name], lambda j: j.terminal)
    assert ended.state is JobState.TIMEOUT
    assert ended.failure is FailureClass.TIMEOUT


@pytest.fixture(scope="module")
def node_failure_jobs(
    harnesses: dict[str, Harness], request: pytest.FixtureRequest
) -> dict[str, str]:
    """One job per backend pinned to gpu2; gpu2 fails once for all, and is always healed."""
    jobs = {
        name: h.submit(
            h.request("nodefail", "sleep 300", partition="gpu", nodelist=("gpu2",), requeue=False)
        )
        for name, h in harnesses.items()
    }
    for name, h in harnesses.items():
        h.wait(jobs[name], lambda j: j.state is JobState.RUNNING)
    cluster = request.getfixturevalue("dev_cluster")
    harnesses["fake"].fake.fail_node("gpu2")  # type: ignore[union-attr]
    try:
        cluster.script_cmd("fail-node", "gpu2")
        for name in REAL:
            harnesses[name].wait(jobs[name], lambda j: j.terminal)
    finally:
        cluster.script_cmd("heal-node", "gpu2", check=False)
    return jobs


def test_job_on_failed_node(harness: Harness, node_failure_jobs: dict[str, str]) -> None:
    ended = harness.wait(node_failure_jobs[harness.name], lambda j: j.terminal)
    assert ended.state is JobState.NODE_FAIL
    assert ended.failure is FailureClass.NODE_FAILURE
    assert ended.nodes == ("gpu2",)


def test_real_backends_agree_on_every_job(
    harnesses: dict[str, Harness], timeout_jobs: dict[str, str], node_failure_jobs: dict[str, str]
) -> None:
    ids = [job_id for name in REAL for job_id in harnesses[name].submitted]
    answers = {name: {j.job_id: j for j in harnesses[name].client.jobs(ids)} for name in REAL}
    reference = answers[REAL[0]]  # the cli's, by default
    states = set()
    for name in REAL:
        assert answers[name].keys() == set(ids), name
        for job_id in ids:
            assert reference[job_id].same_outcome(answers[name][job_id]), (
                name,
                reference[job_id],
                answers[name][job_id],
            )
    for job_id in ids:
        states.add(reference[job_id].state)
    assert {JobState.FAILED, JobState.TIMEOUT, JobState.NODE_FAIL, JobState.CANCELLED} <= states
