"""The driver's Dask client losing its scheduler connection, and getting it back.

When the client's comm to the scheduler closes (a blip of the network, a TLS
connection the stack drops), distributed cancels every future of the client
with reason ``scheduler-connection-lost``, reconnects by itself within its
connect timeout, or closes the client when it cannot. The scheduler then
forgets the client's tasks. None of that is the tasks' doing: the engine waits
here for the client to be connected again and resubmits what was lost
(:meth:`hpcorch.engine.runner.Engine._connection_lost`).
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["LOST", "WAIT_S", "cancel_reason", "connected", "lost_connection", "wait_connected"]

WAIT_S = 120.0
"""The longest the engine waits for the client to reconnect (distributed gives up after
its connect timeout, 30 s by default, and closes the client, which ends the wait early)."""
_POLL_S = 0.05


LOST = "scheduler-connection-lost"
"""The reason distributed gives the futures it cancels when the client's comm closes
(anything else cancelled them on purpose: the budget's end, another client)."""


def lost_connection(future: Any) -> bool:
    """Whether distributed cancelled ``future`` because the client lost its scheduler."""
    return cancel_reason(future) == LOST


def cancel_reason(future: Any) -> str:
    """Why distributed cancelled ``future`` (``scheduler-connection-lost``...), or ``unknown``."""
    exc = getattr(getattr(future, "_state", None), "exception", None)
    return str(getattr(exc, "reason", None) or "unknown")


def connected(client: Any) -> bool:
    comm = client.scheduler_comm
    return bool(client.status == "running" and comm is not None and not comm.closed())


def wait_connected(client: Any, timeout_s: float = WAIT_S) -> bool:
    """Block until ``client`` talks to its scheduler again; False once it closed or timed out."""
    deadline = time.monotonic() + timeout_s
    while not connected(client):
        if client.status in ("closing", "closed") or time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)
    return True
