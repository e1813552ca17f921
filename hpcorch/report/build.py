"""Build a :class:`~hpcorch.report.model.Report` from a ``status --json`` object. Pure.

The input is the object ``hpcorch status RUN --json`` prints (DESIGN.md), so
a live run's journal and the simulator's output report the same way. What the
status object does not carry comes in as arguments: the workflow's
declarations (dependencies for the critical path, cores and GPUs for attempts
whose record lacks them) and the site models (node shapes and charge rates).

Accounting:

- used: each attempt's cores (GPUs) x its duration;
- allocated: each allocation's nodes x duration x the partition's cores (GPUs)
  per node; a run with no allocation on a ``local`` site counts its one
  machine from the first attempt to the last;
- service units: node-hours x ``su_per_node_hour`` + GPU-hours x
  ``su_per_gpu_hour`` (the partition's rates override the site's), and cost =
  SU x ``price_per_su``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from hpcorch import dag
from hpcorch.report.model import AttemptSpan, Outcome, Report, SiteUsage, TaskDecl
from hpcorch.sites.model import Charge, Partition, Site

__all__ = ["build_report"]

_HOUR = 3600.0


def build_report(
    status: Mapping[str, Any],
    *,
    sites: Mapping[str, Site] | None = None,
    run_site: str | None = None,
    decls: Mapping[str, TaskDecl] | None = None,
    now: float | None = None,
) -> Report:
    """The report of one run.

    ``sites`` maps site names to models (shapes and charges of allocations);
    ``run_site`` names the run's own site (used when no allocation was
    recorded); ``decls`` holds the workflow's task declarations; ``now`` ends
    attempts and allocations still open (default: the latest time seen).
    """
    sites = sites or {}
    decls = decls or {}
    notes: list[str] = []
    tasks = list(status.get("tasks", ()))
    allocations = [a for a in status.get("allocations", ()) if a.get("start") is not None]

    times = [
        t
        for task in tasks
        for a in task.get("attempts", ())
        for t in (a.get("start"), a.get("end"))
        if t is not None
    ] + [t for a in allocations for t in (a.get("start"), a.get("end")) if t is not None]
    if now is None:
        now = max(times, default=0.0)
    t0 = min(times, default=now)

    spans = [
        span
        for task in tasks
        for a in task.get("attempts", ())
        if (span := _span(task, a, decls.get(task["id"]), t0, now)) is not None
    ]
    makespan = max((s.end for s in spans), default=0.0)

    usage = _site_usage(allocations, sites, t0, now, notes)
    if not allocations and spans:
        implicit = _implicit_local(sites.get(run_site or ""), spans)
        if implicit is not None:
            usage = [implicit]
        else:
            notes.append("no allocation recorded: allocated hours and utilization unknown")

    core_used = sum(s.cores * s.duration for s in spans) / _HOUR
    gpu_used = sum(_gpu_count(s, decls.get(s.task_id)) * s.duration for s in spans) / _HOUR
    core_alloc = _total(u.core_hours for u in usage) if usage else None
    gpu_alloc = _total(u.gpu_hours for u in usage) if usage else None

    path, path_s = _critical_path(tasks, spans, decls, notes)
    by_state = dict(status.get("counts") or Counter(t["state"] for t in tasks))
    failed = Counter(s.failure_class or "unknown" for s in spans if s.outcome == "failed")
    n_attempts = [len(t.get("attempts", ())) for t in tasks]

    return Report(
        run_id=str(status.get("run_id", "")),
        state=str(status.get("state", "")),
        t0=t0,
        makespan_s=makespan,
        tasks=len(tasks),
        by_state={k: v for k, v in by_state.items() if v},
        failed_attempts_by_class=dict(sorted(failed.items())),
        retries=sum(max(0, n - 1) for n in n_attempts),
        tasks_retried=sum(1 for n in n_attempts if n > 1),
        core_hours_used=core_used,
        gpu_hours_used=gpu_used,
        core_hours_allocated=core_alloc,
        gpu_hours_allocated=gpu_alloc,
        cpu_utilization=core_used / core_alloc if core_alloc else None,
        gpu_utilization=gpu_used / gpu_alloc if gpu_alloc else None,
        sites=tuple(usage),
        critical_path=path,
        critical_path_s=path_s,
        attempts=tuple(sorted(spans, key=lambda s: (s.node, s.start, s.task_id))),
        notes=tuple(notes),
    )


def _span(
    task: Mapping[str, Any], a: Mapping[str, Any], decl: TaskDecl | None, t0: float, now: float
) -> AttemptSpan | None:
    if a.get("start") is None:
        return None  # never started: nothing to draw or charge
    outcome: Outcome
    if a.get("end") is None:
        outcome = "running"
    elif a.get("failure_class") is not None or a.get("exit_code") not in (None, 0):
        outcome = "failed"
    else:
        outcome = "succeeded"
    end = a["end"] if a.get("end") is not None else now
    cores = a.get("cores")
    gpus = a.get("gpus")
    return AttemptSpan(
        task_id=str(task["id"]),
        n=int(a.get("n") or 1),
        node=str(a.get("node") or "unknown"),
        start=float(a["start"]) - t0,
        end=max(float(end), float(a["start"])) - t0,
        outcome=outcome,
        failure_class=a.get("failure_class") if outcome == "failed" else None,
        cores=len(cores) if cores else (decl.cpus if decl else 1),
        gpus=tuple(int(g) for g in gpus) if gpus else (),
    )


def _gpu_count(span: AttemptSpan, decl: TaskDecl | None) -> float:
    return float(len(span.gpus)) if span.gpus else (decl.gpus if decl else 0.0)


def _total(values: Any) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _merged_charge(site: Site, partition: Partition | None) -> Charge:
    if partition is None or partition.charge is None:
        return site.charge
    own = partition.charge.model_dump(exclude_none=True)
    return site.charge.model_copy(update=own)


def _charge(charge: Charge, node_hours: float, gpu_hours: float | None) -> tuple[float | None, ...]:
    su: float | None = None
    if charge.su_per_node_hour is not None:
        su = node_hours * charge.su_per_node_hour
    if charge.su_per_gpu_hour is not None and gpu_hours:
        su = (su or 0.0) + gpu_hours * charge.su_per_gpu_hour
    cost = su * charge.price_per_su if su is not None and charge.price_per_su is not None else None
    return su, cost


def _site_usage(
    allocations: list[Mapping[str, Any]],
    sites: Mapping[str, Site],
    t0: float,
    now: float,
    notes: list[str],
) -> list[SiteUsage]:
    rows: dict[str, dict[str, Any]] = {}
    for alloc in allocations:
        name = str(alloc.get("site") or "unknown")
        hours = max(0.0, float(alloc.get("end") or now) - float(alloc["start"])) / _HOUR
        node_hours = int(alloc.get("nodes") or 1) * hours
        row = rows.setdefault(
            name, {"allocations": 0, "node_hours": 0.0, "core": 0.0, "gpu": 0.0, "su": None,
                   "cost": None, "currency": None, "known": True}
        )  # fmt: skip
        row["allocations"] += 1
        row["node_hours"] += node_hours
        site = sites.get(name)
        partition = _partition(site, alloc.get("partition"))
        if site is None or partition is None:
            row["known"] = False
            continue
        gpu_hours = node_hours * partition.node.gpus
        row["core"] += node_hours * partition.node.cores
        row["gpu"] += gpu_hours
        charge = _merged_charge(site, partition)
        su, cost = _charge(charge, node_hours, gpu_hours)
        if su is not None:
            row["su"] = (row["su"] or 0.0) + su
        if cost is not None:
            row["cost"] = (row["cost"] or 0.0) + cost
            row["currency"] = charge.currency
    usage = []
    for name, row in sorted(rows.items()):
        if not row["known"]:
            notes.append(
                f"site {name!r}: no site model or partition for some allocations; "
                "their core-hours, GPU-hours and cost are not counted"
            )
        usage.append(
            SiteUsage(
                site=name,
                allocations=row["allocations"],
                node_hours=row["node_hours"],
                core_hours=row["core"] if row["known"] or row["core"] else None,
                gpu_hours=row["gpu"] if row["known"] or row["gpu"] else None,
                su=row["su"],
                cost=row["cost"],
                currency=row["currency"],
            )
        )
    return usage


def _partition(site: Site | None, name: str | None) -> Partition | None:
    if site is None:
        return None
    try:
        return site.partition(name)
    except KeyError:
        return None


def _implicit_local(site: Site | None, spans: list[AttemptSpan]) -> SiteUsage | None:
    """A local run holds its machine(s) from the first attempt's start to the last's end."""
    if site is None or site.kind != "local":
        return None
    node = site.partition().node
    machines = len({s.node for s in spans})
    node_hours = machines * (max(s.end for s in spans) - min(s.start for s in spans)) / _HOUR
    su, cost = _charge(site.charge, node_hours, node_hours * node.gpus)
    return SiteUsage(
        site=site.name,
        allocations=0,
        node_hours=node_hours,
        core_hours=node_hours * node.cores,
        gpu_hours=node_hours * node.gpus,
        su=su,
        cost=cost,
        currency=site.charge.currency if cost is not None else None,
    )


def _critical_path(
    tasks: list[Mapping[str, Any]],
    spans: list[AttemptSpan],
    decls: Mapping[str, TaskDecl],
    notes: list[str],
) -> tuple[tuple[str, ...] | None, float | None]:
    """The chain of dependent tasks with the longest observed span (first start to last end)."""
    if not tasks:
        return (), 0.0
    ids = [str(t["id"]) for t in tasks]
    if not decls:
        notes.append("task dependencies unknown (workflow not readable): no critical path")
        return None, None
    known = set(ids)
    parents = {t: [p for p in (decls[t].after if t in decls else ()) if p in known] for t in ids}
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for s in spans:
        first[s.task_id] = min(first.get(s.task_id, s.start), s.start)
        last[s.task_id] = max(last.get(s.task_id, s.end), s.end)
    span = {t: last[t] - first[t] if t in first else 0.0 for t in ids}
    rank = dag.critical_path(parents, span)
    children = dag.children_of(parents)
    # The path starts at the source with the longest remaining chain and follows,
    # at each step, the child whose remaining chain makes up the rest.
    current = max((t for t in ids if not parents[t]), key=lambda t: rank[t])
    path = [current]
    while children[current]:
        current = max(children[current], key=lambda c: rank[c])
        path.append(current)
    return tuple(path), rank[path[0]]
