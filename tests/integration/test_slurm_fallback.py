"""slurmrestd goes away in the middle of a run: the client carries on over the CLI.

The shared slurmrestd is not touched: the REST backend talks to it through a
throwaway TCP proxy owned by this test, and the proxy is closed mid-run.
The log says so once, and every watcher still sees every job end.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from hpcorch.sites.model import TokenSource
from hpcorch.slurm.cli import CliClient
from hpcorch.slurm.fallback import FallbackClient
from hpcorch.slurm.poller import JobUpdate, Poller, Update
from hpcorch.slurm.rest import RestClient
from hpcorch.slurm.script import JobRequest
from hpcorch.slurm.states import JobState
from hpcorch.slurm.token import TokenProvider

pytestmark = pytest.mark.slurm


class Proxy:
    """Forwards 127.0.0.1:<port> to the real slurmrestd until closed."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.open: list[socket.socket] = []
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """slurmrestd 'stops': the port refuses connections from now on."""
        self.closed.set()
        self.server.close()
        for s in self.open:
            with contextlib.suppress(OSError):
                s.close()


def test_rest_down_mid_run_falls_back_to_cli_once_and_loses_nothing(
    dev_cluster: object, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = urlparse(dev_cluster.rest_url)  # type: ignore[attr-defined]
    proxy = Proxy(url.hostname or "127.0.0.1", url.port or 80)
    cli_env = dev_cluster.cli_env()  # type: ignore[attr-defined]
    jwt = dev_cluster.jwt  # type: ignore[attr-defined]
    cli = CliClient(env=cli_env)
    rest = RestClient(
        f"http://127.0.0.1:{proxy.port}",
        tokens=TokenProvider(TokenSource(), env={**cli_env, "SLURM_JWT": jwt}),
        history=cli,
        env=cli_env,
        timeout_s=5,
    )
    client = FallbackClient([rest, cli], recheck_s=3600)
    poller = Poller(client, interval_s=1)
    seen: dict[str, list[JobState]] = {}

    def watcher(update: Update) -> None:
        if isinstance(update, JobUpdate):
            seen.setdefault(update.job.job_id, []).append(update.job.state)

    def request(name: str, seconds: int) -> JobRequest:
        return JobRequest(
            name=f"fallback-{name}",
            command=f"sleep {seconds}",
            partition="cpu",
            ntasks=1,
            mem="50M",
            time_s=120,
            chdir=str(tmp_path),
            output=str(tmp_path / "%j.out"),
        )

    ids: list[str] = []
    try:
        with caplog.at_level(logging.INFO):
            sub = poller.subscribe(watcher, [])
            ids += [client.submit(request(f"a{i}", 8)) for i in range(3)]
            assert client.name == "rest"
            poller.watch(sub, ids)
            for _ in range(3):
                poller.poll_once()
                time.sleep(1)
            proxy.close()  # slurmrestd is gone from here on
            ids.append(client.submit(request("b", 4)))  # submitted over the CLI
            poller.watch(sub, ids[-1:])
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                poller.poll_once()
                if all(seen.get(j) and seen[j][-1].terminal for j in ids):
                    break
                time.sleep(1)
    finally:
        proxy.close()
        cli.cancel(ids)
        client.close()
    assert client.name == "cli" and client.fallbacks == 1
    fallbacks = [r for r in caplog.records if "falling back" in r.getMessage()]
    assert len(fallbacks) == 1, [r.getMessage() for r in fallbacks]
    for job_id in ids:
        assert seen[job_id][-1] is JobState.COMPLETED, (job_id, seen[job_id])
    truth = {j.job_id: j.state for j in cli.jobs(ids)}
    assert truth == {j: JobState.COMPLETED for j in ids}
    assert jwt not in caplog.text
