"""Simulator vs a real slurmctld on the same job stream: the stream and the comparison.

A stream is a few hundred batch jobs of varied widths (cores), time limits and
runtimes — some longer than their limit, which Slurm kills — compressed to
seconds so a real Slurm runs it in minutes. The same stream, with the submit
times and runtimes the real cluster recorded, is replayed in the simulator;
start times are compared job by job (Simakov et al., "A Slurm Simulator:
Implementation and Parametric Analysis", 2017, measured the same against real
Slurm). Pure functions: submitting and reading slurmctld's log live in the runners
(``scripts/bench/sim-fidelity``, the integration test).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = [
    "Agreement",
    "StreamJob",
    "agreement",
    "ctld_log_times",
    "ctld_timing",
    "noise_floor",
    "replay_record",
    "simulate_starts",
    "stream",
]


@dataclass(frozen=True)
class StreamJob:
    offset_s: float  # submit time after the stream's start
    cores: int
    limit_min: int  # sbatch --time, whole minutes (Slurm's unit)
    run_s: float  # what the job does (sleep); past limit_min*60 it is killed


def stream(
    jobs: int,
    cores: int,
    *,
    load: float = 1.3,
    overrun_share: float = 0.05,
    run_scale: float = 1.0,
    seed: int = 1,
) -> list[StreamJob]:
    """A job stream that keeps a ``cores``-core partition busy (``load`` > 1: a queue forms).

    ``run_scale`` shortens (< 1) the runtimes of jobs that end within their limit, and
    the arrival gaps with them: a shorter stream, for a quick test."""
    rng = random.Random(seed)
    out: list[tuple[int, int, float]] = []
    for _ in range(jobs):
        width = min(cores, rng.choice((1, 1, 2, 2, 4, 4, 8, cores // 2 or 1)))
        limit = rng.choice((1, 1, 2, 3))
        if rng.random() < overrun_share:
            run = limit * 60.0 + rng.uniform(5.0, 30.0)  # killed at its limit
        else:
            run = max(1.0, rng.uniform(3.0, 40.0) * limit / 2 * run_scale)
        out.append((width, limit, round(run, 1)))
    work = sum(w * min(r, lim * 60.0) for w, lim, r in out)
    gap = work / (cores * load) / jobs
    t = 0.0
    result = []
    for width, limit, run in out:
        result.append(StreamJob(round(t, 2), width, limit, run))
        t += rng.expovariate(1.0 / gap)
    return result


@dataclass(frozen=True)
class Agreement:
    jobs: int
    mean_real_wait_s: float
    start_error_mean: float  # mean |sim - real| start over the mean real wait
    start_error_p95_s: float  # 95th percentile of |sim - real| start, seconds
    pair_order_agreement: float  # pairs started in a different order by real: share sim agrees

    def as_dict(self) -> dict[str, float | int]:
        return dict(self.__dict__)


def agreement(
    submit: Sequence[float], real_start: Sequence[float], sim_start: Sequence[float],
    *, tie_s: float = 1.0,
) -> Agreement:  # fmt: skip
    """Compare two schedules of the same jobs; pairs whose real starts lie within ``tie_s``
    of each other (sacct's resolution is a second) are not ordered and not counted."""
    n = len(submit)
    if not n or len(real_start) != n or len(sim_start) != n:
        raise ValueError("agreement needs the same non-empty job list in both schedules")
    errors = sorted(abs(s - r) for s, r in zip(sim_start, real_start, strict=True))
    waits = [r - s for r, s in zip(real_start, submit, strict=True)]
    mean_wait = sum(waits) / n
    agree = pairs = 0
    for i in range(n):
        for j in range(i + 1, n):
            real = real_start[i] - real_start[j]
            if abs(real) < tie_s:
                continue
            pairs += 1
            sim = sim_start[i] - sim_start[j]
            if sim * real > 0:
                agree += 1
    p95 = errors[min(n - 1, math.ceil(0.95 * n) - 1)]
    return Agreement(
        jobs=n,
        mean_real_wait_s=mean_wait,
        start_error_mean=(sum(errors) / n) / mean_wait if mean_wait > 0 else math.inf,
        start_error_p95_s=p95,
        pair_order_agreement=agree / pairs if pairs else 1.0,
    )


def simulate_starts(
    submit: Sequence[float], units: Sequence[int], limit_s: Sequence[float],
    run_s: Sequence[float], capacity: int, **cluster: object,
) -> list[float]:  # fmt: skip
    """Start times of the jobs (in submit order) on a simulated ``capacity``-unit cluster.

    ``run_s`` are the runtimes the real cluster recorded, kills at the time limit
    included (Slurm enforces limits on a periodic check, so a killed job outlives its
    limit by a few seconds): they are replayed as they happened."""
    from hpcorch.sim.engine import EventLoop  # noqa: PLC0415  # sim stays unloaded for imports of the module
    from hpcorch.sim.replay import ReplayJob, TraceFeeder  # noqa: PLC0415
    from hpcorch.sim.slurm import SimSlurm  # noqa: PLC0415

    order = sorted(range(len(submit)), key=lambda k: (submit[k], k))
    loop = EventLoop()
    sim = SimSlurm(loop, capacity, **cluster)  # type: ignore[arg-type]
    jobs = (ReplayJob(submit[k], units[k], limit_s[k], run_s[k], -1.0, False) for k in order)
    TraceFeeder(loop, sim, jobs, overrun="replay")
    loop.run()
    starts = [0.0] * len(submit)
    for jid, k in enumerate(order):
        starts[k] = sim.j_first_start[jid]
    return starts


def replay_record(record: Mapping[str, Any]) -> Agreement:
    """The simulator against one recorded real schedule (the JSON the fidelity runner
    writes with ``record=``: submits, starts, ends, cores, limits, the cluster's settings)."""
    from hpcorch.sim.priority import Multifactor  # noqa: PLC0415  # sim stays unloaded for imports of the module

    settings = dict(record["settings"])
    if isinstance(settings.get("priority"), Mapping):
        settings["priority"] = Multifactor(**settings["priority"])
    start, end = record["start"], record["end"]
    run_s = [e - s for s, e in zip(start, end, strict=True)]
    sim = simulate_starts(
        record["submit"], record["cores"], record["limit_s"], run_s, record["capacity"], **settings
    )
    return agreement(record["submit"], start, sim)


def noise_floor(
    submit: Sequence[float], units: Sequence[int], limit_s: Sequence[float],
    run_s: Sequence[float], capacity: int, *, jitter_s: float = 0.5, seed: int = 0,
    **cluster: object,
) -> float:  # fmt: skip
    """start_error_mean of the simulator against itself when submits and runtimes move by
    up to ``jitter_s`` (what sacct's whole seconds hide): no model of the real cluster
    can be expected to agree with it more closely than this."""
    rng = random.Random(seed)
    base = simulate_starts(submit, units, limit_s, run_s, capacity, **cluster)
    moved_submit = [max(0.0, s + rng.uniform(-jitter_s, jitter_s)) for s in submit]
    moved_run = [max(0.5, r + rng.uniform(-jitter_s, jitter_s)) for r in run_s]
    moved = simulate_starts(moved_submit, units, limit_s, moved_run, capacity, **cluster)
    return agreement(submit, base, moved).start_error_mean


# slurmctld's log lines that mark a job's submit, start and end, with their millisecond stamps
_CTLD_LINE = re.compile(
    r"^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)\] (?:"
    r"_slurm_rpc_submit_batch_job: JobId=(?P<submit>\d+) "
    r"|sched: Allocate JobId=(?P<alloc>\d+) "
    r"|sched/backfill: _start_job: Started JobId=(?P<bf>\d+) "
    r"|_job_complete: JobId=(?P<done>\d+) done"
    r"|Time limit exhausted for JobId=(?P<limit>\d+))",
    re.MULTILINE,
)


def ctld_log_times(text: str) -> dict[str, tuple[float, float, float]]:
    """(submit, start, end) of each job that slurmctld's log ``text`` shows all three of.

    The log stamps events to the millisecond where ``sacct`` keeps whole seconds (a
    time-limit kill's end is the "Time limit exhausted" line). Times are seconds on the
    log's own clock (its stamps read as naive local time): only their differences mean
    anything. A job id seen submitted again (a cluster whose ids restarted) starts afresh.
    """
    seen: dict[str, list[float]] = {}
    for m in _CTLD_LINE.finditer(text):
        when = datetime.fromisoformat(m.group(1)).timestamp()
        if m["submit"]:
            seen[m["submit"]] = [when, math.nan, math.nan]
            continue
        jid = m["alloc"] or m["bf"] or m["done"] or m["limit"]
        times = seen.get(jid)
        if times is None:
            continue
        if m["alloc"] or m["bf"]:
            times[1] = when
        elif math.isnan(times[2]):  # a kill's later "done" does not move its end
            times[2] = when
    return {
        jid: (t[0], t[1], t[2])
        for jid, t in seen.items()
        if not math.isnan(t[1]) and not math.isnan(t[2])
    }


_CTLD_EVENT = re.compile(
    r"^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)\] (?:"
    r"(?P<submit>_slurm_rpc_submit_batch_job: JobId=)"
    r"|(?P<end>_job_complete: JobId=\d+ done|Time limit exhausted for JobId=)"
    r"|(?P<alloc>sched: Allocate JobId=)"
    r"|(?P<bf>sched/backfill: _start_job: Started JobId=))",
    re.MULTILINE,
)


def _phase(times: Sequence[float]) -> float:
    """The median fraction of a second of ``times`` (taken around the first one, so a
    phase near a whole second is not split in two)."""
    if not times:
        return 0.0
    first = times[0] % 1.0
    shifted = sorted((t - first + 0.5) % 1.0 - 0.5 for t in times)
    return (first + shifted[len(shifted) // 2]) % 1.0


def ctld_timing(text: str, origin: float) -> dict[str, float]:
    """slurmctld's own timing, as its log ``text`` shows it (times after ``origin``):

    * ``bf_phase_s``: where in a second the backfill thread's cycles fall (it sleeps
      ``bf_interval`` after a cycle, then polls each second, so its cycles keep one
      phase), by the jobs they started;
    * ``sched_phase_s``: where in a second the background loop ticks, by the jobs the
      main scheduler started right after a submit (those wait for its tick);
    * ``completing_s``: how long after a job's end the main scheduler started the next
      (a start within a second of an end, nothing else between).
    """
    bf: list[float] = []
    tick: list[float] = []
    gaps: list[float] = []
    last_kind, last_t = "", -math.inf
    for m in _CTLD_EVENT.finditer(text):
        t = datetime.fromisoformat(m.group(1)).timestamp() - origin
        if m["submit"] or m["end"]:
            last_kind, last_t = ("submit" if m["submit"] else "end"), t
        elif m["bf"]:
            bf.append(t)
        elif last_kind == "submit":
            tick.append(t)
            last_kind = ""
        elif last_kind == "end":
            if t - last_t < 1.0:
                gaps.append(t - last_t)
            last_kind = ""
    return {
        "bf_phase_s": _phase(bf),
        "sched_phase_s": _phase(tick),
        "completing_s": sum(gaps) / len(gaps) if gaps else 0.0,
    }
