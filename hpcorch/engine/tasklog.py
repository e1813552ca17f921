"""Per-attempt logs of function tasks: what an attempt's thread prints and logs.

A Dask worker runs function tasks on a pool of threads in one process, and
``sys.stdout`` is the process's: pointing it at one task's file would catch
every other task's output too. So :func:`install` (once per process, on the
first function attempt) puts a :class:`_Router` in front of ``sys.stdout`` and
``sys.stderr`` and a :class:`_Handler` on the root logger; both route by the
calling thread. A thread inside :func:`capture` writes to its attempt's files,
``<log dir>/<task>.<n>.out`` and ``.err`` — the names command tasks' logs have,
so ``hpcorch logs`` reads both kinds alike; any other thread writes where it
wrote before. A file (0600) is made on its first byte, so an attempt that
prints nothing costs no file; a failed attempt's traceback goes to ``.err``.

An attempt's output is capped at :data:`LOG_LIMIT` bytes, both streams
together; past it, one line in the stream that hit the cap says so and the rest
is dropped. The traceback of a failed attempt is written past the cap (at most
:data:`TRACEBACK_LIMIT` bytes of it).

Logging records reach the handler when their logger lets them through; the
root logger is lowered to INFO for that (a worker's default is WARNING), while
the handlers it had keep their old threshold, and a record no other handler
would have taken still goes to :data:`logging.lastResort`, as before.

Not captured: threads a task starts itself, and subprocesses writing to the
file descriptors they inherit (redirecting a descriptor is process-wide).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import traceback
from typing import IO, Any

__all__ = ["LOG_LIMIT", "TRACEBACK_LIMIT", "AttemptLog", "capture", "install", "uninstall"]

LOG_LIMIT = 16 * 2**20
"""Bytes of output kept per attempt (stdout and stderr together)."""
TRACEBACK_LIMIT = 64 * 2**10
"""Bytes of a failed attempt's traceback kept (written even past :data:`LOG_LIMIT`)."""

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_CURRENT = threading.local()
_INSTALL_LOCK = threading.Lock()
_INSTALLED: list[_Installed] = []  # at most one: this process's routing


class AttemptLog:
    """The two log files of one attempt, made on first write, sharing one byte budget."""

    def __init__(self, stem: str | os.PathLike[str], limit: int = LOG_LIMIT) -> None:
        self.stem = os.fspath(stem)
        self.limit = limit
        self.written = 0
        self.capped = False
        self._files: dict[str, IO[bytes]] = {}

    def _file(self, stream: str) -> IO[bytes]:
        fh = self._files.get(stream)
        if fh is None:
            os.makedirs(os.path.dirname(self.stem) or ".", mode=0o700, exist_ok=True)
            flags = os.O_CREAT | os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
            fd = os.open(f"{self.stem}.{stream}", flags, 0o600)
            fh = self._files[stream] = os.fdopen(fd, "ab")
        return fh

    def write(self, stream: str, text: str) -> None:
        """Append ``text`` to ``stream`` ("out" or "err") within the attempt's budget."""
        if self.capped or not text:
            return
        data = text.encode("utf-8", "backslashreplace")
        room = self.limit - self.written
        if len(data) > room:
            self.capped = True
            data = data[:room]
            cut = data.rfind(b"\n") + 1  # keep whole lines
            data = data[:cut] if cut else b""
            data += (
                f"\n[hpcorch: this attempt's output reached the cap of {self.limit} bytes "
                "(stdout and stderr together); the rest was dropped]\n"
            ).encode()
        self.written += len(data)
        fh = self._file(stream)
        fh.write(data)
        if b"\n" in data:
            fh.flush()  # readable while the task runs, and kept if the worker dies

    def write_traceback(self, exc: BaseException) -> None:
        """The traceback of the exception that ended the attempt, to ``.err``, past the cap."""
        text = "".join(traceback.format_exception(exc))
        data = text.encode("utf-8", "backslashreplace")
        if len(data) > TRACEBACK_LIMIT:
            data = data[:TRACEBACK_LIMIT] + b"\n[hpcorch: traceback cut]\n"
        fh = self._file("err")
        fh.write(data)

    def flush(self) -> None:
        for fh in self._files.values():
            fh.flush()

    def close(self) -> None:
        if self._files:
            for fh in self._files.values():
                fh.close()
            self._files.clear()


def current() -> AttemptLog | None:
    """The log of the attempt this thread runs, if it runs one inside :func:`capture`."""
    log: AttemptLog | None = getattr(_CURRENT, "log", None)
    return log


class _Router:
    """Stands for ``sys.stdout``/``sys.stderr``: a capturing thread's text goes to its log."""

    def __init__(self, stream: str, target: Any) -> None:
        self._stream = stream
        self._target = target

    def write(self, text: str) -> int:
        log = current()
        if log is not None:
            log.write(self._stream, text)
        elif self._target is not None:  # None: a process started without the stream
            n: int = self._target.write(text)
            return n
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        log = current()
        if log is not None:
            log.flush()
        elif self._target is not None:
            self._target.flush()

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding, buffer, ...
        return getattr(self._target, name)


class _Handler(logging.Handler):
    """On the root logger: a capturing thread's records go to its log's ``.err``."""

    def __init__(self, passthrough: int) -> None:
        super().__init__()
        self.passthrough = passthrough  # the root logger's level before install
        self.setFormatter(logging.Formatter(_FORMAT))

    def handle(self, record: logging.LogRecord) -> bool:
        # Without the handler's lock: each attempt's files belong to one thread, and a
        # lock shared by every task thread of the worker would serialise their logging.
        rv = self.filter(record)
        if isinstance(rv, logging.LogRecord):
            record = rv
        if rv:
            self.emit(record)
        return bool(rv)

    def emit(self, record: logging.LogRecord) -> None:
        log = current()
        if log is not None:
            try:
                log.write("err", self.format(record) + "\n")
            except Exception:
                self.handleError(record)
        elif record.levelno >= self.passthrough and not self._others(record):
            last = logging.lastResort
            if last is not None and record.levelno >= last.level:
                last.handle(record)

    def _others(self, record: logging.LogRecord) -> bool:
        """Whether a handler other than this one took the record (else lastResort would)."""
        node: logging.Logger | None = logging.getLogger(record.name)
        while node is not None:
            if any(h is not self for h in node.handlers):
                return True
            if not node.propagate:
                return False
            node = node.parent
        return False


class _Installed:
    def __init__(self) -> None:
        root = logging.getLogger()
        self.stdout, self.stderr = sys.stdout, sys.stderr
        self.root_level = root.level
        self.handler_levels = [(h, h.level) for h in root.handlers]
        passthrough = root.level or logging.WARNING
        if root.level == logging.NOTSET or root.level > logging.INFO:
            for h in root.handlers:  # they see what they saw before
                h.setLevel(max(h.level, passthrough))
            root.setLevel(logging.INFO)
        self.handler = _Handler(passthrough)
        root.addHandler(self.handler)
        sys.stdout = _Router("out", self.stdout)
        sys.stderr = _Router("err", self.stderr)

    def undo(self) -> None:
        root = logging.getLogger()
        root.removeHandler(self.handler)
        root.setLevel(self.root_level)
        for h, level in self.handler_levels:
            h.setLevel(level)
        if isinstance(sys.stdout, _Router):
            sys.stdout = self.stdout
        if isinstance(sys.stderr, _Router):
            sys.stderr = self.stderr


def install() -> None:
    """Route this process's stdout, stderr and logging by thread (idempotent)."""
    if _INSTALLED:
        return
    with _INSTALL_LOCK:
        if not _INSTALLED:
            _INSTALLED.append(_Installed())


def uninstall() -> None:
    """Undo :func:`install` (tests)."""
    with _INSTALL_LOCK:
        while _INSTALLED:
            _INSTALLED.pop().undo()


class capture:  # used as a function: with capture(stem): ...
    """Send what this thread prints and logs to ``<stem>.out``/``.err``; a raised
    exception's traceback goes to ``.err`` before it propagates.

    A class rather than a generator: it runs once per function attempt.
    """

    __slots__ = ("log", "outer")

    def __init__(self, stem: str | os.PathLike[str], limit: int = LOG_LIMIT) -> None:
        if not _INSTALLED:
            install()
        self.log = AttemptLog(stem, limit)
        self.outer: AttemptLog | None = None

    def __enter__(self) -> AttemptLog:
        self.outer = getattr(_CURRENT, "log", None)
        _CURRENT.log = self.log
        return self.log

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        try:
            if exc is not None:
                self.log.write_traceback(exc)
        finally:
            _CURRENT.log = self.outer
            self.log.close()
