"""The live scaler: each interval, demand and allocations in, the scale policy's plan out.

Every ``interval_s`` the :class:`Scaler`

1. reads the engine's ready and running tasks (a :data:`DemandSource`) and
   routes each to a pool (:class:`~hpcorch.provision.regions.Router`: the
   partition it fits, on the site where it is expected to finish first at
   acceptable cost);
2. reads its allocations' Slurm states (an :class:`AllocationStates`: the
   poller today, the run monitor once it lands) and their workers' business
   from Dask (a :class:`PoolRuntime`);
3. asks the scaling policy its settings name (:func:`hpcorch.policies.scale.decide_scale`
   by default) for a plan, holding every
   submission while the run budget is spent, and trims submissions to what
   the budget has left;
4. applies it through the :class:`PoolRuntime` (new whole-node jobs with the
   plan's walltime; idle workers retired, then their jobs ended) and writes
   every decision to the journal (``scale`` events, with the reason), each
   allocation's life (``allocations`` rows) and, now and then, the run's
   accounting (``accounting`` events, see :mod:`hpcorch.provision.accounting`).

Everything it decides comes from the pure policies; this module only
gathers their inputs and applies their answers, so the simulator and the
live run scale the same way.

Settings (:class:`~hpcorch.options.ScalerSettings`) come with the run's
:class:`~hpcorch.options.RunOptions` (:mod:`hpcorch.environment` lists the
variables that set them from a shell).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from hpcorch.options import ScalerSettings
from hpcorch.policies.cost import AttemptRecord
from hpcorch.policies.scale import (
    PoolHistory,
    Release,
    ScalePlan,
    Submit,
    pool_demand,
    record,
    scale_policy,
)
from hpcorch.policies.state import (
    Allocation,
    ChargeRates,
    PoolDemand,
    PoolShape,
    Resources,
    SiteLimits,
)
from hpcorch.provision.accounting import AllocationLife, accounts_payload
from hpcorch.provision.horizon import tiers
from hpcorch.slurm.client import SlurmClient
from hpcorch.slurm.models import JobInfo
from hpcorch.slurm.poller import Poller
from hpcorch.units import format_duration

__all__ = [
    "AllocationStates",
    "AllocationWatch",
    "Candidate",
    "Load",
    "MonitorStates",
    "PollerStates",
    "PoolRuntime",
    "Scaler",
]

logger = logging.getLogger(__name__)

# Seconds between steps while the run has no allocation yet (see Scaler._run).
FIRST_STEP_S = 0.5

_ACCOUNT_EVERY_S = 10.0


def _seconds(tier: str) -> int:
    return int(tier.rsplit("_", 1)[1])


@dataclass(frozen=True, slots=True)
class Load:
    """One task the engine has ready (queued) or running."""

    task_id: str
    resources: Resources
    estimate_s: float | None
    running: bool = False
    candidates: tuple[Candidate, ...] = ()
    """The (site, partition) pairs that can run it, the run's own site first."""


Candidate = tuple[str, str]


DemandSource = Callable[[], Sequence[Load]]
"""The engine's ready and running tasks, now."""


class AllocationStates(Protocol):
    """Slurm states of the run's allocations, per site (one batched query per interval)."""

    def watch(self, site: str, job_ids: Iterable[str]) -> None: ...

    def job(self, site: str, job_id: str) -> JobInfo | None: ...

    def close(self) -> None: ...


class PollerStates:
    """:class:`AllocationStates` over one :class:`~hpcorch.slurm.poller.Poller` per site."""

    def __init__(self, clients: Mapping[str, SlurmClient], interval_s: float) -> None:

        self._pollers = {site: Poller(c, interval_s=interval_s) for site, c in clients.items()}
        self._subs = {
            site: p.subscribe(lambda _u: None, jobs=()) for site, p in self._pollers.items()
        }
        for poller in self._pollers.values():
            poller.start()

    def watch(self, site: str, job_ids: Iterable[str]) -> None:
        self._pollers[site].watch(self._subs[site], job_ids)

    def job(self, site: str, job_id: str) -> JobInfo | None:
        return self._pollers[site].job(job_id)

    def close(self) -> None:
        for poller in self._pollers.values():
            poller.stop()

    def drop(self, site: str) -> None:
        """Stop following ``site`` (another source follows it now)."""
        poller = self._pollers.pop(site, None)
        if poller is not None:
            poller.stop()


class AllocationWatch(Protocol):
    """The run's :class:`~hpcorch.engine.monitor.Monitor`, as the scaler follows its
    allocations through it."""

    def watch_allocations(self, allocations: Iterable[str]) -> None: ...

    def allocation(self, job_id: str) -> JobInfo | None: ...


class MonitorStates:
    """:class:`AllocationStates` from the run's :class:`~hpcorch.engine.monitor.Monitor` for
    its site (one batched poll for the whole run), and from ``others`` for the other sites."""

    def __init__(self, monitor: AllocationWatch, site: str, others: AllocationStates) -> None:
        self.monitor = monitor
        self.site = site
        self.others = others

    def watch(self, site: str, job_ids: Iterable[str]) -> None:
        if site == self.site:
            self.monitor.watch_allocations(list(job_ids))
        else:
            self.others.watch(site, job_ids)

    def job(self, site: str, job_id: str) -> JobInfo | None:
        if site == self.site:
            return self.monitor.allocation(job_id)
        return self.others.job(site, job_id)

    def close(self) -> None:
        self.others.close()  # the monitor belongs to the run


class PoolRuntime(Protocol):
    """The Dask side: start and end whole-node jobs, and say which workers are busy."""

    def submit(self, pool: str, names: Sequence[str], walltime_s: float) -> dict[str, str | None]:
        """Start one job per name; return each name's Slurm job id (None: not submitted)."""
        ...

    def release(self, names: Sequence[str]) -> None:
        """Retire the named jobs' workers gracefully, then end the jobs."""
        ...

    def busy(self) -> dict[str, tuple[str, int, int]]:
        """Per connected worker name: its address, the tasks processing on it, and the
        results only it holds that tasks still to run need."""
        ...

    def set_resources(self, address: str, resources: dict[str, float]) -> None:
        """Change a worker's resources (its walltime tiers, :mod:`hpcorch.provision.horizon`)."""
        ...


class Journaling(Protocol):
    def event(self, kind: str, **payload: Any) -> None: ...

    def record_allocation(self, **alloc: Any) -> None: ...


class Routing(Protocol):
    """Which pool a task's demand goes to (None: nowhere, e.g. the budget is spent)."""

    message: str | None
    """Why tasks can go nowhere (the budget's message), once that happened."""

    def route(self, load: Load, now: float) -> str | None: ...

    def expected_wait(self, site: str) -> float | None:
        """The wait observed for the site's allocations so far (None: none started yet)."""
        ...

    def hold(self, lives: Sequence[AllocationLife], now: float) -> str | None:
        """Why nothing may be submitted now (the budget), or None."""
        ...

    def affordable(
        self, submit: Submit, lives: Sequence[AllocationLife], now: float
    ) -> tuple[int, str]:
        """How many of ``submit``'s allocations the budget still allows, and the figures."""
        ...


@dataclass
class _Pool:
    shape: PoolShape
    cores_per_node: int
    gpus_per_node: int
    memory_per_node: int
    rates: ChargeRates


class Scaler:
    """The controller loop of one run; see the module docstring."""

    def __init__(
        self,
        pools: Sequence[tuple[PoolShape, ChargeRates]],
        limits: Mapping[str, SiteLimits],
        runtime: PoolRuntime,
        states: AllocationStates,
        demand: DemandSource,
        router: Routing,
        *,
        journal: Journaling | None = None,
        attempts: Callable[[Sequence[AllocationLife]], Sequence[AttemptRecord]] | None = None,
        settings: ScalerSettings | None = None,
        on_stranded: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings or ScalerSettings()
        self.limits = dict(limits)
        self._pools: dict[str, _Pool] = {}
        for shape, rates in pools:
            part = self.limits[shape.site].partition(shape.partition)
            assert part is not None, f"{shape.site} has no partition {shape.partition}"
            self._pools[shape.name] = _Pool(
                shape, part.cores_per_node, part.gpus_per_node, part.memory_per_node, rates
            )
        self.runtime = runtime
        self.states = states
        self.demand = demand
        self.router = router
        self.journal = journal
        self.attempts = attempts or (lambda _lives: ())
        self.clock = clock
        self.on_stranded = on_stranded
        """Called when queued tasks can go nowhere (the budget is spent) and nothing is live."""
        self.history: dict[str, PoolHistory] = {}
        self.lives: dict[str, AllocationLife] = {}
        """Every allocation of the run by its spec name, live or ended."""
        self.idle_since: dict[str, float] = {}
        self.draining: dict[str, tuple[Release, float]] = {}
        """Released by the policy, kept until the results they alone hold are needed no more."""
        self._busy: dict[str, tuple[str, int, int]] = {}
        self._shown: dict[str, frozenset[str]] = {}
        self.submitted = 0
        self._seq = 0
        self._held: tuple[str, ...] = ()
        self._stranded = False
        self._last_account = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ loop

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="hpcorch-scaler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:
                logger.exception("scaling step failed; trying again next interval")
            # Until the first allocation is asked for, look again soon: the engine's first
            # ready tasks reach the journal just after the scaler starts, and the first
            # result should not wait a whole interval for them.
            first = not self.lives and time.monotonic() - started < 2 * self.settings.interval_s
            self._wake.wait(
                min(FIRST_STEP_S, self.settings.interval_s) if first else self.settings.interval_s
            )
            self._wake.clear()

    def kick(self) -> None:
        """Take the next step now (e.g. the engine has just submitted its tasks)."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(60)
            self._thread = None

    # ------------------------------------------------------------------ one step

    def step(self) -> ScalePlan:
        with self._lock:
            now = self.clock()
            self._refresh(now)
            hold = self.router.hold(list(self.lives.values()), now)
            demand, stranded = self._pool_demand(now)
            live = [life for life in self.lives.values() if life.end is None]
            deciding = [life for life in live if life.name not in self.draining]
            plan = scale_policy(self.settings.policy)(
                demand,
                [self._allocation(life) for life in deciding],
                [p.shape for p in self._pools.values()],
                self.limits,
                history=self.history,
                now=now,
                hold=hold,
                config=self.settings.scale,
            )
            plan, unaffordable = self._afford(plan, now)
            if not live and not plan.submits:
                queued = sum(d.queued for d in demand.values())
                if stranded:
                    self._strand(stranded, hold or self.router.message or "no site can run them")
                elif queued and unaffordable:
                    self._strand(queued, unaffordable)
            self._apply(plan, now)
            self.history = record(self.history, plan, now)
            if plan.held != self._held:
                self._held = plan.held
                for note in plan.held:
                    self._event("hold", note=note)
            if now - self._last_account >= _ACCOUNT_EVERY_S or not plan.empty:
                self.account(now)
            return plan

    def _refresh(self, now: float) -> None:
        busy = self._busy = self.runtime.busy()
        for name, life in list(self.lives.items()):
            if life.end is not None or life.job_id is None:
                continue
            info = self.states.job(life.site, life.job_id)
            changed = False
            if info is not None:
                # Slurm's start is the real one: it also corrects the estimate taken when
                # the worker connected before a poll saw the job run (always later)
                if (
                    info.start is not None
                    and info.state.name != "PENDING"
                    and (life.start is None or info.start < life.start)
                ):
                    life.start, changed = info.start, True
                if info.terminal:
                    life.end = info.end or now
                    if life.start is None and info.start:
                        life.start = info.start
                    changed = True
                if info.state.name != life.state:
                    life.state, changed = info.state.name, True
            if name in busy:
                life.address = busy[name][0]
                if life.start is None:
                    life.start, changed = now, True  # its worker connected before the poll saw it
            if changed:
                self._record(life)
            if life.end is not None:
                self.idle_since.pop(name, None)
                self.runtime.release([name])  # a job Slurm ended: drop its spec entry
                continue
            if name in busy and life.start is not None:
                self._tiers(life, now)
            if name in busy and busy[name][1]:
                self.idle_since.pop(name, None)
            elif name in busy:
                self.idle_since.setdefault(name, now)

    def _tiers(self, life: AllocationLife, now: float) -> None:
        """Take away the walltime tiers the worker no longer has time for."""
        assert life.start is not None and life.address is not None
        left = max(0.0, life.start + life.walltime_s - now)
        have = tiers(left, self.settings.scale.walltime)
        shown = frozenset(k for k, v in have.items() if v)
        if life.name not in self._shown:  # it started with its walltime's tiers
            started = tiers(life.walltime_s, self.settings.scale.walltime)
            self._shown[life.name] = frozenset(k for k, v in started.items() if v)
        if self._shown[life.name] != shown:
            try:
                self.runtime.set_resources(life.address, have)
            except Exception as exc:
                logger.warning("cannot update worker %s's time left: %s", life.name, exc)
                return
            self._event(
                "tiers",
                allocation=life.name,
                left_s=round(left),
                longest_task_s=max((_seconds(k) for k in shown), default=0),
            )
        self._shown[life.name] = shown

    def _pool_demand(self, now: float) -> tuple[dict[str, PoolDemand], int]:
        """Demand per pool, and how many queued tasks could be routed nowhere."""
        queued: dict[str, list[tuple[Resources, float | None]]] = {}
        running: dict[str, list[Resources]] = {}
        stranded = 0
        for load in self.demand():
            pool = self.router.route(load, now)
            if pool is None or pool not in self._pools:
                stranded += not load.running
                continue
            if load.running:
                running.setdefault(pool, []).append(load.resources)
            else:
                queued.setdefault(pool, []).append((load.resources, load.estimate_s))
        out = {}
        default = self.settings.scale.walltime.default_estimate_s
        for name, shape in self._pools.items():
            part = self.limits[shape.shape.site].partition(shape.shape.partition)
            assert part is not None
            out[name] = replace(
                pool_demand(
                    name,
                    part,
                    queued.get(name, ()),
                    running.get(name, ()),
                    default_estimate_s=default,
                ),
                expected_wait_s=self.router.expected_wait(shape.shape.site) or 0.0,
            )
        return out, stranded

    def _allocation(self, life: AllocationLife) -> Allocation:
        running = life.start is not None
        return Allocation(
            id=life.name,
            pool=life.pool,
            state="running" if running else "pending",
            submitted_at=life.submitted_at,
            walltime_s=life.walltime_s,
            nodes=life.nodes,
            started_at=life.start,
            idle_since=self.idle_since.get(life.name) if running else None,
        )

    def _afford(self, plan: ScalePlan, now: float) -> tuple[ScalePlan, str | None]:
        """The plan with submissions trimmed to the budget, and why, when some were."""
        submits, held, why = [], list(plan.held), None
        lives = list(self.lives.values())
        for s in plan.submits:
            count, note = self.router.affordable(s, lives, now)
            count = min(s.count, count)
            if count < s.count:
                why = note
                held.append(f"pool {s.pool}: {s.count} allocation(s) wanted, {count}: {note}")
            if count > 0:
                submits.append(replace(s, count=count))
                # what these commit counts against the next pool's submissions
                lives = lives + [self._new_life(s, f"?{i}", now) for i in range(count)]
        return ScalePlan(tuple(submits), plan.releases, tuple(held)), why

    def _strand(self, count: int, why: str) -> None:
        """Nothing live and nothing may be submitted: the queued tasks can never run."""
        if self._stranded or self.on_stranded is None:
            return
        self._stranded = True
        self._event("stranded", tasks=count, reason=why)
        self.on_stranded(f"{count} queued task(s) cannot be submitted: {why}")

    def _new_life(self, s: Submit, name: str, now: float) -> AllocationLife:
        pool = self._pools[s.pool]
        return AllocationLife(
            name=name,
            pool=s.pool,
            site=pool.shape.site,
            partition=pool.shape.partition,
            nodes=s.nodes,
            cores_per_node=pool.cores_per_node,
            gpus_per_node=pool.gpus_per_node,
            rates=pool.rates,
            submitted_at=now,
            walltime_s=s.walltime_s,
        )

    def _apply(self, plan: ScalePlan, now: float) -> None:
        for release in plan.releases:
            holding = self._busy.get(release.allocation, ("", 0, 0))[2]
            others = [n for n in self._busy if n != release.allocation and n not in self.draining]
            if holding and not others:
                # its results feed tasks still to run, and no other worker could take them
                self.draining[release.allocation] = (release, now)
                self._event(
                    "drain",
                    pool=release.pool,
                    allocation=release.allocation,
                    reason=f"{release.reason}; holds {holding} result(s) that tasks still to "
                    "run need: released once another worker can take them",
                )
                continue
            self._release(release, now)
        self._drained(now)
        for submit in plan.submits:
            names = []
            for _ in range(submit.count):
                self._seq += 1
                names.append(f"{submit.pool}-{self._seq}")
            ids = self.runtime.submit(submit.pool, names, submit.walltime_s)
            for name in names:
                life = self._new_life(submit, name, now)
                life.job_id = ids.get(name)
                life.state = "PENDING" if life.job_id else "FAILED"
                if life.job_id is None:
                    life.end = now
                self.lives[name] = life
                self._record(life)
            self.submitted += sum(1 for n in names if ids.get(n))
            site = self._pools[submit.pool].shape.site
            self.states.watch(site, [i for i in ids.values() if i])
            self._event(
                "submit",
                pool=submit.pool,
                count=submit.count,
                nodes=submit.nodes,
                walltime_s=submit.walltime_s,
                job_ids=[ids.get(n) for n in names],
                reason=submit.reason,
            )
            logger.info(
                "submitting %d x %s for %s: %s",
                submit.count,
                submit.pool,
                format_duration(submit.walltime_s),
                submit.reason,
            )

    def _drained(self, now: float) -> None:
        """Release the draining allocations whose results are safe, or that drained too long.

        A draining allocation may hold the very node its successor waits for (a
        full partition): after ``idle_timeout_s`` it goes anyway, and Dask
        recomputes the results it held.
        """
        for name, (release, since) in list(self.draining.items()):
            holding = self._busy.get(name, ("", 0, 0))[2]
            others = [n for n in self._busy if n != name and n not in self.draining]
            life = self.lives.get(name)
            if life is None or life.end is not None:
                del self.draining[name]
            elif not holding or others:
                del self.draining[name]
                self._release(release, now)
            elif now - since >= self.settings.scale.idle_timeout_s:
                del self.draining[name]
                why = (
                    f"{release.reason}; drained {now - since:.0f}s with no other worker to take "
                    f"its {holding} result(s): they will be recomputed"
                )
                self._release(replace(release, reason=why), now)

    def _release(self, release: Release, now: float) -> None:
        life = self.lives.get(release.allocation)
        self._event(
            "release",
            pool=release.pool,
            allocation=release.allocation,
            job_id=life.job_id if life else None,
            reason=release.reason,
        )
        logger.info("releasing %s: %s", release.allocation, release.reason)
        # retiring first hands its results to the other workers (dask's graceful retire)
        self.runtime.release([release.allocation])
        self.idle_since.pop(release.allocation, None)
        if life is not None and life.end is None:
            life.end, life.state = now, "CANCELLED"
            self._record(life)

    # ------------------------------------------------------------------ records

    def _event(self, action: str, **payload: Any) -> None:
        if self.journal is not None:
            self.journal.event("scale", action=action, **payload)

    def _record(self, life: AllocationLife) -> None:
        if self.journal is not None and life.job_id is not None:
            self.journal.record_allocation(**life.row())

    def account(self, now: float | None = None) -> dict[str, Any]:
        """Write the run's accounting so far to the journal and return it."""
        now = self.clock() if now is None else now
        self._last_account = now
        lives = list(self.lives.values())
        try:
            attempts = self.attempts(lives)
        except Exception as exc:  # the journal may be mid-write; used hours come next time
            logger.debug("cannot read the attempts for the accounting: %s", exc)
            attempts = ()
        payload = accounts_payload(lives, attempts, now)
        payload["allocations_submitted"] = self.submitted
        if self.journal is not None:
            self.journal.event("accounting", **payload)
        return payload

    def finish(self) -> dict[str, Any]:
        """Stop the loop; every live allocation ends now. Returns the final accounting."""
        self.stop()
        with self._lock:
            now = self.clock()
            live = [n for n, life in self.lives.items() if life.end is None]
            if live:
                self.runtime.release(live)
            for name in live:
                life = self.lives[name]
                life.end, life.state = now, "CANCELLED"
                self._record(life)
                self._event(
                    "release",
                    pool=life.pool,
                    allocation=name,
                    job_id=life.job_id,
                    reason="the run ended",
                )
            payload = self.account(now)
        self.states.close()
        return payload

    def use_states(self, states: AllocationStates) -> None:
        """Follow the allocations through ``states`` from now on (e.g. the run's monitor)."""
        with self._lock:
            old, self.states = self.states, states
            for life in self.lives.values():
                if life.job_id is not None and life.end is None:
                    states.watch(life.site, [life.job_id])
        if not isinstance(states, MonitorStates) or states.others is not old:
            old.close()

    def live_rows(self) -> list[dict[str, Any]]:
        with self._lock:
            return [life.row() for life in self.lives.values() if life.job_id and life.end is None]
