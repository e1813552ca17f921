"""The run journal: one SQLite file (WAL) per run directory, the truth for resume and status.

Writes go through one background thread that groups queued rows into
``executemany`` batches and commits once per batch, so recording 20,000
task events costs a handful of transactions, not 20,000. Reads open their
own connection. Files are created mode 0600.

Tables: ``runs`` (one row), ``tasks``, ``attempts``, ``allocations``,
``events``. :func:`status` builds the ``hpcorch status --json`` object.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcorch.errors import InfrastructureError, JournalError
from hpcorch.slurm.states import JobState

__all__ = [
    "ENDED_ALLOCATION_STATES",
    "JOURNAL_NAME",
    "RUN_STATES",
    "TASK_STATES",
    "Journal",
    "ProgressRows",
    "allocation_ended",
    "allocation_rows",
    "progress_rows",
    "read_run",
    "started_attempts",
    "state_of_tasks",
    "status",
    "status_summary",
    "task_states",
]

logger = logging.getLogger(__name__)

JOURNAL_NAME = "journal.sqlite"
RUN_STATES = ("running", "succeeded", "failed", "cancelled")
TASK_STATES = ("pending", "running", "succeeded", "failed", "upstream_failed", "cancelled")
ENDED_ALLOCATION_STATES = frozenset({s.value for s in JobState if s.terminal} | {"CLOSED", "ENDED"})
"""Allocation states after which it holds nothing: Slurm's terminal job states
(:class:`~hpcorch.slurm.states.JobState`), and the journal's own ``CLOSED`` (the run ended
it) and ``ENDED`` (gone from Slurm when the run looked)."""


def allocation_ended(state: str | None) -> bool:
    """Whether an ``allocations`` row's state (``"CANCELLED by 0"`` too) is an ended one."""
    return bool(state) and str(state).split()[0] in ENDED_ALLOCATION_STATES


_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, name TEXT, source TEXT, site TEXT, time_scale REAL,
    state TEXT, created REAL, ended REAL, driver_pid INTEGER, driver_host TEXT
);
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY, kind TEXT, state TEXT, priority INTEGER,
    result TEXT, memo_key TEXT, updated REAL
);
CREATE TABLE IF NOT EXISTS attempts (
    task_id TEXT, n INTEGER, start REAL, end REAL, exit_code INTEGER, failure_class TEXT,
    worker TEXT, job_id TEXT, node TEXT, gpus TEXT, cores TEXT, message TEXT, ranks TEXT,
    site TEXT, training TEXT, gpu_usage TEXT,
    PRIMARY KEY (task_id, n)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL, kind TEXT, payload TEXT
);
CREATE INDEX IF NOT EXISTS tasks_by_state ON tasks (state);
"""
# tasks_by_state: counts per state (status --summary, progress) and cancel's "what is left"
# read the index alone, not a million rows.

# Job ids are per Slurm cluster: a run spanning sites keys its allocations by
# both. The site is '' when unknown (never NULL: NULLs never conflict in a key).
_ALLOCATIONS_DDL = """
CREATE TABLE IF NOT EXISTS {name} (
    job_id TEXT, site TEXT NOT NULL DEFAULT '', partition TEXT, nodes INTEGER, state TEXT,
    start REAL, end REAL, pool TEXT, PRIMARY KEY (site, job_id)
)
"""

_ALLOCATION_FIELDS = ("job_id", "site", "partition", "nodes", "state", "start", "end", "pool")
_UPSERT_ALLOCATION = """
INSERT INTO allocations VALUES (?, coalesce(?, ''), ?, ?, ?, ?, ?, ?)
ON CONFLICT (site, job_id) DO UPDATE SET
    partition = COALESCE(excluded.partition, partition),
    nodes = COALESCE(excluded.nodes, nodes), state = COALESCE(excluded.state, state),
    start = COALESCE(excluded.start, start), end = COALESCE(excluded.end, end),
    pool = COALESCE(excluded.pool, pool)
"""

# An attempt row arrives in pieces (the driver knows the failure, the worker the
# times), so each piece fills what it knows and keeps what is there.
_UPSERT_ATTEMPT = """
INSERT INTO attempts (task_id, n, start, end, exit_code, failure_class, worker, job_id,
                      node, gpus, cores, message, ranks, site, training, gpu_usage)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (task_id, n) DO UPDATE SET
    start = coalesce(excluded.start, start), end = coalesce(excluded.end, end),
    exit_code = coalesce(excluded.exit_code, exit_code),
    failure_class = coalesce(excluded.failure_class, failure_class),
    worker = coalesce(excluded.worker, worker), job_id = coalesce(excluded.job_id, job_id),
    node = coalesce(excluded.node, node), gpus = coalesce(excluded.gpus, gpus),
    cores = coalesce(excluded.cores, cores), message = coalesce(excluded.message, message),
    ranks = coalesce(excluded.ranks, ranks), site = coalesce(excluded.site, site),
    training = coalesce(excluded.training, training),
    gpu_usage = coalesce(excluded.gpu_usage, gpu_usage)
"""
_ATTEMPT_FIELDS = (
    "task_id",
    "n",
    "start",
    "end",
    "exit_code",
    "failure_class",
    "worker",
    "job_id",
    "node",
    "gpus",
    "cores",
    "message",
    "ranks",
    "site",  # the Slurm site whose job ran the attempt (its job_id is that site's)
    "training",  # a torch.distributed attempt's MASTER_ADDR:PORT and the checkpoint it resumed
    "gpu_usage",  # its GPUs' NVML figures as JSON, or why there are none (hpcorch.gpu_usage)
)


def _create_private(path: Path) -> None:
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def _disk_full(exc: BaseException) -> bool:
    return getattr(exc, "errno", None) == errno.ENOSPC or "disk is full" in str(exc)


def _why(exc: BaseException) -> str:
    """What went wrong, and what to do about the usual causes."""
    text = str(exc) or type(exc).__name__
    if _disk_full(exc):
        return f"{text}; free some space and run 'hpcorch resume'"
    if isinstance(exc, PermissionError) or "readonly" in text or "unable to open" in text:
        return f"{text}; run hpcorch as the user who owns the run directory, on a writable disk"
    return text


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a journal an older hpcorch wrote to this schema (added columns, new keys)."""
    # The write lock first: several processes of a run may open an old journal at once.
    conn.execute("BEGIN IMMEDIATE")
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(attempts)")}
        if "ranks" not in columns:  # the node of each MPI rank, comma-separated
            conn.execute("ALTER TABLE attempts ADD COLUMN ranks TEXT")
        if "site" not in columns:
            conn.execute("ALTER TABLE attempts ADD COLUMN site TEXT")
        if "training" not in columns:
            conn.execute("ALTER TABLE attempts ADD COLUMN training TEXT")
        if "gpu_usage" not in columns:
            conn.execute("ALTER TABLE attempts ADD COLUMN gpu_usage TEXT")
        # PRAGMA table_info's pk: the column's place in the primary key, 0 if not in it
        key = {row[1]: row[5] for row in conn.execute("PRAGMA table_info(allocations)")}
        if not key.get("site"):
            # Keyed by job_id alone; SQLite cannot change a key in place: rebuild.
            conn.execute(_ALLOCATIONS_DDL.format(name="allocations_new"))
            conn.execute(
                "INSERT INTO allocations_new SELECT job_id, coalesce(site, ''), partition, "
                "nodes, state, start, end, pool FROM allocations"
            )
            conn.execute("DROP TABLE allocations")
            conn.execute("ALTER TABLE allocations_new RENAME TO allocations")
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


class Journal:
    """Writer side of a run's journal. Use :meth:`create` or :meth:`open`, then :meth:`close`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._queue: queue.Queue[tuple[str, Sequence[Sequence[Any]]] | threading.Event | None]
        self._queue = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._write_loop, name="hpcorch-journal")
        self._thread.daemon = True
        self._thread.start()
        try:
            self.flush()
        except JournalError:
            self._queue.put(None)
            self._thread.join()
            raise

    # -- construction -------------------------------------------------------

    @classmethod
    def create(
        cls,
        run_dir: Path,
        *,
        run_id: str,
        name: str,
        source: str | None,
        site: str,
        time_scale: float | None,
    ) -> Journal:
        path = run_dir / JOURNAL_NAME
        try:
            run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            _create_private(path)
        except OSError as exc:
            raise JournalError(f"{path}: cannot create the journal: {_why(exc)}") from None
        journal = cls(path)
        journal._execute(
            "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, 'running', ?, NULL, ?, ?)",
            [(run_id, name, source, site, time_scale, time.time(), os.getpid(), os.uname()[1])],
        )
        return journal

    @classmethod
    def open(cls, run_dir: Path) -> Journal:
        path = run_dir / JOURNAL_NAME
        if not path.is_file():
            raise JournalError(f"{run_dir}: no journal found; is this a run directory?")
        return cls(path)

    # -- writes (queued, batched) --------------------------------------------

    def _execute(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._raise_failed()
        self._queue.put((sql, rows))

    def add_tasks(
        self, rows: Iterable[tuple[str, str, str, int]], *, set_state: bool = False
    ) -> None:
        """Register tasks ``(task_id, kind, state, priority)``; existing rows keep their state
        unless ``set_state``."""
        now = time.time()
        state = ", state = excluded.state, updated = excluded.updated" if set_state else ""
        self._execute(
            "INSERT INTO tasks (task_id, kind, state, priority, updated) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (task_id) DO UPDATE SET kind = excluded.kind, "
            f"priority = excluded.priority{state}",
            [(*r, now) for r in rows],
        )

    def set_states(self, rows: Iterable[tuple[str, str]]) -> None:
        """Set task states from ``(task_id, state)`` pairs."""
        now = time.time()
        self._execute(
            "UPDATE tasks SET state = ?, updated = ? WHERE task_id = ?",
            [(state, now, task_id) for task_id, state in rows],
        )

    def cancel_unfinished(self) -> None:
        """Mark every task not ended cancelled, in one statement (a million take a second)."""
        self._execute(
            "UPDATE tasks SET state = 'cancelled', updated = ? "
            "WHERE state IN ('pending', 'running')",
            [(time.time(),)],
        )

    def set_results(self, rows: Iterable[tuple[str, str]]) -> None:
        """Record where each task's result lives: ``none``, ``stored`` or ``memo:<key>``."""
        self._execute("UPDATE tasks SET result = ? WHERE task_id = ?", [(r, t) for t, r in rows])

    def record_attempts(self, attempts: Iterable[dict[str, Any]]) -> None:
        rows = [tuple(a.get(f) for f in _ATTEMPT_FIELDS) for a in attempts]
        if rows:
            self._execute(_UPSERT_ATTEMPT, rows)

    def record_allocation(self, **alloc: Any) -> None:
        # Several writers know parts of a row (the scaler its site and pool, the monitor
        # its Slurm state): each fills what it knows and keeps what is there.
        self._execute(_UPSERT_ALLOCATION, [tuple(alloc.get(k) for k in _ALLOCATION_FIELDS)])

    def event(self, kind: str, **payload: Any) -> None:
        self._execute(
            "INSERT INTO events (time, kind, payload) VALUES (?, ?, ?)",
            [(time.time(), kind, json.dumps(payload, default=str))],
        )

    def set_run_state(self, state: str) -> None:
        ended = time.time() if state != "running" else None
        self._execute(
            "UPDATE runs SET state = ?, ended = ?, driver_pid = ?, driver_host = ?",
            [(state, ended, os.getpid(), os.uname()[1])],
        )

    def flush(self) -> None:
        """Block until everything queued so far is committed; raise if the writer failed."""
        done = threading.Event()
        self._queue.put(done)
        # The writer releases every waiter, whatever fails; a dead thread would not.
        while not done.wait(1.0):
            if not self._thread.is_alive():
                break
        self._raise_failed()

    def _raise_failed(self) -> None:
        if self._error is None:
            return
        message = f"{self.path}: cannot write the journal: {_why(self._error)}"
        if _disk_full(self._error):  # not the input's fault: an infrastructure failure
            raise InfrastructureError(message)
        raise JournalError(message)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._queue.put(None)
            self._thread.join()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write_loop(self) -> None:
        # Any error (not only sqlite3's: a chmod on a foreign or read-only run directory,
        # a full disk) is kept for the writers, and every waiter is still released.
        conn: sqlite3.Connection | None = None
        try:
            conn = _connect(self.path)
            conn.executescript(_SCHEMA + _ALLOCATIONS_DDL.format(name="allocations"))
            _migrate(conn)
            conn.commit()
            for suffix in ("-wal", "-shm"):
                side = self.path.with_name(self.path.name + suffix)
                if side.exists():
                    side.chmod(0o600)
        except Exception as exc:
            self._error = exc
            if conn is not None:
                conn.close()
            conn = None
        while True:
            item = self._queue.get()
            batch = [item]
            # Drain what is already queued so one commit covers it all.
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(op is None for op in batch)
            waiters = [op for op in batch if isinstance(op, threading.Event)]
            if conn is not None and self._error is None:
                try:
                    for op in batch:
                        if isinstance(op, tuple):
                            conn.executemany(op[0], op[1])
                    conn.commit()
                except Exception as exc:
                    logger.error("journal write failed: %s", exc)
                    self._error = exc
            for w in waiters:
                w.set()
            if stop:
                if conn is not None:
                    conn.close()
                return


# -- reads --------------------------------------------------------------------


def _read(run_dir: Path) -> sqlite3.Connection:
    path = Path(run_dir) / JOURNAL_NAME
    if not path.is_file():
        raise JournalError(f"{run_dir}: no journal found; is this a run directory?")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as exc:
        raise JournalError(f"{path}: cannot open the journal: {_why(exc)}") from None
    conn.row_factory = sqlite3.Row
    return conn


def read_run(run_dir: Path) -> dict[str, Any]:
    """The ``runs`` row of a run directory as a dict."""
    conn = _read(run_dir)
    try:
        row = conn.execute("SELECT * FROM runs").fetchone()
    except sqlite3.Error as exc:
        raise JournalError(f"{run_dir}: unreadable journal: {_why(exc)}") from None
    finally:
        conn.close()
    if row is None:
        raise JournalError(f"{run_dir}: the journal has no run recorded")
    return dict(row)


def task_states(run_dir: Path) -> dict[str, dict[str, Any]]:
    """``{task_id: {state, result, attempts}}`` where attempts is the highest attempt number."""
    conn = _read(run_dir)
    try:
        rows = conn.execute(
            "SELECT t.task_id, t.state, t.result, coalesce(max(a.n), 0) AS attempts "
            "FROM tasks t LEFT JOIN attempts a ON a.task_id = t.task_id GROUP BY t.task_id"
        ).fetchall()
    finally:
        conn.close()
    return {r["task_id"]: dict(r) for r in rows}


def state_of_tasks(run_dir: Path) -> dict[str, str]:
    """``{task_id: state}``, and nothing else: the scaler reads it every interval (a
    million rows in about a second; :func:`task_states` joins the attempts too)."""
    conn = _read(run_dir)
    conn.row_factory = None  # plain tuples: a Row per task costs
    try:
        return dict(conn.execute("SELECT task_id, state FROM tasks").fetchall())
    finally:
        conn.close()


def allocation_rows(run_dir: Path) -> list[dict[str, Any]]:
    """Every ``allocations`` row of the run, as dicts."""
    conn = _read(run_dir)
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM allocations")]
    finally:
        conn.close()


def started_attempts(run_dir: Path) -> list[dict[str, Any]]:
    """The attempts that started: ``task_id, start, end, worker, job_id, site, gpus, cores``."""
    conn = _read(run_dir)
    try:
        rows = conn.execute(
            "SELECT task_id, start, end, worker, job_id, site, gpus, cores FROM attempts "
            "WHERE start IS NOT NULL"
        ).fetchall()
    finally:
        conn.close()
    return [dict(r) for r in rows]


PROGRESS_FAILURES = 100
"""Failed attempts the progress view reads each time: the newest."""


@dataclass(frozen=True, slots=True)
class ProgressRows:
    """What a live progress view shows, read in one go."""

    counts: dict[str, int]
    """Tasks per state."""
    open_allocations: list[tuple[str, str, str, int]]
    """``(site, partition, state word, nodes)`` of each allocation not ended."""
    running: list[str]
    failures: list[tuple[str, int, str, str]]
    """``(task_id, n, failure_class, message)`` of the newest failed attempts, oldest first."""


def progress_rows(run_dir: Path) -> ProgressRows | None:
    """The progress view's rows; ``None`` while the journal is not there or not readable yet
    (a journal being created has no tables)."""
    path = Path(run_dir) / JOURNAL_NAME
    if not path.is_file():
        return None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return None
    try:
        counts = dict(conn.execute("SELECT state, count(*) FROM tasks GROUP BY state").fetchall())
        allocations = [
            (str(site or ""), str(partition or ""), str(state or "PENDING").split()[0], nodes)
            for site, partition, state, nodes in conn.execute(
                "SELECT site, partition, state, nodes FROM allocations WHERE end IS NULL"
            )
            if not allocation_ended(state)
        ]
        running = [r[0] for r in conn.execute("SELECT task_id FROM tasks WHERE state = 'running'")]
        # the newest ones: a million-task run may have failed ten thousand attempts
        failures = list(
            conn.execute(
                "SELECT task_id, n, failure_class, message FROM attempts "
                "WHERE coalesce(failure_class, '') != '' "
                "ORDER BY end DESC, task_id DESC, n DESC LIMIT ?",
                (PROGRESS_FAILURES,),
            )
        )[::-1]
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return ProgressRows(counts, allocations, running, failures)


def _split(value: str | None) -> list[int] | None:
    if value is None:
        return None
    return [int(x) for x in value.split(",") if x != ""]


def _column(row: sqlite3.Row, name: str) -> Any:
    """A column older journals lack (read-only readers do not migrate): None there."""
    # a Row's "in" looks at values, hence keys()
    return row[name] if name in row.keys() else None  # noqa: SIM118


def _ranks(attempt: sqlite3.Row) -> dict[str, list[str]]:
    """``{"ranks": [node of rank 0, ...]}`` for an MPI attempt, else nothing."""
    value = _column(attempt, "ranks")
    return {"ranks": value.split(",")} if value else {}


def status_summary(run_dir: Path) -> dict[str, Any]:
    """``hpcorch status RUN --summary --json``: the run's state and counts, from aggregate
    queries alone (an index on the task state), so it answers at once on a million tasks."""
    run = read_run(run_dir)
    conn = _read(run_dir)
    try:
        counts = dict.fromkeys(TASK_STATES, 0)
        counts.update(conn.execute("SELECT state, count(*) FROM tasks GROUP BY state").fetchall())
        attempts, failed = conn.execute(
            "SELECT count(*), count(failure_class) FROM attempts"
        ).fetchone()
        allocations = conn.execute("SELECT state FROM allocations").fetchall()
    except sqlite3.Error as exc:
        raise JournalError(f"{run_dir}: unreadable journal: {_why(exc)}") from None
    finally:
        conn.close()
    if run["state"] == "cancelled":  # its driver marks the rows just after the run
        counts["cancelled"] += counts["pending"] + counts["running"]
        counts["pending"] = counts["running"] = 0
    return {
        "run_id": run["run_id"],
        "state": run["state"],
        "tasks": sum(counts.values()),
        "counts": counts,
        "attempts": attempts,
        "failed_attempts": failed,
        "allocations": len(allocations),
        "open_allocations": sum(1 for (state,) in allocations if not allocation_ended(state)),
    }


def tasks_in_states(
    run_dir: Path, states: Sequence[str], limit: int | None
) -> list[tuple[str, str, str | None]]:
    """Up to ``limit`` tasks (None: all) in each of ``states`` (in declaration order), as
    ``(task_id, state, failure class of its last attempt)``: the index on the state finds
    them, so a million-task run answers at once."""
    conn = _read(run_dir)
    try:
        return tasks_in_states_of(conn, states, limit)
    except sqlite3.Error as exc:
        raise JournalError(f"{run_dir}: unreadable journal: {_why(exc)}") from None
    finally:
        conn.close()


def tasks_in_states_of(
    conn: sqlite3.Connection, states: Sequence[str], limit: int | None
) -> list[tuple[str, str, str | None]]:
    """:func:`tasks_in_states` on an open journal connection."""
    found: list[tuple[str, str, str | None]] = []
    for state in states:
        found.extend(
            (str(t), str(s), c)
            for t, s, c in conn.execute(
                "SELECT t.task_id, t.state, (SELECT a.failure_class FROM attempts a "
                "WHERE a.task_id = t.task_id ORDER BY a.n DESC LIMIT 1) "
                "FROM tasks t WHERE t.state = ? ORDER BY t.rowid LIMIT ?",
                (state, -1 if limit is None else limit),
            )
        )
    return found


@dataclass(frozen=True, slots=True)
class AttemptTotals:
    """A run's attempts in aggregate (a huge run's report: hpcorch.report.large)."""

    first_start: float | None
    last_end: float | None
    """The latest end, or start of an attempt not ended."""
    failed_by_class: dict[str, int]
    """Failed attempts (a failure class or a nonzero exit) by failure class."""
    failed_tasks_by_class: dict[str, int]
    """Tasks that ended failed, by their last attempt's failure class."""
    retries: int
    tasks_retried: int


def attempt_totals(run_dir: Path) -> AttemptTotals:
    """:class:`AttemptTotals` from aggregate queries."""
    conn = _read(run_dir)
    try:
        first, last = conn.execute(
            "SELECT min(start), max(coalesce(end, start)) FROM attempts WHERE start IS NOT NULL"
        ).fetchone()
        failed = dict(
            conn.execute(
                "SELECT coalesce(failure_class, 'unknown'), count(*) FROM attempts "
                "WHERE failure_class IS NOT NULL OR exit_code NOT IN (0) GROUP BY 1"
            ).fetchall()
        )
        tasks: dict[str, int] = {}
        for _, _, why in tasks_in_states_of(conn, ("failed",), None):
            tasks[why or "unknown"] = tasks.get(why or "unknown", 0) + 1
        retries, retried = conn.execute(
            "SELECT count(*), count(DISTINCT task_id) FROM attempts WHERE n > 1"
        ).fetchone()
    except sqlite3.Error as exc:
        raise JournalError(f"{run_dir}: unreadable journal: {_why(exc)}") from None
    finally:
        conn.close()
    return AttemptTotals(first, last, failed, tasks, int(retries), int(retried))


# An attempt's outcome, end (the report's ``now`` for one not ended), cores and GPUs, and
# the group of its task (its id without the number: sim-41 -> sim), in SQL.
_OUTCOME = (
    "CASE WHEN failure_class IS NOT NULL OR coalesce(exit_code, 0) != 0 THEN 'failed' "
    "WHEN end IS NULL THEN 'running' ELSE 'succeeded' END"
)
_STOP = "max(coalesce(end, :now), start)"
_CORES = (
    "CASE WHEN coalesce(cores, '') = '' THEN 1 "
    "ELSE length(cores) - length(replace(cores, ',', '')) + 1 END"
)
_GPUS = (
    "CASE WHEN coalesce(gpus, '') = '' THEN 0 "
    "ELSE length(gpus) - length(replace(gpus, ',', '')) + 1 END"
)
_GROUP = (
    "CASE WHEN task_id GLOB '*[0-9]' THEN coalesce(nullif(rtrim(rtrim(task_id, "
    "'0123456789'), '-_.:@+'), ''), task_id) ELSE task_id END"
)


TimelineRow = tuple[
    str | None, str | None, str, str, str, str | None, int, int, int, float, float, float, float
]  # fmt: skip
"""``(site, job id, node, task group, outcome, failure class, first bin, last bin,
attempts, first start, last end, core-seconds, GPU-seconds)``: the attempts of one job
and node, task group and outcome that cover the same time bins."""


def timeline(run_dir: Path, *, t0: float, width: float, bins: int, now: float) -> list[TimelineRow]:
    """A huge run's attempts in aggregate (its report: hpcorch.report.large), in one pass:
    :data:`TimelineRow` s, bins of ``width`` seconds from ``t0``."""
    conn = _read(run_dir)
    conn.row_factory = None
    args = {"t0": t0, "width": width, "last": bins - 1, "now": now}
    try:
        rows: list[TimelineRow] = conn.execute(
            f"SELECT site, job_id, coalesce(node, 'unknown'), {_GROUP} AS grp, "
            f"{_OUTCOME} AS outcome, failure_class, "
            "min(CAST((start - :t0) / :width AS INTEGER), :last) AS lo, "
            f"min(CAST(({_STOP} - :t0) / :width AS INTEGER), :last) AS hi, "
            f"count(*), min(start), max({_STOP}), sum({_CORES} * ({_STOP} - start)), "
            f"sum({_GPUS} * ({_STOP} - start)) FROM attempts WHERE start IS NOT NULL "
            "GROUP BY site, job_id, 3, grp, outcome, failure_class, lo, hi",
            args,
        ).fetchall()
    except sqlite3.Error as exc:
        raise JournalError(f"{run_dir}: unreadable journal: {_why(exc)}") from None
    finally:
        conn.close()
    return rows


def status(run_dir: Path) -> dict[str, Any]:
    """The object ``hpcorch status RUN --json`` prints (see DESIGN.md)."""
    run = read_run(run_dir)
    conn = _read(run_dir)
    try:
        tasks = conn.execute("SELECT task_id, state FROM tasks ORDER BY rowid").fetchall()
        attempts = conn.execute("SELECT * FROM attempts ORDER BY task_id, n").fetchall()
        allocs = conn.execute("SELECT * FROM allocations ORDER BY start").fetchall()
        # the scaler's latest core/GPU-hours and cost (hpcorch.provision.accounting)
        accounting = conn.execute(
            "SELECT payload FROM events WHERE kind = 'accounting' ORDER BY id DESC LIMIT 1"
        ).fetchone()
    finally:
        conn.close()
    by_task: dict[str, list[dict[str, Any]]] = {}
    for a in attempts:
        by_task.setdefault(a["task_id"], []).append(
            {
                "n": a["n"],
                "start": a["start"],
                "end": a["end"],
                "exit_code": a["exit_code"],
                "failure_class": a["failure_class"],
                "job_id": a["job_id"],
                # the site whose job it is: job ids repeat across sites
                "site": _column(a, "site"),
                "node": a["node"],
                "gpus": _split(a["gpus"]),
                "cores": _split(a["cores"]),
                # MPI attempts only: the node of each rank
                **_ranks(a),
                # trainings only: MASTER_ADDR:PORT [resume=CHECKPOINT]
                **({"training": t} if (t := _column(a, "training")) else {}),
                # trainings only: NVML's figures per GPU, or {"none": "no GPU: why"}
                **({"gpu_usage": json.loads(g)} if (g := _column(a, "gpu_usage")) else {}),
            }
        )
    # a cancelled run's driver marks the rows just after the run (as status_summary counts)
    ended = {"pending": "cancelled", "running": "cancelled"} if run["state"] == "cancelled" else {}
    tasks = [{"task_id": t["task_id"], "state": ended.get(t["state"], t["state"])} for t in tasks]
    counts = dict.fromkeys(TASK_STATES, 0)
    for t in tasks:
        counts[t["state"]] = counts.get(t["state"], 0) + 1
    return {
        "run_id": run["run_id"],
        "state": run["state"],
        "counts": counts,
        "tasks": [
            {"id": t["task_id"], "state": t["state"], "attempts": by_task.get(t["task_id"], [])}
            for t in tasks
        ],
        "allocations": [
            {
                "job_id": a["job_id"],
                "site": a["site"] or None,
                "partition": a["partition"],
                "nodes": a["nodes"],
                "state": a["state"],
                "start": a["start"],
                "end": a["end"],
            }
            for a in allocs
        ],
        "accounting": json.loads(accounting["payload"]) if accounting else None,
    }
