"""Replay a job trace (SWF, Philly) through :class:`~hpcorch.sim.slurm.SimSlurm`.

Arrivals are streamed: each arrival event submits one job and schedules the
next, so the heap holds one pending arrival, not the whole trace. Jobs keep
their recorded runtime and requested time; only the wait is simulated, so
the simulated mean wait can be compared with the one the trace recorded.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from hpcorch.sim.engine import EventLoop
from hpcorch.sim.slurm import SimSlurm
from hpcorch.traces import read_philly, read_swf, read_swf_header

__all__ = [
    "ReplayJob",
    "ReplayResult",
    "TraceFeeder",
    "replay",
    "replay_philly",
    "replay_swf",
    "swf_jobs",
]

logger = logging.getLogger(__name__)


class ReplayJob(NamedTuple):
    submit: float
    nodes: int
    req_time: float
    run_time: float
    recorded_wait: float  # -1 when the trace has none
    failed: bool


@dataclass(frozen=True)
class ReplayResult:
    """Figures of one replay. Waits are seconds from submit to (first) start."""

    jobs: int
    dropped: int
    nodes: int
    mean_wait_s: float
    recorded_mean_wait_s: float | None
    makespan_s: float
    utilization: float
    node_failures: int
    requeues: int
    preemptions: int
    events: int
    passes: int

    def as_dict(self) -> dict[str, float | int | None]:
        return dict(self.__dict__)


class TraceFeeder:
    """Streams arrivals into the cluster one event at a time."""

    def __init__(self, loop: EventLoop, cluster: SimSlurm, jobs: Iterator[ReplayJob]) -> None:
        self.loop = loop
        self.cluster = cluster
        self.jobs = jobs
        self.dropped = 0
        self.recorded: list[float] = []
        self.kind = loop.register(self._arrive)
        cluster.open_sources += 1
        self._next()

    def _next(self) -> None:
        job = next(self.jobs, None)
        if job is None:
            self.cluster.open_sources -= 1
            return
        self.loop.at(job.submit, self.kind, job)

    def _arrive(self, job: ReplayJob) -> None:
        if job.nodes > self.cluster.nodes:
            self.dropped += 1
        else:
            self.cluster.submit(
                job.nodes,
                job.req_time,
                job.run_time,
                kill_at_walltime=False,  # the trace's runtime is what happened
                fails=job.failed,
            )
            self.recorded.append(job.recorded_wait)
        self._next()


def swf_jobs(path: str | os.PathLike[str], limit: int | None = None) -> Iterator[ReplayJob]:
    """SWF jobs as replay jobs: requested processors (else allocated), requested time (else run)."""
    for n, job in enumerate(read_swf(path)):
        if limit is not None and n >= limit:
            return
        procs = job.req_procs if job.req_procs > 0 else job.procs
        run = max(job.run, 0.0)
        if procs <= 0:
            continue
        req = job.req_time if job.req_time > 0 else run
        yield ReplayJob(job.submit, procs, req, run, job.wait, job.status == 0)


def replay(
    jobs: Iterable[ReplayJob],
    nodes: int,
    *,
    mtbf_s: float | None = None,
    repair_s: float = 3600.0,
    bf_max_job_test: int | None = None,
    seed: int = 0,
) -> ReplayResult:
    """Run the jobs on a ``nodes``-node simulated Slurm with EASY backfilling."""
    loop = EventLoop()
    cluster = SimSlurm(
        loop, nodes, mtbf_s=mtbf_s, repair_s=repair_s, bf_max_job_test=bf_max_job_test, seed=seed
    )
    feeder = TraceFeeder(loop, cluster, iter(jobs))
    loop.run()
    waits = [
        s - sub for s, sub in zip(cluster.j_first_start, cluster.j_submit, strict=True) if s >= 0
    ]
    recorded = [w for w in feeder.recorded if w >= 0]
    makespan = cluster.last_end - cluster.first_submit if cluster.jobs else 0.0
    return ReplayResult(
        jobs=cluster.jobs,
        dropped=feeder.dropped,
        nodes=nodes,
        mean_wait_s=sum(waits) / len(waits) if waits else 0.0,
        recorded_mean_wait_s=sum(recorded) / len(recorded) if recorded else None,
        makespan_s=makespan,
        utilization=cluster.busy_node_s / (nodes * makespan) if makespan > 0 else 0.0,
        node_failures=cluster.node_failures,
        requeues=sum(cluster.j_requeues),
        preemptions=cluster.preemptions,
        events=loop.events,
        passes=cluster.passes,
    )


def replay_swf(
    path: str | os.PathLike[str],
    nodes: int | None = None,
    *,
    limit: int | None = None,
    **kwargs: float | int | None,
) -> ReplayResult:
    """Replay an SWF log; ``nodes`` defaults to the header's ``MaxNodes`` (else ``MaxProcs``)."""
    if nodes is None:
        header = read_swf_header(path)
        nodes = int(header.get("MaxNodes") or header.get("MaxProcs") or 0)
        if nodes <= 0:
            raise ValueError(f"{path} names no MaxNodes/MaxProcs in its header; pass nodes=")
    return replay(swf_jobs(path, limit), nodes, **kwargs)  # type: ignore[arg-type]


def replay_philly(
    path: str | os.PathLike[str],
    gpus: int,
    *,
    limit: int | None = None,
    **kwargs: float | int | None,
) -> ReplayResult:
    """Replay Philly GPU jobs on ``gpus`` GPUs, each GPU a schedulable unit (no locality).

    The trace has no requested time; the runtime stands in for it (perfect estimates).
    """
    records = sorted(read_philly(path))
    if limit is not None:
        records = records[:limit]
    jobs = (
        ReplayJob(r.submit, max(1, r.gpus), r.duration, r.duration, -1.0, False)
        for r in records
        if r.duration > 0 and not math.isnan(r.duration)
    )
    return replay(jobs, gpus, **kwargs)  # type: ignore[arg-type]
