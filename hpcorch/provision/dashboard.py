"""The Dask dashboard of a run's scheduler: off unless asked for, and then on loopback only.

The scheduler's HTTP server is plain HTTP, outside the pool's mutual TLS
(:mod:`hpcorch.provision.security`), so the dashboard (``--dashboard``) binds
``127.0.0.1`` and nothing else, on the host the scheduler runs on (the
driver's: the login node, or the driver job's node under ``hpcorch submit``).
It serves Bokeh's pages only: the scheduler's other HTTP routes (its JSON API
among them) stay off (:data:`~hpcorch.provision.security.NO_HTTP`), and its
websockets take only pages from ``localhost:PORT``/``127.0.0.1:PORT`` (Dask's
default takes any origin, so any web page open in the user's browser could
read it through a tunnel). So the port is chosen before the scheduler starts,
and the tunnel keeps it on both ends.

What loopback does not protect against: other users logged in to the same
host reach ``127.0.0.1`` too. Neither distributed nor its dashboard asks for a
password or token (distributed passes Bokeh's keywords through, but exposes no
authentication of its own), so on a shared login node they can watch the
dashboard (task names, workers, progress; it runs no code). :func:`tunnel_hint`
says so in the line it gives the user.
"""

from __future__ import annotations

import getpass
import importlib.util
import logging
import socket
from typing import Any

from hpcorch.errors import OptionError
from hpcorch.provision.security import NO_HTTP

__all__ = [
    "LOOPBACK",
    "announce",
    "check_available",
    "dashboard_config",
    "free_port",
    "http_settings",
    "scheduler_options",
    "tunnel_hint",
]

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


def check_available() -> None:
    """Refuse ``--dashboard`` (exit 2) where Bokeh, which draws it, is not installed."""
    if importlib.util.find_spec("bokeh") is None:
        raise OptionError(
            "dashboard", "the dashboard needs bokeh>=3.1: pip install 'hpcorch[dashboard]'"
        )


def free_port() -> int:
    """A port free on loopback now (the scheduler takes it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
    return port


def scheduler_options(port: int | None) -> dict[str, Any]:
    """The scheduler's keywords: its HTTP server on loopback, the dashboard on ``port``
    when asked for (``None``: no dashboard, the server on any free port, serving nothing)."""
    return {"dashboard_address": f"{LOOPBACK}:{port or 0}", "dashboard": port is not None}


def dashboard_config(port: int) -> dict[str, Any]:
    """Dask configuration for a dashboard on ``port``: websockets only from its own pages."""
    return {
        "distributed.scheduler.dashboard.bokeh-application.allow_websocket_origin": [
            f"localhost:{port}",
            f"{LOOPBACK}:{port}",
        ]
    }


def tunnel_hint(port: int, host: str | None = None, user: str | None = None) -> str:
    """The line that tells the user where the dashboard is and how to reach it."""
    host = host or socket.getfqdn()
    user = user or getpass.getuser()
    return (
        f"Dask dashboard on {host}, loopback only: http://{LOOPBACK}:{port}/status; "
        f"from your laptop: ssh -N -L {port}:{LOOPBACK}:{port} {user}@{host} "
        f"(add -J LOGIN_NODE when {host} is a compute node; keep port {port} on both ends), "
        f"then open http://localhost:{port}/status. Other users of {host} can reach it too: "
        "it has no password."
    )


def http_settings(port: int | None) -> tuple[int | None, dict[str, Any], dict[str, Any]]:
    """For a scheduler that starts now: the port (a free one for 0), its keywords, and
    the Dask configuration to start it under (no HTTP route but the dashboard's pages)."""
    if port == 0:
        port = free_port()
    config = {**NO_HTTP, **(dashboard_config(port) if port is not None else {})}
    return port, scheduler_options(port), config


def announce(scheduler: Any) -> None:
    """Log where the running ``scheduler``'s dashboard is and how to tunnel to it."""
    server = getattr(scheduler, "http_server", None)
    if server is not None and server.port:
        logger.info("%s", tunnel_hint(int(server.port)))
