"""MPI tasks as job steps inside an allocation hpcorch already holds.

:func:`build_srun_step_argv` is the pure build: an MPI spec, the site's
launcher (``srun --mpi=pmix``) and the allocation's job id → the argv of one
``srun`` step (no new sbatch per task). Ranks are packed node by node and
socket by socket (``--distribution=block:block``) and bound to cores; with
``gpus_per_rank`` each rank gets its own GPUs, the ones closest to its cores.

Function tasks run the same way: :func:`run_mpi_function` pickles the
function and its arguments to a file and starts the step
``python -m hpcorch.mpi_run PAYLOAD`` (:mod:`hpcorch.mpi_run`); every rank
calls ``fn(comm, *args, **kwargs)`` with ``MPI.COMM_WORLD``, and rank 0's
return value comes back through a result file.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cloudpickle  # type: ignore[import-untyped]

from hpcorch.errors import ResourceError, RunError

__all__ = [
    "MpiLayout",
    "build_srun_step_argv",
    "layout",
    "read_result",
    "result_path",
    "run_mpi_function",
    "write_payload",
]

logger = logging.getLogger(__name__)


class MpiLayout(Protocol):
    """What the build needs of an MPI spec (:class:`hpcorch.spec.MpiSpec` has it)."""

    @property
    def ranks(self) -> int: ...
    @property
    def ranks_per_node(self) -> int | None: ...
    @property
    def cpus_per_rank(self) -> int: ...
    @property
    def gpus_per_rank(self) -> float: ...


@dataclass(frozen=True, slots=True)
class _Layout:
    ranks: int
    ranks_per_node: int | None = None
    cpus_per_rank: int = 1
    gpus_per_rank: float = 0


def _launcher_kind(launcher: Sequence[str]) -> str:
    name = os.path.basename(launcher[0]) if launcher else ""
    if name == "srun":
        return "srun"
    if name in ("mpirun", "mpiexec"):
        return "mpiexec"
    raise ResourceError(
        f"MPI launcher {list(launcher)!r} is not supported; "
        "set the site's mpi.launcher to [srun, --mpi=pmix] (or [mpiexec] without Slurm)"
    )


def build_srun_step_argv(
    mpi: MpiLayout,
    command: Sequence[str],
    *,
    job_id: str | int | None,
    launcher: Sequence[str] = ("srun",),
    nodes: int | None = None,
    memory: int | None = None,
    nodelist: Sequence[str] = (),
    job_name: str | None = None,
    overlap: bool = False,
    extra: Sequence[str] = (),
    python: str = sys.executable,
) -> list[str]:
    """The argv of one MPI step running ``command`` inside allocation ``job_id``.

    ``launcher`` is the site's (``site.mpi.launcher``); with ``mpiexec`` (a
    machine without Slurm) the step is ``mpiexec -n RANKS ...``. ``memory``
    is bytes per node (``--mem``; without it the step may claim all of the
    nodes' memory). ``nodelist`` pins the step to the nodes the placement
    policy chose; ``overlap`` lets it share cores with steps already running.
    With ``gpus_per_rank``, the command runs under ``python -m hpcorch.mpi_bind``
    so each rank sees only its own GPUs even where Slurm does not bind them.
    """
    if not command:
        raise ResourceError("an MPI step needs a command")
    gpus = mpi.gpus_per_rank
    if gpus != int(gpus):
        raise ResourceError(
            f"gpus_per_rank: {gpus} is fractional; MPI ranks take whole GPUs (1, 2, ...)"
        )
    count = nodes or (-(-mpi.ranks // mpi.ranks_per_node) if mpi.ranks_per_node else None)
    if count is not None and count > mpi.ranks:
        raise ResourceError(f"{count} nodes for {mpi.ranks} ranks; each node needs a rank")
    if _launcher_kind(launcher) == "mpiexec":
        argv = [*launcher, "-n", str(mpi.ranks)]
        if mpi.ranks_per_node:
            argv += ["--map-by", f"ppr:{mpi.ranks_per_node}:node:PE={mpi.cpus_per_rank}"]
        return [*argv, *extra, *command]
    if gpus:
        command = [python, "-m", "hpcorch.mpi_bind", str(int(gpus)), "--", *command]
    argv = list(launcher)
    if job_id is not None:
        argv.append(f"--jobid={job_id}")
    if job_name:
        argv.append(f"--job-name={job_name}")
    if count is not None:
        argv.append(f"--nodes={count}")
    argv.append(f"--ntasks={mpi.ranks}")
    if mpi.ranks_per_node:
        argv.append(f"--ntasks-per-node={mpi.ranks_per_node}")
    argv.append(f"--cpus-per-task={mpi.cpus_per_rank}")
    if gpus:
        argv += [f"--gpus-per-task={int(gpus)}", "--gpu-bind=closest"]
    if memory:
        argv.append(f"--mem={max(1, -(-memory // 1024**2))}M")
    if nodelist:
        argv.append(f"--nodelist={','.join(nodelist)}")
    # Ranks fill a node before the next, and a socket before the next;
    # --exact keeps the step to what it asked so other steps can run beside it.
    argv += ["--distribution=block:block", "--cpu-bind=cores", "--exact", "--kill-on-bad-exit=1"]
    if overlap:
        argv.append("--overlap")
    return [*argv, *extra, *command]


# ---------------------------------------------------------------- function tasks


def write_payload(
    directory: str | os.PathLike[str],
    fn: Callable[..., Any],
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
) -> Path:
    """Pickle ``fn(comm, *args, **kwargs)`` to a new file (mode 0600) under ``directory``."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="mpi-", suffix=".pkl", dir=directory)
    with os.fdopen(fd, "wb") as fh:
        cloudpickle.dump((fn, tuple(args), dict(kwargs or {})), fh)
    return Path(name)


def result_path(payload: str | os.PathLike[str]) -> Path:
    return Path(f"{os.fspath(payload)}.result")


def read_result(payload: str | os.PathLike[str]) -> tuple[bool, Any]:
    """``(True, value)`` or ``(False, exception)`` as rank 0 wrote it.

    Raises FileNotFoundError when rank 0 wrote nothing (the step died first).
    """
    with open(result_path(payload), "rb") as fh:
        ok, value = cloudpickle.load(fh)
    return bool(ok), value


def run_mpi_function(
    fn: Callable[..., Any],
    mpi: MpiLayout,
    *,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    job_id: str | int | None,
    launcher: Sequence[str] = ("srun",),
    workdir: str | os.PathLike[str],
    python: str = sys.executable,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    **step: Any,
) -> Any:
    """Run ``fn(comm, *args, **kwargs)`` on every rank of an MPI step; return rank 0's value.

    Re-raises the exception rank 0 raised. Raises :class:`~hpcorch.errors.RunError`
    when the step ended without a result (a rank crashed, srun failed).
    ``step`` passes through to :func:`build_srun_step_argv` (memory, nodelist, ...).
    """
    payload = write_payload(workdir, fn, args, kwargs)
    argv = build_srun_step_argv(
        mpi,
        [python, "-m", "hpcorch.mpi_run", str(payload)],
        job_id=job_id,
        launcher=launcher,
        python=python,
        **step,
    )
    logger.info("MPI function step: %s", argv)
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=dict(env) if env is not None else None,
            timeout=timeout,
            check=False,
        )
        ok, value = read_result(payload)
    except (OSError, subprocess.TimeoutExpired) as exc:
        if isinstance(exc, FileNotFoundError) and exc.filename == str(result_path(payload)):
            tail = (done.stderr or done.stdout or "").strip()[-2000:]
            raise RunError(
                f"MPI step exited {done.returncode} without a result from rank 0: {tail}"
            ) from None
        raise RunError(f"MPI step {argv[0]} could not run: {exc}") from exc
    finally:
        for path in (payload, result_path(payload)):
            path.unlink(missing_ok=True)
    if not ok:
        raise value
    return value


def layout(
    ranks: int, ranks_per_node: int | None = None, cpus_per_rank: int = 1, gpus_per_rank: float = 0
) -> MpiLayout:
    """A layout without a task spec (tests, the Python API)."""
    return _Layout(ranks, ranks_per_node, cpus_per_rank, gpus_per_rank)
