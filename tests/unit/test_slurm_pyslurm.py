"""The pyslurm backend over a stand-in module shaped like pyslurm 24.11's API.

The real module runs in the contract suite inside the Slurm 24.11 root; here a
fake records what the backend asks of it.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from hpcorch.errors import BackendUnavailable, SubmissionRefused
from hpcorch.slurm.pyslurm_ import PyslurmClient, check_versions, submit_description
from hpcorch.slurm.script import JobRequest, request_from_script
from hpcorch.slurm.states import JobState, NodeState

SCRIPT = """#!/bin/bash
#SBATCH --job-name=sim
#SBATCH --partition=gpu
#SBATCH --time=00:05:00
#SBATCH --account=proj42
#SBATCH --no-requeue
#SBATCH --comment='hpcorch contract test'
#SBATCH --nodelist=gpu[1-2]
#SBATCH --mem=100M
srun hostname
"""


def job(**kw: Any) -> SimpleNamespace:
    base = dict(
        id=7,
        name="sim",
        state="RUNNING",
        state_reason="None",
        exit_code=0,
        exit_code_signal=0,
        allocated_nodes="gpu[1-2]",
        partition="gpu",
        submit_time=100,
        start_time=110,
        end_time=0,
        num_nodes=2,
        cpus=2,
        user_name="alice",
        account="proj42",
        comment="c",
        time_limit=5,
        array_id=None,
        array_task_id=None,
    )
    base.update(kw)
    return SimpleNamespace(**base)


class FakePyslurm:
    __version__ = "24.11.0"

    def __init__(self) -> None:
        self.submitted: list[dict[str, Any]] = []
        self.cancelled: list[int] = []
        self.live: dict[int, SimpleNamespace] = {}
        self.accounted: list[SimpleNamespace] = []
        self.db_filters: list[dict[str, Any]] = []
        fake = self

        class JobSubmitDescription:
            def __init__(self, **kw: Any) -> None:
                if isinstance(kw.get("time_limit"), str):
                    raise TypeError("an integer is required")  # pyslurm 24.11's quirk
                self.kw = kw

            def submit(self) -> int:
                fake.submitted.append(self.kw)
                return 41 + len(fake.submitted)

        class Job:
            def __init__(self, job_id: int) -> None:
                self.id = job_id

            def cancel(self) -> None:
                fake.cancelled.append(self.id)

        def jobs_load() -> dict[int, SimpleNamespace]:
            return dict(fake.live)

        def db_jobs_load(db_filter: dict[str, Any]) -> dict[int, SimpleNamespace]:
            fake.db_filters.append(db_filter)
            return {i: j for i, j in enumerate(fake.accounted)}

        self.JobSubmitDescription = JobSubmitDescription
        self.Job = Job
        self.Jobs = SimpleNamespace(load=jobs_load)
        self.db = SimpleNamespace(
            Jobs=SimpleNamespace(load=db_jobs_load), JobFilter=lambda **kw: kw
        )
        node = SimpleNamespace(
            name="gpu1",
            state="IDLE+DRAIN",
            partitions=["gpu"],
            total_cpus=8,
            sockets=2,
            cores_per_socket=4,
            threads_per_core=1,
            real_memory=8000,
            allocated_cpus=0,
            allocated_memory=0,
            configured_gres={"gpu:sim": 4},
            allocated_gres={},
            reason="maintenance",
            slurmd_port=17031,
        )
        part = SimpleNamespace(
            name="cpu",
            nodes="cpu[1-2]",
            is_default=True,
            state="UP",
            max_time="UNLIMITED",
            max_nodes=None,
            total_cpus=16,
        )
        self.Nodes = SimpleNamespace(load=lambda: {"gpu1": node})
        self.Partitions = SimpleNamespace(load=lambda: {"cpu": part})


@pytest.fixture
def fake() -> FakePyslurm:
    return FakePyslurm()


def client(fake: FakePyslurm) -> PyslurmClient:
    return PyslurmClient("24.11.5", module=fake, env={"PATH": "/bin", "SLURM_JWT": "secret"})  # type: ignore[arg-type]


def test_a_scripts_sbatch_options_reach_the_description(fake: FakePyslurm) -> None:
    assert client(fake).submit(SCRIPT) == "42"
    kw = fake.submitted[0]
    assert kw["script"] == SCRIPT
    assert (kw["name"], kw["partitions"], kw["account"]) == ("sim", "gpu", "proj42")
    assert kw["time_limit"] == 5 and isinstance(kw["time_limit"], int)
    assert kw["is_requeueable"] is False
    assert kw["comment"] == "hpcorch contract test"
    assert kw["required_nodes"] == ["gpu1", "gpu2"] and kw["memory_per_node"] == 100
    assert "SLURM_JWT" not in kw["environment"] and kw["environment"]["PATH"] == "/bin"


def test_a_job_request_is_described_field_by_field() -> None:
    req = JobRequest(
        command="true",
        mem=0,
        time_s=61,
        hold=True,
        exclusive=True,
        requeue=True,
        signal="B:USR1@90",
        gres="gpu:sim:2",
        exclude=("cpu[1-2]",),
    )
    kw = submit_description(req, "#!/bin/bash\ntrue\n", {}, "/w")
    assert kw["memory_per_node"] == "0" and kw["time_limit"] == 2
    assert kw["priority"] == 0 and kw["resource_sharing"] == "no"
    assert kw["is_requeueable"] is True and kw["gres_per_node"] == "gpu:sim:2"
    assert kw["excluded_nodes"] == ["cpu1", "cpu2"] and kw["working_directory"] == "/w"
    assert kw["signal"] == {
        "signal": 10,
        "time": 90,
        "batch_only": True,
        "allow_reservation_overlap": False,
    }


def test_options_it_cannot_pass_are_refused_not_dropped(fake: FakePyslurm) -> None:
    with pytest.raises(SubmissionRefused, match="--mail-type=END"):
        client(fake).submit("#!/bin/bash\n#SBATCH --mail-type=END\ntrue\n")
    with pytest.raises(SubmissionRefused, match="cannot pass"):
        client(fake).submit(JobRequest(command="true", extra=("--mail-type=END",)))
    assert fake.submitted == []


def test_live_jobs_then_forgotten_ones_from_the_database(fake: FakePyslurm) -> None:
    fake.live = {7: job()}
    fake.accounted = [
        job(id=5, state="FAILED", exit_code=3, nodelist="cpu1", submit_time=50, end_time=60),
        job(id=5, state="COMPLETED", nodelist="cpu2", submit_time=10, end_time=20),
    ]
    jobs = client(fake).jobs(["7", "5"])
    assert [j.job_id for j in jobs] == ["5", "7"]
    ended, running = jobs
    assert ended.state is JobState.FAILED and ended.exit_code == 3 and ended.nodes == ("cpu1",)
    assert ended.source == "pyslurm-db" and fake.db_filters == [{"ids": [5]}]
    assert running.state is JobState.RUNNING and running.exit_code is None
    assert running.nodes == ("gpu1", "gpu2") and running.time_limit_s == 300
    assert running.reason is None and running.end is None


def test_cancel_by_id_and_array_tasks_by_their_own_id(fake: FakePyslurm) -> None:
    fake.live = {9: job(id=9, array_id=8, array_task_id=1)}
    client(fake).cancel(["7", "8_1"])
    assert sorted(fake.cancelled) == [7, 9]


def test_nodes_and_partitions(fake: FakePyslurm) -> None:
    (node,) = client(fake).nodes()
    assert node.cpus == 8 and node.memory == 8000 * 1024**2 and node.gres == "gpu:sim:4"
    assert node.status.state is NodeState.IDLE and not node.usable
    (part,) = client(fake).partitions()
    assert part.default and part.nodes == ("cpu1", "cpu2") and part.max_time_s is None


def test_other_releases_are_refused_with_the_fix() -> None:
    with pytest.raises(BackendUnavailable, match=r"Slurm 24\.11.*26\.05\.5.*rest or cli"):
        check_versions("24.11.0", "26.05.5")
    check_versions("24.11.0", "24.11.5")


def test_request_from_script_reads_what_the_contract_suite_writes() -> None:
    req = request_from_script(SCRIPT)
    assert req.partition == "gpu" and req.time_s == 300 and req.requeue is False
