"""Bundled small tasks on site ``local``: one Dask task runs many, each keeps its identity."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import hpcorch
from hpcorch.policies.retry import RetryConfig

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPCORCH_HOME", str(tmp_path / "home"))


def fail_once_every_100(i: int, markers: str) -> int:
    """Task ``i`` fails its first attempt when ``i`` is a multiple of 100."""
    if i % 100 == 0:
        marker = Path(markers, str(i))
        if not marker.exists():
            marker.touch()
            print(f"task {i} fails this time")
            raise RuntimeError(f"first attempt of {i} fails")
    return 2 * i


def double(i: int) -> int:
    return 2 * i


def _attempts(run_dir: Path) -> dict[str, int]:
    conn = sqlite3.connect(run_dir / "journal.sqlite")
    try:
        rows = conn.execute("SELECT task_id, count(*) FROM attempts GROUP BY task_id")
        return dict(rows.fetchall())
    finally:
        conn.close()


def test_a_failed_task_in_a_bundle_reruns_alone(tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    wf = hpcorch.Workflow("sweep")  # 10,000 tasks: bundled by default
    for i in range(10_000):
        wf.add(fail_once_every_100, i, str(markers), id=f"t{i}", retries=1)
    with wf.submit(
        site="local", run_dir=tmp_path / "run", retry_config=RetryConfig(user_backoff_s=0)
    ) as handle:
        summary = handle.wait()
        bundles = handle.engine._bundle_count
        assert handle.result("t100") == 200 and handle.result("t7") == 14
    assert summary.state == "succeeded", summary.failures[:3]
    assert bundles < 10_000 // 4  # it did bundle
    attempts = _attempts(tmp_path / "run")
    assert len(attempts) == 10_000
    twice = {tid for tid, n in attempts.items() if n == 2}
    assert twice == {f"t{i}" for i in range(0, 10_000, 100)}
    assert max(attempts.values()) == 2
    # each failed attempt has its own log, and only it
    logs = tmp_path / "run" / "logs"
    assert "task 300 fails" in (logs / "t300.1.out").read_text()
    assert "RuntimeError" in (logs / "t300.1.err").read_text()
    assert not (logs / "t301.1.out").exists()


def test_switches(tmp_path: Path) -> None:
    wf = hpcorch.Workflow("small", bundle=True)  # on, though small
    for i in range(40):
        wf.add(double, i, id=f"t{i}", bundle=False if i == 0 else None)
    with wf.submit(site="local", run_dir=tmp_path / "on") as handle:
        assert handle.wait().ok
        assert 0 < handle.engine._bundle_count < 39
        assert "t0" in handle.engine.futures  # not bundled: a Dask task of its own
        assert "t0" not in handle.engine.values and handle.result("t5") == 10
    off = hpcorch.Workflow("off", bundle=False)
    for i in range(10):
        off.add(double, i, id=f"t{i}")
    with off.submit(site="local", run_dir=tmp_path / "off") as handle:
        assert handle.wait().ok
        assert handle.engine._bundle_count == 0


def test_command_tasks_bundle_each_its_own_process(tmp_path: Path) -> None:
    wf = hpcorch.Workflow("cmds", bundle=True)
    for i in range(30):
        argv = ["sh", "-c", "echo $HPCORCH_TASK_ID; exit 3" if i == 7 else "echo $HPCORCH_TASK_ID"]
        wf.add(argv, id=f"c{i}")
    with wf.submit(site="local", run_dir=tmp_path / "run") as handle:
        summary = handle.wait()
        bundles = handle.engine._bundle_count
    assert 0 < bundles < 30
    assert summary.counts == {"succeeded": 29, "failed": 1}
    assert [f.task_id for f in summary.failures] == ["c7"]
    assert summary.failures[0].failure_class == "user_error"
    logs = tmp_path / "run" / "logs"
    assert (logs / "c12.1.out").read_text() == "c12\n"  # its own process, its own log
    assert max(_attempts(tmp_path / "run").values()) == 1
