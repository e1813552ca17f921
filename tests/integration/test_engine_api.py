"""The Python API on site ``local``: futures, results, submit-and-keep-computing, retries, memo."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import hpcorch
from hpcorch.errors import RunError, WorkflowError
from hpcorch.journal import status
from hpcorch.policies.retry import RetryConfig

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPCORCH_HOME", str(tmp_path / "home"))


def square(x: int) -> int:
    return x * x


def total(*values: int) -> int:
    return sum(values)


def scale(values: dict[str, list[int]], factor: int) -> list[int]:
    return [v * factor for v in values["xs"]]


def slow_value(seconds: float) -> str:
    time.sleep(seconds)
    return "done"


def flaky(marker: str) -> str:
    """Fails on the first call, succeeds on the second (the marker survives the attempt)."""
    path = Path(marker)
    if not path.exists():
        path.write_text("failed once")
        raise RuntimeError("first attempt fails")
    return "second attempt"


def counted(log: str, x: int) -> int:
    with open(log, "a") as fh:
        fh.write("x")
    return x + 1


def boom() -> None:
    raise ValueError("bad input value")


def test_decorator_futures_and_results() -> None:
    wf = hpcorch.Workflow("api")
    sq = wf.task(square)
    tot = wf.task(cpus=2, memory="64MiB")(total)
    parts = [sq(i) for i in range(6)]
    result_future = tot(*parts)
    wf.add(scale, {"xs": [parts[1], parts[2]]}, factor=10, id="nested")
    echo = wf.add(["echo", "hello"], id="echo", after=[result_future, "nested"])
    assert [p.id for p in parts[:2]] == ["square", "square-2"]
    assert wf.spec().task("echo").after == ("total", "nested")

    result = wf.run(site="local")
    assert result.state == "succeeded"
    assert result.result(result_future) == sum(i * i for i in range(6))
    assert result.result("nested") == [10, 40]
    assert result_future.result() == 55
    with pytest.raises(KeyError, match="only function tasks"):
        result.result(echo)
    data = status(result.run_dir)
    assert data["counts"]["succeeded"] == 9
    assert all(len(t["attempts"]) == 1 for t in data["tasks"])


def test_submit_returns_while_the_caller_keeps_computing() -> None:
    wf = hpcorch.Workflow("background")
    slow = wf.add(slow_value, 1.5, id="slow")
    quick = wf.add(square, 7, id="quick")
    started = time.monotonic()
    with wf.submit(site="local") as handle:
        returned = time.monotonic() - started
        local_work = sum(range(10_000))  # the caller's own computation meanwhile
        assert not handle.done() or returned < 1.5
        assert handle.result("quick") == 49
        assert slow.result() == "done"
        summary = handle.wait()
    assert local_work == 49_995_000
    assert summary.ok and summary.counts == {"succeeded": 2}
    assert quick.id == "quick"


def test_failure_raises_run_error_and_skips_descendants() -> None:
    wf = hpcorch.Workflow("fails")
    bad = wf.add(boom, id="bad")
    wf.add(square, bad, id="child")
    wf.add(square, 3, id="independent")
    with pytest.raises(
        RunError, match="bad: user_error: raised ValueError: bad input value; gave up"
    ):
        wf.run(site="local")
    with wf.submit(site="local") as handle:
        with pytest.raises(RunError, match="'child' is upstream_failed"):
            handle.result("child")
        summary = handle.wait()
    assert summary.counts == {"failed": 1, "upstream_failed": 1, "succeeded": 1}


def test_retry_then_success_records_both_attempts(tmp_path: Path) -> None:
    wf = hpcorch.Workflow("retry")
    f = wf.add(flaky, str(tmp_path / "marker"), id="flaky", retries=2)
    wf.add(len, f, id="after")  # a child is resubmitted with its retried parent
    result = wf.run(site="local", retry_config=RetryConfig(user_backoff_s=0.5))
    assert result.result(f) == "second attempt"
    assert result.result("after") == len("second attempt")
    data = status(result.run_dir)
    flaky_task = next(t for t in data["tasks"] if t["id"] == "flaky")
    assert [a["failure_class"] for a in flaky_task["attempts"]] == ["user_error", None]
    assert [a["n"] for a in flaky_task["attempts"]] == [1, 2]


def test_timeout_is_retried_with_a_longer_walltime() -> None:
    wf = hpcorch.Workflow("walltime")
    wf.add(["sleep", "1.5"], id="slow", walltime=1)  # retries: 0 - timeouts have their own remedy
    result = wf.run(site="local")
    slow = next(t for t in status(result.run_dir)["tasks"] if t["id"] == "slow")
    assert [a["failure_class"] for a in slow["attempts"]] == ["timeout", None]
    assert slow["state"] == "succeeded"


def test_memoized_task_does_not_run_twice(tmp_path: Path) -> None:
    log = tmp_path / "calls"

    def build() -> hpcorch.Workflow:
        wf = hpcorch.Workflow("memo")
        first = wf.add(counted, str(log), 1, id="first", memoize=True)
        wf.add(counted, str(log), first, id="second", memoize=True)
        return wf

    assert build().run(site="local").result("second") == 3
    assert log.read_text() == "xx"
    again = build().run(site="local")
    assert again.state == "succeeded"
    assert log.read_text() == "xx", "memoized tasks ran again"
    # Different arguments: a different hash, so it runs.
    wf = hpcorch.Workflow("memo")
    wf.add(counted, str(log), 5, id="first", memoize=True)
    wf.run(site="local")
    assert log.read_text() == "xxx"


def test_bad_declarations_are_refused_at_once() -> None:
    wf = hpcorch.Workflow("bad")
    with pytest.raises(WorkflowError, match="unknown task 'nope'"):
        wf.add(square, 1, after=["nope"])
    wf.add(square, 1, id="a")
    with pytest.raises(WorkflowError, match="already used"):
        wf.add(square, 2, id="a")
    with pytest.raises(WorkflowError, match=r"task 'g': gpus: 0\.5 is fractional"):
        wf.add(square, 1, id="g", gpus=0.5)
    with pytest.raises(hpcorch.HpcorchError, match="needs 100000 cpus"):
        wf.add(square, 1, id="big", cpus=100_000)
        wf.run(site="local")
    assert not (Path(os.environ["HPCORCH_HOME"]) / "runs").exists()
