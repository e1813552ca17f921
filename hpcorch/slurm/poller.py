"""One poll, many watchers: a batched Slurm query per interval, fanned out as updates.

Every interval the :class:`Poller` asks Slurm once for all the jobs any
watcher follows (``client.jobs(ids)``) and, if anyone watches nodes, for the
nodes of the partitions those jobs use — on a poll that saw a job change, else
every few polls (slurmctld packs every node of the site for any node query) —
never one call per job, never the whole site, and hands each watcher the
changes it asked for. When
nothing changed for a few polls the interval grows (up to ``idle_max_s``) and
snaps back on the first change or a newly watched job. When Slurm fails or
answers slowly it backs off exponentially (up to ``max_interval_s``) and says
so once in the log.

The decisions live in :class:`PollCore` (pure: what to ask, what changed,
how long to wait); :class:`Poller` is the thin thread around it.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from hpcorch.errors import SlurmError
from hpcorch.slurm.client import SlurmClient
from hpcorch.slurm.models import JobInfo, NodeInfo

__all__ = ["JobUpdate", "NodeUpdate", "PollCore", "Poller", "Subscription", "Update"]

logger = logging.getLogger(__name__)

# Quiet polls at the base interval before it grows: a pending job often starts within a few.
_QUIET_GRACE = 2
# Nodes are asked for on every poll that saw a job change, else once per this many polls: a
# node that fails takes its jobs with it (a job change), and a node query costs slurmctld
# every node of the site, whatever the partitions asked for.
_NODE_EVERY = 4


@dataclass(frozen=True, slots=True)
class JobUpdate:
    job: JobInfo
    previous: JobInfo | None


@dataclass(frozen=True, slots=True)
class NodeUpdate:
    node: NodeInfo
    previous: NodeInfo | None


Update = JobUpdate | NodeUpdate


@dataclass
class Subscription:
    """A watcher: the jobs it follows (None: every watched job), whether it wants nodes.

    Nodes are those of the partitions its jobs run in (no jobs yet: none); a
    watcher of every job (``jobs=None``) gets every node.
    """

    id: int
    callback: Callable[[Update], None]
    jobs: set[str] | None = None
    nodes: bool = False
    received: int = 0


@dataclass
class PollCore:
    """What to ask Slurm and what changed; no I/O, no clock of its own."""

    interval_s: float = 5.0
    max_interval_s: float = 120.0
    slow_s: float | None = None  # a poll slower than this counts as a sign of strain
    idle_max_s: float | None = None  # the interval grows up to this while nothing changes
    subscriptions: dict[int, Subscription] = field(default_factory=dict)
    jobs: dict[str, JobInfo] = field(default_factory=dict)
    nodes: dict[str, NodeInfo] = field(default_factory=dict)
    failures: int = 0
    slow_streak: int = 0
    quiet: int = 0  # polls in a row that changed nothing
    node_every: int = _NODE_EVERY
    since_nodes: int | None = None  # polls since nodes were last asked for (None: never)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def subscribe(
        self,
        callback: Callable[[Update], None],
        jobs: Iterable[str] | None = None,
        *,
        nodes: bool = False,
    ) -> Subscription:
        sub = Subscription(
            next(self._ids), callback, set(map(str, jobs)) if jobs is not None else None, nodes
        )
        self.subscriptions[sub.id] = sub
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self.subscriptions.pop(sub.id, None)

    def watch(self, sub: Subscription, job_ids: Iterable[str]) -> None:
        if sub.jobs is None:
            sub.jobs = set()
        new = set(map(str, job_ids)) - sub.jobs
        sub.jobs.update(new)
        if new:
            self.quiet = 0  # a new job: see it start at the base interval

    def wanted_jobs(self) -> list[str]:
        """Job ids to ask about: followed by someone and not yet seen ending."""
        ids: set[str] = set()
        for sub in self.subscriptions.values():
            if sub.jobs:
                ids |= sub.jobs
        return sorted(j for j in ids if not (j in self.jobs and self.jobs[j].terminal))

    def wants_nodes(self) -> bool:
        return any(sub.nodes for sub in self.subscriptions.values())

    def nodes_due(self, jobs: Iterable[JobInfo] = ()) -> bool:
        """Whether this poll asks for nodes: never asked yet, a job changed, or it is time."""
        if self.since_nodes is None or self.since_nodes + 1 >= self.node_every:
            return True
        return any(self.jobs.get(job.job_id) != job for job in jobs)

    def node_partitions(self, jobs: Iterable[JobInfo] = ()) -> set[str] | None:
        """The partitions whose nodes to ask for (None: every node), given this poll's jobs.

        Empty: no node watcher, or none of their jobs seen yet: no node query.
        """
        known = {j.job_id: j for j in (*self.jobs.values(), *jobs)}
        parts: set[str] = set()
        for sub in self.subscriptions.values():
            if not sub.nodes:
                continue
            if sub.jobs is None:
                return None
            parts.update(
                known[j].partition or "" for j in sub.jobs if j in known and known[j].partition
            )
        return parts

    def apply(
        self, jobs: Iterable[JobInfo], nodes: Iterable[NodeInfo] | None, took_s: float = 0.0
    ) -> list[tuple[Subscription, Update]]:
        """Record a poll's answer; return (watcher, update) pairs to deliver."""
        updates: list[Update] = []
        for job in jobs:
            before = self.jobs.get(job.job_id)
            if before != job:
                self.jobs[job.job_id] = job
                updates.append(JobUpdate(job, before))
        for node in nodes or ():
            before_node = self.nodes.get(node.name)
            if before_node != node:
                self.nodes[node.name] = node
                updates.append(NodeUpdate(node, before_node))
        if nodes is not None:
            self.since_nodes = 0
        elif self.since_nodes is not None:
            self.since_nodes += 1
        self.failures = 0
        self.quiet = 0 if updates else self.quiet + 1
        slow = self.slow_s is not None and took_s > self.slow_s
        self.slow_streak = self.slow_streak + 1 if slow else 0
        out: list[tuple[Subscription, Update]] = []
        for update in updates:
            for sub in self.subscriptions.values():
                if isinstance(update, JobUpdate):
                    if sub.jobs is not None and update.job.job_id in sub.jobs:
                        out.append((sub, update))
                elif sub.nodes:
                    out.append((sub, update))
        return out

    def failed(self) -> None:
        self.failures += 1

    def delay(self) -> float:
        """Seconds until the next poll: the interval, doubled per failure or slow poll, and
        doubled per quiet poll after the first ``_QUIET_GRACE`` (up to ``idle_max_s``)."""
        strain = self.failures + self.slow_streak
        if strain:
            return min(self.interval_s * (1 << min(strain, 16)), self.max_interval_s)
        idle = max(0, self.quiet - _QUIET_GRACE)
        if not idle or self.idle_max_s is None:
            return self.interval_s
        return max(self.interval_s, min(self.interval_s * (1 << min(idle, 16)), self.idle_max_s))


class Poller:
    """Runs a :class:`PollCore` against a client, in a daemon thread or step by step."""

    def __init__(
        self,
        client: SlurmClient,
        *,
        interval_s: float = 5.0,
        max_interval_s: float = 120.0,
        slow_s: float | None = None,
        idle_max_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.core = PollCore(
            interval_s,
            max_interval_s,
            slow_s if slow_s is not None else interval_s,
            # Default: a quiet run is polled at most every 4 intervals (and no rarer than backoff).
            idle_max_s if idle_max_s is not None else min(4 * interval_s, max_interval_s),
        )
        self.calls: Counter[str] = Counter()
        self.polls = 0
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._degraded = False

    # ------------------------------------------------------------------ watchers

    def subscribe(
        self,
        callback: Callable[[Update], None],
        jobs: Iterable[str] | None = None,
        *,
        nodes: bool = False,
    ) -> Subscription:
        with self._lock:
            return self.core.subscribe(callback, jobs, nodes=nodes)

    def watch(self, sub: Subscription, job_ids: Iterable[str]) -> None:
        with self._lock:
            self.core.watch(sub, job_ids)

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self.core.unsubscribe(sub)

    def job(self, job_id: str) -> JobInfo | None:
        """The last known state of a job."""
        return self.core.jobs.get(str(job_id))

    # ------------------------------------------------------------------ one poll

    def poll_once(self) -> bool:
        """Ask Slurm once (jobs + nodes) and deliver the changes. False when Slurm failed."""
        with self._lock:
            ids = self.core.wanted_jobs()
        started = self._clock()
        try:
            jobs = self.client.jobs(ids) if ids else []
            if ids:
                self.calls["jobs"] += 1
            with self._lock:
                partitions = self.core.node_partitions(jobs) if self.core.nodes_due(jobs) else set()
            nodes = None
            if partitions is None or partitions:
                nodes = self.client.nodes(None if partitions is None else sorted(partitions))
                self.calls["nodes"] += 1
        except SlurmError as exc:
            with self._lock:
                self.core.failed()
                delay = self.core.delay()
            if not self._degraded:
                logger.warning("Slurm poll failed (%s); backing off, next try in %.0fs", exc, delay)
                self._degraded = True
            return False
        took = self._clock() - started
        with self._lock:
            deliveries = self.core.apply(jobs, nodes, took)
            self.polls += 1
        if self._degraded:
            logger.warning("Slurm answers again; polling every %.0fs", self.core.interval_s)
            self._degraded = False
        for sub, update in deliveries:
            sub.received += 1
            try:
                sub.callback(update)
            except Exception:
                logger.exception("a Slurm watcher raised; it keeps receiving updates")
        return True

    # ------------------------------------------------------------------ thread

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="hpcorch-slurm-poller", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            self._stop.wait(self.core.delay())

    def stop(self, timeout: float | None = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
