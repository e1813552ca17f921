"""The driver's client loses its scheduler connection mid-run (issue 17).

Distributed then cancels every future with ``scheduler-connection-lost`` and
reconnects; the engine must resubmit the lost attempts instead of calling the
tasks cancelled, and a command that was running must not run on beside its new
attempt. A LocalCluster in this process; the client's comm is closed by hand.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import dask
import pytest
from distributed import Client, LocalCluster
from distributed.security import Security

from hpcorch.engine.runner import Engine, RunSummary
from hpcorch.journal import JOURNAL_NAME, Journal
from hpcorch.spec import TaskSpec, WorkflowSpec
from tests.waiting import wait_for

pytestmark = pytest.mark.slow

LOST = "scheduler_connection_lost"


@pytest.fixture(params=["tcp", "tls"])
def client(request: pytest.FixtureRequest) -> Iterator[Client]:
    # tls: as hpcorch's own clusters talk (the drops of issue 17 were TLS connections)
    security = Security.temporary() if request.param == "tls" else None
    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=4,
            processes=False,
            protocol=f"{request.param}://",
            security=security,
            dashboard_address=":0",
        ) as cluster,
        Client(cluster, security=security) as c,
    ):
        yield c


def _writes(task_id: str, out: Path, sleep: float) -> TaskSpec:
    """A command that appends one line to its own file at its end."""
    line = f"sleep {sleep} && echo {task_id} >> {out / task_id}"
    return TaskSpec(id=task_id, command=("sh", "-c", line))


def test_lost_scheduler_connection_resubmits_the_lost_attempts(
    client: Client, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    sleepers = [_writes(f"s{i}", out, 3) for i in range(3)]
    quick = _writes("quick", out, 0)
    after_quick = _writes("after-quick", out, 3).model_copy(update={"after": ("quick",)})
    last = _writes("last", out, 0).model_copy(update={"after": tuple(t.id for t in sleepers)})
    spec = WorkflowSpec(tasks=[*sleepers, quick, after_quick, last])
    run_dir = tmp_path / "run"
    journal = Journal.create(
        run_dir, run_id="r1", name="reconnect", source=None, site="local", time_scale=None
    )
    engine = Engine(
        spec, client=client, journal=journal, run_id="r1", run_dir=run_dir, use_resources=False
    )
    summaries: list[RunSummary] = []
    runner = threading.Thread(target=lambda: summaries.append(engine.run()))
    runner.start()
    # Mid-run: the sleepers and the child of a finished task are running.
    running = [t.id for t in [*sleepers, after_quick]]
    wait_for(
        lambda: all(engine.state[t] == "running" for t in running),
        30,
        "the attempts to run",
        interval=0.05,
    )
    assert engine.state["quick"] == "succeeded"
    with caplog.at_level(logging.WARNING, logger="hpcorch.engine.runner"):
        comm = client.scheduler_comm.comm
        client.sync(comm.close)  # distributed: cancel all with scheduler-connection-lost
        runner.join(timeout=60)
    assert not runner.is_alive()
    journal.close()

    summary = summaries[0]
    assert summary.state == "succeeded", summary.failures
    with sqlite3.connect(run_dir / JOURNAL_NAME) as conn:
        rows = conn.execute("SELECT task_id, n, failure_class, exit_code FROM attempts").fetchall()
    attempts: dict[str, list[tuple[int, str | None, int | None]]] = {}
    for task_id, n, failure, code in sorted(rows):
        attempts.setdefault(task_id, []).append((n, failure, code))
    # One lost attempt, then one that succeeded: the running ones and the one still waiting
    # for them (its future went too; attempt 1 never started).
    for t in [*running, "last"]:
        assert [(n, f) for n, f, _ in attempts[t]] == [(1, LOST), (2, None)], attempts[t]
        assert attempts[t][-1][2] == 0
    assert [(n, f) for n, f, _ in attempts["quick"]] == [(1, None)], attempts["quick"]
    # Each command's output once: the lost attempts' processes were ended, not left running.
    for t in spec.tasks:
        assert (out / t.id).read_text() == f"{t.id}\n"
    warnings = [r for r in caplog.records if "lost the connection" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


def test_a_scheduler_that_is_gone_fails_the_run_with_a_clear_error(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    spec = WorkflowSpec(tasks=[_writes("s0", out, 3), _writes("s1", out, 3)])
    run_dir = tmp_path / "run"
    # distributed gives up reconnecting after its connect timeout and closes the client
    with (
        dask.config.set({"distributed.comm.timeouts.connect": "2s"}),
        LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        journal = Journal.create(
            run_dir, run_id="r2", name="gone", source=None, site="local", time_scale=None
        )
        engine = Engine(
            spec, client=client, journal=journal, run_id="r2", run_dir=run_dir, use_resources=False
        )
        summaries: list[RunSummary] = []
        runner = threading.Thread(target=lambda: summaries.append(engine.run()))
        runner.start()
        wait_for(
            lambda: all(engine.state[t] == "running" for t in ("s0", "s1")),
            30,
            "the attempts to run",
            interval=0.05,
        )
        cluster.sync(cluster.scheduler.close)
        runner.join(timeout=60)
        assert not runner.is_alive()
        journal.close()
    summary = summaries[0]
    assert summary.state == "failed"
    assert {(f.task_id, f.failure_class) for f in summary.failures} == {("s0", LOST), ("s1", LOST)}
    assert all("could not reconnect" in f.message for f in summary.failures)
