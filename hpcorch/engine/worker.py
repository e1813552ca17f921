"""What runs on a Dask worker: one task attempt, and the record of it.

:func:`execute` runs a function, a command (argv list, output to files in
the run directory) or an emulated task (holds its cores for a duration).
Each attempt appends a small record (times, worker, node, Slurm job, exit
code, failure class) to a buffer in the worker process; the driver collects
the buffer in batches with :func:`drain`, so no per-task message goes to the
driver and results stay on the workers.
"""

from __future__ import annotations

import collections
import importlib
import os
import pickle
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpcorch.engine import watchdog
from hpcorch.engine.retry import TaskFailed
from hpcorch.spec import TaskRef

__all__ = ["Payload", "TaskFailed", "drain", "execute", "load_result"]

_BUFFER: collections.deque[dict[str, Any]] = collections.deque()
_IDENTITY: dict[str, Any] = {}


@dataclass(frozen=True, slots=True)
class Payload:
    """Everything a worker needs for one attempt; small, so it pickles fast."""

    run_id: str
    task_id: str
    n: int
    kind: str
    target: Any  # callable or "mod:attr" | argv tuple | duration seconds
    deps: tuple[str, ...] = ()  # parent ids, in the order their values are passed
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    has_refs: bool = False
    log_dir: str | None = None
    result_path: str | None = None
    memo_path: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    timeout: float | None = None
    memory: int = 0  # bytes an emulated task really allocates
    memory_request: int = 0  # bytes requested, for diagnosing a failure


def _identity() -> dict[str, Any]:
    if not _IDENTITY:
        try:
            from distributed import get_worker

            worker: str | None = get_worker().address
        except ValueError:
            worker = None
        _IDENTITY.update(
            worker=worker,
            node=os.environ.get("SLURMD_NODENAME") or socket.gethostname(),
            job_id=os.environ.get("SLURM_JOB_ID"),
            gpus=os.environ.get("CUDA_VISIBLE_DEVICES"),
        )
    return _IDENTITY


def _resolve(target: Any) -> Callable[..., Any]:
    if callable(target):
        func: Callable[..., Any] = target
        return func
    module, _, attr = str(target).partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{target} is not callable")
    fn: Callable[..., Any] = obj
    return fn


def _substitute(value: Any, results: dict[str, Any]) -> Any:
    if isinstance(value, TaskRef):
        return results[value.id]
    if isinstance(value, list | tuple):
        return type(value)(_substitute(v, results) for v in value)
    if isinstance(value, dict):
        return {k: _substitute(v, results) for k, v in value.items()}
    return value


def _store(path: str, value: Any) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)


def load_result(path: str | None) -> Any:
    """A result stored by an earlier attempt or run; ``None`` when none was stored."""
    if path is None or not os.path.exists(path):
        return None
    with open(path, "rb") as fh:
        return pickle.load(fh)  # written by this run's own workers


def _run_command(p: Payload) -> None:
    argv = list(p.target)
    log_dir = Path(p.log_dir or ".")
    log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    stem = log_dir / f"{p.task_id}.{p.n}"
    env = {
        **os.environ,
        **p.env,
        "HPCORCH_RUN_ID": p.run_id,
        "HPCORCH_RUN_DIR": str(log_dir.parent),
        "HPCORCH_TASK_ID": p.task_id,
        "HPCORCH_ATTEMPT": str(p.n),
    }
    with open(f"{stem}.out", "wb") as out, open(f"{stem}.err", "wb") as err:
        try:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=p.cwd
            )
        except OSError as exc:
            raise TaskFailed(f"cannot start {argv[0]!r}: {exc.strerror}", 127) from None
        ended = watchdog.wait(proc, timeout=p.timeout, memory_limit=p.memory_request)
    returncode, peak = ended.returncode, ended.memory_peak
    if ended.timed_out:
        raise TaskFailed(
            f"{argv[0]} ran past its walltime of {p.timeout:g}s; see {stem}.err",
            timed_out=True,
            memory_peak=peak,
        )
    if ended.over_memory:
        raise TaskFailed(
            f"{argv[0]} used {(peak or 0) // 2**20} MiB, above the {p.memory_request // 2**20} MiB "
            f"it asked for, and was killed; see {stem}.err",
            None,
            signal.SIGKILL,
            memory_peak=peak,
        )
    if returncode < 0:
        raise TaskFailed(
            f"{argv[0]} killed by signal {-returncode}; see {stem}.err",
            None,
            -returncode,
            memory_peak=peak,
        )
    if returncode != 0:
        raise TaskFailed(
            f"{argv[0]} exited with {returncode}; see {stem}.err", returncode, memory_peak=peak
        )


def _emulate(p: Payload) -> None:
    ballast = None
    if p.memory:
        ballast = bytearray(p.memory)
        ballast[::4096] = b"\x01" * len(range(0, p.memory, 4096))  # touch every page
    time.sleep(float(p.target))
    del ballast


def execute(p: Payload, *dep_values: Any) -> Any:
    """Run one attempt of one task; parent values arrive as ``dep_values`` (see ``p.deps``)."""
    record: dict[str, Any] = {"task_id": p.task_id, "n": p.n, "run_id": p.run_id}
    record.update(_identity())
    record["start"] = time.time()
    _BUFFER.append(dict(record))
    value: Any = None
    try:
        if p.kind == "function":
            fn = _resolve(p.target)
            if p.has_refs:
                results = dict(zip(p.deps, dep_values, strict=True))
                args = _substitute(p.args, results)
                kwargs = _substitute(p.kwargs, results)
                value = fn(*args, **kwargs)
            else:
                value = fn(*p.args, **p.kwargs)
        elif p.kind == "command":
            _run_command(p)
        else:
            _emulate(p)
    except Exception as exc:
        if isinstance(exc, TaskFailed):
            exc.node = record.get("node")
        # The failure class is the driver's to write: it also knows the node's and the
        # allocation's fate (hpcorch.engine.recovery).
        record.update(
            exit_code=exc.exit_code if isinstance(exc, TaskFailed) else None,
            message=_message(exc)[:500],
        )
        raise
    else:
        record["exit_code"] = 0
        if value is not None:
            for path in (p.result_path, p.memo_path):
                if path:
                    _store(path, value)
        if p.memo_path:
            Path(p.memo_path + ".done").touch(mode=0o600)
        return value
    finally:
        record["end"] = time.time()
        _BUFFER.append(record)


def _message(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, TaskFailed) else f"{type(exc).__name__}: {exc}"


def drain(run_id: str) -> list[dict[str, Any]]:
    """Pop this worker's attempt records for ``run_id``; a start and its end merge into one."""
    merged: dict[tuple[str, int], dict[str, Any]] = {}
    keep: list[dict[str, Any]] = []
    while True:
        try:
            rec = _BUFFER.popleft()
        except IndexError:
            break
        if rec.get("run_id") != run_id:
            keep.append(rec)
            continue
        key = (rec["task_id"], rec["n"])
        if key in merged:
            merged[key].update(rec)
        else:
            merged[key] = rec
    _BUFFER.extend(keep)
    return list(merged.values())
