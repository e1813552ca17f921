"""Replay a job trace (SWF, Philly) through :class:`~hpcorch.sim.slurm.SimSlurm`.

Arrivals are streamed: each arrival event submits one job and schedules the
next, so the heap holds one pending arrival, not the whole trace. Jobs keep
their recorded runtime and requested time; only the wait is simulated, so
the simulated mean wait can be compared with the one the trace recorded.

Real logs hold wrong estimates. Two named modes say what happens to a job that
runs longer than it asked for: ``replay`` (it runs its recorded time, as the
log's site allowed) and ``kill`` (Slurm's semantics: it is killed at its time
limit plus ``OverTimeLimit``). A job that asked for no time gets a stated
default: for an SWF log the longest time any of its jobs asked for (what Slurm
gives a job without ``--time`` on a partition whose ``DefaultTime`` is unset: the
partition's ``MaxTime``), or ``default_time_s`` when given.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from hpcorch.sim.engine import EventLoop
from hpcorch.sim.schedconf import SchedulerConfig
from hpcorch.sim.slurm import SimJobState, SimSlurm
from hpcorch.traces import read_philly, read_swf, read_swf_header

__all__ = [
    "Overrun",
    "ReplayJob",
    "ReplayResult",
    "TraceFeeder",
    "replay",
    "replay_philly",
    "replay_swf",
    "swf_jobs",
]

Overrun = Literal["replay", "kill"]
OVERRUN_MODES: tuple[Overrun, ...] = ("replay", "kill")

logger = logging.getLogger(__name__)


class ReplayJob(NamedTuple):
    submit: float
    nodes: int
    req_time: float  # -1 when the job asked for no time: the replay's default applies
    run_time: float
    recorded_wait: float  # -1 when the trace has none
    failed: bool
    user: int = 0  # whose job: fair-share under priority/multifactor
    partition: str = ""  # its partition's PriorityJobFactor, under priority/multifactor


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
    overrun: str = "replay"
    overrun_jobs: int = 0  # jobs whose runtime exceeds their requested time
    killed_jobs: int = 0  # of those, killed at the limit (overrun "kill")
    missing_estimates: int = 0  # jobs that asked for no time
    default_time_s: float | None = None  # what those got (None: their own runtime)

    def as_dict(self) -> dict[str, float | int | None]:
        return dict(self.__dict__)


class TraceFeeder:
    """Streams arrivals into the cluster one event at a time."""

    def __init__(
        self,
        loop: EventLoop,
        cluster: SimSlurm,
        jobs: Iterator[ReplayJob],
        *,
        overrun: Overrun = "replay",
        default_time_s: float | None = None,
    ) -> None:
        self.loop = loop
        self.cluster = cluster
        self.jobs = jobs
        self.kill = overrun == "kill"
        self.default_time_s = default_time_s
        self.dropped = 0
        self.overruns = 0
        self.missing = 0
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
            req = job.req_time
            if req <= 0:
                self.missing += 1
                req = job.run_time if self.default_time_s is None else self.default_time_s
            if job.run_time > req:
                self.overruns += 1
            self.cluster.submit(
                job.nodes,
                req,
                job.run_time,
                kill_at_walltime=self.kill,
                fails=job.failed,
                user=job.user,
                partition=job.partition,
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
        req = job.req_time if job.req_time > 0 else -1.0
        partition = str(job.partition) if job.partition >= 0 else ""
        yield ReplayJob(job.submit, procs, req, run, job.wait, job.status == 0, job.user, partition)


def swf_longest_request(path: str | os.PathLike[str]) -> float | None:
    """The longest time any job of the log asked for (the stand-in for a partition MaxTime)."""
    longest = max((job.req_time for job in read_swf(path)), default=-1.0)
    return longest if longest > 0 else None


def replay(
    jobs: Iterable[ReplayJob],
    nodes: int,
    *,
    mtbf_s: float | None = None,
    repair_s: float = 3600.0,
    bf_max_job_test: int | None = None,
    overrun: Overrun = "replay",
    over_time_limit_s: float = 0.0,
    default_time_s: float | None = None,
    schedconf: SchedulerConfig | None = None,
    seed: int = 0,
) -> ReplayResult:
    """Run the jobs on a ``nodes``-node simulated Slurm with EASY backfilling.

    ``overrun`` says what a job running past its requested time does (see the
    module's docstring); jobs that asked for no time get ``default_time_s``
    (``None``: their own runtime, a perfect estimate). ``schedconf`` (a slurm.conf's
    scheduler settings) replaces EASY with that scheduler and its OverTimeLimit.
    """
    if overrun not in OVERRUN_MODES:
        raise ValueError(f"overrun must be one of {', '.join(OVERRUN_MODES)}, got {overrun!r}")
    loop = EventLoop()
    settings: dict[str, Any] = {
        "bf_max_job_test": bf_max_job_test,
        "over_time_limit_s": over_time_limit_s,
    }
    if schedconf is not None:
        settings = schedconf.cluster_kwargs()
    cluster = SimSlurm(loop, nodes, mtbf_s=mtbf_s, repair_s=repair_s, seed=seed, **settings)
    feeder = TraceFeeder(loop, cluster, iter(jobs), overrun=overrun, default_time_s=default_time_s)
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
        overrun=overrun,
        overrun_jobs=feeder.overruns,
        killed_jobs=sum(1 for state in cluster.j_state if state is SimJobState.TIMEOUT),
        missing_estimates=feeder.missing,
        default_time_s=default_time_s,
    )


def replay_swf(
    path: str | os.PathLike[str],
    nodes: int | None = None,
    *,
    limit: int | None = None,
    default_time_s: float | None = None,
    **kwargs: Any,
) -> ReplayResult:
    """Replay an SWF log; ``nodes`` defaults to the header's ``MaxProcs`` (else ``MaxNodes``).

    SWF counts processors (fields 5 and 8), so the machine's size is its processor count: a
    log of 8-processor nodes replayed on ``MaxNodes`` units would run on an eighth of it.
    Jobs that asked for no time get ``default_time_s``, else the log's longest request.
    """
    if nodes is None:
        header = read_swf_header(path)
        nodes = int(header.get("MaxProcs") or header.get("MaxNodes") or 0)
        if nodes <= 0:
            raise ValueError(f"{path} names no MaxProcs/MaxNodes in its header; pass nodes=")
    if default_time_s is None:
        default_time_s = swf_longest_request(path)
    return replay(swf_jobs(path, limit), nodes, default_time_s=default_time_s, **kwargs)


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
