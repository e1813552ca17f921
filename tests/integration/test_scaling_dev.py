"""The scaler on the dev cluster: a burst scales from zero to the partition and back to zero."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import distributed  # noqa: F401  (its config defaults must exist before any dask.config.set)
import pytest

from hpcorch.engine.session import start_run
from hpcorch.environment import run_options
from hpcorch.journal import status
from hpcorch.spec import parse_workflow
from tests.integration.scaling_helpers import IDLE_S, INTERVAL_S, burst, events, fast_scaling

pytestmark = pytest.mark.slurm


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fast_scaling(monkeypatch, tmp_path)


def test_burst_scales_from_zero_to_the_partition_and_back(
    dev_cluster: Any, fast: None, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    spec = parse_workflow(burst(200, 3.0))
    with start_run(spec, site="dev", run_dir=run_dir, options=run_options()) as handle:
        first = status(run_dir)
        summary = handle.wait(timeout=900)
        assert summary.ok, summary.failures[:3]
        # the run is over, the backend still up: the scaler must bring it back to zero
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            allocs = status(run_dir)["allocations"]
            if allocs and all(a["end"] is not None for a in allocs):
                break
            time.sleep(1)
        data = status(run_dir)
        scale = events(run_dir)

    assert first["allocations"] == []  # nothing submitted before there was work
    submits = [e for e in scale if e["action"] == "submit"]
    releases = [e for e in scale if e["action"] == "release"]
    submitted = sum(e["count"] for e in submits)
    assert submitted == 2, submits  # the cpu partition's two nodes, once each: no thrashing
    assert all(e["walltime_s"] <= 15 * 60 for e in submits)  # sized to the burst, not the max

    ends = [a["end"] for t in data["tasks"] for a in t["attempts"]]
    last_end = max(ends)
    # no allocation released while work was left, each released once, for idleness
    assert len(releases) == 2, releases
    assert all(e["time"] >= last_end for e in releases)
    assert all("idle" in e["reason"] for e in releases), releases
    # back to zero within the idle timeout + one poll interval (+ one interval for the
    # poll that first sees the worker idle, and the step's own time)
    assert max(e["time"] for e in releases) <= last_end + IDLE_S + 2 * INTERVAL_S + 2.0
    assert all(a["end"] is not None for a in data["allocations"])
    # accounting (status --json): the allocations' core-hours, and the tasks' within them
    total = data["accounting"]["total"]
    held = sum(8 * (a["end"] - a["start"]) for a in data["allocations"]) / 3600
    used = sum(a["end"] - a["start"] for t in data["tasks"] for a in t["attempts"]) / 3600
    assert total["core_hours_allocated"] == pytest.approx(held, rel=0.1)
    assert total["core_hours_used"] == pytest.approx(used, rel=0.1)
    assert total["core_hours_idle"] == pytest.approx(held - used, rel=0.3)
    assert data["accounting"]["per_site"]["dev"]["su"] == pytest.approx(held / 8, rel=0.1)
    jobs = {a["job_id"] for a in data["allocations"]}
    assert {a["job_id"] for t in data["tasks"] for a in t["attempts"]} <= jobs
