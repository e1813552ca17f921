"""Whether every task of a workflow fits a site: a partition's cores, memory,
GPUs, nodes and walltime, then its layout on one node; and which partition a
task goes to. Checked before anything is submitted."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

from hpcorch.errors import ResourceError
from hpcorch.placement.feasibility import check_feasible
from hpcorch.placement.request import Request
from hpcorch.sites.model import Partition, Site
from hpcorch.spec import TaskSpec, WorkflowSpec, resource_twin
from hpcorch.units import format_duration

__all__ = [
    "check_fits",
    "check_placeable",
    "distinct_shapes",
    "partition_for",
    "shape_counts",
]


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
    (:func:`check_placeable`)."""
    for task in distinct_shapes(spec.tasks):
        if not any(_fits(task, p) for p in site.partitions):
            raise _no_fit(task, site)
    check_placeable(spec, site)


def distinct_shapes(tasks: Iterable[TaskSpec]) -> Iterator[TaskSpec]:
    """``tasks`` less the sweep variants whose template came before (the same request)."""
    for task, _ in shape_counts(tasks):
        yield task


def shape_counts(tasks: Iterable[TaskSpec]) -> list[tuple[TaskSpec, int]]:
    """Each distinct shape of ``tasks`` (its first task) and how many tasks share it: a
    sweep's variants share their template's (:func:`hpcorch.spec.resource_twin`)."""
    first: dict[int, TaskSpec] = {}
    counts: dict[int, int] = {}
    for task in tasks:
        key = id(resource_twin(task))
        if key in counts:
            counts[key] += 1
        else:
            first[key], counts[key] = task, 1
    return [(first[k], counts[k]) for k in first]


def partition_for(task: TaskSpec, site: Site) -> Partition:
    """The smallest partition the task fits (fewest cores, then least memory)."""
    fitting = [p for p in site.partitions if _fits(task, p)]
    if not fitting:
        raise _no_fit(task, site)
    return min(fitting, key=lambda p: (p.node.gpus, p.node.cores, p.node.memory))


def check_placeable(spec: WorkflowSpec, site: Site) -> None:
    """Raise :class:`~hpcorch.errors.ResourceError` (exit 2) for the first task no node
    of ``site`` can hold (more GPUs than any node has, more ranks x cores per node than
    its cores), before anything is submitted."""
    for task in distinct_shapes(spec.tasks):
        check_feasible(Request.from_task(task), site.partitions)
