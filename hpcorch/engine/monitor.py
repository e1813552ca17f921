"""A run's health: one batched Slurm poll and one Dask check per interval, fanned out.

Each tick the :class:`Monitor` asks

* Slurm, through :class:`~hpcorch.slurm.poller.Poller`, for the states of all
  the run's allocation jobs in one call and for the nodes in one call (never
  one call per job); when slurmctld does not answer, the poller backs off and
  the run goes on: the Dask workers do not need slurmctld;
* the Dask scheduler for its workers (one ``identity`` call): a worker that
  disappeared is *lost*, one that appeared *joined* (its node and Slurm job
  are asked once, from all new workers together).

Changes become :data:`MonitorEvent` records: written to the journal's
``events`` table (allocation states also to ``allocations``) and handed to
every watcher (:meth:`Monitor.subscribe`). The recovery code reads the
monitor's view (:meth:`node_healthy`, :meth:`worker`) as evidence; the
allocation controller subscribes to allocation and worker events.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from hpcorch.journal import Journal
from hpcorch.sites.model import Site
from hpcorch.slurm.client import SlurmClient
from hpcorch.slurm.connect import connect
from hpcorch.slurm.models import JobInfo, NodeInfo
from hpcorch.slurm.poller import JobUpdate, Poller, Update

__all__ = [
    "AllocationEvent",
    "Monitor",
    "MonitorEvent",
    "NodeEvent",
    "WorkerEvent",
    "WorkerInfo",
    "open_monitor",
    "whoami",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A Dask worker as the monitor knows it: where it runs and in which allocation."""

    address: str
    name: str = ""
    node: str | None = None
    job_id: str | None = None
    joined: float | None = None
    lost: float | None = None
    site: str | None = None
    """The site of ``job_id`` (its job's ``HPCORCH_SITE``): job ids repeat across sites."""


@dataclass(frozen=True, slots=True)
class AllocationEvent:
    job: JobInfo
    previous: JobInfo | None


@dataclass(frozen=True, slots=True)
class NodeEvent:
    node: NodeInfo
    previous: NodeInfo | None


@dataclass(frozen=True, slots=True)
class WorkerEvent:
    worker: WorkerInfo
    change: Literal["joined", "lost", "silent"]


MonitorEvent = AllocationEvent | NodeEvent | WorkerEvent


def whoami() -> dict[str, str | None]:
    """Run on a worker: its node, Slurm job and that job's site (from the job's environment)."""
    return {
        "node": os.environ.get("SLURMD_NODENAME") or socket.gethostname(),
        "job_id": os.environ.get("SLURM_JOB_ID"),
        "site": os.environ.get("HPCORCH_SITE") or None,
    }


class Monitor:
    """Watches one run's allocations, the site's nodes and the Dask workers.

    ``slurm`` is None on sites without Slurm (local): only workers are watched.
    ``dask_client`` is None in tests of the Slurm side alone. Call
    :meth:`start` for the background thread, or :meth:`tick` step by step.
    """

    def __init__(
        self,
        journal: Journal | None,
        *,
        slurm: SlurmClient | None = None,
        dask_client: Any = None,
        interval_s: float = 5.0,
        max_interval_s: float = 60.0,
        silent_after_s: float = 60.0,
        clock: Callable[[], float] = time.time,
        site: str | None = None,
    ) -> None:
        self.journal = journal
        self.site = site
        """The site whose Slurm ``slurm`` is (None: any; workers of other sites are not its)."""
        self.dask_client = dask_client
        self.interval_s = interval_s
        self.silent_after_s = silent_after_s
        self._clock = clock
        self.poller = (
            Poller(slurm, interval_s=interval_s, max_interval_s=max_interval_s, clock=clock)
            if slurm is not None
            else None
        )
        self._lock = threading.RLock()
        self._watchers: list[Callable[[MonitorEvent], None]] = []
        self._records: dict[str, dict[str, Any]] = {}
        # every node each allocation was seen on: after a node failure Slurm lists the job
        # COMPLETING without that node, then PENDING (requeued) with none, yet the
        # recovery must find the node that went down
        self._job_nodes: dict[str, tuple[str, ...]] = {}
        self._workers: dict[str, WorkerInfo] = {}
        self._silent: set[str] = set()
        self._announced: set[str] = set()
        self._next_slurm = 0.0
        self._last_refresh = -1e18
        self._nodes_seen = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sub = (
            self.poller.subscribe(self._on_slurm, [], nodes=True)
            if self.poller is not None
            else None
        )

    # ------------------------------------------------------------------ watchers

    def subscribe(self, callback: Callable[[MonitorEvent], None]) -> Callable[[], None]:
        """Hand every future event to ``callback``; returns the function that unsubscribes."""
        with self._lock:
            self._watchers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._watchers:
                    self._watchers.remove(callback)

        return unsubscribe

    def watch_allocations(self, allocations: Iterable[Mapping[str, Any] | str]) -> None:
        """Follow these Slurm jobs: journal allocation records (dicts) or bare job ids."""
        ids = []
        with self._lock:
            for alloc in allocations:
                record = {"job_id": alloc} if isinstance(alloc, str) else dict(alloc)
                job_id = str(record["job_id"])
                if not job_id.isdigit():  # a job not submitted yet has no Slurm id
                    continue
                ids.append(job_id)
                self._records[job_id] = {**self._records.get(job_id, {}), **record}
        if self.poller is not None and self._sub is not None and ids:
            self.poller.watch(self._sub, ids)

    # ------------------------------------------------------------------ the view

    def allocation(self, job_id: str) -> JobInfo | None:
        return self.poller.job(str(job_id)) if self.poller is not None else None

    def refresh(self, job_id: str, max_age_s: float = 2.0) -> JobInfo | None:
        """A job's state, polling Slurm now (for all watched jobs at once) unless it just did.

        Called when a worker is lost, to tell a cancelled or timed-out allocation
        from a failed node before the next interval.
        """
        if self.poller is None:
            return None
        self.watch_allocations([job_id])
        with self._lock:
            # While Slurm is failing, the last answer will do: never block the engine on it.
            fresh = self._clock() - self._last_refresh < max_age_s or self.poller.core.failures > 0
            if not fresh:
                self._last_refresh = self._clock()
        if not fresh and self.poller.poll_once():
            self._nodes_seen = True
        return self.poller.job(str(job_id))

    def job_nodes(self, job_id: str) -> tuple[str, ...]:
        """Every node an allocation was seen on (Slurm drops a failed one from the job)."""
        job = self.allocation(job_id)
        with self._lock:
            seen = self._job_nodes.get(str(job_id), ())
        now = tuple(job.nodes) if job is not None else ()
        return seen + tuple(n for n in now if n not in seen)

    def allocation_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._records, key=int)

    def node(self, name: str) -> NodeInfo | None:
        return self.poller.core.nodes.get(name) if self.poller is not None else None

    def node_healthy(self, name: str | None) -> bool | None:
        """False when Slurm saw the node down, failing or not responding; None when unknown."""
        info = self.node(name) if name else None
        return None if info is None else not info.failed

    def unhealthy_nodes(self) -> frozenset[str]:
        if self.poller is None:
            return frozenset()
        return frozenset(n.name for n in self.poller.core.nodes.values() if n.failed)

    def follows(self, site: str | None) -> bool:
        """Whether a job or node of ``site`` is this monitor's to look up in its Slurm.

        Job ids and node names repeat across clusters: another site's job 685 is
        not this site's job 685.
        """
        return site is None or self.site is None or site == self.site

    def worker(self, address: str) -> WorkerInfo | None:
        """A worker seen during the run, live or lost."""
        with self._lock:
            return self._workers.get(address)

    def live_workers(self) -> list[WorkerInfo]:
        with self._lock:
            return [w for w in self._workers.values() if w.lost is None]

    def saw(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Learn workers from attempt records (``worker``, ``node``, ``job_id``).

        A worker that ran a task and died before the next tick is still placed
        on its node and allocation: the evidence the recovery needs.
        """
        jobs = set()
        with self._lock:
            for rec in records:
                address = rec.get("worker")
                known = self._workers.get(address) if address else None
                if not address or (known is not None and known.node is not None):
                    continue
                job = str(rec["job_id"]) if rec.get("job_id") else None
                if known is not None:
                    # Joined unplaced (asking it where it runs failed): its records say.
                    self._workers[address] = replace(
                        known, node=rec.get("node"), job_id=job, site=rec.get("site")
                    )
                else:
                    self._workers[address] = WorkerInfo(
                        str(address),
                        node=rec.get("node"),
                        job_id=job,
                        joined=self._clock(),
                        site=rec.get("site"),
                    )
                if job:
                    jobs.add(job)
        if jobs:
            self.watch_allocations(sorted(jobs))

    # ------------------------------------------------------------------ AllocationStates

    def watch(self, site: str, job_ids: Iterable[str]) -> None:
        """Follow a pool's jobs (the scaler's ``AllocationStates``; one site per monitor)."""
        self.watch_allocations(list(job_ids))

    def job(self, site: str, job_id: str) -> JobInfo | None:
        return self.allocation(job_id)

    def close(self) -> None:
        self.stop()

    # ------------------------------------------------------------------ one tick

    def tick(self) -> None:
        """Check the Dask workers; poll Slurm when its (backed-off) interval has passed."""
        if self.dask_client is not None:
            self.check_workers()
        if self.poller is not None and self._clock() >= self._next_slurm:
            if self.poller.poll_once():
                self._nodes_seen = True
            self._next_slurm = self._clock() + self.poller.core.delay()

    def check_workers(self) -> None:
        """One call to the Dask scheduler: which workers joined, which were lost."""
        try:
            info = self.dask_client.scheduler_info(n_workers=-1)
        except Exception as exc:  # the scheduler lives in this process; it only fails at exit
            logger.debug("cannot ask the Dask scheduler for its workers: %s", exc)
            return
        live: dict[str, Any] = info.get("workers", {})
        now = self._clock()
        with self._lock:
            known = {a for a, w in self._workers.items() if w.lost is None}
            placed_before = {a: w for a, w in self._workers.items() if w.node is not None}
        new = [a for a in live if a not in self._announced]
        gone = [a for a in known if a not in live]
        # Asked again at each tick: a worker whose first answer was lost (a connection
        # to a just-started worker can drop) would stay on no node and in no allocation.
        unknown = [
            a for a in live if a in self._announced and a in known and a not in placed_before
        ]
        unplaced = [a for a in new if a not in placed_before] + unknown
        placed = self._identify(unplaced) if unplaced else {}
        events: list[MonitorEvent] = []
        found: set[str] = set()
        with self._lock:
            for address in unknown:
                where = placed.get(address, {})
                if where.get("node") and self._workers[address].node is None:
                    self._workers[address] = replace(
                        self._workers[address],
                        node=where.get("node"),
                        job_id=where.get("job_id"),
                        site=where.get("site"),
                    )
                    if where.get("job_id") and self.follows(where.get("site")):
                        found.add(str(where["job_id"]))
            for address in new:
                before = placed_before.get(address)
                where = placed.get(address, {})
                worker = WorkerInfo(
                    address,
                    str(live[address].get("name", "")),
                    where.get("node") or (before.node if before else None),
                    where.get("job_id") or (before.job_id if before else None),
                    joined=before.joined if before else now,
                    site=where.get("site") or (before.site if before else None),
                )
                self._announced.add(address)
                self._workers[address] = worker
                events.append(WorkerEvent(worker, "joined"))
            for address in gone:
                worker = replace(self._workers[address], lost=now)
                self._workers[address] = worker
                events.append(WorkerEvent(worker, "lost"))
            for address, data in live.items():
                last = data.get("last_seen", data.get("last-seen"))
                if last is None or address in self._silent:
                    continue
                if now - float(last) > self.silent_after_s:
                    self._silent.add(address)
                    events.append(WorkerEvent(self._workers[address], "silent"))
        jobs = {
            e.worker.job_id
            for e in events
            if isinstance(e, WorkerEvent)
            and e.change == "joined"
            and e.worker.job_id
            and self.follows(e.worker.site)
        }
        jobs |= found
        if jobs:
            self.watch_allocations(sorted(j for j in jobs if j is not None))
        for event in events:
            self._emit(event)

    def _identify(self, addresses: list[str]) -> dict[str, dict[str, str | None]]:
        try:
            found: dict[str, dict[str, str | None]] = self.dask_client.run(
                whoami, workers=addresses, on_error="return"
            )
        except Exception as exc:
            logger.debug("cannot ask new workers where they run: %s", exc)
            return {}
        return {a: v for a, v in found.items() if isinstance(v, dict)}

    def _on_slurm(self, update: Update) -> None:
        if isinstance(update, JobUpdate):
            self._emit(AllocationEvent(update.job, update.previous))
        else:
            first = update.previous is None
            # The first answer lists every node of the cluster: keep only the bad news.
            if first and not update.node.failed and not self._nodes_seen:
                return
            self._emit(NodeEvent(update.node, update.previous))

    # ------------------------------------------------------------------ fan-out

    def _emit(self, event: MonitorEvent) -> None:
        self._journal(event)
        with self._lock:
            watchers = list(self._watchers)
        for watcher in watchers:
            try:
                watcher(event)
            except Exception:
                logger.exception("a monitor watcher raised; it keeps receiving events")

    def _journal(self, event: MonitorEvent) -> None:
        if isinstance(event, AllocationEvent):
            job = event.job
            before = event.previous.state.value if event.previous is not None else None
            if before != job.state.value:
                logger.info("allocation %s: %s -> %s", job.job_id, before, job.state.value)
            with self._lock:
                record = self._records.setdefault(job.job_id, {"job_id": job.job_id})
                seen = self._job_nodes.get(job.job_id, ())
                self._job_nodes[job.job_id] = seen + tuple(n for n in job.nodes if n not in seen)
                record.update(
                    state=job.state.value,
                    nodes=job.node_count or len(job.nodes) or record.get("nodes"),
                    start=job.start or record.get("start"),
                    end=job.end if job.terminal else None,
                )
                record.setdefault("partition", job.partition)
                row = dict(record)
            if self.journal is None:
                return
            # Rows are owned by whoever submitted the job (the scaler): only a row given
            # whole to watch_allocations is kept up to date here.
            if row.get("site"):
                self.journal.record_allocation(**row)
            self.journal.event(
                "allocation",
                job_id=job.job_id,
                state=job.state.value,
                previous=before,
                nodes=list(job.nodes),
                reason=job.reason,
            )
        elif isinstance(event, NodeEvent):
            node = event.node
            before = str(event.previous.status) if event.previous is not None else None
            if node.failed or (event.previous is not None and event.previous.failed):
                logger.warning("node %s: %s -> %s", node.name, before, node.status)
            if self.journal is not None:
                self.journal.event(
                    "node",
                    node=node.name,
                    state=str(node.status),
                    previous=before,
                    reason=node.reason,
                )
        else:
            w = event.worker
            if event.change != "joined":
                logger.warning(
                    "worker %s on %s (job %s) %s", w.address, w.node, w.job_id, event.change
                )
            if self.journal is not None:
                self.journal.event(
                    f"worker_{event.change}",
                    worker=w.address,
                    name=w.name,
                    node=w.node,
                    job_id=w.job_id,
                    site=w.site,
                )

    # ------------------------------------------------------------------ thread

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="hpcorch-monitor", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                logger.exception("monitor tick failed; trying again next interval")
            self._stop.wait(self.interval_s)

    def stop(self, timeout: float | None = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self.poller is not None:
            self.poller.client.close()


def open_monitor(
    site: Site, dask_client: Any, journal: Journal, allocations: Iterable[Mapping[str, Any]] = ()
) -> Monitor:
    """Start the monitor of a run on ``site``: Slurm too when the site has it."""
    slurm = None
    if site.kind == "slurm":
        slurm = connect(site)
    monitor = Monitor(journal, slurm=slurm, dask_client=dask_client, site=site.name)
    monitor.watch_allocations(allocations)
    monitor.start()
    return monitor
