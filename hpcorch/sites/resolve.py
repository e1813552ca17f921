"""Which site a run uses, and whether every task fits one of its partitions.

:func:`resolve_site` is the one place a site name becomes a
:class:`~hpcorch.sites.Site`; ``local`` is built from this machine until the
sites package provides ``load_site``.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess

from hpcorch.errors import ResourceError, SiteConfigError
from hpcorch.sites.model import NodeShape, Partition, Site
from hpcorch.spec import TaskSpec, WorkflowSpec
from hpcorch.units import format_duration

__all__ = ["check_fits", "local_site", "resolve_site"]


def _gpu_count() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([g for g in visible.split(",") if g.strip()])
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def local_site() -> Site:
    """This machine as a one-node site: its usable cores, memory and GPUs."""
    cores = len(os.sched_getaffinity(0))
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    node = NodeShape(sockets=1, cores_per_socket=cores, memory=memory, gpus=_gpu_count())
    return Site(
        name="local",
        kind="local",
        partitions=(Partition(name="local", nodes=1, node=node, default=True),),
    )


def resolve_site(name: str) -> Site:
    """The site called ``name`` (or a site file path); ``local`` takes this machine's shape."""
    from hpcorch.sites import load_site

    try:
        site = load_site(name)
    except SiteConfigError:
        if name != "local":
            raise
        return local_site()
    if site.kind == "local":
        # A local site file gives a floor; the workers get what this machine has.
        return site.model_copy(update={"partitions": local_site().partitions})
    return site


def _fits(task: TaskSpec, p: Partition) -> bool:
    return (
        task.cpus <= p.node.cores
        and task.resources.memory <= p.node.memory
        and math.ceil(task.gpus) <= p.node.gpus
        and task.nodes <= min(p.nodes, p.max_nodes_per_job or p.nodes)
        and (
            p.max_walltime_s is None
            or task.resources.walltime is None
            or task.resources.walltime <= p.max_walltime_s
        )
    )


def _describe(task: TaskSpec) -> str:
    gib = task.resources.memory / 1024**3
    parts = [f"{task.cpus} cpus"]
    if task.resources.memory:
        parts.append(f"{gib:.1f}GiB")
    if task.gpus:
        parts.append(f"{task.gpus:g} gpus")
    if task.nodes > 1:
        parts.append(f"{task.nodes} nodes")
    if task.resources.walltime:
        parts.append(f"walltime {format_duration(task.resources.walltime)}")
    return ", ".join(parts)


def _shape(p: Partition) -> str:
    return (
        f"{p.name}: {p.nodes} x ({p.node.cores} cpus, {p.node.memory / 1024**3:.1f}GiB, "
        f"{p.node.gpus} gpus)"
    )


def _no_fit(task: TaskSpec, site: Site) -> ResourceError:
    shapes = "; ".join(_shape(p) for p in site.partitions)
    return ResourceError(
        f"task {task.id!r} needs {_describe(task)}, which no partition of site "
        f"{site.name!r} offers ({shapes}); lower the request or choose another --site"
    )


def check_fits(spec: WorkflowSpec, site: Site) -> None:
    """Raise :class:`ResourceError` naming the first task no partition can run:
    its cores, memory, GPUs, nodes or walltime, then its layout on one node
    (:func:`hpcorch.engine.placing.check_placeable`)."""
    for task in spec.tasks:
        if not any(_fits(task, p) for p in site.partitions):
            raise _no_fit(task, site)
    from hpcorch.engine.placing import check_placeable

    check_placeable(spec, site)


def partition_for(task: TaskSpec, site: Site) -> Partition:
    """The smallest partition the task fits (fewest cores, then least memory)."""
    fitting = [p for p in site.partitions if _fits(task, p)]
    if not fitting:
        raise _no_fit(task, site)
    return min(fitting, key=lambda p: (p.node.gpus, p.node.cores, p.node.memory))
