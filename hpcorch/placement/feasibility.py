"""Refuse, before submission, a request that no node of the site could ever hold."""

from __future__ import annotations

from collections.abc import Iterable

from hpcorch.errors import ResourceError
from hpcorch.placement.request import Request
from hpcorch.sites.model import NodeShape, Partition
from hpcorch.units import format_memory

__all__ = ["check_feasible", "feasible_partitions"]


def _problems(request: Request, shape: NodeShape, nodes: int | None) -> list[str]:
    """Why ``request`` cannot run on nodes of ``shape`` (empty: it can)."""
    problems: list[str] = []
    demand = max(request.demands(), key=lambda d: (d.cpus, d.gpus, d.ranks))
    if demand.cpus > shape.cores:
        what = (
            f"{demand.ranks} ranks x {demand.cpus_per_rank} cores"
            if demand.ranks > 1
            else f"{demand.cpus} cores"
        )
        problems.append(f"{what} per node, nodes have {shape.cores}")
    gpus = demand.gpus or (1 if demand.shared else 0)
    if gpus > shape.gpus:
        what = (
            f"{demand.ranks} ranks x {demand.gpus_per_rank} GPUs"
            if demand.ranks > 1
            else f"{gpus} GPU(s)"
        )
        problems.append(f"{what} per node, nodes have {shape.gpus}")
    if demand.memory > shape.memory:
        problems.append(
            f"{format_memory(demand.memory)} per node, nodes have {format_memory(shape.memory)}"
        )
    if nodes is not None and request.node_count > nodes:
        problems.append(f"{request.node_count} nodes, the partition allows {nodes}")
    return problems


def feasible_partitions(request: Request, partitions: Iterable[Partition]) -> list[Partition]:
    """The partitions whose nodes (and node count) can hold ``request``."""
    return [
        p
        for p in partitions
        if not _problems(request, p.node, min(p.nodes, p.max_nodes_per_job or p.nodes))
    ]


def check_feasible(request: Request, shapes: Iterable[Partition | NodeShape]) -> None:
    """Raise :class:`~hpcorch.errors.ResourceError` unless some partition (or
    node shape) can hold ``request``; the message says what to change."""
    reasons: list[str] = []
    for item in shapes:
        if isinstance(item, Partition):
            limit = min(item.nodes, item.max_nodes_per_job or item.nodes)
            problems, name = _problems(request, item.node, limit), f"partition {item.name}"
        else:
            problems, name = _problems(request, item, None), "nodes"
        if not problems:
            return
        reasons.append(f"{name}: {'; '.join(problems)}")
    who = f"task {request.id!r}" if request.id else "the request"
    if not reasons:
        raise ResourceError(f"{who} cannot be placed: the site declares no partitions")
    raise ResourceError(
        f"{who} fits no node of the site ({' | '.join(reasons)}); "
        "lower its cores, GPUs, memory or ranks per node, or use a site with larger nodes"
    )
