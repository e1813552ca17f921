"""Build a :class:`~hpcorch.report.model.Report` from a ``status --json`` object. Pure.

The input is the object ``hpcorch status RUN --json`` prints (DESIGN.md), so
a live run's journal and the simulator's output report the same way. What the
status object does not carry comes in as arguments: the workflow's
declarations (dependencies for the critical path, cores and GPUs for attempts
whose record lacks them) and the site models (node shapes and charge rates).

Accounting is :func:`hpcorch.policies.cost.account`'s (see
:mod:`hpcorch.report.usage`): used = each attempt's cores (GPUs) x its
duration within its allocation; allocated = each allocation's nodes x
duration x the partition's cores (GPUs) per node; SU and cost from the
partition's (else the site's) charge rates.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping
from typing import Any

from hpcorch import dag, gpu_usage
from hpcorch.report.model import AttemptSpan, Outcome, Report, TaskDecl
from hpcorch.report.usage import holding, run_usage
from hpcorch.sites.model import Site
from hpcorch.training import step_of

__all__ = ["build_report"]


def build_report(
    status: Mapping[str, Any],
    *,
    sites: Mapping[str, Site] | None = None,
    run_site: str | None = None,
    decls: Mapping[str, TaskDecl] | None = None,
    now: float | None = None,
    logs: Mapping[tuple[str, int], str] | None = None,
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
        if (span := _span(task, a, decls.get(task["id"]), t0, now, logs or {})) is not None
    ]
    makespan = max((s.end for s in spans), default=0.0)

    usage = run_usage(
        tasks, allocations, sites=sites, run_site=run_site, decls=decls, now=now, notes=notes
    )
    total = usage.total
    core_alloc = total.core_hours_allocated if usage.allocated_known else None
    gpu_alloc = total.gpu_hours_allocated if usage.allocated_known else None

    path, path_s = _critical_path(tasks, spans, decls, notes)
    measured = _gpu_usages(tasks)
    by_state = dict(status.get("counts") or Counter(t["state"] for t in tasks))
    # Counted from the records, not the timeline: an attempt may fail before it starts.
    failed = Counter(
        a.get("failure_class") or "unknown"
        for t in tasks
        for a in t.get("attempts", ())
        if _outcome(a) == "failed"
    )
    n_attempts = [len(t.get("attempts", ())) for t in tasks]
    failed_tasks = Counter(
        (t["attempts"][-1].get("failure_class") if t.get("attempts") else None) or "unknown"
        for t in tasks
        if t.get("state") == "failed"
    )

    return Report(
        run_id=str(status.get("run_id", "")),
        state=str(status.get("state", "")),
        t0=t0,
        makespan_s=makespan,
        tasks=len(tasks),
        by_state={k: v for k, v in by_state.items() if v},
        failed_attempts_by_class=dict(sorted(failed.items())),
        failed_tasks_by_class=dict(sorted(failed_tasks.items())),
        retries=sum(max(0, n - 1) for n in n_attempts),
        tasks_retried=sum(1 for n in n_attempts if n > 1),
        core_hours_used=total.core_hours_used,
        gpu_hours_used=total.gpu_hours_used,
        core_hours_allocated=core_alloc,
        gpu_hours_allocated=gpu_alloc,
        cpu_utilization=total.core_hours_used / core_alloc if core_alloc else None,
        gpu_utilization=total.gpu_hours_used / gpu_alloc if gpu_alloc else None,
        sites=usage.sites,
        critical_path=path,
        critical_path_s=path_s,
        attempts=tuple(sorted(spans, key=lambda s: (s.node, s.start, s.task_id))),
        notes=tuple(notes),
        training_restarts=_restarts(tasks),
        gpu_idle_share=gpu_usage.idle_share(u for _, _, u in measured),
        gpu_usage=tuple(_gpu_line(task, n, u) for task, n, u in measured),
    )


def _gpu_line(task: str, n: Any, usage: gpu_usage.GpuUsage) -> str:
    """``train #1: gpu1:0 peak 3.2 GiB, 87% busy (5% idle)`` or ``train #1: no GPU: why``."""
    if usage.none is not None:
        return f"{task} #{n}: {usage.none}"
    gpus = "; ".join(
        f"{g.node}:{g.index} peak {g.peak_memory / 2**30:.1f} GiB, "
        f"{g.mean_utilization:.0f}% busy ({g.idle_share:.0%} idle)"
        for g in usage.gpus
    )
    return f"{task} #{n}: {gpus}"


def _gpu_usages(tasks: list[Mapping[str, Any]]) -> list[tuple[str, Any, gpu_usage.GpuUsage]]:
    """The attempts that recorded GPU usage (trainings), with what they recorded."""
    out = []
    for t in tasks:
        for a in t.get("attempts", ()):
            raw = a.get("gpu_usage")
            if not raw:
                continue
            try:
                out.append((str(t["id"]), a.get("n"), gpu_usage.from_mapping(raw)))
            except (TypeError, KeyError, ValueError, AttributeError):
                continue  # not what this hpcorch writes: left out, not guessed at
    return out


def _restarts(tasks: list[Mapping[str, Any]]) -> tuple[str, ...]:
    """``train: attempt 2 resumed from step 20 (attempt 1: node_failure)`` per resumed attempt."""
    lines = []
    for t in tasks:
        attempts = list(t.get("attempts", ()))
        for before, a in itertools.pairwise(attempts):
            step = step_of(a.get("training"))
            if step is not None:
                why = before.get("failure_class") or "failed"
                lines.append(
                    f"{t['id']}: attempt {a.get('n')} resumed from step {step} "
                    f"(attempt {before.get('n')}: {why})"
                )
    return tuple(lines)


def _outcome(a: Mapping[str, Any]) -> Outcome:
    if a.get("failure_class") is not None or a.get("exit_code") not in (None, 0):
        return "failed"
    return "running" if a.get("end") is None else "succeeded"


def _span(
    task: Mapping[str, Any],
    a: Mapping[str, Any],
    decl: TaskDecl | None,
    t0: float,
    now: float,
    logs: Mapping[tuple[str, int], str],
) -> AttemptSpan | None:
    if a.get("start") is None:
        return None  # never started: nothing to draw or charge
    outcome = _outcome(a)
    end = a["end"] if a.get("end") is not None else now
    held = holding(a, decl)
    n = int(a.get("n") or 1)
    return AttemptSpan(
        task_id=str(task["id"]),
        n=n,
        node=str(a.get("node") or "unknown"),
        start=float(a["start"]) - t0,
        end=max(float(end), float(a["start"])) - t0,
        outcome=outcome,
        failure_class=a.get("failure_class") if outcome == "failed" else None,
        cores=held.cores,
        gpus=held.gpu_ids,
        log=logs.get((str(task["id"]), n)) if outcome == "failed" else None,
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
