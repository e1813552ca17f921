from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from hpcorch.errors import ResourceError, RunError
from hpcorch.mpi import (
    build_srun_step_argv,
    choose_launcher,
    launcher_kind,
    layout,
    offered_plugins,
    read_result,
    result_path,
    run_mpi_function,
    write_payload,
)
from hpcorch.mpi_bind import rank_gpus
from hpcorch.spec import MpiSpec

RING = ["python", "-m", "mpi4py.bench", "ringtest"]

# OpenMPI comes with the dev cluster's packages (scripts/dev-cluster up); under CI it must be
# there, so a missing mpiexec fails these tests rather than skipping them.
NEEDS_MPIEXEC = pytest.mark.skipif(
    shutil.which("mpiexec") is None and os.environ.get("CI") != "true",
    reason="no mpiexec here: scripts/dev-cluster up installs OpenMPI",
)


def test_two_nodes_by_four_ranks_inside_an_allocation() -> None:
    argv = build_srun_step_argv(
        MpiSpec(ranks=8, ranks_per_node=4),
        RING,
        job_id=1234,
        launcher=("srun", "--mpi=pmix"),
        memory=2 * 1024**3,
    )
    assert argv == [
        "srun",
        "--mpi=pmix",
        "--jobid=1234",
        "--nodes=2",
        "--ntasks=8",
        "--ntasks-per-node=4",
        "--cpus-per-task=1",
        "--mem=2048M",
        "--distribution=block:block",
        "--cpu-bind=cores",
        "--exact",
        "--kill-on-bad-exit=1",
        *RING,
    ]


def test_gpu_ranks_get_their_own_closest_gpus() -> None:
    argv = build_srun_step_argv(
        MpiSpec(ranks=4, ranks_per_node=2, cpus_per_rank=2, gpus_per_rank=1),
        ["./sim"],
        job_id="77",
        nodelist=("gpu1", "gpu2"),
        job_name="sim",
        overlap=True,
        python="/venv/bin/python",
    )
    assert argv[:8] == [
        "srun",
        "--jobid=77",
        "--job-name=sim",
        "--nodes=2",
        "--ntasks=4",
        "--ntasks-per-node=2",
        "--cpus-per-task=2",
        "--gpus-per-task=1",
    ]
    assert "--gpu-bind=closest" in argv
    assert "--nodelist=gpu1,gpu2" in argv
    assert argv[-7:] == [
        "--overlap",
        "/venv/bin/python",
        "-m",
        "hpcorch.mpi_bind",
        "1",
        "--",
        "./sim",
    ]


@pytest.mark.parametrize(
    ("visible", "local", "per_rank", "expected"),
    [
        ("0,1,2,3", "0", 1, "0"),
        ("0,1,2,3", "3", 1, "3"),
        ("0,1,2,3", "1", 2, "2,3"),
        ("2", "1", 1, None),  # Slurm already bound one GPU to this rank
        (None, "0", 1, None),
    ],
)
def test_rank_gpus(visible: str | None, local: str, per_rank: int, expected: str | None) -> None:
    env = {"SLURM_LOCALID": local}
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    assert rank_gpus(env, per_rank) == expected


def test_rank_gpus_under_mpirun_follow_open_mpis_local_rank() -> None:
    # Under mpirun every rank of a node shares its daemon's SLURM_LOCALID (0).
    env = {"CUDA_VISIBLE_DEVICES": "0,1,2,3", "SLURM_LOCALID": "0"}
    assert rank_gpus({**env, "OMPI_COMM_WORLD_LOCAL_RANK": "3"}, 1) == "3"


def test_mpirun_inside_an_allocation_on_the_placed_nodes() -> None:
    argv = build_srun_step_argv(
        MpiSpec(ranks=8, ranks_per_node=4, cpus_per_rank=2),
        RING,
        job_id=1234,
        launcher=("mpirun",),
        nodelist=("cpu1", "cpu2"),
        layout=(4, 4),
        memory=2 * 1024**3,
        job_name="hpcorch-ring",
        overlap=True,
    )
    assert argv == [
        "mpirun",
        "-n",
        "8",
        "--host",
        "cpu1:4,cpu2:4",
        "--map-by",
        "slot:PE=2:OVERSUBSCRIBE",
        "--bind-to",
        "core",
        "--mca",
        "plm_slurm_args",
        "--exact --cpus-per-task=8 --mem=2048M --job-name=hpcorch-ring --overlap",
        *RING,
    ]


def test_mpirun_unbound_with_gpus_and_an_uneven_layout() -> None:
    argv = build_srun_step_argv(
        layout(5, cpus_per_rank=1, gpus_per_rank=1),
        ["./sim"],
        job_id="7",
        launcher=("/usr/bin/mpirun", "--tag-output"),
        nodes=2,
        nodelist=("gpu1", "gpu2"),
        layout=(3, 2),
        bind="none",
        python="/venv/bin/python",
    )
    assert argv[:11] == [
        "/usr/bin/mpirun",
        "--tag-output",
        "-n",
        "5",
        "--host",
        "gpu1:3,gpu2:2",
        "--map-by",
        "slot:OVERSUBSCRIBE",
        "--bind-to",
        "none",
        "--mca",
    ]
    assert argv[11:13] == ["plm_slurm_args", "--exact --cpus-per-task=3 --gpus-per-node=3"]
    assert argv[13:] == ["/venv/bin/python", "-m", "hpcorch.mpi_bind", "1", "--", "./sim"]


def test_mpirun_inside_an_allocation_needs_its_nodes() -> None:
    with pytest.raises(ResourceError, match="needs the step's nodes"):
        build_srun_step_argv(layout(8, 4), RING, job_id=1, launcher=("mpirun",))


def test_srun_binding_follows_the_site() -> None:
    argv = build_srun_step_argv(layout(2), ["a.out"], job_id=1, bind="none")
    assert "--cpu-bind=none" in argv
    with pytest.raises(ResourceError, match="binding"):
        build_srun_step_argv(layout(2), ["a.out"], job_id=1, bind="sockets")


SRUN_MPI_LIST_2205 = (
    "MPI plugin types are...\n\tpmix\n\tnone\n\tcray_shasta\n\tpmi2\n"
    "specific pmix plugin versions available: pmix_v4\n"
)
SRUN_MPI_LIST_2605 = "MPI plugin types are...\n\tnone\n\tcray_shasta\n\tpmi2\n"


def test_offered_plugins_of_each_release() -> None:
    assert offered_plugins(SRUN_MPI_LIST_2205) == {"pmix", "none", "cray_shasta", "pmi2"}
    assert offered_plugins(SRUN_MPI_LIST_2605) == {"none", "cray_shasta", "pmi2"}
    assert offered_plugins("srun: MPI types are...\nsrun: none\nsrun: pmix\n") == {
        "none",
        "pmix",
    }


@pytest.mark.parametrize(
    ("launcher", "fallback", "listing", "expected"),
    [
        (("srun", "--mpi=pmix"), ("mpirun",), SRUN_MPI_LIST_2205, ("srun", "--mpi=pmix")),
        (("srun", "--mpi=pmix"), ("mpirun",), SRUN_MPI_LIST_2605, ("mpirun",)),
        (("srun", "--mpi", "pmix"), ("mpirun",), SRUN_MPI_LIST_2605, ("mpirun",)),
        (("srun", "--mpi=pmix"), (), SRUN_MPI_LIST_2605, ("srun", "--mpi=pmix")),
        (("srun", "--mpi=pmix"), ("mpirun",), None, ("srun", "--mpi=pmix")),  # srun said nothing
        (("srun",), ("mpirun",), SRUN_MPI_LIST_2605, ("srun",)),  # Slurm's MpiDefault
        (("mpirun",), ("srun",), SRUN_MPI_LIST_2605, ("mpirun",)),
    ],
)
def test_choose_launcher(
    launcher: tuple[str, ...],
    fallback: tuple[str, ...],
    listing: str | None,
    expected: tuple[str, ...],
) -> None:
    offered = offered_plugins(listing) if listing is not None else None
    assert choose_launcher(launcher, fallback, offered) == expected


def test_launcher_kinds() -> None:
    assert launcher_kind(("/usr/bin/srun", "--mpi=pmix")) == "srun"
    assert {launcher_kind((n,)) for n in ("mpirun", "mpiexec", "prterun")} == {"mpirun"}


def test_mpi_bind_execs_the_command_with_its_gpus() -> None:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="0,1,2,3", SLURM_LOCALID="2")
    code = "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])"
    out = subprocess.run(
        [sys.executable, "-m", "hpcorch.mpi_bind", "1", "--", sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "2"


def test_single_node_step_leaves_node_count_to_slurm() -> None:
    argv = build_srun_step_argv(layout(4), ["a.out"], job_id=1)
    assert not any(a.startswith("--nodes") for a in argv)
    assert "--ntasks=4" in argv


def test_mpiexec_launcher_without_slurm() -> None:
    argv = build_srun_step_argv(
        layout(8, 4, cpus_per_rank=2), ["a.out"], job_id=None, launcher=("mpiexec",)
    )
    assert argv == ["mpiexec", "-n", "8", "--map-by", "ppr:4:node:PE=2", "a.out"]


@pytest.mark.parametrize(
    ("mpi", "launcher", "match"),
    [
        (layout(2, gpus_per_rank=0.5), ("srun",), "whole GPUs"),
        (layout(2), ("aprun",), "not supported"),
    ],
)
def test_refused_steps(mpi: object, launcher: tuple[str, ...], match: str) -> None:
    with pytest.raises(ResourceError, match=match):
        build_srun_step_argv(mpi, ["x"], job_id=1, launcher=launcher)  # type: ignore[arg-type]


def _total(comm: object, scale: int) -> int:
    return scale


def test_payload_is_private_and_round_trips(tmp_path: Path) -> None:
    payload = write_payload(tmp_path, _total, (3,), {})
    assert stat.S_IMODE(payload.stat().st_mode) == 0o600
    # Run the bootstrap as a single MPI process (no launcher): rank 0 of 1.
    subprocess.run([sys.executable, "-m", "hpcorch.mpi_run", str(payload)], check=True)
    assert read_result(payload) == (True, 3)
    assert stat.S_IMODE(result_path(payload).stat().st_mode) == 0o600


def _fail(comm: object) -> None:
    raise KeyError("boom")


def test_rank0_exception_comes_back(tmp_path: Path) -> None:
    payload = write_payload(tmp_path, _fail)
    done = subprocess.run([sys.executable, "-m", "hpcorch.mpi_run", str(payload)], check=False)
    assert done.returncode == 1
    ok, exc = read_result(payload)
    assert not ok and isinstance(exc, KeyError)


def _allreduce(comm: object, base: int) -> tuple[int, int]:
    from mpi4py import MPI  # noqa: PLC0415  # optional, only inside an MPI step

    c = comm  # an mpi4py communicator
    return c.Get_size(), c.allreduce(base + c.Get_rank(), op=MPI.SUM)  # type: ignore[attr-defined]


@NEEDS_MPIEXEC
def test_function_task_with_local_mpiexec(tmp_path: Path) -> None:
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    size, total = run_mpi_function(
        _allreduce,
        layout(2),
        args=(10,),
        job_id=None,
        launcher=("mpiexec", "--oversubscribe"),
        workdir=tmp_path,
        env=env,
        timeout=120,
    )
    assert (size, total) == (2, 21)
    assert list(tmp_path.iterdir()) == []


@NEEDS_MPIEXEC
def test_step_that_dies_is_a_run_error(tmp_path: Path) -> None:
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    with pytest.raises(RunError, match="without a result"):
        run_mpi_function(
            _total,
            layout(1),
            args=(1,),
            job_id=None,
            launcher=("mpiexec",),
            workdir=tmp_path,
            python="/nonexistent/python",
            env=env,
            timeout=120,
        )


def test_launcher_that_is_missing_is_a_run_error(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="could not run"):
        run_mpi_function(
            _total, layout(1), job_id=None, launcher=("/nonexistent/mpiexec",), workdir=tmp_path
        )
    assert list(tmp_path.iterdir()) == []


def _say(comm: object) -> int:
    rank: int = comm.Get_rank()  # type: ignore[attr-defined]
    print(f"rank {rank} says hi", flush=True)
    return rank


@NEEDS_MPIEXEC
def test_ranks_output_reaches_the_attempts_log(tmp_path: Path) -> None:
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    seen: list[tuple[str, str]] = []
    run_mpi_function(
        _say,
        layout(2),
        job_id=None,
        launcher=("mpiexec", "--oversubscribe"),
        workdir=tmp_path / "mpi",
        env=env,
        timeout=120,
        output=lambda stream, text: seen.append((stream, text)),
    )
    out = "".join(text for stream, text in seen if stream == "out")
    assert "rank 0 says hi" in out and "rank 1 says hi" in out
