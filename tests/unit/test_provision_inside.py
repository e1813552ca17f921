"""Inside an existing allocation: reading it from the job's environment, the worker step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from distributed.security import Security

from hpcorch.engine.cancel import cancel_allocations
from hpcorch.environment import run_options
from hpcorch.errors import ResourceError
from hpcorch.journal import Journal
from hpcorch.loaders import load_workflow
from hpcorch.provision import inside, pools
from hpcorch.provision.inside import (
    CurrentAllocation,
    check_fits_allocation,
    current_allocation,
    parse_per_node,
    worker_argv,
)
from hpcorch.sites import load_site
from hpcorch.slurm.models import JobInfo
from hpcorch.slurm.states import JobState

BATCH_ENV = {
    "SLURM_JOB_ID": "376",
    "SLURM_JOB_NAME": "p.sh",
    "SLURM_JOB_NODELIST": "gpu[1-2]",
    "SLURM_JOB_CPUS_PER_NODE": "8(x2)",
    "SLURM_MEM_PER_NODE": "8000",
    "SLURM_GPUS_ON_NODE": "4",
    "SLURM_JOB_PARTITION": "gpu",
}
ALLOCATION = CurrentAllocation("376", ("gpu1", "gpu2"), (8, 8), 8000 * 1024**2, 4, "gpu")


def test_parse_per_node() -> None:
    assert parse_per_node("8(x2),4") == (8, 8, 4)
    assert parse_per_node("1") == (1,)
    with pytest.raises(ValueError, match="per-node"):
        parse_per_node("8x2")


def test_current_allocation_from_a_batch_environment() -> None:
    assert current_allocation(BATCH_ENV) == ALLOCATION


def test_memory_per_cpu_and_gpu_list() -> None:
    env = {**BATCH_ENV, "SLURM_JOB_CPUS_PER_NODE": "2,1", "SLURM_JOB_GPUS": "0,1"}
    del env["SLURM_MEM_PER_NODE"], env["SLURM_GPUS_ON_NODE"]
    env["SLURM_MEM_PER_CPU"] = "1000"
    alloc = current_allocation(env)
    assert alloc is not None
    assert alloc.cpus == (2, 1) and alloc.gpus == 2
    assert alloc.memory == 1000 * 1024**2  # the smaller node's share
    assert alloc.groups() == [(2, ("gpu1",)), (1, ("gpu2",))]


@pytest.mark.parametrize(
    "change",
    [
        {"SLURM_JOB_ID": ""},  # not in a job
        {"SLURM_JOB_NAME": "hpcorch-driver-demo-1"},  # `hpcorch submit`'s driver
        {"SLURM_JOB_NAME": "hpcorch-cpu"},  # a pool worker's job
    ],
)
def test_not_a_users_allocation(change: dict[str, str]) -> None:
    assert current_allocation({**BATCH_ENV, **change}) is None


def test_worker_step_argv() -> None:
    argv = worker_argv(
        ALLOCATION,
        ALLOCATION.nodes,
        8,
        "tls://10.0.0.1:8786",
        tls={"ca_file": "/r/tls/ca.pem", "cert": "/r/tls/cert.pem", "key": "/r/tls/key.pem"},
        python="/venv/bin/python",
    )
    assert argv[:9] == [
        "srun",
        "--jobid=376",
        "--overlap",
        "--nodes=2",
        "--ntasks=2",
        "--ntasks-per-node=1",
        "--nodelist=gpu[1-2]",
        "--cpus-per-task=8",
        "--kill-on-bad-exit=0",
    ]
    assert argv[9:13] == [
        "/venv/bin/python",
        "-m",
        "distributed.cli.dask_worker",
        "tls://10.0.0.1:8786",
    ]
    resources = argv[argv.index("--resources") + 1]
    assert resources.startswith(f"cpus=8,memory={8000 * 1024**2},gpus=4,time_")
    assert argv[argv.index("--nthreads") + 1] == "8"
    assert argv[argv.index("--tls-ca-file") + 1] == "/r/tls/ca.pem"
    assert argv[argv.index("--tls-key") + 1] == "/r/tls/key.pem"


def _spec(tmp_path: Path, resources: str) -> Any:
    path = tmp_path / "wf.yaml"
    path.write_text(f"tasks:\n  - {{id: big, command: ['true'], resources: {resources}}}\n")
    return load_workflow(path)


def test_a_task_too_big_for_the_allocation_is_refused(tmp_path: Path) -> None:
    check_fits_allocation(_spec(tmp_path, "{cpus: 8, gpus: 4}"), ALLOCATION)
    with pytest.raises(ResourceError, match="add_allocations: true"):
        check_fits_allocation(_spec(tmp_path, "{cpus: 16}"), ALLOCATION)
    with pytest.raises(ResourceError, match=r"9\.0GiB"):
        check_fits_allocation(_spec(tmp_path, "{memory: 9GiB}"), ALLOCATION)


def test_worker_tls_files_are_private(tmp_path: Path) -> None:

    files = inside.worker_tls_files(Security.temporary(), tmp_path / "tls")
    assert set(files) == {"ca_file", "cert", "key"}
    for path in files.values():
        assert Path(path).stat().st_mode & 0o777 == 0o600


def test_open_workers_uses_the_current_allocation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[Any] = []

    class FakeWorkers:
        def __init__(
            self, site: Any, spec: Any, run_dir: Path, allocation: CurrentAllocation, **kw: Any
        ) -> None:
            made.append(allocation)

    for key, value in BATCH_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(pools, "AllocationWorkers", FakeWorkers)
    site = load_site("dev")
    spec = _spec(tmp_path, "{cpus: 1}")
    assert isinstance(pools._open_workers(site, spec, tmp_path), FakeWorkers)
    assert made == [ALLOCATION]

    # use_current: false: the run submits its own jobs, as on a login node.
    off = site.model_copy(
        update={"allocation": site.allocation.model_copy(update={"use_current": False})}
    )

    def no_slurm(*args: object, **kwargs: object) -> None:
        raise RuntimeError("SlurmWorkers")

    monkeypatch.setattr(pools, "SlurmWorkers", no_slurm)
    with pytest.raises(RuntimeError, match="SlurmWorkers"):
        pools._open_workers(off, spec, tmp_path)

    # HPCORCH_USE_ALLOCATION=0 (RunOptions.use_allocation): the same, from the run's options.
    opted_out = run_options({"HPCORCH_USE_ALLOCATION": "0"})
    assert not opted_out.use_allocation
    with pytest.raises(RuntimeError, match="SlurmWorkers"):
        pools._open_workers(site, spec, tmp_path, opted_out)


def test_site_allocation_defaults() -> None:
    site = load_site("dev")
    assert site.allocation.use_current is True
    assert site.allocation.add_allocations is False


def test_cancel_never_cancels_the_users_allocation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    cancelled: list[str] = []

    class Client:
        def jobs(self, ids: Any) -> list[JobInfo]:
            return [JobInfo(job_id=i, state=JobState.RUNNING) for i in ids]

        def cancel(self, ids: Any) -> None:
            cancelled.extend(ids)

        def close(self) -> None:
            pass

    monkeypatch.setattr("hpcorch.engine.cancel.connect", lambda site: Client())
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    journal = Journal.create(
        tmp_path, run_id="r", name="r", source=None, site="dev", time_scale=None
    )
    row = {"site": "dev", "partition": "cpu", "nodes": 1, "state": "RUNNING", "start": 1.0}
    journal.record_allocation(job_id="376", pool="current", **row)
    journal.record_allocation(job_id="377", pool="cpu", **row)
    assert cancel_allocations(tmp_path, load_site("dev"), journal, why="cancel") == ["377"]
    journal.close()
    assert cancelled == ["377"]
