"""The worker side: a Dask plugin that owns a node's slots, and task helpers.

Register :class:`SlotPlugin` on the workers of a pool (one worker per node);
inside a running task, :func:`task_slot` obtains the task's cores and GPUs,
:func:`slot_env` turns them into the environment of the task's subprocess
(``CUDA_VISIBLE_DEVICES`` on NVIDIA, ``ROCR_VISIBLE_DEVICES``/``HIP_VISIBLE_DEVICES``
on AMD, ``OMP_NUM_THREADS``) and :func:`bind_cpus` pins a
process to the slot's cores where the operating system permits::

    with task_slot(Request(cpus=4, gpus=2)) as slot:
        proc = start_in_slot(argv, slot)   # Popen with slot_env + bind_cpus
        proc.wait()
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from distributed import WorkerPlugin, get_worker

from hpcorch.errors import InfrastructureError
from hpcorch.gpu_env import GpuVendor, apply_gpu_env, env_vendor, vendor_of
from hpcorch.gpu_env import visible_gpus as _visible_gpus
from hpcorch.placement.request import Request, Slot
from hpcorch.placement.slots import SlotAllocator
from hpcorch.topology import NodeTopology, detect_topology

__all__ = [
    "PLUGIN_NAME",
    "SlotPlugin",
    "bind_cpus",
    "current_allocator",
    "slot_env",
    "start_in_slot",
    "task_slot",
    "visible_gpus",
]

logger = logging.getLogger(__name__)

PLUGIN_NAME = "hpcorch-slots"


def visible_gpus(env: Mapping[str, str]) -> tuple[str, ...] | None:
    """The GPU names Slurm gave this process: ``ROCR_VISIBLE_DEVICES`` on AMD,
    ``CUDA_VISIBLE_DEVICES`` on NVIDIA (None when unset: all GPUs)."""
    return _visible_gpus(env)


def _local_topology() -> NodeTopology:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return NodeTopology(sockets=1, cores_per_socket=cores or 1, memory=memory)


def _gres_conf() -> str | None:
    """gres.conf beside slurm.conf (its ``Cores=`` and ``Links=``), when readable."""
    conf = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf"))
    try:
        return conf.with_name("gres.conf").read_text()
    except OSError:
        return None


class SlotPlugin(WorkerPlugin):
    """Holds a :class:`SlotAllocator` for the node the worker runs on.

    ``topology`` comes from the site config (the engine passes it); without
    one the plugin detects it on setup from Slurm (``scontrol show node -d``,
    gres.conf beside ``$SLURM_CONF``, nvidia-smi, amd-smi/rocm-smi), or falls back
    to the worker's own CPUs with no GPUs. The GPUs a worker may hand out are
    those in its ``CUDA_VISIBLE_DEVICES`` (NVIDIA) or ``ROCR_VISIBLE_DEVICES``
    (AMD): what Slurm gave its allocation, in order. ``vendor`` (the site node's
    ``gpu_vendor``) picks the variables; without it, the one Slurm set, else the
    GPU type's vendor. ``require_links``: see
    :class:`~hpcorch.placement.slots.SlotAllocator`.
    """

    name = PLUGIN_NAME

    def __init__(
        self,
        topology: NodeTopology | None = None,
        node: str | None = None,
        share_gpus: bool = True,
        require_links: bool = False,
        vendor: GpuVendor | None = None,
    ) -> None:
        self.topology = topology
        self.node = node
        self.vendor: GpuVendor | None = vendor
        self.share_gpus = share_gpus
        self.require_links = require_links
        self.allocator: SlotAllocator | None = None
        self.gpu_names: tuple[str, ...] = ()

    def setup(self, worker: Any) -> None:
        node = self.node or os.environ.get("SLURMD_NODENAME") or socket.gethostname()
        topology = self.topology or detect_topology(node, _gres_conf()) or _local_topology()
        count = topology.gpu_count
        self.vendor = (
            self.vendor
            or env_vendor(os.environ)
            or vendor_of(topology.gpus[0].type if topology.gpus else None)
        )
        self.gpu_names = tuple(str(i) for i in range(count))
        names = _visible_gpus(os.environ, self.vendor)
        if names is None:
            usable = list(range(count))
        elif all(n.isdigit() for n in names):
            usable = [int(n) for n in names if int(n) < count]
        else:
            # UUIDs or MIG names: take them in topology order.
            usable = list(range(min(len(names), count)))
            self.gpu_names = names[:count] + self.gpu_names[len(names) :]
        self.allocator = SlotAllocator(
            node,
            topology,
            gpus=usable,
            share_gpus=self.share_gpus,
            require_links=self.require_links,
        )
        logger.info(
            "slots on %s: %d cores, GPUs %s", node, topology.cores, ",".join(map(str, usable))
        )

    def teardown(self, worker: Any) -> None:
        self.allocator = None


def current_allocator() -> SlotAllocator:
    """The allocator of the worker running the current task."""

    try:
        worker = get_worker()
    except ValueError as exc:
        raise InfrastructureError(
            "task_slot() needs a running Dask worker; call it inside a task"
        ) from exc
    plugin: Any = worker.plugins.get(PLUGIN_NAME)
    if plugin is None or plugin.allocator is None:
        raise InfrastructureError(
            f"worker {worker.address} has no {PLUGIN_NAME} plugin; "
            "register SlotPlugin on the pool's workers"
        )
    allocator: SlotAllocator = plugin.allocator
    return allocator


@contextmanager
def task_slot(
    request: Request,
    allocator: SlotAllocator | None = None,
    timeout: float | None = None,
) -> Iterator[Slot]:
    """Hold a slot on this worker's node for the duration of the ``with`` block."""
    allocator = allocator or current_allocator()
    slot = allocator.allocate(request, timeout=timeout)
    try:
        yield slot
    finally:
        allocator.release(slot)


def slot_env(
    slot: Slot,
    base: Mapping[str, str] | None = None,
    gpu_names: tuple[str, ...] | None = None,
    vendor: GpuVendor | None = None,
) -> dict[str, str]:
    """``base`` plus the variables that confine a process to ``slot``.

    ``CUDA_VISIBLE_DEVICES`` (NVIDIA) or ``ROCR_VISIBLE_DEVICES`` with
    ``HIP_VISIBLE_DEVICES`` (AMD) list the slot's GPUs (empty: none, so a CPU
    task never grabs a GPU by accident); ``gpu_names`` maps GPU index to the
    name the launcher uses (UUIDs), default the index itself. ``vendor``
    defaults to the one whose variable ``base`` carries, else NVIDIA.
    """
    env = dict(base or {})
    names = [gpu_names[g] if gpu_names else str(g) for g in slot.gpus]
    apply_gpu_env(env, names, vendor or env_vendor(env) or "nvidia")
    env["OMP_NUM_THREADS"] = str(max(1, len(slot.cores)))
    env["HPCORCH_NODE"] = slot.node
    env["HPCORCH_CORES"] = ",".join(map(str, slot.cores))
    env["HPCORCH_GPUS"] = ",".join(map(str, slot.gpus))
    return env


def bind_cpus(slot: Slot, pid: int = 0) -> bool:
    """Pin process ``pid`` (0: this one) to the slot's cores; False when not permitted.

    Slurm's core ids equal the operating system's CPU ids only when the node
    has one thread per core and nothing restricts the process; otherwise (an
    emulated node, a cgroup that hides CPUs) binding is skipped, not forced.
    """
    if not hasattr(os, "sched_setaffinity"):
        return False
    allowed = os.sched_getaffinity(0)
    cpus = set(slot.cores)
    if not cpus or not cpus <= allowed:
        logger.debug("cores %s not all in this process's CPUs %s; not binding", cpus, allowed)
        return False
    try:
        os.sched_setaffinity(pid, cpus)
    except OSError as exc:
        logger.debug("sched_setaffinity(%d) refused: %s", pid, exc)
        return False
    return True


def start_in_slot(
    argv: list[str],
    slot: Slot,
    env: Mapping[str, str] | None = None,
    gpu_names: tuple[str, ...] | None = None,
    vendor: GpuVendor | None = None,
    **popen: Any,
) -> subprocess.Popen[Any]:
    """Start ``argv`` confined to ``slot``: its GPUs in the environment, its cores
    as CPU affinity where permitted (set right after the start, before the
    command has had time to start threads of its own)."""
    base = os.environ if env is None else env
    proc = subprocess.Popen(argv, env=slot_env(slot, base, gpu_names, vendor), **popen)
    bind_cpus(slot, proc.pid)
    return proc
