"""Helpers for the login-node tests: another OS user's view of hpcorch's listeners,
and the processes a run left behind.

Run as a script (by ``nobody``, through ``setpriv``), it tries every address given
on its command line the ways another user of the machine could, and prints one
JSON line: ``{address: what got through, or null}``.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from distributed.comm import connect
from distributed.security import Security

NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rsplit("://", maxsplit=1)[-1].rpartition(":")
    return host, int(port)


def _dask_comm(address: str) -> str | None:
    """A Dask client without this run's certificates: plain tcp://, then tls:// with none."""
    host, port = _host_port(address)

    async def attempt(addr: str, **kw: Any) -> str | None:
        try:
            comm = await connect(addr, timeout=3, **kw)
        except Exception:
            return None
        try:  # a listener that took the handshake: does it answer an RPC?
            await comm.write({"op": "identity", "reply": True})
            reply = await asyncio.wait_for(comm.read(), 3)
        except Exception:
            return None
        finally:
            comm.abort()
        return f"answered {addr}: {str(reply)[:80]}"

    async def both() -> str | None:
        plain = await attempt(f"tcp://{host}:{port}")
        if plain:
            return plain
        # TLS that trusts any server certificate but has none of its own
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return await attempt(f"tls://{host}:{port}", ssl_context=ctx) or await attempt(
            f"tls://{host}:{port}", connection_args=Security().get_connection_args("client")
        )

    return asyncio.run(both())


def _raw_tls(address: str) -> str | None:
    """A bare TLS handshake with no client certificate, then a read: the server must drop us."""
    host, port = _host_port(address)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=3) as raw,
            ctx.wrap_socket(raw) as tls,
        ):
            tls.settimeout(3)
            tls.sendall(b"\x00" * 16)
            data = tls.recv(1)
            return f"TLS session open, read {data!r}" if data else None
    except (OSError, ssl.SSLError):
        return None


def _http(port: int, host: str = "127.0.0.1") -> str | None:
    """GET the routes Dask's HTTP servers serve by default; any 200 is a leak."""
    routes = ("/", "/health", "/metrics", "/info/main/workers.html", "/json/identity.json")
    for route in routes:
        try:
            with socket.create_connection((host, port), timeout=3) as conn:
                conn.sendall(f"GET {route} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
                status = conn.recv(64).split(b"\r\n")[0]
        except OSError:
            continue
        if b" 200 " in status or b" 30" in status:
            return f"http {port}{route}: {status.decode(errors='replace')}"
    return None


def probe(comm_addresses: Iterable[str], http_ports: Iterable[int]) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for address in comm_addresses:
        found[address] = _dask_comm(address) or _raw_tls(address)
    for port in http_ports:
        found[f"http:{port}"] = _http(port)
    return found


def probe_as_nobody(comm_addresses: list[str], http_ports: list[int]) -> dict[str, str | None]:
    """:func:`probe` run by ``nobody``: what another user of the node gets through."""
    argv = [*NOBODY, sys.executable, __file__, json.dumps([comm_addresses, http_ports])]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp"}
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=300, env=env, cwd="/tmp", check=False
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, str | None] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def as_nobody(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``hpcorch ARGV`` run by ``nobody`` (another user of the node), from /tmp."""
    hpcorch = Path(sys.executable).with_name("hpcorch")
    return subprocess.run(
        [*NOBODY, str(hpcorch), *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp"},
        cwd="/tmp",
        check=False,
    )


def tree_workflow(directory: Path, marker: str) -> Path:
    """A command task with a child and a grandchild (it touches ``started`` first), and a
    function task with a child whose environment holds ``MARK=marker``."""
    workflow, started = directory / "tree.yaml", directory / "started"
    workflow.write_text(
        "name: tree\n"
        "tasks:\n"
        "  - id: cmd\n"
        f"    command: [bash, -c, 'touch {started}; (sleep 301 &) ; sleep 302 & wait']\n"
        "  - id: fn\n"
        "    function: subprocess:call\n"
        "    args: [[sleep, '303']]\n"
        f"    kwargs: {{env: {{MARK: '{marker}'}}}}\n"
    )
    return workflow


def listeners(client: Any) -> tuple[list[str], list[int]]:
    """Every comm address (scheduler, workers, nannies) and HTTP port of a run's cluster."""
    info = client.scheduler_info()
    comms = [info["address"]]
    ports = [p for p in info.get("services", {}).values() if isinstance(p, int)]
    for addr, worker in info["workers"].items():
        comms.append(addr)
        if worker.get("nanny"):
            comms.append(worker["nanny"])
        ports += [p for p in worker.get("services", {}).values() if isinstance(p, int)]
    return comms, ports


def processes_with(marker: str) -> list[str]:
    """Processes whose environment holds ``marker`` (a task's and all its children's)."""
    found = []
    needle = marker.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes():
                found.append(f"{entry.name}: {(entry / 'cmdline').read_bytes()!r}")
        except OSError:
            continue
    return found


def wait_gone(marker: str, timeout_s: float) -> list[str]:
    """Poll until no process carries ``marker``; what is left when ``timeout_s`` ran out."""
    deadline = time.monotonic() + timeout_s
    left = processes_with(marker)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = processes_with(marker)
    return left


if __name__ == "__main__":
    addresses, ports = json.loads(sys.argv[1])
    print(json.dumps(probe(addresses, ports)))
