"""Every listener hpcorch starts authenticates its peers: mutual TLS, a new CA per run.

A login node is shared by many users, and a Dask scheduler or worker that
accepts a client runs that client's code as the user who started it. So the
scheduler, the workers and the nannies of every pool (site ``local``
included) listen on ``tls://`` with :func:`temporary_security` (a CA, a
certificate and a key made in memory for this run; both ends must present a
certificate that CA signed). Their HTTP servers are not covered by TLS, so
they serve no route (:data:`NO_HTTP`, and :data:`NO_HTTP_ENV` for workers
started in a job). Key files written for workers are 0600 in a 0700
directory (:func:`private_dir`).

Python 3.13+ with OpenSSL 3.4+ (Debian 13's and sid's) turns a stale entry on
a thread's OpenSSL error queue into a ``BrokenPipeError`` on the next read or
write of *another*, healthy TLS socket of that thread that would block
(CPython issue 148594: ``_ssl`` does not clear the queue before
``SSL_read_ex``/``SSL_write_ex``). A driver's scheduler and client share one
event loop thread, so one peer that really went away dropped the client's
own scheduler connection (``scheduler-connection-lost``). The sockets of
:func:`temporary_security`'s contexts clear the queue first
(:class:`QueueClearingSSLSocket`).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import ssl
from pathlib import Path
from typing import Any

__all__ = [
    "NO_HTTP",
    "NO_HTTP_ENV",
    "QueueClearingSSLSocket",
    "clear_ssl_errors",
    "libcrypto",
    "private_dir",
    "temporary_security",
]

logger = logging.getLogger(__name__)

NO_HTTP: dict[str, Any] = {
    "distributed.scheduler.http.routes": [],
    "distributed.worker.http.routes": [],
}
"""Dask configuration: the scheduler's and workers' HTTP servers serve nothing."""

NO_HTTP_ENV: dict[str, str] = {"DASK_DISTRIBUTED__WORKER__HTTP__ROUTES": "[]"}
"""The same for a worker started in a job script or an srun step (Dask reads it at start)."""


@functools.cache
def libcrypto() -> Any:
    """The libcrypto this process's ``ssl`` module uses (ctypes), or None when unknown.

    Found among the mapped libraries and checked against ``ssl``'s OpenSSL version, so
    the queue cleared is the one ``_ssl`` reads (never a second copy of the library).
    """
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "libcrypto" in line and "/" in line}
        for path in sorted(paths):
            lib = ctypes.CDLL(path)
            lib.OpenSSL_version_num.restype = ctypes.c_ulong
            if lib.OpenSSL_version_num() == ssl.OPENSSL_VERSION_NUMBER:
                lib.ERR_clear_error.restype = None
                lib.ERR_clear_error.argtypes = []
                return lib
    except (OSError, AttributeError) as exc:
        logger.debug("cannot load the ssl module's libcrypto: %s", exc)
    return None


def clear_ssl_errors() -> None:
    """Empty this thread's OpenSSL error queue (nothing when libcrypto is unknown)."""
    lib = libcrypto()
    if lib is not None:
        lib.ERR_clear_error()


class QueueClearingSSLSocket(ssl.SSLSocket):
    """An :class:`ssl.SSLSocket` that clears the thread's OpenSSL error queue before
    each TLS read, write and handshake step, so only its own errors can fail it."""

    def read(self, len: int = 1024, buffer: Any = None) -> Any:
        clear_ssl_errors()
        return super().read(len, buffer)

    def write(self, data: Any) -> int:
        clear_ssl_errors()
        return super().write(data)

    def send(self, data: Any, flags: int = 0) -> int:
        clear_ssl_errors()
        return super().send(data, flags)

    def do_handshake(self, block: bool = False) -> None:
        clear_ssl_errors()
        super().do_handshake(block)


@functools.cache
def _security_class() -> Any:
    from distributed.security import Security  # noqa: PLC0415  # heavy (distributed, dask): loaded when a pool starts

    class QueueClearingSecurity(Security):
        """Security whose TLS contexts make :class:`QueueClearingSSLSocket` sockets."""

        def _get_tls_context(self, tls: Any, purpose: Any) -> Any:
            ctx = super()._get_tls_context(tls, purpose)  # type: ignore[no-untyped-call]
            if ctx is not None:
                ctx.sslsocket_class = QueueClearingSSLSocket
            return ctx

    # Pickled with a pool's workers (LocalCluster's processes): importable by name.
    QueueClearingSecurity.__module__ = __name__
    QueueClearingSecurity.__qualname__ = "QueueClearingSecurity"
    globals()["QueueClearingSecurity"] = QueueClearingSecurity
    return QueueClearingSecurity


def __getattr__(name: str) -> Any:
    # Unpickling a QueueClearingSecurity in a worker process defines it on first use.
    if name == "QueueClearingSecurity":
        return _security_class()
    raise AttributeError(name)


def temporary_security() -> Any:
    """A :class:`distributed.security.Security` with a new CA, required on both ends,
    whose sockets clear the OpenSSL error queue first (see the module's docstring)."""
    return _security_class().temporary()


def private_dir(path: Path) -> Path:
    """``path`` as a directory only its owner can enter (made, or narrowed, to 0700)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path
