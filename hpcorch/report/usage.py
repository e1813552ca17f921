"""Core-hours, GPU-hours and cost of a run, through :func:`hpcorch.policies.cost.account`.

This module only turns the ``status --json`` object into the accounting
records: each allocation with its partition's node shape and charge rates,
each attempt with its cores and GPUs and the allocation that hosted it (by
site and job id, as job ids repeat across sites; by job id alone for an
attempt an older hpcorch recorded without its site). A run on a ``local``
site records no allocation; its machine counts as one allocation held from
the first attempt's start to the last one's end, so utilization means the
same there. Allocations on a site without a model are counted in node-hours
only, and the report says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from hpcorch.policies.cost import AllocationRecord, AttemptRecord, Usage, account
from hpcorch.policies.state import charge_rates
from hpcorch.report.model import SiteUsage, TaskDecl
from hpcorch.sites.model import Site

__all__ = ["Holding", "RunUsage", "holding", "run_usage"]

_HOUR = 3600.0
_LOCAL = "local-machine"


@dataclass(frozen=True, slots=True)
class RunUsage:
    sites: tuple[SiteUsage, ...]
    total: Usage
    allocated_known: bool
    """False when no allocation could be accounted: allocated figures are unknown."""


@dataclass(frozen=True, slots=True)
class Holding:
    """What one attempt held: cores, GPU indices to draw, GPUs to charge as used."""

    cores: int
    gpu_ids: tuple[int, ...]
    gpus: int
    overstated: bool
    """The record lists more GPUs than the task asked for (its worker's whole
    ``CUDA_VISIBLE_DEVICES``): the request is counted instead."""


def holding(a: Mapping[str, Any], decl: TaskDecl | None) -> Holding:
    """The attempt's record, checked against the task's declaration where it is known."""
    cores = len(a["cores"]) if a.get("cores") else (decl.cpus if decl else 1)
    ids = tuple(int(g) for g in a.get("gpus") or ())
    if decl is None:
        return Holding(cores, ids, len(ids), False)
    asked = math.ceil(decl.gpus)
    if len(ids) <= asked:
        return Holding(cores, ids, asked if not ids else len(ids), False)
    # Seeing GPUs is not using them: a CPU task is drawn on no GPU row at all.
    return Holding(cores, ids if asked else (), asked, True)


def _first_attempt_starts(
    tasks: Sequence[Mapping[str, Any]], run_site: str | None
) -> dict[tuple[str, str], float]:
    """(site, job id) -> the earliest start of an attempt that ran in that job."""
    first: dict[tuple[str, str], float] = {}
    for task in tasks:
        for a in task.get("attempts", ()):
            if a.get("start") is None or not a.get("job_id"):
                continue
            key = (str(a.get("site") or run_site or "unknown"), str(a["job_id"]))
            first[key] = min(first.get(key, float(a["start"])), float(a["start"]))
    return first


def run_usage(
    tasks: Sequence[Mapping[str, Any]],
    allocations: Sequence[Mapping[str, Any]],
    *,
    sites: Mapping[str, Site],
    run_site: str | None,
    decls: Mapping[str, TaskDecl],
    now: float,
    notes: list[str],
) -> RunUsage:
    records: list[AllocationRecord] = []
    unknown: dict[str, tuple[int, float]] = {}
    alloc_site: dict[str, str] = {}  # record id -> site
    by_key: dict[tuple[str, str], str] = {}  # (site, job id) -> record id
    by_job: dict[str, str] = {}  # job id -> record id, for attempts without a site
    first = _first_attempt_starts(tasks, run_site)
    for row in allocations:
        name = str(row.get("site") or run_site or "unknown")
        # An allocation started no later than its first attempt: the start the engine saw
        # (a worker connecting, a poll) can come late, or never, for a short-lived job.
        seen = first.get((name, str(row["job_id"])))
        starts = [float(x) for x in (row.get("start"), seen) if x is not None]
        if not starts:
            continue
        alloc = {**row, "start": min(starts)}
        nodes = int(alloc.get("nodes") or 1)
        site = sites.get(name)
        try:
            partition = site.partition(alloc.get("partition")) if site else None
        except KeyError:
            partition = None
        if site is None or partition is None:
            count, hours = unknown.get(name, (0, 0.0))
            end = float(alloc.get("end") or now)
            unknown[name] = (count + 1, hours + nodes * max(0.0, end - alloc["start"]) / _HOUR)
            continue
        job_id = str(alloc["job_id"])
        rid = f"{name}:{job_id}"
        alloc_site[rid] = name
        by_key[(name, job_id)] = rid
        # The run's own site wins a job id two sites share: older runs had no other.
        if job_id not in by_job or name == run_site:
            by_job[job_id] = rid
        records.append(
            AllocationRecord(
                id=rid,
                site=name,
                nodes=nodes,
                cores_per_node=partition.node.cores,
                gpus_per_node=partition.node.gpus,
                rates=charge_rates(site, partition.name),
                start=float(alloc["start"]),
                end=None if alloc.get("end") is None else float(alloc["end"]),
            )
        )

    started = [(t, a) for t in tasks for a in t.get("attempts", ()) if a.get("start") is not None]
    local = sites.get(run_site or "")
    implicit = not allocations and started and local is not None and local.kind == "local"
    if implicit:
        assert local is not None
        shape = local.partition().node
        ends = [a["end"] if a.get("end") is not None else now for _, a in started]
        records.append(
            AllocationRecord(
                id=_LOCAL,
                site=local.name,
                nodes=len({a.get("node") for _, a in started}),
                cores_per_node=shape.cores,
                gpus_per_node=shape.gpus,
                rates=charge_rates(local),
                start=min(float(a["start"]) for _, a in started),
                end=max(ends),
            )
        )
    elif not allocations and started:
        notes.append("no allocation recorded: allocated hours and utilization unknown")

    attempts = []
    overstated = 0
    for task, a in started:
        held = holding(a, decls.get(str(task["id"])))
        overstated += held.overstated
        ran_on = a.get("site")  # None in journals of older hpcorch versions
        if implicit:
            hosted: str | None = _LOCAL
            name = local.name if local else "?"
        else:
            job_id = str(a.get("job_id"))
            hosted = by_key.get((str(ran_on), job_id)) if ran_on else by_job.get(job_id)
            name = alloc_site[hosted] if hosted else str(ran_on or run_site or "?")
        attempts.append(
            AttemptRecord(
                site=name,
                start=float(a["start"]),
                end=None if a.get("end") is None else float(a["end"]),
                cores=held.cores,
                gpus=held.gpus,
                allocation=hosted,
            )
        )

    if overstated:
        notes.append(
            f"{overstated} attempts record more GPUs than their task asked for (the worker's "
            "whole CUDA_VISIBLE_DEVICES); GPU-hours used count what each task asked for"
        )
    accounts = account(records, attempts, now)
    counts: dict[str, int] = {}
    for r in records:
        counts[r.site] = counts.get(r.site, 0) + (r.id != _LOCAL)
    out = {
        name: SiteUsage(
            site=name,
            allocations=counts.get(name, 0),
            node_hours=u.node_hours,
            core_hours=u.core_hours_allocated if name in counts else None,
            gpu_hours=u.gpu_hours_allocated if name in counts else None,
            core_hours_used=u.core_hours_used,
            gpu_hours_used=u.gpu_hours_used,
            su=u.su,
            cost=u.cost,
            currency=u.currency,
        )
        for name, u in accounts.per_site.items()
    }
    for name, (count, node_hours) in unknown.items():
        notes.append(
            f"site {name!r}: no site model or partition for {count} allocations; "
            "their core-hours, GPU-hours and cost are not counted"
        )
        known = out.get(name) or SiteUsage(name, 0, 0.0, None, None, 0.0, 0.0, None, None, None)
        out[name] = replace(
            known,
            allocations=known.allocations + count,
            node_hours=known.node_hours + node_hours,
            # Part of the site's charge is unknown, so its total is too.
            su=None,
            cost=None,
            currency=None,
        )
    return RunUsage(
        sites=tuple(out[k] for k in sorted(out)),
        total=accounts.total,
        allocated_known=bool(records),
    )
