"""Walltime-aware sizing on dev: short work gets short allocations; a long task a fresh one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import distributed  # noqa: F401  (its config defaults must exist before any dask.config.set)
import pytest

from hpcorch.engine.session import start_run
from hpcorch.environment import run_options
from hpcorch.journal import status
from hpcorch.policies.walltime import fits
from hpcorch.provision.horizon import restriction
from hpcorch.spec import parse_workflow
from tests.integration.scaling_helpers import events, fast_scaling

pytestmark = pytest.mark.slurm


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fast_scaling(monkeypatch, tmp_path)


def test_long_task_gets_a_fresh_allocation_with_time_for_it(
    dev_cluster: Any, fast: None, tmp_path: Path
) -> None:
    # estimated at 40 s each (beyond the scaler's 30 s look-ahead, so the long task is not
    # counted before they end), they really take 2 s
    shorts = [
        {"id": f"s{i}", "command": ["sleep", "2"], "resources": {"walltime": "40s"}}
        for i in range(8)
    ]
    # estimated at 10 minutes (it really takes a second): more than a short allocation has
    long = {
        "id": "long",
        "command": ["sleep", "1"],
        "resources": {"walltime": "10m"},
        "after": [t["id"] for t in shorts],
    }
    run_dir = tmp_path / "run"
    spec = parse_workflow({"tasks": [*shorts, long]})
    with start_run(spec, site="dev", run_dir=run_dir, options=run_options()) as h:
        assert h.wait(timeout=600).ok
        data = status(run_dir)
        scale = events(run_dir)

    submits = [e for e in scale if e["action"] == "submit"]
    assert submits[0]["walltime_s"] == 300  # eight 40-second tasks: the smallest bucket
    long_job = next(t for t in data["tasks"] if t["id"] == "long")["attempts"][-1]["job_id"]
    (fresh,) = [e for e in submits if long_job in e["job_ids"]]
    assert fresh is not submits[0]
    assert fresh["walltime_s"] >= 600 and fits(600, fresh["walltime_s"])
    # the short allocation was let go for want of time (after handing over its results)
    retired = [
        e for e in scale if e["action"] in ("drain", "release") and "fit none" in e["reason"]
    ]
    assert retired, [e["reason"] for e in scale if e["action"] == "release"]
    assert restriction(600) == {"time_600": 1.0}
