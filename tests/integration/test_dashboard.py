"""``--dashboard``: Dask's dashboard on the scheduler's loopback only, on local and dev.

While a gated task holds the run open, the port the tunnel line names listens
on 127.0.0.1 and on no other address, serves the dashboard's pages and none of
distributed's other HTTP routes, and takes websockets only from its own pages.
"""

from __future__ import annotations

import base64
import http.client
import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.waiting import wait_for

HPCORCH = Path(sys.executable).with_name("hpcorch")
_HINT = re.compile(r"http://127\.0\.0\.1:(\d+)/status")


def _listeners(port: int) -> set[str]:
    """The addresses a socket of this machine listens on at ``port``."""
    return {
        c.laddr.ip
        for c in psutil.net_connections("inet")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    }


def _other_addresses() -> list[str]:
    """This machine's addresses besides loopback."""
    return [
        a.address
        for addrs in psutil.net_if_addrs().values()
        for a in addrs
        if a.family == socket.AF_INET and not a.address.startswith("127.")
    ]


def _websocket(port: int, origin: str) -> int:
    """The status of a websocket handshake with the dashboard from a page at ``origin``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request(
        "GET",
        "/status/ws",
        headers={
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
            "Sec-WebSocket-Version": "13",
            "Origin": origin,
        },
    )
    status = conn.getresponse().status
    conn.close()
    return status


def _check(tmp_path: Path, site: str, env: dict[str, str]) -> None:
    gate = tmp_path / "open"
    workflow = tmp_path / "gated.yaml"
    workflow.write_text(
        "tasks:\n"
        f"  - {{id: gate, command: [bash, -c, 'while [ ! -e {gate} ]; do sleep 0.2; done']}}\n"
    )
    log = tmp_path / "hpcorch.log"
    argv = [str(HPCORCH), "run", str(workflow), "--site", site, "--run-dir", str(tmp_path / "run")]
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*argv, "--dashboard"], env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        match = wait_for(lambda: _HINT.search(log.read_text()), 300, "the dashboard's line")
        port = int(match.group(1))
        line = next(ln for ln in log.read_text().splitlines() if "Dask dashboard" in ln)
        assert f"ssh -N -L {port}:127.0.0.1:{port} " in line, line
        assert _listeners(port) == {"127.0.0.1"}
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=60) as page:
            assert page.status == 200 and b"bokeh" in page.read().lower()
        # its websockets serve its own pages, not another site's open in the same browser
        assert _websocket(port, f"http://localhost:{port}") == 101
        assert _websocket(port, "http://evil.example") == 403
        for route in ("api/v1", "info/main/workers.html", "json/identity.json"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/{route}", timeout=30)
            assert refused.value.code == 404, route
        others = _other_addresses()
        assert others  # the machine has a network address: the check below means something
        for address in others:
            with pytest.raises(OSError):
                socket.create_connection((address, port), timeout=5).close()
    finally:
        gate.touch()
        proc.wait(timeout=300)
    assert proc.returncode == 0, log.read_text()


@pytest.mark.slow
def test_dashboard_on_loopback_only_local(tmp_path: Path) -> None:
    _check(tmp_path, "local", dict(os.environ))


@pytest.mark.slurm
def test_dashboard_on_loopback_only_dev(dev_cluster: Any, tmp_path: Path) -> None:
    _check(tmp_path, "dev", dev_cluster.cli_env() | {"HPCORCH_SCALE_INTERVAL": "1"})
