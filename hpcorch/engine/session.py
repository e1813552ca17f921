"""A run from start to end: validate, make the run directory, start pools, run, clean up.

Everything that can be refused (the workflow, the site, a resource request
no partition satisfies) is checked before the run directory or any worker
exists, so a bad input leaves nothing behind and submits nothing.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import dask.config

from hpcorch import dag
from hpcorch.engine.cancel import cancel_allocations, requeued_job
from hpcorch.engine.driverlock import DriverLock
from hpcorch.engine.memo import memo_keys
from hpcorch.engine.monitor import Monitor, open_monitor
from hpcorch.engine.rundir import find_run, new_run_dir, runs_root
from hpcorch.engine.runner import Engine, RunSummary
from hpcorch.engine.software import check_software
from hpcorch.engine.worker import load_result
from hpcorch.errors import JournalError, RunError, RunLocked, SpecError
from hpcorch.journal import (
    JOURNAL_NAME,
    Journal,
    read_run,
    task_states,
)
from hpcorch.options import RunOptions
from hpcorch.placement.fit import check_fits
from hpcorch.provision.inside import current_allocation
from hpcorch.provision.pools import WorkerSource, needs_resources, open_workers
from hpcorch.provision.slurm_pool import plan_pools
from hpcorch.sites.model import Site
from hpcorch.sites.resolve import resolve_regions, resolve_site
from hpcorch.sites.rules import site_with
from hpcorch.spec import WorkflowSpec
from hpcorch.training import resolve_ranks

__all__ = [
    "DRIVER_DASK_CONFIG",
    "RunHandle",
    "resume_run",
    "run_workflow",
    "start_run",
    "validate_run",
]

logger = logging.getLogger(__name__)

Progress = Callable[[dict[str, int]], None]


DRIVER_DASK_CONFIG = {"distributed.admin.low-level-log-length": 10}
"""Dask config of a driver. Dask keeps the last 1,000 messages of each connection for
debugging; in the driver, where the scheduler runs, those hold the task payloads of the
last 1,000 bundles sent to each worker: most of a million-task sweep (0.5 KB a task)."""


def validate_run(spec: WorkflowSpec, site: str | None, options: RunOptions | None = None) -> Site:
    """The site the run will use, after checking that every task fits one of its partitions
    and that the options' regions are Slurm sites."""
    options = options or RunOptions()
    resolved = resolve_site(site or options.site or spec.site or "local")
    resolved = site_with(resolved, account=options.account, qos=options.qos)
    check_fits(spec, resolved)
    if resolved.kind == "slurm" and _submits(resolved, options):
        plan_pools(spec, resolved)  # a job the site would refuse: SiteRuleError, exit 2
    resolve_regions(options.regions)
    if resolved.kind == "local":
        _check_cwds(spec)
    check_software(spec, resolved)
    return resolved


def _submits(site: Site, options: RunOptions) -> bool:
    """Whether the run would submit jobs of its own (not inside an allocation it uses
    alone, whose account and QOS the user's own sbatch chose)."""
    if not (site.allocation.use_current and options.use_allocation):
        return True
    return current_allocation() is None or site.allocation.add_allocations


def _check_cwds(spec: WorkflowSpec) -> None:
    """A task that depends on nothing runs in a directory that exists now (on this
    machine, where a local run's tasks run): no task of the run can create it first."""
    for task in spec.tasks:
        if task.cwd is not None and not task.after and not Path(task.cwd).is_dir():
            raise SpecError(
                f"task {task.id!r}: cwd {task.cwd!r} is not a directory; create it, or fix cwd"
            )


class RunHandle:
    """A run going on in a background thread; the caller keeps computing.

    ``result(task_id)`` waits for one task and fetches its value; ``wait()``
    waits for the whole run. Close the handle (or use it as a context
    manager) to stop the workers.
    """

    def __init__(
        self, engine: Engine, workers: WorkerSource, journal: Journal, lock: DriverLock
    ) -> None:
        self.engine = engine
        self.run_id = engine.run_id
        self.run_dir = engine.run_dir
        self._workers = workers
        self._journal = journal
        self._lock = lock
        self._summary: RunSummary | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"hpcorch-run-{self.run_id}")
        self._thread.daemon = True
        self._closed = False

    def _start(self) -> RunHandle:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self._summary = self.engine.run()
        except BaseException as exc:
            self._error = exc
            logger.exception("run %s stopped with an error", self.run_id)

    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> RunSummary:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"run {self.run_id} still running after {timeout}s")
        if self._error is not None:
            raise self._error
        assert self._summary is not None
        return self._summary

    def result(self, task_id: str, timeout: float | None = None) -> Any:
        """The value of function task ``task_id``, once it has succeeded."""
        state = self.engine.wait_task(task_id, timeout)
        if state != "succeeded":
            info = self.engine.failure_info.get(task_id)
            why = f": {info.failure_class}: {info.message}" if info else ""
            raise RunError(f"task {task_id!r} is {state}{why}")
        if task_id in self.engine.values:  # it ran in a bundle
            return self.engine.values[task_id]
        fut = self.engine.futures.get(task_id)
        if fut is not None:
            return fut.result()

        return load_result(self.engine._stored_result(task_id))

    def cancel(self) -> None:
        self.engine.cancel()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            self.engine.cancel()
            self._thread.join()
        _shutdown(self._workers, self._journal, self._lock, self.engine.recovery.monitor)

    def __enter__(self) -> RunHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _shutdown(
    workers: WorkerSource,
    journal: Journal,
    lock: DriverLock,
    monitor: Monitor | None = None,
    *,
    requeued: bool = False,
) -> None:
    """Stop watching, record the allocations' end, close the journal, stop the workers,
    then let go of the run (another driver may take it from here)."""
    try:
        if monitor is not None:
            monitor.stop()
        ended = time.time()
        for alloc in workers.allocations():
            journal.record_allocation(**{**alloc, "state": "CLOSED", "end": ended})
        journal.close()
    finally:
        try:
            workers.close()
        finally:
            lock.release(requeued=requeued)


def _engine(
    spec: WorkflowSpec,
    site: Site,
    run_dir: Path,
    run_id: str,
    journal: Journal,
    *,
    done: set[str],
    attempts: dict[str, int],
    keep_results: bool,
    on_progress: Progress | None,
    options: RunOptions,
) -> tuple[Engine, WorkerSource]:
    cache_dir = runs_root().parent / "cache"
    memo = memo_keys(spec.by_id(), dag.topological_order({t.id: t.after for t in spec.tasks}))
    if memo:
        cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        hits = {tid for tid, key in memo.items() if (cache_dir / f"{key}.pkl.done").exists()}
        if hits - done:
            journal.event("memo_hits", tasks=sorted(hits - done))
            logger.info("%d memoized tasks found in %s", len(hits - done), cache_dir)
        done = done | hits
    (run_dir / "results").mkdir(exist_ok=True, mode=0o700)
    # On Slurm a lost worker fails its tasks at once, so that the recovery classifies
    # them (node failure, allocation cancelled or timed out) instead of Dask retrying
    # them silently under the same attempt number.

    lost_fails = {"distributed.scheduler.allowed-failures": 0} if site.kind == "slurm" else {}
    # For the rest of the process: its connections are made as workers come (see the constant).
    dask.config.set(DRIVER_DASK_CONFIG)
    with dask.config.set(lost_fails):
        workers = open_workers(site, spec, run_dir, options)
    allocations = workers.allocations()
    for alloc in allocations:
        journal.record_allocation(**alloc)
    try:
        monitor = open_monitor(site, workers.client, journal, allocations)
        workers.use_monitor(monitor)  # the scaler follows its allocations through it
    except BaseException:
        workers.close()
        raise
    engine = Engine(
        spec,
        client=workers.client,
        journal=journal,
        run_id=run_id,
        run_dir=run_dir,
        done=done,
        attempts=attempts,
        memo=memo,
        cache_dir=cache_dir,
        use_resources=needs_resources(spec),
        keep_results=keep_results,
        mpi_launcher=site.mpi.launcher,
        site=site,
        retry_config=options.retry,
        on_progress=on_progress,
        monitor=monitor,
        on_submitted=workers.kick,
    )
    return engine, workers


def _open_run(
    spec: WorkflowSpec,
    *,
    site: str | None,
    run_dir: str | os.PathLike[str] | None,
    source: str | None,
    time_scale: float | None,
    keep_results: bool,
    on_progress: Progress | None,
    options: RunOptions | None,
    run_id: str | None = None,
    on_start: Callable[[str, Path], None] | None = None,
) -> tuple[Engine, WorkerSource, Journal, DriverLock]:
    """Validate, lock the run directory, create the run's journal and start its engine; a
    failed start marks the run failed."""
    options = options or RunOptions()
    resolved = validate_run(spec, site, options)
    spec = resolve_ranks(spec, resolved)
    run_id, path = new_run_dir(spec.name, resolved, run_id, run_dir)
    lock = DriverLock.acquire(path)
    try:
        if (path / JOURNAL_NAME).exists():  # another driver made it since new_run_dir looked
            raise RunLocked(f"{path} already holds a run; finish it with 'hpcorch resume {path}'")
        journal = Journal.create(
            path,
            run_id=run_id,
            name=spec.name,
            source=source,
            site=resolved.name,
            time_scale=time_scale,
        )
    except BaseException:
        lock.release()
        raise
    if on_start is not None:
        on_start(run_id, path)
    try:
        engine, workers = _engine(
            spec,
            resolved,
            path,
            run_id,
            journal,
            done=set(),
            attempts={},
            keep_results=keep_results,
            on_progress=on_progress,
            options=options,
        )
    except BaseException:
        try:
            journal.set_run_state("failed")
            journal.close()
        finally:
            lock.release()
        raise
    return engine, workers, journal, lock


def start_run(
    spec: WorkflowSpec,
    *,
    site: str | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    source: str | None = None,
    time_scale: float | None = None,
    keep_results: bool = True,
    on_progress: Progress | None = None,
    options: RunOptions | None = None,
) -> RunHandle:
    """Validate, then start the run in the background and return its handle.

    ``options`` (:class:`~hpcorch.options.RunOptions`): regions, budget, scaling and
    retry settings; ``site`` wins over ``options.site``."""
    engine, workers, journal, lock = _open_run(
        spec,
        site=site,
        run_dir=run_dir,
        source=source,
        time_scale=time_scale,
        keep_results=keep_results,
        on_progress=on_progress,
        options=options,
    )
    return RunHandle(engine, workers, journal, lock)._start()


def _run_in_foreground(
    engine: Engine, workers: WorkerSource, journal: Journal, lock: DriverLock
) -> RunSummary:
    # SIGTERM (hpcorch cancel) cancels the run cleanly, as Ctrl-C does. SIGUSR1 (a driver
    # job about to be requeued) stops it the same way but leaves it to `hpcorch resume`.
    previous: dict[int, Any] = {}
    suspended = False
    in_main = threading.current_thread() is threading.main_thread()
    if in_main:

        def _on_term(signum: int, frame: FrameType | None) -> None:
            logger.warning("received signal %d: cancelling the run", signum)
            engine.cancel()

        def _on_usr1(signum: int, frame: FrameType | None) -> None:
            nonlocal suspended
            logger.warning("received SIGUSR1: stopping; 'hpcorch resume' finishes the run")
            suspended = True
            engine.cancel()

        previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, _on_term)
        previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, _on_usr1)
    try:
        summary = engine.run()
        if suspended:
            # Cancelled tasks run again on resume; the run itself is not over.
            journal.set_run_state("running")
            journal.event("suspend", time=time.time())
        return summary
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _shutdown(workers, journal, lock, engine.recovery.monitor, requeued=suspended)


def run_workflow(
    spec: WorkflowSpec,
    *,
    site: str | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    source: str | None = None,
    time_scale: float | None = None,
    on_progress: Progress | None = None,
    on_start: Callable[[str, Path], None] | None = None,
    run_id: str | None = None,
    options: RunOptions | None = None,
) -> RunSummary:
    """Run ``spec`` to the end in this thread and return the summary."""
    engine, workers, journal, lock = _open_run(
        spec,
        site=site,
        run_dir=run_dir,
        source=source,
        time_scale=time_scale,
        keep_results=False,
        on_progress=on_progress,
        run_id=run_id,
        on_start=on_start,
        options=options,
    )
    return _run_in_foreground(engine, workers, journal, lock)


def resume_run(
    run: str | os.PathLike[str],
    load: Callable[[str, float | None], WorkflowSpec],
    *,
    on_progress: Progress | None = None,
    options: RunOptions | None = None,
) -> RunSummary:
    """Finish a run whose driver died: tasks the journal records as succeeded do not run again.

    The journal keeps the run's site; ``options`` give the rest (regions, budget, ...).

    ``load`` rebuilds the spec from the run's source file and time scale
    (:func:`hpcorch.loaders.load_workflow`); it is passed in so the engine does
    not import the loaders, which import the Python API. Refused (exit 2) while
    another driver holds the run.
    """
    options = options or RunOptions()
    run_dir = find_run(run)
    lock = DriverLock.acquire(run_dir)
    try:
        _refuse_if_requeued(lock, str(read_run(run_dir)["site"]))
        engine, workers, journal = _resume(run_dir, load, on_progress, options)
    except BaseException:
        lock.release()
        raise
    return _run_in_foreground(engine, workers, journal, lock)


def _refuse_if_requeued(lock: DriverLock, site_name: str) -> None:
    found = requeued_job(lock, site_name)
    if found is not None:
        lock.give_back()
        raise RunLocked(
            f"the run belongs to its driver job {found[1]}, requeued and waiting to start "
            f"again (it resumes the run itself); 'scancel {found[1]}' first to take it over"
        )


def _resume(
    run_dir: Path,
    load: Callable[[str, float | None], WorkflowSpec],
    on_progress: Progress | None,
    options: RunOptions,
) -> tuple[Engine, WorkerSource, Journal]:
    row = read_run(run_dir)
    if not row["source"]:
        raise JournalError(
            f"run {row['run_id']} was started from Python, not from a file; "
            "rebuild the workflow and run it again"
        )
    spec = load(row["source"], row["time_scale"])
    resolved = validate_run(spec, row["site"], options)
    spec = resolve_ranks(spec, resolved)
    states = task_states(run_dir)
    unknown = set(states) - set(spec.by_id())
    if unknown:
        raise JournalError(
            f"{row['source']} changed since run {row['run_id']}: task {sorted(unknown)[0]!r} is "
            "gone; start a new run instead"
        )
    done = {tid for tid, s in states.items() if s["state"] == "succeeded"}
    attempts = {tid: int(s["attempts"]) for tid, s in states.items()}
    journal = Journal.open(run_dir)
    # The dead driver's allocations are not re-adopted (their workers knew its
    # scheduler): cancel them before starting fresh ones, so none is paid twice.
    cancel_allocations(run_dir, resolved, journal, why="resume")
    journal.set_run_state("running")
    journal.event("resume", done=len(done), pid=os.getpid(), time=time.time())
    try:
        engine, workers = _engine(
            spec,
            resolved,
            run_dir,
            row["run_id"],
            journal,
            done=done,
            attempts=attempts,
            keep_results=False,
            on_progress=on_progress,
            options=options,
        )
    except BaseException:
        journal.close()
        raise
    return engine, workers, journal
