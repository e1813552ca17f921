"""A simulated Slurm: priority FIFO queue, EASY backfilling, node failures, preemption.

Jobs ask for whole nodes (or whole units: a GPU-granular trace may call each
GPU a node) for a requested time, and run for their actual runtime; the
reservation logic sees only the requested time, as Slurm's does. The
scheduling pass is EASY backfilling (Lifka 1995, as in Slurm's
``sched/backfill`` without partitions):

1. start jobs in priority order while they fit;
2. the first job that does not fit (the head) gets a reservation: the
   *shadow time* at which, by the running jobs' requested end times, enough
   nodes are free for it, and the *extra* nodes left over at that time;
3. any later job that fits now starts if it ends (by its requested time)
   before the shadow time, or if it needs no more than the extra nodes
   (then it uses them up).

So a backfilled job never delays the head's reservation. Estimates are often
wrong: a job still running past its requested end (a trace replayed as it
happened, or ``OverTimeLimit``) is expected to end *now*, and since the
reservation is recomputed at every pass, it moves with each event instead of
freezing at a time already past. A pass walks the
queue once and the running list (sorted by requested end) at most once: O(queue
+ running) per pass, not O(queue x nodes), and passes are coalesced to one per
distinct event time.

The "slurm" scheduler is Slurm's main scheduler at every event plus
``sched/backfill`` every ``bf_interval`` (conservative: every tested job gets a
reservation; :mod:`hpcorch.sim.timemap`). When jobs share nodes
(``cores_per_node`` > 1) jobs are packed on the fewest nodes and reservations
hold whole nodes (:mod:`hpcorch.sim.nodespace`), and ``completing_s`` holds a
job's resources a little past its end, as Slurm's COMPLETING state does.

State lives in parallel lists indexed by integer job id, not in per-job
objects. Owners (the workflow driver) hear about their jobs through a small
:class:`JobListener` protocol.
"""

from __future__ import annotations

import bisect
import logging
import math
import random
from collections.abc import Callable, Iterable
from enum import IntEnum
from typing import Literal, Protocol

from hpcorch.errors import ResourceError
from hpcorch.sim.engine import EventLoop
from hpcorch.sim.nodespace import NodeSpace, pick_nodes
from hpcorch.sim.priority import Multifactor, fair_tree_factors
from hpcorch.sim.timemap import TimeMap

__all__ = ["SCHEDULERS", "JobListener", "Scheduler", "SimJobState", "SimSlurm"]

logger = logging.getLogger(__name__)

_FREE = -1
_DOWN = -2

_Queue = list[tuple[tuple[int, float, int], int]]
Scheduler = Literal["easy", "fifo", "slurm"]
# easy: EASY backfilling at every event; fifo: no backfilling; slurm: Slurm's main
# scheduler at every event plus sched/backfill (conservative, bf_* parameters) every
# bf_interval seconds.
SCHEDULERS: tuple[Scheduler, ...] = ("easy", "fifo", "slurm")


class SimJobState(IntEnum):
    """Slurm job states the simulator produces (a subset of Slurm's table)."""

    PENDING = 0
    RUNNING = 1
    COMPLETED = 2
    FAILED = 3
    TIMEOUT = 4
    NODE_FAIL = 5
    PREEMPTED = 6
    CANCELLED = 7

    @property
    def terminal(self) -> bool:
        return self >= SimJobState.COMPLETED


class JobListener(Protocol):
    """What a job's owner hears: its start (with node ids) and each end (also before a requeue)."""

    def job_started(self, jid: int, nodes: list[int]) -> None: ...

    def job_ended(self, jid: int, state: SimJobState) -> None: ...


class SimSlurm:
    """One simulated cluster (a region) of ``nodes`` identical nodes on an :class:`EventLoop`."""

    def __init__(
        self,
        loop: EventLoop,
        nodes: int,
        *,
        name: str = "sim",
        mtbf_s: float | None = None,
        repair_s: float = 3600.0,
        bf_max_job_test: int | None = None,
        preemption: bool = True,
        over_time_limit_s: float = 0.0,
        scheduler: Scheduler = "easy",
        bf_interval_s: float = 30.0,
        bf_resolution_s: float = 60.0,
        bf_window_s: float = 86400.0,
        cores_per_node: int = 1,
        completing_s: float = 0.0,
        clock_origin_s: float = 0.0,
        bf_phase_s: float = 0.0,
        batch_sched_delay_s: float | None = None,
        sched_phase_s: float = 0.0,
        priority: Multifactor | None = None,
        seed: int = 0,
    ) -> None:
        if nodes < 1:
            raise ResourceError(f"a simulated cluster needs at least one node, got {nodes}")
        self.loop = loop
        self.name = name
        self.nodes = nodes
        self.mtbf_s = mtbf_s
        self.repair_s = repair_s
        self.bf_max_job_test = bf_max_job_test
        self.preemption = preemption
        # slurm.conf OverTimeLimit: a job killed at its walltime runs this much longer first.
        self.over_time_limit_s = over_time_limit_s
        # A job's resources come back this long after it ends (Slurm's COMPLETING: the
        # slurmd's epilog and completion messages, then the scheduler's pass).
        self.completing_s = completing_s
        if scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {scheduler!r}")
        self.scheduler = scheduler
        if scheduler == "fifo":
            self.bf_max_job_test = 0  # EASY that tests no job behind the head
        # sched/backfill's SchedulerParameters (scheduler "slurm"): seconds
        self.bf_interval_s = bf_interval_s
        self.bf_resolution_s = bf_resolution_s
        self.bf_window_s = bf_window_s
        # The wall-clock time (epoch seconds) of simulated time 0: bf_resolution rounds
        # the wall clock, not the simulation's.
        self.clock_origin_s = clock_origin_s
        # The backfill thread polls once a second from where its last cycle began: its
        # cycles fall on bf_phase_s + whole seconds (simulated time).
        self.bf_phase_s = bf_phase_s
        # Scheduler "slurm": a submitted batch job waits for slurmctld's background loop
        # (once a second, at sched_phase_s + whole seconds), which runs the main
        # scheduler only when batch_sched_delay whole seconds have passed since it last
        # did (a job's end runs it at once). None: every submit schedules at once.
        self.batch_sched_delay_s = batch_sched_delay_s if scheduler == "slurm" else None
        self.sched_phase_s = sched_phase_s
        self._bg_armed = False
        self._bg_last = -math.inf  # the wall clock's whole second of its last run
        # priority/multifactor (None: priority/basic, submit order): the queue is ordered
        # by priority, recomputed every calc period (hpcorch.sim.priority)
        self.priority = priority
        self._prio_armed = False
        self._prio_last = 0.0
        self.j_static: list[float] = []  # the priority's size/partition/QOS part
        self.j_user: list[int] = []  # index into _usage
        self._users: dict[int, int] = {}
        self._usage: list[float] = []  # decayed CPU-seconds per user
        self._shares: list[float] = []  # fair-share factor per user, as of the last decay
        # Units per node: with more than one (jobs that share nodes, as -n cores do), a
        # backfill reservation holds whole nodes, as Slurm's node-space map does.
        if cores_per_node < 1:
            raise ValueError(f"cores_per_node must be at least 1, got {cores_per_node}")
        self.cores_per_node = cores_per_node
        self._bf_armed = False
        self._bf_last = -math.inf
        self._rng = random.Random(seed)
        # node state: job id, _FREE or _DOWN; free nodes in a stack with positions for O(1) removal
        self.node_job: list[int] = [_FREE] * nodes
        self._free: list[int] = list(range(nodes - 1, -1, -1))
        self._pos: list[int] = list(range(nodes - 1, -1, -1))
        self.down = 0
        # per-job parallel lists
        self.j_need: list[int] = []
        self.j_req: list[float] = []
        self.j_run: list[float] = []
        self.j_submit: list[float] = []
        self.j_start: list[float] = []
        self.j_first_start: list[float] = []
        self.j_end: list[float] = []
        self.j_state: list[SimJobState] = []
        self.j_key: list[tuple[int, float, int]] = []
        self.j_epoch: list[int] = []
        self.j_tier: list[int] = []
        self.j_flags: list[int] = []
        self.j_owner: list[JobListener | None] = []
        self.j_nodes: list[list[int] | None] = []
        self.j_requeues: list[int] = []
        # queue: sorted (key, jid); running: sorted (requested end, jid)
        self.queue: list[tuple[tuple[int, float, int], int]] = []
        self.running: list[tuple[float, int]] = []
        self.open_sources = 0
        # accounting
        self.busy_node_s = 0.0
        self.first_submit = math.inf
        self.last_end = -math.inf
        self.node_failures = 0
        self.preemptions = 0
        self.passes = 0
        self.reservations: list[tuple[int, float]] | None = None  # (jid, shadow) when recording
        self._sched_pending = False
        self._failing = False
        self._k_end = loop.register(self._on_end)
        self._k_sched = loop.register(self._on_sched)
        self._k_fail = loop.register(self._on_fail)
        self._k_up = loop.register(self._on_up)
        self._k_bf = loop.register(self._on_backfill)
        self._k_bg = loop.register(self._on_background)
        self._k_prio = loop.register(self._on_priority)

    # flags
    _REQUEUE = 1
    _KILL_AT_WALLTIME = 2
    _PREEMPTIBLE = 4
    _FAILS = 8

    # -- public API (what sbatch / scancel / scontrol would do) ---------------

    @property
    def free_nodes(self) -> int:
        return len(self._free)

    @property
    def jobs(self) -> int:
        return len(self.j_need)

    def submit(
        self,
        nodes: int,
        req_time: float,
        run_time: float = math.inf,
        *,
        tier: int = 0,
        preemptible: bool = False,
        requeue: bool = True,
        kill_at_walltime: bool = True,
        fails: bool = False,
        owner: JobListener | None = None,
        submit_time: float | None = None,
        user: int = 0,
        partition: str = "",
        qos: str = "",
    ) -> int:
        """Queue a job; returns its id. ``run_time=inf`` runs until cancelled or walltime."""
        if not 1 <= nodes <= self.nodes:
            raise ResourceError(
                f"job asks for {nodes} nodes; cluster {self.name!r} has {self.nodes}: "
                "ask for fewer nodes or simulate a larger cluster (--nodes)"
            )
        now = self.loop.now if submit_time is None else submit_time
        jid = len(self.j_need)
        self.j_need.append(nodes)
        self.j_req.append(req_time if req_time > 0 else run_time)
        self.j_run.append(run_time)
        self.j_submit.append(now)
        self.j_start.append(-1.0)
        self.j_first_start.append(-1.0)
        self.j_end.append(-1.0)
        self.j_state.append(SimJobState.PENDING)
        key = (
            (-tier, now, jid)
            if self.priority is None
            else self._prio_key(jid, tier, user, partition, qos)
        )
        self.j_key.append(key)
        self.j_epoch.append(0)
        self.j_tier.append(tier)
        flags = (
            (self._REQUEUE if requeue else 0)
            | (self._KILL_AT_WALLTIME if kill_at_walltime else 0)
            | (self._PREEMPTIBLE if preemptible else 0)
            | (self._FAILS if fails else 0)
        )
        self.j_flags.append(flags)
        self.j_owner.append(owner)
        self.j_nodes.append(None)
        self.j_requeues.append(0)
        self.first_submit = min(self.first_submit, now)
        queue = self.queue
        if not queue or queue[-1][0] < key:
            queue.append((key, jid))
        else:
            bisect.insort(queue, (key, jid))
        if self.batch_sched_delay_s is None:
            self._kick()
        else:
            self._arm_background()
            self._arm_backfill()
        self._arm_failures()
        return jid

    def _prio_key(
        self, jid: int, tier: int, user: int, partition: str, qos: str
    ) -> tuple[int, float, int]:
        """A new job's queue key under priority/multifactor: its priority at submit."""
        prio = self.priority
        assert prio is not None
        cpn = self.cores_per_node
        need = self.j_need[jid]
        self.j_static.append(
            prio.static(-(-need // cpn), need, -(-self.nodes // cpn), self.nodes, partition, qos)
        )
        if user not in self._users:
            self._users[user] = len(self._usage)
            self._usage.append(0.0)
        self.j_user.append(self._users[user])
        if len(self._shares) < len(self._usage):  # a new user: no usage, the top rank
            self._shares = fair_tree_factors(self._usage)
        fairshare = self._shares[self._users[user]]
        if not self._prio_armed:
            self._prio_armed = True
            self._prio_last = self.loop.now
            self.loop.at(prio.next_calc(self.loop.now), self._k_prio)
        return (-tier, -prio.priority(self.j_static[jid], 0.0, fairshare), jid)

    def _on_priority(self, _payload: object) -> None:
        """Slurm's decay thread, every PriorityCalcPeriod: usage decays and grows by what
        ran (the fair-share factors follow)."""
        prio = self.priority
        assert prio is not None
        now = self.loop.now
        decay = prio.decay(now - self._prio_last)
        usage = [u * decay for u in self._usage]
        for _, jid in self.running:
            usage[self.j_user[jid]] += self.j_need[jid] * (
                now - max(self.j_start[jid], self._prio_last)
            )
        self._usage = usage
        self._shares = fair_tree_factors(usage)
        self._prio_last = now
        if self.queue or self.running or self.open_sources:
            self.loop.at(prio.next_calc(now), self._k_prio)
        else:
            self._prio_armed = False

    def _reprioritise(self) -> None:
        """Every pending job's priority now, the queue re-sorted: the real slurmctld
        reorders pending jobs by their current age at its passes, not only once every
        PriorityCalcPeriod (on the dev cluster, a 60 s period modelled as a 60 s step
        gave start_error_mean 0.47; recomputed at every pass, 0.14)."""
        prio = self.priority
        assert prio is not None
        now = self.loop.now
        shares, static, user, submit, keys = (
            self._shares, self.j_static, self.j_user, self.j_submit, self.j_key,
        )  # fmt: skip
        queue = []
        for key, jid in self.queue:
            new = prio.priority(static[jid], now - submit[jid], shares[user[jid]])
            keys[jid] = (key[0], -new, jid)
            queue.append((keys[jid], jid))
        queue.sort()
        self.queue = queue

    def cancel(self, jid: int) -> None:
        """scancel: a pending job leaves the queue, a running one frees its nodes."""
        state = self.j_state[jid]
        if state is SimJobState.PENDING:
            self._dequeue(jid)
            self._finish(jid, SimJobState.CANCELLED)
        elif state is SimJobState.RUNNING:
            self._stop(jid, SimJobState.CANCELLED, requeue=False)
        self._kick()

    def preempt(self, jid: int) -> None:
        """Preempt a running job (PreemptMode=REQUEUE when the job allows requeue)."""
        if self.j_state[jid] is SimJobState.RUNNING:
            self.preemptions += 1
            self._stop(jid, SimJobState.PREEMPTED, requeue=bool(self.j_flags[jid] & self._REQUEUE))
            self._kick()

    def fail_node(self, node: int, repair_s: float | None = None) -> None:
        """Take a node down: its job ends NODE_FAIL (requeued if allowed); back after repair."""
        owner_job = self.node_job[node]
        if owner_job == _DOWN:
            return
        self.node_failures += 1
        if owner_job == _FREE:
            self._take_free(node)
        self.node_job[node] = _DOWN  # before the owner hears of it, so it can tell which node
        self.down += 1
        if owner_job != _FREE:
            self._stop(
                owner_job,
                SimJobState.NODE_FAIL,
                requeue=bool(self.j_flags[owner_job] & self._REQUEUE),
                failed_node=node,
            )
        self.loop.after(self.repair_s if repair_s is None else repair_s, self._k_up, node)
        self._kick()

    def remaining(self, jid: int) -> float:
        """Seconds of walltime left to a running job."""
        return self.j_start[jid] + self.j_req[jid] - self.loop.now

    def estimate_start(self, nodes: int) -> float:
        """Rough start time of a new ``nodes``-node job: running ends plus the queue's backlog."""
        now = self.loop.now
        backlog = sum(self.j_need[j] * self.j_req[j] for _, j in self.queue)
        avail = len(self._free)
        start = now
        if avail < nodes:
            for end, jid in self.running:
                avail += self.j_need[jid]
                if avail >= nodes:
                    start = max(end, now)
                    break
        return start + backlog / self.nodes

    # -- scheduling -----------------------------------------------------------

    def _kick(self) -> None:
        if not self._sched_pending:
            self._sched_pending = True
            self.loop.at(self.loop.now, self._k_sched)

    def _on_sched(self, _payload: object) -> None:
        self._sched_pending = False
        self.schedule()

    def schedule(self) -> None:
        """One scheduling pass over the queue (EASY, FIFO or Slurm's main scheduler)."""
        if not self.queue:
            return
        if self.priority is not None:
            self._reprioritise()
        queue = self.queue
        if self._free or (self.preemption and self.j_tier[queue[0][1]] > 0):
            self.passes += 1
            self._walk(self._main_pass if self.scheduler == "slurm" else self._pass)
        self._arm_backfill()

    def _arm_backfill(self) -> None:
        if self.scheduler == "slurm" and self.queue and not self._bf_armed:
            # sched/backfill runs on its own clock, every bf_interval
            # The backfill thread sleeps bf_interval after a cycle, then runs as soon as
            # something changed (it polls each second).
            self._bf_armed = True
            now = self.loop.now
            phase = self.bf_phase_s
            poll = phase + math.ceil(now - phase)
            self.loop.at(max(self._bf_last + self.bf_interval_s, poll), self._k_bf)

    def _arm_background(self) -> None:
        if self._bg_armed or self.batch_sched_delay_s is None:
            return
        self._bg_armed = True
        phase, origin = self.sched_phase_s, self.clock_origin_s
        tick = phase + math.ceil(self.loop.now - phase)
        # time_t arithmetic: whole seconds of the wall clock since its last run
        while math.floor(tick + origin) - self._bg_last < self.batch_sched_delay_s:
            tick += 1.0
        self.loop.at(tick, self._k_bg)

    def _on_background(self, _payload: object) -> None:
        self._bg_armed = False
        self._bg_last = math.floor(self.loop.now + self.clock_origin_s)
        self.schedule()

    def _walk(self, one_pass: Callable[[_Queue], _Queue]) -> None:
        # Owners may submit, cancel or requeue from their callbacks while the pass
        # walks the queue: they see a fresh list, merged back afterwards.
        walking = self.queue
        self.queue = []
        keep = one_pass(walking)
        added = self.queue
        self.queue = keep
        if added:
            for entry in added:
                bisect.insort(keep, entry)
            self._kick()

    def _on_backfill(self, _payload: object) -> None:
        self._bf_armed = False
        if not self.queue:
            return
        if self.priority is not None:
            self._reprioritise()
        self.passes += 1
        self._bf_last = self.loop.now
        if self.cores_per_node > 1:
            self._walk(self._backfill_nodes_pass)
        else:
            self._walk(self._backfill_pass)
        # Not re-armed here: until a job arrives or ends (whose schedule() arms the timer
        # again) another cycle would see the same map and start nothing.

    def _main_pass(self, queue: _Queue) -> _Queue:
        """Slurm's main scheduler: start jobs in priority order until one does not fit."""
        for idx, entry in enumerate(queue):
            jid = entry[1]
            if self.j_state[jid] is not SimJobState.PENDING:
                continue
            if self.j_need[jid] > len(self._free):
                return [e for e in queue[idx:] if self.j_state[e[1]] is SimJobState.PENDING]
            self._start(jid)
        return []

    def _backfill_pass(self, queue: _Queue) -> _Queue:
        """Slurm's backfill: each tested job starts now or reserves its earliest slot."""
        now = self.loop.now
        need_of, req_of, state_of = self.j_need, self.j_req, self.j_state
        space = TimeMap(now, len(self._free), self.bf_resolution_s)
        for end, jid in self.running:
            space.release(end, need_of[jid])
        keep: _Queue = []
        limit = self.bf_max_job_test
        tested = 0
        for idx, entry in enumerate(queue):
            jid = entry[1]
            if state_of[jid] is not SimJobState.PENDING:
                continue
            if limit is not None and tested >= limit:
                keep.extend(e for e in queue[idx:] if state_of[e[1]] is SimJobState.PENDING)
                break
            tested += 1
            need, req = need_of[jid], req_of[jid]
            when = space.earliest(need, req, self.bf_window_s)
            if when <= now and need <= len(self._free):
                self._start(jid)
                space.take(now, req, need)
                continue
            if when != math.inf:
                space.take(when, req, need)
                if self.reservations is not None:
                    self.reservations.append((jid, when))
            keep.append(entry)
        return keep

    def _backfill_nodes_pass(self, queue: _Queue) -> _Queue:
        """Slurm's backfill when jobs share nodes (``cores_per_node`` > 1): see
        :mod:`hpcorch.sim.nodespace` — cores free at running jobs' exact ends, and a job
        that cannot start now reserves whole nodes for the ones behind it."""
        now = self.loop.now
        cpn = self.cores_per_node
        free_now = [0] * (-(-self.nodes // cpn))
        for u in self._free:
            free_now[u // cpn] += 1
        space = NodeSpace(
            now, free_now, self.bf_resolution_s, self.bf_window_s, self.clock_origin_s
        )
        for end, jid in self.running:
            for node, cores in self._per_node(self.j_nodes[jid] or ()).items():
                space.release(node, end, cores)
        keep: _Queue = []
        limit = self.bf_max_job_test
        tested = 0
        state_of, need_of, req_of = self.j_state, self.j_need, self.j_req
        for idx, entry in enumerate(queue):
            jid = entry[1]
            if state_of[jid] is not SimJobState.PENDING:
                continue
            if limit is not None and tested >= limit:
                keep.extend(e for e in queue[idx:] if state_of[e[1]] is SimJobState.PENDING)
                break
            tested += 1
            need, req = need_of[jid], req_of[jid]
            when, free = space.earliest(need, req)
            if when <= now:
                chosen = set(pick_nodes(free, need))
                units = [u for u in self._free if u // cpn in chosen][-need:]
                self._start(jid, units)
                space.start_now(self._per_node(units), req)
                continue
            if when != math.inf:
                space.hold(pick_nodes(free, need), when, req)
                if self.reservations is not None:
                    self.reservations.append((jid, when))
            keep.append(entry)
        return keep

    def _place(self, need: int) -> list[int]:
        """Free units for a job on shared nodes: the fewest nodes, best fit first (as
        Slurm's cons_tres packs a job), not cores scattered over every node."""
        cpn = self.cores_per_node
        free_per = [0] * (-(-self.nodes // cpn))
        for u in self._free:
            free_per[u // cpn] += 1
        chosen = set(pick_nodes(free_per, need))
        return [u for u in self._free if u // cpn in chosen][-need:]

    def _per_node(self, units: Iterable[int]) -> dict[int, int]:
        per: dict[int, int] = {}
        cpn = self.cores_per_node
        for u in units:
            per[u // cpn] = per.get(u // cpn, 0) + 1
        return per

    def _pass(self, queue: _Queue) -> _Queue:
        now = self.loop.now
        need_of = self.j_need
        req_of = self.j_req
        state_of = self.j_state
        pending = SimJobState.PENDING
        free = len(self._free)
        keep: list[tuple[tuple[int, float, int], int]] = []
        shadow = -1.0
        extra = 0
        tested = 0
        limit = self.bf_max_job_test
        for idx, entry in enumerate(queue):
            jid = entry[1]
            if (free == 0 and (shadow >= 0.0 or not self.preemption or self.j_tier[jid] <= 0)) or (
                limit is not None and shadow >= 0.0 and tested >= limit
            ):
                keep.extend(e for e in queue[idx:] if state_of[e[1]] is pending)
                break
            if state_of[jid] is not pending:
                continue  # cancelled by an owner's callback during this pass
            need = need_of[jid]
            if shadow < 0.0:
                if need <= free:
                    self._start(jid)
                    free = len(self._free)
                    continue
                if self.preemption and self.j_tier[jid] > 0 and self._preempt_for(jid, need):
                    self._start(jid)
                    free = len(self._free)
                    continue
                shadow, extra = self._reservation(need, free, now)
                if self.reservations is not None:
                    self.reservations.append((jid, shadow))
                keep.append(entry)
                continue
            tested += 1
            if need <= free:
                if now + req_of[jid] <= shadow:
                    self._start(jid)
                    free = len(self._free)
                    continue
                if need <= extra:
                    extra -= need
                    self._start(jid)
                    free = len(self._free)
                    continue
            keep.append(entry)
        return keep

    def _reservation(self, need: int, free: int, now: float) -> tuple[float, int]:
        """Shadow time and extra nodes for a head job of ``need`` nodes.

        Jobs past their requested end are expected to end now. The extra nodes are all
        those free at the shadow time, so every job expected to end then counts.
        """
        avail = free
        need_of = self.j_need
        running = self.running
        shadow = math.inf
        for end, jid in running:
            when = end if end > now else now
            if when > shadow:
                break
            avail += need_of[jid]
            if avail >= need:
                shadow = when
        if shadow == math.inf:
            # Not enough even when everything running ends (nodes are down): no reservation.
            return math.inf, 0
        return shadow, avail - need

    def _preempt_for(self, jid: int, need: int) -> bool:
        tier = self.j_tier[jid]
        victims = [
            j
            for _, j in self.running
            if self.j_tier[j] < tier and self.j_flags[j] & self._PREEMPTIBLE
        ]
        victims.sort(key=lambda j: -self.j_start[j])  # youngest first: least work lost
        avail = len(self._free)
        chosen = []
        for j in victims:
            if avail >= need:
                break
            chosen.append(j)
            avail += self.j_need[j]
        if avail < need:
            return False
        for j in chosen:
            self.preempt(j)
        return True

    def _start(self, jid: int, units: list[int] | None = None) -> None:
        now = self.loop.now
        need = self.j_need[jid]
        free = self._free
        node_job = self.node_job
        pos = self._pos
        if units is None and self.cores_per_node > 1:
            units = self._place(need)
        if units is None:
            nodes = free[-need:]
            del free[-need:]
        else:  # these free units (on nodes chosen as Slurm's select plugin would)
            nodes = units
            for n in nodes:
                self._take_free(n)
        for n in nodes:
            node_job[n] = jid
            pos[n] = -1
        self.j_nodes[jid] = nodes
        self.j_state[jid] = SimJobState.RUNNING
        self.j_start[jid] = now
        if self.j_first_start[jid] < 0:
            self.j_first_start[jid] = now
        req = self.j_req[jid]
        run = self.j_run[jid]
        end_state = SimJobState.FAILED if self.j_flags[jid] & self._FAILS else SimJobState.COMPLETED
        if self.j_flags[jid] & self._KILL_AT_WALLTIME and run > req + self.over_time_limit_s:
            run = req + self.over_time_limit_s
            end_state = SimJobState.TIMEOUT
        entry = (now + req, jid)
        running = self.running
        # Compare whole entries: on a tie of ends, appending a lower job id would unsort
        # the list, and _stop's bisect would then miss the entry and leave a phantom job.
        if not running or running[-1] < entry:
            running.append(entry)
        else:
            bisect.insort(running, entry)
        if run != math.inf:
            payload = (jid, self.j_epoch[jid], end_state)
            self.loop.at(now + run + self.completing_s, self._k_end, payload)
        owner = self.j_owner[jid]
        if owner is not None:
            owner.job_started(jid, nodes)

    def _on_end(self, payload: tuple[int, int, SimJobState]) -> None:
        jid, epoch, state = payload
        if epoch != self.j_epoch[jid] or self.j_state[jid] is not SimJobState.RUNNING:
            return  # stale: the job was killed, preempted or cancelled meanwhile
        self._stop(jid, state, requeue=False)
        self._kick()

    def _stop(self, jid: int, state: SimJobState, *, requeue: bool, failed_node: int = -1) -> None:
        """End a running job: free its nodes, account, requeue or finish, tell the owner."""
        now = self.loop.now
        nodes = self.j_nodes[jid] or []
        free = self._free
        pos = self._pos
        node_job = self.node_job
        for n in nodes:
            if n == failed_node:
                continue
            node_job[n] = _FREE
            pos[n] = len(free)
            free.append(n)
        self.j_nodes[jid] = None
        self.busy_node_s += len(nodes) * (now - self.j_start[jid])
        if self.priority is not None:  # fair-share: what it used since the last decay pass
            ran = now - max(self.j_start[jid], self._prio_last)
            self._usage[self.j_user[jid]] += self.j_need[jid] * ran
        exp_end = self.j_start[jid] + self.j_req[jid]
        running = self.running
        i = bisect.bisect_left(running, (exp_end, jid))
        if i < len(running) and running[i][1] == jid:
            del running[i]
        self.j_epoch[jid] += 1
        self.j_end[jid] = now
        self.last_end = max(self.last_end, now)
        owner = self.j_owner[jid]
        if requeue:
            self.j_requeues[jid] += 1
            self.j_state[jid] = SimJobState.PENDING
            bisect.insort(self.queue, (self.j_key[jid], jid))
        else:
            self.j_state[jid] = state
        if owner is not None:
            owner.job_ended(jid, state)

    def _finish(self, jid: int, state: SimJobState) -> None:
        self.j_state[jid] = state
        self.j_end[jid] = self.loop.now
        owner = self.j_owner[jid]
        if owner is not None:
            owner.job_ended(jid, state)

    def _dequeue(self, jid: int) -> None:
        entry = (self.j_key[jid], jid)
        i = bisect.bisect_left(self.queue, entry)
        if i < len(self.queue) and self.queue[i] == entry:
            del self.queue[i]

    def _take_free(self, node: int) -> None:
        free = self._free
        pos = self._pos
        i = pos[node]
        last = free[-1]
        free[i] = last
        pos[last] = i
        free.pop()
        pos[node] = -1

    # -- node failures --------------------------------------------------------

    def _busy(self) -> bool:
        return bool(self.queue or self.running or self.open_sources)

    def _arm_failures(self) -> None:
        if self.mtbf_s and not self._failing:
            self._failing = True
            self.loop.after(self._rng.expovariate(self.nodes / self.mtbf_s), self._k_fail)

    def _on_fail(self, _payload: object) -> None:
        self._failing = False
        if not self._busy():
            return  # stop the failure process when there is no work; submit re-arms it
        self.fail_node(self._rng.randrange(self.nodes))
        self._arm_failures()

    def _on_up(self, node: int) -> None:
        if self.node_job[node] != _DOWN:
            return
        self.down -= 1
        self.node_job[node] = _FREE
        self._pos[node] = len(self._free)
        self._free.append(node)
        self._kick()
