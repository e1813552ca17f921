"""What ``hpcorch run`` and ``resume`` show while a run goes on.

On a terminal, a rich live view: tasks by state, allocations by site and
partition, GPUs busy. Otherwise (a log file, a driver job, CI), plain
timestamped lines on stderr, at most one every few seconds plus one at each
failed attempt, so a log stays short and greppable::

    2026-11-25T19:20:01Z run demo-1a2b: 12/200 done, 0 failed, 3 running

The engine's ``on_progress`` callback gives fresh counts of the tasks that
ended; running tasks (the count too: the engine sends counts only when tasks
end), allocations and failed attempts come from the run's journal, read on a
timer through its own read-only connection, so the view never slows the engine.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from hpcorch.journal import TASK_STATES, progress_rows
from hpcorch.sites.model import Site

if TYPE_CHECKING:
    from rich.live import Live

__all__ = ["Failure", "Progress", "Snapshot", "plain_line", "read_snapshot", "render"]

_FINISHED = ("succeeded", "failed", "upstream_failed", "cancelled")


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed attempt, as the journal records it."""

    task_id: str
    n: int
    failure_class: str
    message: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the view shows at one moment."""

    counts: Mapping[str, int] = field(default_factory=dict)
    allocations: Mapping[tuple[str, str, str], tuple[int, int]] = field(default_factory=dict)
    """``(site, partition, state) -> (allocations, nodes)`` of the allocations still open."""
    running: tuple[str, ...] = ()
    failures: tuple[Failure, ...] = ()


def read_snapshot(run_dir: Path) -> Snapshot:
    """Read the view's figures from the journal; an empty snapshot while there is none yet."""
    rows = progress_rows(Path(run_dir))
    if rows is None:
        return Snapshot()
    allocations: dict[tuple[str, str, str], tuple[int, int]] = {}
    for site, partition, state, nodes in rows.open_allocations:
        key = (site, partition, state)
        jobs, total = allocations.get(key, (0, 0))
        allocations[key] = (jobs + 1, total + int(nodes or 0))
    failures = tuple(
        Failure(str(t), int(n), str(c), str(m or "").splitlines()[0] if m else "")
        for t, n, c, m in rows.failures
    )
    return Snapshot(rows.counts, allocations, tuple(rows.running), failures)


def _running_now(counts: Mapping[str, int], running: int) -> dict[str, int]:
    """``counts`` with ``running`` tasks running; the difference comes from (or goes to)
    the pending ones, so that the total stays."""
    out = dict(counts)
    out["pending"] = max(out.get("pending", 0) + out.get("running", 0) - running, 0)
    out["running"] = running
    return out


def _done(counts: Mapping[str, int]) -> int:
    return sum(counts.get(s, 0) for s in _FINISHED)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _timestamp(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))


def _gpus_busy(running: tuple[str, ...], gpus: Mapping[str, float]) -> float:
    return sum(gpus.get(t, 0.0) for t in running)


def plain_line(
    run_id: str,
    total: int,
    snap: Snapshot,
    now: float,
    *,
    gpus: Mapping[str, float] | None = None,
) -> str:
    """One log line: ``<UTC time> run <id>: <done>/<total> done, <n> failed, <n> running``."""
    counts = snap.counts
    line = (
        f"{_timestamp(now)} run {run_id}: {_done(counts)}/{total} done, "
        f"{counts.get('failed', 0)} failed, {counts.get('running', 0)} running"
    )
    extra = []
    upstream = counts.get("upstream_failed", 0)
    if upstream:
        extra.append(f"{upstream} skipped after a failure")
    if snap.allocations:
        jobs = sum(j for j, _ in snap.allocations.values())
        nodes = sum(n for _, n in snap.allocations.values())
        extra.append(f"{_plural(jobs, 'allocation')} ({_plural(nodes, 'node')})")
    busy = _gpus_busy(snap.running, gpus or {})
    if busy:
        extra.append(f"{busy:g} GPUs busy")
    return line + (f"; {', '.join(extra)}" if extra else "")


def failure_line(run_id: str, failure: Failure, now: float) -> str:
    """One log line for a failed attempt (the engine decides whether it is retried)."""
    why = f": {failure.message}" if failure.message else ""
    return (
        f"{_timestamp(now)} run {run_id}: task {failure.task_id} attempt {failure.n} "
        f"failed ({failure.failure_class}){why}"
    )


def render(
    run_id: str,
    total: int,
    snap: Snapshot,
    *,
    elapsed_s: float,
    gpus: Mapping[str, float] | None = None,
    gpus_total: int | None = None,
) -> Group:
    """The live view: a header with a bar, tasks by state, allocations, GPUs busy."""
    from rich.progress_bar import ProgressBar  # noqa: PLC0415  # CLI fast path: --help does not load it

    counts = snap.counts
    done = _done(counts)
    header = Text.assemble(
        (f"run {run_id}", "bold"),
        f"  {done}/{total} done  ",
        (f"{counts.get('failed', 0)} failed", "red" if counts.get("failed") else ""),
        f"  {elapsed_s:.0f}s",
    )
    bar = ProgressBar(total=max(total, 1), completed=done, width=60)

    tasks = Table(title="tasks", title_justify="left", show_edge=False, pad_edge=False)
    tasks.add_column("state")
    tasks.add_column("count", justify="right")
    for state in TASK_STATES:
        if counts.get(state):
            tasks.add_row(state, str(counts[state]))

    allocs = Table(title="allocations", title_justify="left", show_edge=False, pad_edge=False)
    for name in ("site", "partition", "state"):
        allocs.add_column(name)
    allocs.add_column("jobs", justify="right")
    allocs.add_column("nodes", justify="right")
    for (site, partition, state), (jobs, nodes) in sorted(snap.allocations.items()):
        allocs.add_row(site, partition, state.lower(), str(jobs), str(nodes))
    if not snap.allocations:
        allocs.add_row("-", "-", "none", "0", "0")

    busy = _gpus_busy(snap.running, gpus or {})
    of = f" of {gpus_total}" if gpus_total else ""
    parts: list[Any] = [header, bar, tasks, allocs, Text(f"GPUs busy: {busy:g}{of}")]
    if snap.failures:
        last = snap.failures[-1]
        parts.append(
            Text(
                f"last failure: {last.task_id} attempt {last.n} ({last.failure_class}) "
                f"{last.message}"[:200],
                style="red",
            )
        )
    return Group(*parts)


class Progress:
    """The engine's ``on_progress`` callback plus a timer that reads the journal.

    Call :meth:`start` once the run directory is known, pass the object as
    ``on_progress``, and :meth:`close` it at the end.
    """

    def __init__(
        self,
        total: int | None = None,
        *,
        gpus: Mapping[str, float] | None = None,
        site: Site | None = None,
        stream: IO[str] | None = None,
        live: bool | None = None,
        interval_s: float = 5.0,
        heartbeat_s: float = 60.0,
    ) -> None:
        self.total = total
        self.gpus = dict(gpus or {})
        self.site = site
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.interval_s = interval_s
        self.heartbeat_s = heartbeat_s
        self.run_id = ""
        self.run_dir: Path | None = None
        self._counts: dict[str, int] | None = None
        self._seen: set[tuple[str, int]] = set()
        self._last_line = ""
        self._last_at = 0.0
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._live: Live | None = None
        self._handlers: list[tuple[logging.StreamHandler[Any], IO[str]]] = []

    # -- the engine's side ------------------------------------------------------

    def __call__(self, counts: dict[str, int]) -> None:
        with self._lock:
            self._counts = dict(counts)

    # -- lifecycle --------------------------------------------------------------

    def start(self, run_id: str, run_dir: Path) -> None:
        self.run_id = run_id
        self.run_dir = Path(run_dir)
        self._started = time.monotonic()
        if self.live:
            from rich.live import Live  # noqa: PLC0415  # CLI fast path: --help does not load it

            console = Console(file=self.stream)
            # Lines written to stderr meanwhile (logging, warnings) go above the view.
            redirect = self.stream is sys.stderr
            self._live = Live(
                console=console, refresh_per_second=2, redirect_stderr=redirect, transient=False
            )
            self._live.start()
            if redirect:
                self._handlers = _point_handlers(self.stream, sys.stderr)
        self._thread = threading.Thread(target=self._loop, name="hpcorch-progress", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self.run_dir is not None:
            self.tick(final=True)
        if self._live is not None:
            self._live.stop()
            self._live = None
        for handler, stream in self._handlers:
            handler.setStream(stream)
        self._handlers = []

    def _loop(self) -> None:
        period = 0.5 if self.live else min(1.0, self.interval_s)
        while not self._stop.wait(period):
            try:
                self.tick()
            except Exception:  # the view must never end a run
                continue

    # -- one update -------------------------------------------------------------

    def _snapshot(self) -> Snapshot:
        assert self.run_dir is not None
        snap = read_snapshot(self.run_dir)
        with self._lock:
            counts = self._counts
        if counts is not None:
            # The engine's counts are fresher than the journal's batched writes for the tasks
            # that ended, but it sends them only when tasks end: their running figure is the
            # one of that moment. The journal's running tasks are those of now.
            if snap.counts:
                counts = _running_now(counts, len(snap.running))
            snap = Snapshot(counts, snap.allocations, snap.running, snap.failures)
        return snap

    def _total(self, snap: Snapshot) -> int:
        return self.total if self.total is not None else sum(snap.counts.values())

    def _gpus_total(self, snap: Snapshot) -> int | None:
        site = self.site
        if site is None:
            return None
        if site.kind == "local":
            return site.partitions[0].node.gpus or None
        per_node = {p.name: p.node.gpus for p in site.partitions}
        total = sum(
            nodes * per_node.get(partition, 0)
            for (name, partition, state), (_, nodes) in snap.allocations.items()
            if state == "RUNNING" and name == site.name
        )
        return total or None

    def tick(self, *, final: bool = False) -> None:
        """Read the journal once and update the view (or write the lines that are due)."""
        snap = self._snapshot()
        now = time.time()
        if self._live is not None:
            self._live.update(
                render(
                    self.run_id,
                    self._total(snap),
                    snap,
                    elapsed_s=time.monotonic() - self._started,
                    gpus=self.gpus,
                    gpus_total=self._gpus_total(snap),
                ),
                refresh=final,
            )
            return
        for failure in snap.failures:
            key = (failure.task_id, failure.n)
            if key not in self._seen:
                self._seen.add(key)
                self._write(failure_line(self.run_id, failure, now))
        line = plain_line(self.run_id, self._total(snap), snap, now, gpus=self.gpus)
        body = line.split(" ", 1)[1]
        changed = body != self._last_line
        due = now - self._last_at >= (self.interval_s if changed else self.heartbeat_s)
        if final and self._counts is None and not self._last_at:
            return  # nothing ran (the run was refused): no line to add to its error
        if (changed and final) or due:
            self._write(line)
            self._last_line, self._last_at = body, now

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()


def _point_handlers(old: IO[str], new: IO[str]) -> list[tuple[logging.StreamHandler[Any], IO[str]]]:
    """Make the root logger's handlers that write to ``old`` write to ``new``; undo list."""
    moved: list[tuple[logging.StreamHandler[Any], IO[str]]] = []
    if new is old:
        return moved
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is old:
            handler.setStream(new)
            moved.append((handler, old))
    return moved
