"""``hpcorch status --summary``: counts from aggregate queries; cancel marks the rest at once."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from hpcorch.cli.main import cli
from hpcorch.journal import Journal, status_summary
from hpcorch.journal import status as read_status


def _run(tmp_path: Path) -> Path:
    run_dir = tmp_path / "r"
    journal = Journal.create(
        run_dir, run_id="sweep-1", name="sweep", source=None, site="local", time_scale=None
    )
    states = ["succeeded"] * 5 + ["pending"] * 3 + ["running", "failed"]
    journal.add_tasks((f"t{i}", "function", s, 0) for i, s in enumerate(states))
    journal.record_attempts({"task_id": f"t{i}", "n": 1} for i in range(5))
    journal.record_attempts([{"task_id": "t9", "n": 1, "failure_class": "user_error"}])
    journal.record_allocation(job_id="7", site="dev", state="RUNNING")
    journal.close()
    return run_dir


def test_summary_counts(tmp_path: Path) -> None:
    got = status_summary(_run(tmp_path))
    assert got["tasks"] == 10 and got["state"] == "running"
    assert got["counts"]["succeeded"] == 5 and got["counts"]["pending"] == 3
    assert got["counts"]["cancelled"] == 0  # every state is named
    assert (got["attempts"], got["failed_attempts"]) == (6, 1)
    assert (got["allocations"], got["open_allocations"]) == (1, 1)


def test_summary_cli_text_and_json(tmp_path: Path) -> None:
    run_dir = _run(tmp_path)
    out = CliRunner().invoke(cli, ["status", str(run_dir), "--summary", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["counts"]["running"] == 1
    text = CliRunner().invoke(cli, ["status", str(run_dir), "--summary"])
    assert text.exit_code == 0
    assert text.stdout.startswith("run sweep-1: running (3 pending, 1 running, 5 succeeded")
    assert "6 attempts, 1 failed" in text.stdout


def test_cancel_without_a_driver_marks_what_is_left(tmp_path: Path) -> None:
    run_dir = _run(tmp_path)
    with Journal.open(run_dir) as journal:
        journal.cancel_unfinished()
    counts = status_summary(run_dir)["counts"]
    assert counts["cancelled"] == 4 and counts["succeeded"] == 5 and counts["failed"] == 1


def test_a_cancelled_run_counts_what_is_left_as_cancelled(tmp_path: Path) -> None:
    # its driver writes the run's state before the rows (a million take seconds)
    run_dir = _run(tmp_path)
    with Journal.open(run_dir) as journal:
        journal.set_run_state("cancelled")
    counts = status_summary(run_dir)["counts"]
    assert counts["cancelled"] == 4 and counts["pending"] == counts["running"] == 0
    full = read_status(run_dir)
    assert full["counts"] == counts
    assert {t["state"] for t in full["tasks"]} == {"succeeded", "failed", "cancelled"}
