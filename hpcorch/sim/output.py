"""What a simulated workflow run leaves behind: figures, and the same journal as a live run.

:func:`summary` gives the figures ``hpcorch simulate --json`` prints.
:func:`write_journal` writes the run through :class:`hpcorch.journal.Journal`,
so ``hpcorch status RUN --json`` and ``hpcorch report`` read a simulated run
exactly as a live one. Simulated time 0 maps to ``epoch`` (Unix seconds).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from hpcorch.journal import Journal
from hpcorch.sim.driver import WorkflowSim
from hpcorch.sim.state import FAILURE_CODES, TASK_STATE_NAMES

__all__ = ["summary", "write_journal"]


def summary(sim: WorkflowSim) -> dict[str, Any]:
    """Figures of a finished (or stopped) simulated run; times in seconds."""
    started = [a for a in sim.allocs if a.started >= 0]
    waits = [a.started - a.submitted for a in started]
    states = [0] * len(TASK_STATE_NAMES)
    for s in sim.t_state:
        states[s] += 1
    counts: dict[str, int] = {}
    for code, n in enumerate(states):
        name = TASK_STATE_NAMES[code]
        counts[name] = counts.get(name, 0) + n
    clusters = {r.cluster.name: r.cluster for r in sim.regions}
    return {
        "kind": "workflow",
        "workflow": sim.w.name,
        "tasks": len(sim.w),
        "counts": counts,
        "makespan_s": sim.makespan_s if sim.done else sim.loop.now - sim.start_time,
        "mean_wait_s": sum(waits) / len(waits) if waits else 0.0,
        "task_mean_wait_s": sim.task_wait_s / len(sim.a_task) if len(sim.a_task) else 0.0,
        "utilization": sim.task_busy_core_s / sim.alloc_core_s if sim.alloc_core_s else 0.0,
        "attempts": len(sim.a_task),
        "retries": sim.retries,
        "allocations": len(sim.allocs),
        "allocation_states": _count(a.state for a in sim.allocs),
        "node_failures": sum(c.node_failures for c in clusters.values()),
        "events": sim.loop.events,
        "nodes": sum(c.nodes for c in clusters.values()),
    }


def _count(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def write_journal(
    sim: WorkflowSim,
    run_dir: Path,
    *,
    run_id: str | None = None,
    source: str | None = None,
    epoch: float | None = None,
) -> str:
    """Write the run's tasks, attempts and allocations to ``run_dir``; returns the run id."""
    run_id = run_id or f"sim-{uuid.uuid4().hex[:8]}"
    epoch = time.time() if epoch is None else epoch
    w = sim.w
    site = sim.regions[0].name
    with Journal.create(
        run_dir, run_id=run_id, name=w.name, source=source, site=site, time_scale=None
    ) as journal:
        journal.add_tasks(
            (w.task_id(t), "emulated", TASK_STATE_NAMES[s], 0) for t, s in enumerate(sim.t_state)
        )
        journal.set_states((w.task_id(t), TASK_STATE_NAMES[s]) for t, s in enumerate(sim.t_state))
        journal.record_attempts(_attempt_rows(sim, epoch))
        for a in sim.allocs:
            region = sim.regions[a.region]
            journal.record_allocation(
                job_id=f"{region.name}:{a.jid}",
                site=region.name,
                partition=region.partition,
                nodes=len(a.nodes) or sim.config.nodes_per_allocation,
                state=a.state,
                start=epoch + a.started if a.started >= 0 else None,
                end=epoch + a.ended if a.ended >= 0 else None,
                pool="sim",
            )
        if not sim.done:
            state = "running"
        elif sim.succeeded == len(w):
            state = "succeeded"
        else:
            state = "failed"
        journal.set_run_state(state)
    return run_id


def _attempt_rows(sim: WorkflowSim, epoch: float) -> list[dict[str, Any]]:
    w = sim.w
    rows = []
    for i in range(len(sim.a_task)):
        t = sim.a_task[i]
        failure = FAILURE_CODES[sim.a_fail[i]]
        alloc_index = sim.a_alloc[i]
        alloc = sim.allocs[alloc_index] if alloc_index >= 0 else None
        rows.append(
            {
                "task_id": w.task_id(t),
                "n": sim.a_n[i],
                "start": epoch + sim.a_start[i],
                "end": epoch + sim.a_end[i],
                "exit_code": 0 if failure is None else (1 if failure == "user_error" else None),
                "failure_class": None if failure is None else failure.value,
                "job_id": None
                if alloc is None
                else f"{sim.regions[alloc.region].name}:{alloc.jid}",
                "site": None if alloc is None else sim.regions[alloc.region].name,
                "node": sim.node_name(sim.a_node[i]),
                "cores": (slot := sim.a_slot.get(i, (None, None)))[0],
                "gpus": slot[1],
                "message": sim.t_reason.get(t) if failure is not None else None,
            }
        )
    return rows
