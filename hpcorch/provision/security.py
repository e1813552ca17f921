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
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["NO_HTTP", "NO_HTTP_ENV", "private_dir", "temporary_security"]

NO_HTTP: dict[str, Any] = {
    "distributed.scheduler.http.routes": [],
    "distributed.worker.http.routes": [],
}
"""Dask configuration: the scheduler's and workers' HTTP servers serve nothing."""

NO_HTTP_ENV: dict[str, str] = {"DASK_DISTRIBUTED__WORKER__HTTP__ROUTES": "[]"}
"""The same for a worker started in a job script or an srun step (Dask reads it at start)."""


def temporary_security() -> Any:
    """A :class:`distributed.security.Security` with a new CA, required on both ends."""
    from distributed.security import Security  # noqa: PLC0415  # heavy (distributed, dask): loaded when a pool starts

    return Security.temporary()  # type: ignore[no-untyped-call]


def private_dir(path: Path) -> Path:
    """``path`` as a directory only its owner can enter (made, or narrowed, to 0700)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path
