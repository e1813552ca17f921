"""MPI tasks as job steps inside an allocation hpcorch already holds.

:func:`build_srun_step_argv` is the pure build: an MPI spec, the site's
launcher and the allocation's job id → the argv of one step (no new sbatch
per task). Ranks are packed node by node and socket by socket and bound to
cores; with ``gpus_per_rank`` each rank gets its own GPUs, the ones closest
to its cores. The launcher's first word picks how (:func:`launcher_kind`):

- ``srun --mpi=pmix``: one ``srun`` step (``--distribution=block:block``);
  Slurm's MPI plugin gives the ranks PMIx.
- ``mpirun`` (Open MPI 5+): for a Slurm whose ``srun`` lacks the PMIx plugin
  (Debian's Slurm 26.05). Open MPI's own launcher runs inside the allocation
  on the nodes the placement chose (``--host``), starts its daemons there with
  one ``srun`` step (PRRTE's slurm launcher, its srun options passed as
  ``plm_slurm_args``) and serves PMIx to the ranks itself. Outside Slurm
  (no job id) it is plain ``mpiexec -n RANKS`` on this machine.

:func:`choose_launcher` picks the site's ``mpi.fallback`` launcher where
``srun --mpi=list`` does not offer the plugin ``mpi.launcher`` asks for.

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
    "choose_launcher",
    "launcher_kind",
    "layout",
    "offered_plugins",
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


def launcher_kind(launcher: Sequence[str]) -> str:
    """``srun`` (a Slurm step) or ``mpirun`` (Open MPI's launcher) for a site's launcher argv."""
    name = os.path.basename(launcher[0]) if launcher else ""
    if name == "srun":
        return "srun"
    if name in ("mpirun", "mpiexec", "prterun"):
        return "mpirun"
    raise ResourceError(
        f"MPI launcher {list(launcher)!r} is not supported; set the site's mpi.launcher "
        "to [srun, --mpi=pmix] or [mpirun] (Open MPI's own launcher, inside the allocation)"
    )


def _wanted_plugin(launcher: Sequence[str]) -> str | None:
    """The plugin ``srun --mpi=X`` asks for (None: Slurm's MpiDefault)."""
    args = list(launcher[1:])
    for i, arg in enumerate(args):
        if arg.startswith("--mpi="):
            return arg.split("=", 1)[1]
        if arg == "--mpi" and i + 1 < len(args):
            return args[i + 1]
    return None


def offered_plugins(srun_mpi_list: str) -> frozenset[str]:
    """The MPI plugin names in the output of ``srun --mpi=list`` (any release's wording)."""
    names: set[str] = set()
    for line in srun_mpi_list.splitlines():
        text = line.removeprefix("srun:").strip()
        if not text or " " in text or text.endswith(":") or text.endswith("..."):
            continue
        names.add(text)
    return frozenset(names)


def choose_launcher(
    launcher: Sequence[str], fallback: Sequence[str], offered: frozenset[str] | None
) -> tuple[str, ...]:
    """``launcher``, or ``fallback`` where srun does not offer the plugin ``launcher`` asks for.

    ``offered``: what ``srun --mpi=list`` lists (None: unknown, keep ``launcher``).
    """
    if not fallback or offered is None or launcher_kind(launcher) != "srun":
        return tuple(launcher)
    wanted = _wanted_plugin(launcher)
    if wanted is None or wanted in offered:
        return tuple(launcher)
    return tuple(fallback)


def build_srun_step_argv(
    mpi: MpiLayout,
    command: Sequence[str],
    *,
    job_id: str | int | None,
    launcher: Sequence[str] = ("srun",),
    nodes: int | None = None,
    memory: int | None = None,
    nodelist: Sequence[str] = (),
    layout: Sequence[int] = (),
    job_name: str | None = None,
    overlap: bool = False,
    bind: str = "cores",
    extra: Sequence[str] = (),
    python: str = sys.executable,
) -> list[str]:
    """The argv of one MPI step running ``command`` inside allocation ``job_id``.

    ``launcher`` is the site's (``site.mpi.launcher``); see :func:`launcher_kind`.
    ``memory`` is bytes per node (``--mem``; without it the step may claim
    all of the nodes' memory). ``nodelist`` pins the step to the nodes the
    placement policy chose, ``layout`` (``mpirun`` only) the ranks on each of
    them; ``overlap`` lets it share cores with steps already running.
    ``bind``: ``cores`` binds each rank to its own cores, ``none`` leaves
    ranks unbound (nodes whose cores are not real ones, as the dev cluster's).
    With ``gpus_per_rank``, the command runs under ``python -m hpcorch.mpi_bind``
    so each rank sees only its own GPUs even where Slurm does not bind them.
    """
    if not command:
        raise ResourceError("an MPI step needs a command")
    if bind not in ("cores", "none"):
        raise ResourceError(f"MPI binding {bind!r}: choose cores or none")
    gpus = mpi.gpus_per_rank
    if gpus != int(gpus):
        raise ResourceError(
            f"gpus_per_rank: {gpus} is fractional; MPI ranks take whole GPUs (1, 2, ...)"
        )
    count = nodes or (-(-mpi.ranks // mpi.ranks_per_node) if mpi.ranks_per_node else None)
    if count is not None and count > mpi.ranks:
        raise ResourceError(f"{count} nodes for {mpi.ranks} ranks; each node needs a rank")
    kind = launcher_kind(launcher)
    if kind == "mpirun" and job_id is None:  # mpiexec on this machine, no Slurm
        argv = [*launcher, "-n", str(mpi.ranks)]
        if mpi.ranks_per_node:
            argv += ["--map-by", f"ppr:{mpi.ranks_per_node}:node:PE={mpi.cpus_per_rank}"]
        return [*argv, *extra, *command]
    if gpus:
        command = [python, "-m", "hpcorch.mpi_bind", str(int(gpus)), "--", *command]
    if kind == "mpirun":
        return _mpirun_argv(
            mpi, command, launcher, nodelist, layout, memory, job_name, overlap, bind, extra
        )
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
        argv.append(f"--mem={_megabytes(memory)}")
    if nodelist:
        argv.append(f"--nodelist={','.join(nodelist)}")
    # Ranks fill a node before the next, and a socket before the next;
    # --exact keeps the step to what it asked so other steps can run beside it.
    argv += ["--distribution=block:block", f"--cpu-bind={bind}", "--exact", "--kill-on-bad-exit=1"]
    if overlap:
        argv.append("--overlap")
    return [*argv, *extra, *command]


def _megabytes(memory: int) -> str:
    return f"{max(1, -(-memory // 1024**2))}M"


def _mpirun_argv(
    mpi: MpiLayout,
    command: Sequence[str],
    launcher: Sequence[str],
    nodelist: Sequence[str],
    layout: Sequence[int],
    memory: int | None,
    job_name: str | None,
    overlap: bool,
    bind: str,
    extra: Sequence[str],
) -> list[str]:
    """Open MPI's ``mpirun`` inside the allocation, on the nodes the placement chose.

    ``--host NODE:RANKS,...`` places the ranks node by node (``--map-by slot``
    fills a node before the next, and its cores socket by socket); the
    ``:OVERSUBSCRIBE`` qualifier lets hpcorch's placement, not the
    allocation's Slurm task count (one task per node for a worker), say how
    many ranks a node takes. PRRTE starts one daemon per node with ``srun``;
    ``plm_slurm_args`` holds that step to the ranks' cores, memory and GPUs
    (``--exact``) so other steps can run beside it.
    """
    if not nodelist or len(layout) != len(nodelist) or sum(layout) != mpi.ranks:
        raise ResourceError(
            f"mpirun inside an allocation needs the step's nodes and their ranks "
            f"(got nodes {list(nodelist)}, ranks per node {list(layout)} for {mpi.ranks} ranks)"
        )
    widest = max(layout)
    daemons = ["--exact", f"--cpus-per-task={widest * mpi.cpus_per_rank}"]
    if mpi.gpus_per_rank:
        daemons.append(f"--gpus-per-node={widest * int(mpi.gpus_per_rank)}")
    if memory:
        daemons.append(f"--mem={_megabytes(memory)}")
    if job_name:  # PRRTE splits plm_slurm_args on spaces
        daemons.append(f"--job-name={'_'.join(job_name.split())}")
    if overlap:
        daemons.append("--overlap")
    hosts = ",".join(f"{node}:{n}" for node, n in zip(nodelist, layout, strict=True))
    if bind == "cores":
        mapping = [f"slot:PE={mpi.cpus_per_rank}:OVERSUBSCRIBE", "--bind-to", "core"]
    else:
        mapping = ["slot:OVERSUBSCRIBE", "--bind-to", "none"]
    argv = [*launcher, "-n", str(mpi.ranks), "--host", hosts, "--map-by", *mapping]
    argv += ["--mca", "plm_slurm_args", " ".join(daemons)]
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
    output: Callable[[str, str], None] | None = None,
    module: str = "hpcorch.mpi_run",
    **step: Any,
) -> Any:
    """Run ``fn(comm, *args, **kwargs)`` on every rank of an MPI step; return rank 0's value.

    ``output(stream, text)`` receives the step's stdout ("out") and stderr ("err")
    once it ended (the worker writes them to the attempt's log).

    Re-raises the exception rank 0 raised. Raises :class:`~hpcorch.errors.RunError`
    when the step ended without a result (a rank crashed, srun failed).
    ``step`` passes through to :func:`build_srun_step_argv` (memory, nodelist, ...).
    ``module`` is each rank's bootstrap (``hpcorch.torch_run``: ``fn(process_group, ...)``).
    """
    payload = write_payload(workdir, fn, args, kwargs)
    argv = build_srun_step_argv(
        mpi,
        [python, "-m", module, str(payload)],
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
        if output is not None:
            output("out", done.stdout or "")
            output("err", done.stderr or "")
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
