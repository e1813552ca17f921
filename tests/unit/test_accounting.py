"""The live run's accounting: the journal's attempts tied to the scaler's allocations."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcorch.journal import Journal
from hpcorch.provision.accounting import AllocationLife, accounts_payload, journal_attempts


def _life(name: str, site: str, cores: int) -> AllocationLife:
    return AllocationLife(
        name=name,
        pool=f"{site}.cpu",
        site=site,
        partition="cpu",
        nodes=1,
        cores_per_node=cores,
        gpus_per_node=0,
        job_id="685",  # the same job id on both sites: ids are per Slurm cluster
        state="COMPLETED",
        start=0.0,
        end=3600.0,
    )


def _run(tmp_path: Path, attempts: list[dict[str, object]]) -> Path:
    run_dir = tmp_path / "run"
    with Journal.create(
        run_dir, run_id="r", name="demo", source=None, site="dev", time_scale=None
    ) as journal:
        journal.record_attempts(attempts)
    return run_dir


def test_attempts_are_tied_to_the_allocation_of_their_site(tmp_path: Path) -> None:
    # No worker address to go by: the attempts name their site and job.
    run_dir = _run(
        tmp_path,
        [
            {"task_id": "a", "n": 1, "start": 0.0, "end": 3600.0, "job_id": "685", "site": "dev"},
            {"task_id": "b", "n": 1, "start": 0.0, "end": 1800.0, "job_id": "685", "site": "dev2"},
        ],
    )
    lives = [_life("dev-1", "dev", 4), _life("dev2-1", "dev2", 8)]
    records = journal_attempts(run_dir, lives, {"a": 2, "b": 4})
    assert {(r.site, r.allocation) for r in records} == {("dev", "dev-1"), ("dev2", "dev2-1")}
    per_site = accounts_payload(lives, records, now=3600.0)["per_site"]
    assert per_site["dev"]["core_hours_used"] == pytest.approx(2.0)
    assert per_site["dev2"]["core_hours_used"] == pytest.approx(2.0)


def test_attempt_without_a_site_is_tied_by_its_job_id(tmp_path: Path) -> None:
    run_dir = _run(tmp_path, [{"task_id": "a", "n": 1, "start": 0.0, "job_id": "685"}])
    (record,) = journal_attempts(run_dir, [_life("dev-1", "dev", 4)], {"a": 1})
    assert record.site == "dev" and record.allocation == "dev-1"
