"""The report of a run too large to hold one object per task: read in one streamed pass.

Above :data:`LARGE_RUN_TASKS` tasks (a sweep of 10^5 to 10^6), the report does not
build the ``status --json`` object. Counts come from aggregate queries; one pass over
the started attempts (plain tuples, nothing kept per attempt) sums the core- and
GPU-hours used and fills the Gantt's bins: per node, per task group (the task id
without its number: ``sim-41`` is in ``sim``) and outcome, one bar per time bin the
group's attempts covered (:data:`GANTT_BINS` across the run), labelled with its
count in brackets. Allocated hours and cost come from the allocations as for any run. The
critical path, GPU samples and training restarts are left out, and the notes say so.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from hpcorch import journal
from hpcorch.report.model import AttemptSpan, Outcome, Report, TaskDecl
from hpcorch.report.usage import run_usage
from hpcorch.sites.model import Site

__all__ = ["GANTT_BINS", "LARGE_RUN_TASKS", "large_report"]

LARGE_RUN_TASKS = 20_000
"""Above this many tasks a report aggregates (see the module doc)."""
GANTT_BINS = 120
_GROUP = re.compile(r"[-_.:@+]*\d+\Z")
_HOUR = 3600.0


def task_group(task_id: str) -> str:
    """``sim-41`` -> ``sim``: tasks that differ only by a number are drawn together."""
    return _GROUP.sub("", task_id) or task_id


@dataclass(slots=True)
class _Bin:
    start: float
    end: float
    count: int


def _outcome(failure_class: str | None, exit_code: int | None, end: float | None) -> Outcome:
    if failure_class is not None or exit_code not in (None, 0):
        return "failed"
    return "running" if end is None else "succeeded"


def large_report(
    run_dir: Path,
    *,
    sites: Mapping[str, Site],
    run_site: str | None,
    decls: Mapping[str, TaskDecl] | None = None,
) -> Report:
    """The report of the run in ``run_dir`` from aggregate queries and one streamed pass."""
    summary = journal.status_summary(run_dir)
    totals = journal.attempt_totals(run_dir)
    cpus = {t: d.cpus for t, d in (decls or {}).items()}
    allocations = [
        {k: a.get(k) for k in ("job_id", "site", "partition", "nodes", "state", "start", "end")}
        for a in journal.allocation_rows(run_dir)
    ]
    alloc_times = [t for a in allocations for t in (a["start"], a["end"]) if t is not None]
    times = [t for t in (totals.first_start, totals.last_end, *alloc_times) if t is not None]
    now = max(times, default=0.0)
    t0 = min(times, default=now)
    width = max(now - t0, 1e-9) / GANTT_BINS

    bins: dict[tuple[str, str, Outcome, str | None, int], _Bin] = {}
    used: dict[str, list[float]] = {}  # site -> [core-seconds, GPU-seconds]
    # (site, job, node) -> first start, last end: what the allocations' accounting needs
    spans: dict[tuple[str, str | None, str], list[float]] = {}
    for (
        task_id,
        start,
        end,
        host,
        job_id,
        site,
        cores,
        gpus,
        failure_class,
        code,
    ) in journal.iter_started(run_dir):
        outcome = _outcome(failure_class, code, end)
        stop = max(float(end if end is not None else now), float(start))
        n_cores = cores.count(",") + 1 if cores else cpus.get(task_id, 1)
        n_gpus = gpus.count(",") + 1 if gpus else 0
        where = str(site or run_site or "unknown")
        sums = used.setdefault(where, [0.0, 0.0])
        sums[0] += n_cores * (stop - start)
        sums[1] += n_gpus * (stop - start)
        node = str(host or "unknown")
        span = spans.setdefault((where, job_id, node), [start, stop])
        span[0], span[1] = min(span[0], start), max(span[1], stop)
        group = task_group(str(task_id))
        why = failure_class if outcome == "failed" else None
        lo = min(int((start - t0) / width), GANTT_BINS - 1)
        hi = min(int((stop - t0) / width), GANTT_BINS - 1)
        for b in range(lo, hi + 1):
            key = (node, group, outcome, why, b)
            got = bins.get(key)
            if got is None:
                bins[key] = _Bin(start, stop, 1)
            else:
                got.start, got.end = min(got.start, start), max(got.end, stop)
                got.count += 1

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
