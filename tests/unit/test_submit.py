"""The driver job of `hpcorch submit` is a pure rendering: compare it with a stored file."""

from __future__ import annotations

from pathlib import Path

from hpcorch.sites import load_site
from hpcorch.slurm.script import render_sbatch
from hpcorch.submit import driver_request, requeue_after_s

EXPECTED = Path(__file__).parent / "expected" / "driver-job.sh"


def test_driver_job_script_matches_the_stored_one(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir("/")
    request = driver_request(
        Path("/work/wf.yaml"),
        load_site("dev"),
        Path("/work/runs/demo-1"),
        "demo-1",
        walltime_s=3600,
        partition="gpu",
        hpcorch=("/venv/bin/hpcorch",),
    )
    text = render_sbatch(request)
    assert text == EXPECTED.read_text()
    assert request.requeue is True and request.cpus_per_task == 1


def test_requeue_leaves_a_margin_before_the_walltime() -> None:
    assert requeue_after_s(24 * 3600) == 24 * 3600 - 120
    assert requeue_after_s(60) == 45  # a quarter of short walltimes
    assert requeue_after_s(0.5) >= 1
