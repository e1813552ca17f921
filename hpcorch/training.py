"""torch.distributed trainings as MPI-style srun steps: pure parts of the launch.

A task with ``distributed`` (:class:`hpcorch.spec.DistributedSpec`) runs as the
srun step MPI tasks run as (:mod:`hpcorch.mpi`); each rank starts under
``python -m hpcorch.torch_run``, which turns the step's Slurm variables into
torch's (``RANK``, ``LOCAL_RANK``, ...). What the worker adds to the step's
environment is built here: the rendezvous (``MASTER_ADDR``, ``MASTER_PORT``),
the backend, each rank's threads (``OMP_NUM_THREADS``, its cores), the
network interface of the site (``NCCL_SOCKET_IFNAME``,
``GLOO_SOCKET_IFNAME``) and the newest complete checkpoint of an earlier
attempt (``HPCORCH_CHECKPOINT``).

Ports: each attempt takes a port from ``[PORT_BASE, PORT_BASE + PORT_SPAN)``,
starting at a hash of its run, task and attempt and skipping ports in use on
the node, so two trainings at once (of one run or two) do not share one.
"""

from __future__ import annotations

import re
import socket
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hpcorch.errors import ResourceError
from hpcorch.sites.model import Site
from hpcorch.spec import TaskSpec, WorkflowSpec

__all__ = [
    "CHECKPOINT_RE",
    "PORT_BASE",
    "PORT_SPAN",
    "TorchStep",
    "checkpoint_name",
    "newest_checkpoint",
    "pick_port",
    "port_free",
    "resolve_ranks",
    "torch_env",
]

PORT_BASE = 29500
PORT_SPAN = 2000
CHECKPOINT_RE = re.compile(r"ckpt-(\d{9})\.pt")
"""A complete checkpoint's name; one being written ends in ``.tmp`` until renamed."""


@dataclass(frozen=True, slots=True)
class TorchStep:
    """What a worker needs to launch a training's ranks (beside the MPI step's layout)."""

    backend: str
    interface: str | None = None
    checkpoint_dir: str | None = None
    port: int | None = None


def torch_step(task: TaskSpec, site: Site, run_dir: Path) -> TorchStep | None:
    """The training part of a task's step (None: not a training). A relative
    ``checkpoint_dir`` lies in the run directory (each run its own checkpoints)."""
    d = task.distributed
    if d is None:
        return None
    directory = d.checkpoint_dir
    if directory is not None:
        directory = str(Path(run_dir, directory).absolute())
    return TorchStep(
        backend=d.torch_backend,
        interface=site.dask.interface,
        checkpoint_dir=directory,
        port=d.port,
    )


def _gpus_per_node(task: TaskSpec, site: Site) -> int:
    gpus = [p.node.gpus for p in site.partitions if p.node.gpus]
    if not gpus:
        raise ResourceError(
            f"task {task.id!r}: distributed ranks take GPUs but site {site.name!r} has none"
        )
    return min(gpus)


def resolve_ranks(spec: WorkflowSpec, site: Site) -> WorkflowSpec:
    """``spec`` with each GPU training's ``ranks_per_node`` left out set to one rank per
    GPU of the site's GPU nodes (``gpus_per_rank`` each)."""
    tasks = []
    changed = False
    for task in spec.tasks:
        d = task.distributed
        if d is not None and d.ranks_per_node is None and d.gpus_per_rank:
            per_node = max(1, _gpus_per_node(task, site) // d.gpus_per_rank)
            tasks.append(task.model_copy(update={"mpi": d.as_mpi(per_node)}))
            changed = True
        else:
            tasks.append(task)
    return spec.model_copy(update={"tasks": tuple(tasks)}) if changed else spec


def port_free(port: int, host: str = "") -> bool:
    """Whether ``port`` can be bound on this machine now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(
    key: str, free: Callable[[int], bool] = port_free, taken: frozenset[int] = frozenset()
) -> int:
    """A rendezvous port for ``key`` (run/task/attempt): the first free one from its hash."""
    start = zlib.crc32(key.encode()) % PORT_SPAN
    for i in range(PORT_SPAN):
        port = PORT_BASE + (start + i) % PORT_SPAN
        if port not in taken and free(port):
            return port
    raise ResourceError(f"no free port in {PORT_BASE}-{PORT_BASE + PORT_SPAN - 1}")


def checkpoint_name(step: int) -> str:
    return f"ckpt-{step:09d}.pt"


def newest_checkpoint(directory: str | Path | None) -> Path | None:
    """The complete checkpoint of the highest step in ``directory`` (None: none yet)."""
    if directory is None or not Path(directory).is_dir():
        return None
    best: tuple[int, Path] | None = None
    for path in Path(directory).iterdir():
        m = CHECKPOINT_RE.fullmatch(path.name)
        if m and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), path)
    return best[1] if best else None


def torch_env(
    step: TorchStep,
    *,
    master_addr: str,
    port: int,
    checkpoint: Path | None,
    threads: int | None = None,
) -> dict[str, str]:
    """The variables every rank of the step inherits (the shim adds the per-rank ones).

    ``threads``: each rank's ``OMP_NUM_THREADS`` (its cores, as torchrun sets 1 per
    rank): left to itself PyTorch starts a thread per core of the node in every
    rank, and ranks sharing a node then contend (a 4-rank gloo training on the dev
    cluster ran 6.7x slower so). None: the task set its own."""
    env = {
        "MASTER_ADDR": master_addr,
        "MASTER_PORT": str(port),
        "HPCORCH_TORCH_BACKEND": step.backend,
    }
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    if step.interface:
        env["NCCL_SOCKET_IFNAME"] = step.interface
        env["GLOO_SOCKET_IFNAME"] = step.interface
    if step.checkpoint_dir:
        env["HPCORCH_CHECKPOINT_DIR"] = step.checkpoint_dir
    if checkpoint is not None:
        env["HPCORCH_CHECKPOINT"] = str(checkpoint)
    return env


def summary(master_addr: str, port: int, checkpoint: Path | None) -> str:
    """The attempt's training line in the journal: ``master:port`` and where it resumed."""
    text = f"{master_addr}:{port}"
    return f"{text} resume={checkpoint.name}" if checkpoint is not None else text


def step_of(summary_text: str | None) -> int | None:
    """The step an attempt resumed from, read back from :func:`summary`'s line."""
    m = re.search(r"resume=ckpt-(\d+)\.pt", summary_text or "")
    return int(m.group(1)) if m else None
