"""The engine loop: submit a validated workflow to Dask, follow it, journal it.

The whole ready-or-waiting graph goes to the scheduler in one ``update-graph``
with parent futures as task arguments, so results flow worker to worker and
Dask starts a child the moment its parents end. Tasks carry critical-path
priorities and resource restrictions as per-key annotations. The driver only
sees completion notices (in batches, results not fetched),
collects attempt records from the workers in batches, and resubmits a failed
task with its descendants when the retry decision says so.

Bundling (:mod:`hpcorch.policies.bundling`): in a large sweep, independent
function and command tasks are not part of that graph. They wait in the driver, per
resource request, and go out as bundles — one Dask task running many of them
(:func:`~hpcorch.engine.worker.execute_bundle`) — a few per worker slot at a
time, each bundle sized from the durations seen so far. A task that fails in
a bundle is retried on its own; its bundle-mates keep their one attempt.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from dask._expr import LLGExpr
from dask._task_spec import Task
from dask._task_spec import TaskRef as DaskRef
from dask.base import annotate
from distributed.client import FutureCancelledError

from hpcorch import dag
from hpcorch.childenv import site_secrets
from hpcorch.engine import reconnect, retry
from hpcorch.engine.commands import command_argv, failure_name
from hpcorch.engine.completions import Completions
from hpcorch.engine.monitor import Monitor
from hpcorch.engine.recovery import Recovery
from hpcorch.engine.worker import (
    BundleOutcome,
    Payload,
    drain,
    execute,
    execute_bundle,
    load_result,
)
from hpcorch.journal import Journal
from hpcorch.placement.fit import partition_for
from hpcorch.placement.placing import Placing, knobs_resource, placing_for
from hpcorch.policies import bundling
from hpcorch.policies.state import site_limits
from hpcorch.provision import horizon
from hpcorch.provision.pools import task_resources
from hpcorch.provision.reaper import end_attempts, end_tasks
from hpcorch.sites.model import Site
from hpcorch.sites.resolve import local_site
from hpcorch.spec import TaskRef, TaskSpec, WorkflowSpec, resource_twin

__all__ = ["TERMINAL", "Engine", "RunSummary", "TaskFailure"]

logger = logging.getLogger(__name__)

TERMINAL = frozenset({"succeeded", "failed", "upstream_failed", "cancelled"})
_COLLECT_INTERVAL_S = 0.5
_GROUP_RE = re.compile(r"[-_.:@+]*\d+\Z")


@dataclass(frozen=True)
class TaskFailure:
    task_id: str
    failure_class: str
    message: str


@dataclass
class RunSummary:
    run_id: str
    run_dir: Path
    state: str
    counts: dict[str, int]
    failures: list[TaskFailure] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.state == "succeeded"


class _Edges(dict[str, Sequence[str]]):
    """Parents or children by task; a task with none has no entry (and reads as none)."""

    def __missing__(self, task_id: str) -> Sequence[str]:
        return ()


class _PerKey:
    """A per-key annotation the scheduler evaluates for each task (picklable)."""

    def __init__(self, values: Mapping[str, Any], default: Any) -> None:
        self.values = dict(values)
        self.default = default

    def __call__(self, key: str) -> Any:
        return self.values.get(key, self.default)


_T = TypeVar("_T")


def _refs(value: Any, found: set[str]) -> None:
    if isinstance(value, TaskRef):
        found.add(value.id)
    elif isinstance(value, list | tuple):
        for v in value:
            _refs(v, found)
    elif isinstance(value, dict):
        for v in value.values():
            _refs(v, found)


class Engine:
    """Runs one workflow on one Dask client and keeps the journal in step.

    ``done`` are tasks that already succeeded (resume, memo hits): they are
    not run again; their stored results feed the tasks that need them.
    """

    def __init__(
        self,
        spec: WorkflowSpec,
        *,
        client: Any,
        journal: Journal,
        run_id: str,
        run_dir: Path,
        done: Iterable[str] = (),
        attempts: Mapping[str, int] | None = None,
        memo: Mapping[str, str] | None = None,
        cache_dir: Path | None = None,
        use_resources: bool = True,
        keep_results: bool = False,
        mpi_launcher: tuple[str, ...] = ("mpirun",),
        site: Site | None = None,
        retry_config: retry.RetryConfig | None = None,
        on_progress: Callable[[dict[str, int]], None] | None = None,
        monitor: Monitor | None = None,
        on_submitted: Callable[[], None] | None = None,
        bundle_config: bundling.BundleConfig | None = None,
    ) -> None:
        self.spec = spec
        self.client = client
        self.journal = journal
        self.run_id = run_id
        self.run_dir = run_dir
        self._log_dir = str(self.run_dir / "logs")  # per payload: a Path join costs
        self.keep_results = keep_results
        self.mpi_launcher = mpi_launcher
        self.site = site or local_site()
        self.limits = site_limits(self.site)
        self.retry_config = retry_config or retry.RetryConfig()
        self.recovery = Recovery(self.site, monitor=monitor, config=self.retry_config)
        self.on_progress = on_progress
        self.on_submitted = on_submitted
        """Called once the tasks' states are in the journal (the scaler looks at once)."""
        # On Slurm every task also asks for a walltime tier (hpcorch.provision.horizon):
        # it never starts on a worker whose time left is below its estimate.
        self.tiers = self.site.kind == "slurm"
        self.use_resources = use_resources or self.tiers
        self.tasks = spec.by_id()
        parents = {t.id: tuple(dict.fromkeys(t.after)) for t in spec.tasks}
        self.order = dag.topological_order(parents)
        self.priority = dag.priorities(
            parents,
            {t.id: t.estimate for t in spec.tasks},
            {t.id: t.priority for t in spec.tasks if t.priority},
        )
        # Edges only for the tasks that have some: an empty entry costs a task ~100 bytes
        # (a list and two dict slots), a tenth of what a million-task sweep may hold.
        self.parents: _Edges = _Edges((t, p) for t, p in parents.items() if p)
        del parents
        children: dict[str, list[str]] = {}
        for tid, ps in self.parents.items():
            for p in ps:
                children.setdefault(p, []).append(tid)
        self.children: _Edges = _Edges(children)
        self.memo = dict(memo or {})
        self.cache_dir = cache_dir
        self.refs: dict[str, set[str]] = {}
        for t in spec.tasks:
            if t.function is not None and (t.args or t.kwargs):
                found: set[str] = set()
                _refs((t.args, t.kwargs), found)
                if found:
                    self.refs[t.id] = found
        self.value_needed = {p for found in self.refs.values() for p in found}
        done_set = set(done)
        self.state = {tid: ("succeeded" if tid in done_set else "pending") for tid in self.order}
        self.n = {tid: (attempts or {}).get(tid, 0) for tid in self.order}
        self.key: dict[str, str] = {}
        self.owner: dict[str, str] = {}
        self.futures: dict[str, Any] = {}
        self.loads: dict[str, Any] = {}
        self.override: dict[str, retry.Resources] = {}
        # per sweep template: (the template, kept alive so its id stays its own; the value)
        self._shapes: dict[tuple[str, int], tuple[TaskSpec, Any]] = {}
        self.failure_info: dict[str, TaskFailure] = {}
        self._timers: dict[str, threading.Timer] = {}
        self._wake = threading.Event()
        self._ac = Completions(None)
        self.open_children = {
            tid: sum(1 for c in kids if self.state[c] != "succeeded")
            for tid, kids in self.children.items()
        }
        self._remaining = sum(1 for st in self.state.values() if st not in TERMINAL)
        self._generation = 0
        self._lock = threading.RLock()
        self._waiters: dict[str, threading.Event] = {}
        self._cancelled = False
        # names of the site's token variables: never in a task's environment
        self.secrets = site_secrets(self.site)
        self._finished = threading.Event()
        self._collector: threading.Thread | None = None
        self.started = time.time()
        # -- bundling: tasks waiting in the driver, per resource request (see the module doc)
        self.bundle_config = bundle_config or bundling.BundleConfig()
        self._bundle_on = bundling.bundling_on(len(spec.tasks), spec.bundle, self.bundle_config)
        self._waiting: dict[tuple[Any, ...], deque[str]] = {}
        self._n_waiting = 0
        self._bundles: dict[str, tuple[Any, list[str]]] = {}  # key -> (future, its tasks)
        self._bundle_stats = bundling.BundleStats()
        self._bundle_count = 0
        self._slots = 0
        self._slots_seen = 0.0
        self.values: dict[str, Any] = {}
        """Values of bundled tasks (kept when ``keep_results``; others live in futures)."""

    # -- submission -----------------------------------------------------------

    def _payload(self, task: TaskSpec, deps: tuple[str, ...]) -> Payload:
        kind = task.task_kind
        target: Any
        program: str | None = None
        wrapper_codes: tuple[int, ...] = ()
        if kind == "function":
            target = task.function
        elif kind == "command":
            # its setup and container; an MPI task's step is built on its worker (placing);
            # the run directory is bound into a container, and a bind takes no relative path
            target = command_argv(task, str(self.run_dir.absolute()))
            program, wrapper_codes = failure_name(task)
        else:
            target = task.duration
        memo_key = self.memo.get(task.id)
        request = self._request(task)
        return Payload(
            run_id=self.run_id,
            task_id=task.id,
            n=self.n[task.id],
            kind=kind,
            target=target,
            program=program,
            wrapper_codes=wrapper_codes,
            deps=deps,
            args=task.args,
            kwargs=task.kwargs,
            has_refs=task.id in self.refs,
            log_dir=self._log_dir if kind != "emulated" else None,
            result_path=(
                str(self.run_dir / "results" / f"{task.id}.pkl")
                if task.id in self.value_needed
                else None
            ),
            memo_path=(
                str(self.cache_dir / f"{memo_key}.pkl")
                if memo_key and self.cache_dir is not None
                else None
            ),
            env=task.env,
            secrets=self.secrets,
            cwd=task.cwd,
            timeout=request.walltime_s if kind == "command" else None,
            memory=request.memory if task.touch_memory else 0,
            memory_request=request.memory,
            placing=self._placing(task),
        )

    def _per_shape(self, what: str, task: TaskSpec, make: Callable[[TaskSpec], _T]) -> _T:
        """``make(task)``, computed once per sweep template (:func:`spec.resource_twin`):
        a sweep's hundred thousand tasks share one placement, request and bundle group."""
        twin = resource_twin(task)
        if twin is task:  # not a variant: nothing to share, and nothing kept per task
            return make(task)
        hit = self._shapes.get((what, id(twin)))
        if hit is None:
            hit = self._shapes[(what, id(twin))] = (twin, make(twin))
        value: _T = hit[1]
        return value

    def _placing(self, task: TaskSpec) -> Placing:
        """Where the attempt goes on its node(s), with what the retry policy raised.

        A sweep variant's is its template's (shared, so a bundle pickles it once); its
        request's ``id`` then names the template, which only the driver's messages read.
        """
        raised = self.override.get(task.id)
        if raised is None:
            return self._per_shape(
                "placing", task, lambda t: placing_for(t, self.site, self.run_dir)
            )
        return placing_for(
            task, self.site, self.run_dir, cpus=raised.cpus, memory=raised.memory or None
        )

    def _request(self, task: TaskSpec) -> retry.Resources:
        """What the next attempt asks for: the spec, or what the retry policy raised it to."""
        raised = self.override.get(task.id)
        if raised is not None:
            return raised
        return self._per_shape("request", task, retry.policy_resources)

    def _stored_result(self, task_id: str) -> str | None:
        memo_key = self.memo.get(task_id)
        if memo_key and self.cache_dir is not None:
            return str(self.cache_dir / f"{memo_key}.pkl")
        return str(self.run_dir / "results" / f"{task_id}.pkl")

    def _submit(self, ids: list[str], bump: set[str]) -> list[Any]:
        """Send ``ids`` (parents first) to the scheduler as one graph; return their futures."""

        self._generation += 1
        gen = self._generation
        dsk: dict[str, Any] = {}
        prio: dict[str, int] = {}
        res: dict[str, dict[str, float]] = {}
        load_keys: list[str] = []
        keys: list[str] = []
        batch: set[str] = set()
        for tid in ids:
            task = self.tasks[tid]
            if tid in bump:
                self.n[tid] += 1
            key = _key(tid, gen)
            deps: list[str] = []
            dep_keys: list[str] = []
            for p in self.parents[tid]:
                if p in batch or p in self.futures:
                    deps.append(p)
                    dep_keys.append(self.key[p])
                elif p in self.refs.get(tid, ()):
                    # A parent done before this session: its stored result feeds us.
                    lk = f"load-{p}"
                    if lk not in self.loads and lk not in dsk:
                        dsk[lk] = Task(lk, load_result, self._stored_result(p))
                        load_keys.append(lk)
                    deps.append(p)
                    dep_keys.append(lk)
            dsk[key] = Task(key, execute, self._payload(task, tuple(deps)), *map(DaskRef, dep_keys))
            prio[key] = self.priority[tid]
            if self.use_resources:
                res[key] = task_resources(task)
                if tid in self.override:
                    o = self.override[tid]
                    res[key] = {
                        **res[key],
                        "cpus": float(o.cpus),
                        "memory": float(o.memory),
                    }
                    if o.gpus:
                        res[key]["gpus"] = float(o.gpus)
                if self.tiers:
                    knobs = knobs_resource(task)
                    if knobs is not None:  # only workers of jobs with its own knobs
                        res[key][knobs] = float(task.cpus)
                    estimate = task.duration
                    res[key].update(horizon.restriction(estimate or self._request(task).walltime_s))
            self.key[tid] = key
            self.owner[key] = tid
            keys.append(key)
            batch.add(tid)
        annotations: dict[str, Any] = {"priority": _PerKey(prio, max(prio.values(), default=0))}
        if self.use_resources:
            annotations["resources"] = _PerKey(res, {"cpus": 1.0})
        # A task retried after a node failure may only go to workers on other nodes;
        # an empty list leaves the others unrestricted.
        allowed = {self.key[t]: self.recovery.allowed_workers(t) for t in ids}
        placed = {k: v for k, v in allowed.items() if v}
        with annotate(workers=_PerKey(placed, [])) if placed else nullcontext():
            futures = self.client.get(
                _graph(dsk), keys + load_keys, sync=False, fifo_timeout="1h", **annotations
            )
        for lk, fut in zip(load_keys, futures[len(keys) :], strict=True):
            self.loads[lk] = fut
        out = futures[: len(keys)]
        for tid, fut in zip(ids, out, strict=True):
            self.futures[tid] = fut
        return list(out)

    # -- bundles ----------------------------------------------------------------

    def _bundled(self, tid: str) -> bool:
        kind, mpi, switch = self._per_shape("traits", self.tasks[tid], _bundle_traits)
        return bundling.eligible(
            kind=kind,
            mpi=mpi,
            switch=switch,
            workflow_on=self._bundle_on,
            parents=len(self.parents[tid]),
            children=len(self.children[tid]),
        )

    def _group(self, tid: str) -> tuple[Any, ...]:
        """Tasks that may share a bundle: the same resource request and Slurm knobs."""
        return self._per_shape("group", self.tasks[tid], _bundle_group)

    def _worker_slots(self) -> int:
        now = time.monotonic()
        if now - self._slots_seen > 5.0:  # workers come and go; ask now and then
            self._slots_seen = now
            try:
                self._slots = sum(self.client.nthreads().values())
            except Exception as exc:
                logger.debug("asking the scheduler for its workers failed: %s", exc)
        return self._slots

    def _refill(self) -> list[Any]:
        """Send bundles of waiting tasks until enough are in flight; return their futures."""
        if not self._n_waiting or self._cancelled:
            return []
        slots = self._worker_slots()
        limit = bundling.in_flight_limit(slots)
        out: list[Any] = []
        groups = [g for g, q in self._waiting.items() if q]
        while groups and len(self._bundles) < limit:
            for group in list(groups):
                queue = self._waiting[group]
                size = bundling.bundle_size(
                    self._bundle_stats, self._n_waiting, slots, self.bundle_config
                )
                ids = [queue.popleft() for _ in range(min(size, len(queue)))]
                self._n_waiting -= len(ids)
                out.append(self._submit_bundle(ids))
                if not queue:
                    groups.remove(group)
                if len(self._bundles) >= limit:
                    break
        return out

    def _submit_bundle(self, ids: list[str]) -> Any:
        self._bundle_count += 1
        key = f"bundle-{self.run_id}-{self._bundle_count}"
        payloads = []
        for tid in ids:
            self.n[tid] += 1
            payloads.append(self._payload(self.tasks[tid], ()))
            self.key[tid] = key
        first = self.tasks[ids[0]]
        annotations: dict[str, Any] = {
            "priority": _PerKey({}, max(self.priority[t] for t in ids)),
        }
        if self.use_resources:
            res = task_resources(first)
            if self.tiers:
                knobs = knobs_resource(first)
                if knobs is not None:
                    res[knobs] = float(first.cpus)
                res.update(horizon.restriction(first.duration or self._request(first).walltime_s))
            annotations["resources"] = _PerKey({}, res)
        dsk = {key: Task(key, execute_bundle, tuple(payloads), self.keep_results)}
        (fut,) = self.client.get(_graph(dsk), [key], sync=False, fifo_timeout="1h", **annotations)
        self._bundles[key] = (fut, ids)
        return fut

    def _outcomes(self, futures: list[Any]) -> list[tuple[Any, BundleOutcome | None]]:
        """The outcomes of finished bundles, fetched in one round trip (None: it erred)."""
        done = [f for f in futures if f.status == "finished"]
        try:
            fetched = self.client.gather(done, errors="raise") if done else []
        except Exception as exc:  # lost meanwhile: each of its tasks goes the failure path
            logger.warning("fetching the outcome of %d bundles failed: %s", len(done), exc)
            fetched = [None] * len(done)
        got = {f.key: o for f, o in zip(done, fetched, strict=True)}
        return [(f, got.get(f.key)) for f in futures]

    def _bundle_done(
        self, fut: Any, outcome: BundleOutcome | None, updates: list[tuple[str, str]]
    ) -> list[Any]:
        _, ids = self._bundles.pop(fut.key)
        new: list[Any] = []
        if outcome is not None:
            self._bundle_stats = bundling.observe(
                self._bundle_stats, len(ids), outcome.seconds, self.bundle_config
            )
        live = [t for t in ids if self.key.get(t) == fut.key and self.state[t] not in TERMINAL]
        if fut.status == "cancelled" and not reconnect.lost_connection(fut):
            # cancelled neither by the run nor by a lost connection: by the budget's end
            fut.release()
            for tid in live:
                self._set(updates, tid, "cancelled")
            self._cancel_waiting(updates)
            return new
        if outcome is None and live and not self._cancelled:
            new = self._bundle_lost(live, _exception(fut), updates)
            fut.release()
            return new
        fut.release()  # its values are in the outcome: nothing else needs the bundle
        for tid in live:
            if self._cancelled:
                self._set(updates, tid, "cancelled")
            elif outcome is None:
                continue
            elif tid in outcome.errors:
                new.extend(self._errored(tid, outcome.errors[tid], updates))
            else:
                if self.keep_results and tid in outcome.values:
                    self.values[tid] = outcome.values[tid]
                self._set(updates, tid, "succeeded")
                del self.key[tid]  # done for good: a million of them need not stay
        return new

    def _bundle_lost(
        self, ids: list[str], exc: BaseException | None, updates: list[tuple[str, str]]
    ) -> list[Any]:
        """The whole bundle failed (its worker or allocation was lost): one failure, not one
        per task. Its first task goes the failure path (classified, counted, maybe retried);
        when that retries, the others go back in line for a new attempt each."""
        first, rest = ids[0], ids[1:]
        new = self._errored(first, exc, updates)
        if self.state[first] in TERMINAL:  # not retried: neither are they
            for tid in rest:
                new.extend(self._errored(tid, exc, updates))
            return new
        why = f"its bundle was lost with {first}'s attempt: {exc}"[:500]
        self.journal.record_attempts(
            {"task_id": t, "n": self.n[t], "failure_class": "infrastructure", "message": why}
            for t in rest
        )
        for tid in reversed(rest):
            self._waiting.setdefault(self._group(tid), deque()).appendleft(tid)
        self._n_waiting += len(rest)
        return new

    def _cancel_waiting(self, updates: list[tuple[str, str]]) -> None:
        """Queued work was cancelled for the run (its budget is spent): the tasks still
        waiting in the driver to be bundled are queued work too, and go the same way."""
        for queue in self._waiting.values():
            for tid in queue:
                if self.state[tid] not in TERMINAL:
                    self._set(updates, tid, "cancelled")
        self._waiting.clear()
        self._n_waiting = 0

    # -- state ----------------------------------------------------------------

    def _set(self, updates: list[tuple[str, str]], task_id: str, state: str) -> None:
        if state in TERMINAL and self.state[task_id] not in TERMINAL:
            self._remaining -= 1
        self.state[task_id] = state
        updates.append((task_id, state))
        if state in TERMINAL:
            event = self._waiters.get(task_id)
            if event is not None:
                event.set()

    def _release(self, task_id: str) -> None:
        fut = self.futures.pop(task_id, None)
        if fut is not None:
            fut.release()

    def _succeeded(self, task_id: str, updates: list[tuple[str, str]]) -> None:
        self._set(updates, task_id, "succeeded")
        if self.keep_results:
            return
        for p in self.parents[task_id]:
            self.open_children[p] -= 1
            if self.open_children[p] == 0 and self.state[p] == "succeeded":
                self._release(p)
        if self.open_children.get(task_id, 0) == 0:
            self._release(task_id)

    def _errored(
        self, task_id: str, exc: BaseException | None, updates: list[tuple[str, str]]
    ) -> list[Any]:
        # A task whose parent failed errs too; only a task whose parents all
        # succeeded failed on its own.
        if any(self.state[p] != "succeeded" for p in self.parents[task_id]):
            return []
        task = self.tasks[task_id]
        request = self._request(task)
        partition = partition_for(task, self.site).name if self.site.kind == "slurm" else None
        outcome = self.recovery.failed(
            task,
            self.n[task_id],
            exc,
            request,
            partition=partition,
            cancel_requested=self._cancelled,
        )
        diagnosis, decision = outcome.diagnosis, outcome.decision
        self.journal.record_attempts([{"task_id": task_id, "n": self.n[task_id], **outcome.record}])
        below = [
            d for d in dag.descendants(self.children, [task_id]) if self.state[d] not in TERMINAL
        ]
        if decision.retry and not self._cancelled:
            logger.info("task %s failed: %s; retrying", task_id, decision.reason)
            self.journal.event(
                "retry",
                task=task_id,
                n=self.n[task_id],
                reason=decision.reason,
                delay_s=decision.delay_s,
                failure_class=str(diagnosis.failure),
                rule=diagnosis.rule,
            )
            if decision.resources != request:
                self.override[task_id] = decision.resources
            if outcome.exclude_nodes:
                self.journal.event("exclude", task=task_id, nodes=sorted(outcome.exclude_nodes))
            for tid in [task_id, *below]:
                self._release(tid)
                # Futures of the failed round still arrive (erred, cancelled): ignore them.
                self.owner.pop(self.key[tid], None)
            ids = [t for t in self.order if t == task_id or t in set(below)]
            # Waiting for its next attempt, not running: the scaler sizes what a pending
            # task needs (a "running" one got a replacement allocation too short for
            # its walltime tier, and the rerun waited for a worker that never came).
            self._set(updates, task_id, "pending")
            if decision.delay_s > 0:
                self._resubmit_later(task_id, ids, decision.delay_s)
                return []
            return self._submit(ids, bump={task_id})
        logger.warning("task %s failed: %s", task_id, decision.reason)
        reason = decision.reason or diagnosis.reason
        if task.task_kind == "command":
            reason += f"; stderr: {self.run_dir / 'logs' / f'{task_id}.{self.n[task_id]}.err'}"
        self.failure_info[task_id] = TaskFailure(task_id, str(diagnosis.failure), reason)
        self._set(updates, task_id, "failed")
        self._release(task_id)
        for d in below:
            self._set(updates, d, "upstream_failed")
            self._release(d)
        return []

    def _resubmit_later(self, task_id: str, ids: list[str], delay_s: float) -> None:
        def fire() -> None:
            reconnect.wait_connected(self.client)  # a graph sent while reconnecting is lost
            with self._lock:
                self._timers.pop(task_id, None)
                if self._cancelled or self.state[task_id] in TERMINAL:
                    self._wake.set()
                    return
                self._ac.add(self._submit(ids, bump={task_id}))
            self._wake.set()

        timer = threading.Timer(delay_s, fire)
        timer.daemon = True
        self._timers[task_id] = timer
        timer.start()

    # -- attempt records -----------------------------------------------------

    def collect(self) -> None:
        """Fetch the workers' attempt records and journal them (one RPC per worker)."""
        try:
            per_worker = self.client.run(drain, self.run_id)
        except Exception as exc:  # workers may be gone at shutdown; records are best effort
            logger.debug("collecting attempt records failed: %s", exc)
            return
        records = [r for recs in per_worker.values() for r in recs]
        if not records:
            return
        if self.recovery.monitor is not None:
            self.recovery.monitor.saw(records)  # where each worker runs, before it may die
        with self._lock:
            self.journal.record_attempts(records)
            running = [
                (r["task_id"], "running")
                for r in records
                if "end" not in r
                and self.state.get(r["task_id"]) == "pending"
                # not a late record of an attempt before a retry
                and r.get("n") == self.n.get(r["task_id"])
            ]
            for tid, _ in running:
                self.state[tid] = "running"
            if running:
                self.journal.set_states(running)

    def _collect_loop(self) -> None:
        while not self._finished.wait(_COLLECT_INTERVAL_S):
            self.collect()

    # -- the loop ---------------------------------------------------------------

    def _follow(self) -> bool:
        """Process completions until none is in flight; True when the run is over."""
        while self._ac.count():
            batch = self._ac.next_batch(timeout=_COLLECT_INTERVAL_S)
            updates: list[tuple[str, str]] = []
            new: list[Any] = []
            bundled = self._outcomes([f for f in batch if f.key in self._bundles])
            lost: str | None = None
            with self._lock:
                for fut in batch:
                    tid = self.owner.get(fut.key)
                    if tid is None or self.key[tid] != fut.key:
                        continue
                    if self.state[tid] in TERMINAL:
                        continue
                    if fut.status == "finished":
                        self._succeeded(tid, updates)
                    elif self._cancelled:
                        self._set(updates, tid, "cancelled")
                    elif fut.status == "cancelled" and reconnect.lost_connection(fut):
                        lost = reconnect.cancel_reason(fut)  # not the tasks' doing: see below
                    elif fut.status == "cancelled":  # by the budget's end (stranded), say
                        self._set(updates, tid, "cancelled")
                        self._cancel_waiting(updates)
                    else:
                        new.extend(self._errored(tid, _exception(fut), updates))
                for fut, outcome in bundled:
                    new.extend(self._bundle_done(fut, outcome, updates))
                new.extend(self._refill())
                if updates:
                    self.journal.set_states(updates)
                self._ac.add(new)
            if lost is not None:
                self._ac.add(self._connection_lost(lost))
            if self.on_progress is not None and batch:
                self.on_progress(self.counts())
            if self._cancelled or self._remaining == 0:
                return True
        return self._cancelled or self._remaining == 0

    def _connection_lost(self, reason: str) -> list[Any]:
        """Distributed cancelled futures the run did not cancel: the client lost the scheduler.

        Every future of the client went at once, so this runs once per reconnect: wait
        (bounded) for the client to be connected again, end the lost attempts' commands
        still running on the workers (a function's thread cannot be ended: it runs on and
        its value is dropped), journal each lost attempt as ``scheduler_connection_lost``
        (not charged to the task's retries, bounded by ``max_connection_losses``) and
        resubmit the tasks as new attempts in one graph. Without a scheduler to go back
        to, the tasks fail with that class and the run fails.
        """
        address = str(getattr(getattr(self.client, "scheduler", None), "address", ""))
        logger.warning(
            "lost the connection to the Dask scheduler %s (%s); waiting up to %.0fs to reconnect",
            address,
            reason,
            reconnect.WAIT_S,
        )
        back = reconnect.wait_connected(self.client)
        updates: list[tuple[str, str]] = []
        with self._lock:
            lost = []
            for tid, fut in list(self.futures.items()):
                if fut.status != "cancelled":
                    continue
                # The scheduler forgot them (succeeded parents' too): drop, never reuse.
                del self.futures[tid]
                self.owner.pop(fut.key, None)
                if self.state[tid] not in TERMINAL:
                    lost.append(tid)
            self.loads = {k: f for k, f in self.loads.items() if f.status != "cancelled"}
            if self._cancelled:
                return []
            self.journal.event("reconnect", ok=back, reason=reason, tasks=len(lost))
            if lost and back:
                try:
                    self.client.run(end_attempts, self.run_id, [(t, self.n[t]) for t in lost])
                except Exception as exc:  # a worker that is gone took its attempts with it
                    logger.warning("ending the lost attempts failed on a worker: %s", exc)
            now = time.time()
            lost_set, again = set(lost), set()
            records: list[dict[str, Any]] = []
            for tid in (t for t in self.order if t in lost_set):
                if self.state[tid] in TERMINAL:  # upstream_failed by a parent just below
                    continue
                task = self.tasks[tid]
                outcome = self.recovery.failed(
                    task,
                    self.n[tid],
                    FutureCancelledError(self.key[tid], reason),
                    self._request(task),
                    cancel_requested=False,
                )
                message = outcome.decision.reason
                if not back:
                    message = (
                        f"lost the connection to the Dask scheduler {address} and could not "
                        f"reconnect within {reconnect.WAIT_S:.0f}s: is the scheduler running?"
                    )
                records.append(
                    {
                        "task_id": tid,
                        "n": self.n[tid],
                        "end": now,
                        "failure_class": str(outcome.diagnosis.failure),
                        "message": message[:500],
                    }
                )
                if back and outcome.decision.retry:
                    again.add(tid)
                    if self.state[tid] == "running":
                        self._set(updates, tid, "pending")
                    continue
                self.failure_info[tid] = TaskFailure(tid, str(outcome.diagnosis.failure), message)
                self._set(updates, tid, "failed")
                for d in dag.descendants(self.children, [tid]):
                    if self.state[d] not in TERMINAL:
                        self._set(updates, d, "upstream_failed")
            self.journal.record_attempts(records)
            if updates:
                self.journal.set_states(updates)
            ids = [t for t in self.order if t in again]
            return self._submit(ids, bump=set(ids)) if ids else []

    def counts(self) -> dict[str, int]:
        return dict(Counter(self.state.values()))  # counted in C: a million states, 40 ms

    def run(self) -> RunSummary:
        """Submit what is left to do and follow it to the end."""
        todo = [tid for tid in self.order if self.state[tid] not in TERMINAL]
        alone = [tid for tid in todo if not self._bundled(tid)]
        for tid in todo:
            if self._bundled(tid):
                self._waiting.setdefault(self._group(tid), deque()).append(tid)
                self._n_waiting += 1
        # with their states (a resumed run's rows too): one pass over a million rows, not two
        self.journal.add_tasks(
            (
                (tid, self.tasks[tid].task_kind, self.state[tid], self.priority[tid])
                for tid in self.order
            ),
            set_state=True,
        )
        self.journal.event("submit", tasks=len(todo), skipped=len(self.order) - len(todo))
        if self.on_submitted is not None:
            self.journal.flush()
            self.on_submitted()
        self._collector = threading.Thread(target=self._collect_loop, name="hpcorch-collect")
        self._collector.daemon = True
        self._collector.start()
        try:
            if todo:
                self._ac = Completions(self.client.loop)
                with self._lock:
                    if alone:
                        self._ac.add(self._submit(alone, bump=set(alone)))
                    self._ac.add(self._refill())
                while not self._follow():
                    # Nothing in flight: only retries waiting out their backoff remain.
                    with self._lock:
                        if self._ac.count():  # a retry was submitted meanwhile
                            continue
                        if not self._timers:
                            break
                        self._wake.clear()
                    self._wake.wait()
        except KeyboardInterrupt:
            self.cancel()
        finally:
            self._finished.set()
            self._collector.join()
        self.collect()
        return self._finish()

    def _finish(self) -> RunSummary:
        with self._lock:
            updates: list[tuple[str, str]] = []
            if self._cancelled:
                left = [tid for tid, s in self.state.items() if s not in TERMINAL]
                for tid in left:  # not _set each: a million of them
                    self.state[tid] = "cancelled"
                    if tid in self._waiters:
                        self._waiters[tid].set()
                self._remaining -= len(left)
                # The run's state first: from then on readers count what is left as
                # cancelled (journal.status_summary), and 'hpcorch cancel' returns; the
                # rows follow in one statement (a million take seconds). Its own commit:
                # the writer would otherwise commit both together, after the seconds.
                self.journal.set_run_state("cancelled")
                self.journal.flush()
                self.journal.cancel_unfinished()
            for tid, s in self.state.items():
                if s not in TERMINAL:  # the scheduler forgot it; never report it as running
                    logger.error("task %s ended without a result; marking it failed", tid)
                    self.failure_info[tid] = TaskFailure(tid, "infrastructure", "result lost")
                    self._set(updates, tid, "failed")
            self.journal.set_states(updates)
        counts = self.counts()
        if self._cancelled:
            state = "cancelled"
        elif counts.get("succeeded", 0) == len(self.state):
            state = "succeeded"
        else:
            state = "failed"
        if self.memo:
            self.journal.set_results(
                (tid, f"memo:{key}")
                for tid, key in self.memo.items()
                if self.state[tid] == "succeeded"
            )
        self.journal.set_run_state(state)
        self.journal.event("end", state=state, counts=counts)
        self.journal.flush()
        if self._cancelled:
            self._forget_all()
        for event in self._waiters.values():
            event.set()
        return RunSummary(
            run_id=self.run_id,
            run_dir=self.run_dir,
            state=state,
            counts=counts,
            failures=list(self.failure_info.values()),
            seconds=time.time() - self.started,
        )

    # -- control from other threads --------------------------------------------

    def cancel(self) -> None:
        """Stop the run: cancel what is queued or running; the loop then ends."""
        self._cancelled = True
        with self._lock:
            for timer in self._timers.values():
                timer.cancel()
            self._timers.clear()
        self._wake.set()
        self._ac.wake()
        # The workers start no more attempts of this run and end the processes of those
        # running (provision.reaper); the scheduler forgets the rest once the journal says
        # the run is cancelled (_finish): 100,000 tasks take it seconds.
        try:
            self.client.run(end_tasks, self.run_id)
        except Exception as exc:  # a worker that is gone took its tasks with it
            logger.warning("ending the running tasks' processes failed on a worker: %s", exc)

    def _forget_all(self) -> None:
        """Make the scheduler forget every task of this run, in one message.

        Not ``Client.cancel``: it walks each key's dependents recursively, which takes
        minutes for 100,000 tasks and overflows the stack on a long chain.
        """
        with self._lock:
            futures = [
                *self.futures.values(),
                *self.loads.values(),
                *(f for f, _ in self._bundles.values()),
            ]
        keys = [f.key for f in futures]
        if not keys:
            return
        started = time.monotonic()
        try:
            self.client.run_on_scheduler(forget_keys, keys, self.client.id)
        except Exception as exc:
            logger.warning("the scheduler did not take the cancel: %s", exc)
        logger.info(
            "cancel: the scheduler forgot %d tasks in %.1fs", len(keys), time.monotonic() - started
        )

    def wait_task(self, task_id: str, timeout: float | None = None) -> str:
        """Block until ``task_id`` is finished one way or another; return its state."""
        with self._lock:
            if self.state[task_id] in TERMINAL or self._finished.is_set():
                return self.state[task_id]
            event = self._waiters.setdefault(task_id, threading.Event())
        event.wait(timeout)
        return self.state[task_id]


def _bundle_traits(task: TaskSpec) -> tuple[str, bool, bool | None]:
    return task.task_kind, task.mpi is not None, task.bundle


def _bundle_group(task: TaskSpec) -> tuple[Any, ...]:
    return (
        tuple(sorted(task_resources(task).items())),
        tuple(sorted(task.slurm_knobs.items())),
        task.resources.walltime,
        task.cwd,
    )


def _exception(fut: Any) -> BaseException | None:
    try:
        exc: BaseException | None = fut.exception(timeout=30)
    except Exception as err:
        exc = err
    return exc


def forget_keys(keys: list[str], client: str, dask_scheduler: Any = None) -> int:
    """On the scheduler: ``client`` no longer wants ``keys``; tasks nobody wants are
    released (queued ones never start) in one pass of transitions, without recursion."""
    if client not in dask_scheduler.clients:
        return 0
    dask_scheduler.client_releases_keys(
        keys=keys, client=client, stimulus_id=f"hpcorch-cancel-{time.time()}"
    )
    return len(keys)


def _key(task_id: str, generation: int) -> str:
    """The Dask key of a task: ``<group>-<task id>[~<generation>]``.

    Dask keeps statistics per key prefix (the first word); 20,000 distinct
    prefixes make its scheduler several times slower, so tasks that differ
    only by a number (``sim-3``, ``blastall_00000002``) share one.
    """
    group = _GROUP_RE.sub("", task_id).replace("-", "_") or "task"
    key = f"{group}-{task_id}"
    return key if generation == 1 else f"{key}~{generation}"


def _graph(dsk: dict[str, Any]) -> Any:
    """The graph as Dask's expression, named by a random token.

    Tokenizing a graph of 20,000 tasks deterministically costs seconds of
    driver time; each submission is unique anyway (as ``Client.submit`` knows).
    """

    return LLGExpr(dsk, _determ_token=uuid.uuid4().hex)  # type: ignore[no-untyped-call]
