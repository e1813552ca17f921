"""MPI steps inside an allocation hpcorch holds, on the real dev cluster.

One allocation (``sbatch -p cpu -N2``) is held for the module; every MPI task
runs in it as an ``srun`` step built by :func:`hpcorch.mpi.build_srun_step_argv`
with the dev site's launcher, never as a new sbatch.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hpcorch.mpi import build_srun_step_argv, layout, run_mpi_function
from hpcorch.sites import load_site
from hpcorch.spec import MpiSpec
from tests.waiting import wait_for

pytestmark = pytest.mark.slurm

PYTHON = sys.executable
REPO = Path(__file__).resolve().parents[2]


def step_env(cluster: Any) -> dict[str, str]:
    # The emulated nodes share one host: OpenMPI's shared-memory transport
    # (vader) then crashes between ranks of different "nodes"; TCP works.
    # A real cluster needs nothing here.
    # PYTHONPATH: the steps import this checkout of hpcorch.
    return cluster.cli_env() | {"OMPI_MCA_btl": "self,tcp", "PYTHONPATH": str(REPO)}


def run_step(cluster: Any, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env=step_env(cluster), capture_output=True, text=True, timeout=300, check=False
    )


def _wait_running(cluster: Any, job_id: str, timeout: float = 120) -> None:
    def state() -> str:
        return cluster.run("squeue", "-h", "-j", job_id, "-o", "%T", check=False).stdout.strip()

    wait_for(lambda: state() == "RUNNING", timeout, f"allocation {job_id} RUNNING")


def _hold(cluster: Any, *args: str) -> Iterator[str]:
    out = cluster.run(
        "sbatch",
        "--parsable",
        "--time=10",
        "--job-name=hpcorch-mpi-test",
        *args,
        "--output=/dev/null",
        "--wrap",
        "sleep 600",
    ).stdout.strip()
    job_id = out.split(";")[0]
    try:
        _wait_running(cluster, job_id)
        yield job_id
    finally:
        cluster.run("scancel", job_id, check=False)


@pytest.fixture(scope="module")
def cpu_allocation(dev_cluster: Any) -> Iterator[str]:
    yield from _hold(dev_cluster, "-p", "cpu", "-N2", "--ntasks-per-node=4", "--mem=2000M")


@pytest.fixture(scope="module")
def launcher(dev_cluster: Any) -> tuple[str, ...]:
    return load_site("dev").mpi.launcher


def test_ringtest_two_nodes_by_four_ranks(
    dev_cluster: Any, cpu_allocation: str, launcher: tuple[str, ...]
) -> None:
    argv = build_srun_step_argv(
        MpiSpec(ranks=8, ranks_per_node=4),
        [PYTHON, "-m", "mpi4py.bench", "ringtest"],
        job_id=cpu_allocation,
        launcher=launcher,
        memory=200 * 1024**2,
    )
    done = run_step(dev_cluster, argv)
    assert done.returncode == 0, done.stderr
    assert "time" in done.stdout.lower() or done.stdout.strip(), done.stdout


def test_ranks_are_placed_four_per_node(
    dev_cluster: Any, cpu_allocation: str, launcher: tuple[str, ...]
) -> None:
    code = (
        "import os; from mpi4py import MPI; "
        "print(MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size(), os.environ['SLURMD_NODENAME'])"
    )
    argv = build_srun_step_argv(
        MpiSpec(ranks=8, ranks_per_node=4),
        [PYTHON, "-c", code],
        job_id=cpu_allocation,
        launcher=launcher,
        memory=200 * 1024**2,
    )
    done = run_step(dev_cluster, argv)
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines() if line.strip()]
    assert sorted(int(r[0]) for r in rows) == list(range(8))
    assert {r[1] for r in rows} == {"8"}
    per_node = collections.Counter(r[2] for r in rows)
    assert per_node == {"cpu1": 4, "cpu2": 4}
    # Block distribution: ranks 0-3 on the first node, 4-7 on the second.
    first = {r[2] for r in rows if int(r[0]) < 4}
    assert len(first) == 1


def _allreduce(comm: Any, base: int) -> dict[str, Any]:

    from mpi4py import MPI  # noqa: PLC0415  # optional, only inside an MPI step

    nodes = comm.gather(os.environ.get("SLURMD_NODENAME"), root=0)
    total = comm.allreduce(base + comm.Get_rank(), op=MPI.SUM)
    return {"size": comm.Get_size(), "total": total, "nodes": nodes}


def test_mpi4py_function_task_gets_a_communicator(
    dev_cluster: Any, cpu_allocation: str, launcher: tuple[str, ...], tmp_path: Path
) -> None:
    # The payload must be readable from every node: the emulated nodes share this disk.
    result = run_mpi_function(
        _allreduce,
        layout(8, 4),
        args=(100,),
        job_id=cpu_allocation,
        launcher=launcher,
        workdir=tmp_path,
        env=step_env(dev_cluster),
        timeout=300,
        memory=1000 * 1024**2,
    )
    assert result["size"] == 8
    assert result["total"] == 8 * 100 + sum(range(8))
    assert collections.Counter(result["nodes"]) == {"cpu1": 4, "cpu2": 4}
