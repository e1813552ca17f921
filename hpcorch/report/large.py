"""The report of a run too large to hold one object per task: from aggregate queries.

Above :data:`LARGE_RUN_TASKS` tasks (a sweep of 10^5 to 10^6), the report does not
build the ``status --json`` object. The journal groups the attempts
(:func:`hpcorch.journal.timeline`): core- and GPU-seconds used per site (cores as
recorded, else one), and the Gantt's bars: per node, task group (the task id without
its number: ``sim-41`` is in ``sim``), outcome and time bin (:data:`GANTT_BINS` across
the run), one bar each, labelled with its attempts' count in brackets. Allocated hours
and cost come from the allocations as for any run. The critical path, GPU samples and
training restarts are left out, and the notes say so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from hpcorch import journal
from hpcorch.report.model import OUTCOMES, AttemptSpan, Outcome, Report
from hpcorch.report.usage import run_usage
from hpcorch.sites.model import Site

__all__ = ["GANTT_BINS", "LARGE_RUN_TASKS", "large_report"]

LARGE_RUN_TASKS = 20_000
"""Above this many tasks a report aggregates (see the module doc)."""
GANTT_BINS = 120
_HOUR = 3600.0


@dataclass(slots=True)
class _Bin:
    start: float
    end: float
    count: int


_OUTCOMES: dict[str, Outcome] = {o: o for o in OUTCOMES}


def large_report(
    run_dir: Path,
    *,
    sites: Mapping[str, Site],
    run_site: str | None,
) -> Report:
    """The report of the run in ``run_dir``, from aggregate queries."""
    summary = journal.status_summary(run_dir)
    totals = journal.attempt_totals(run_dir)
    allocations = [
        {k: a.get(k) for k in ("job_id", "site", "partition", "nodes", "state", "start", "end")}
        for a in journal.allocation_rows(run_dir)
    ]
    alloc_times = [t for a in allocations for t in (a["start"], a["end"]) if t is not None]
    times = [t for t in (totals.first_start, totals.last_end, *alloc_times) if t is not None]
    now = max(times, default=0.0)
    t0 = min(times, default=now)
    width = max(now - t0, 1e-9) / GANTT_BINS
    # a bar per node, task group, outcome and bin: attempts covering several bins (long
    # ones) are in each
    bins: dict[tuple[str, str, Outcome, str | None, int], _Bin] = {}
    used: dict[str, list[float]] = {}  # site -> [core-seconds, GPU-seconds]
    # (site, job, node) -> first start, last end: what the allocations' accounting needs
    spans: dict[tuple[str, str | None, str], list[float]] = {}
    for row in journal.timeline(run_dir, t0=t0, width=width, bins=GANTT_BINS, now=now):
        site, job, node, group, outcome, why, lo, hi, count, first, last, cores, gpus = row
        where = str(site or run_site or "unknown")
        sums = used.setdefault(where, [0.0, 0.0])
        sums[0] += float(cores or 0.0)
        sums[1] += float(gpus or 0.0)
        span = spans.setdefault((where, job, node), [first, last])
        span[0], span[1] = min(span[0], first), max(span[1], last)
        why = why if outcome == "failed" else None
        for b in range(int(lo), int(hi) + 1):
            key = (node, group, _OUTCOMES[outcome], why, b)
            got = bins.get(key)
            if got is None:
                bins[key] = _Bin(first, last, count)
            else:
                got.start, got.end = min(got.start, first), max(got.end, last)
                got.count += count

    notes = [
        f"{summary['tasks']} tasks: the timeline shows, per node, task group and outcome, "
        f"the attempts of each of {GANTT_BINS} time bins as one bar; the critical path, "
        "GPU samples and training restarts are not computed for a run this large"
    ]
    # The allocations' accounting from each job's first start and last end (zero-length
    # attempts: what they used is summed above, attempt by attempt).
    marks = [
        {
            "id": f"{site}:{job}:{node}",
            "attempts": [
                {"start": s, "end": s, "job_id": job, "site": site, "node": node, "cores": [0]},
                {"start": e, "end": e, "job_id": job, "site": site, "node": node, "cores": [0]},
            ],
        }
        for (site, job, node), (s, e) in spans.items()
    ]
    usage = run_usage(
        marks,
        [a for a in allocations if a["start"] is not None],
        sites=sites,
        run_site=run_site,
        decls={},
        now=now,
        notes=notes,
    )
    site_usage = tuple(
        replace(
            s,
            core_hours_used=used.get(s.site, [0.0, 0.0])[0] / _HOUR,
            gpu_hours_used=used.get(s.site, [0.0, 0.0])[1] / _HOUR,
        )
        for s in usage.sites
    )
    core_used = sum(c for c, _ in used.values()) / _HOUR
    gpu_used = sum(g for _, g in used.values()) / _HOUR
    core_alloc = usage.total.core_hours_allocated if usage.allocated_known else None
    gpu_alloc = usage.total.gpu_hours_allocated if usage.allocated_known else None

    bars = tuple(
        AttemptSpan(
            task_id=f"{group} ({b.count})",
            n=1,
            node=node,
            start=b.start - t0,
            end=b.end - t0,
            outcome=outcome,
            failure_class=why,
            cores=1,
            gpus=(),
        )
        for (node, group, outcome, why, _), b in bins.items()
    )
    makespan = max((s.end for s in bars), default=0.0)
    return Report(
        run_id=str(summary["run_id"]),
        state=str(summary["state"]),
        t0=t0,
        makespan_s=makespan,
        tasks=int(summary["tasks"]),
        by_state={k: v for k, v in summary["counts"].items() if v},
        failed_attempts_by_class=dict(sorted(totals.failed_by_class.items())),
        failed_tasks_by_class=dict(sorted(totals.failed_tasks_by_class.items())),
        retries=totals.retries,
        tasks_retried=totals.tasks_retried,
        core_hours_used=core_used,
        gpu_hours_used=gpu_used,
        core_hours_allocated=core_alloc,
        gpu_hours_allocated=gpu_alloc,
        cpu_utilization=core_used / core_alloc if core_alloc else None,
        gpu_utilization=gpu_used / gpu_alloc if gpu_alloc else None,
        sites=site_usage,
        critical_path=None,
        critical_path_s=None,
        attempts=tuple(sorted(bars, key=lambda s: (s.node, s.start, s.task_id))),
        notes=tuple(notes),
    )
