"""A huge run's journal: ``status``, the progress view and ``report`` aggregate.

The journal is fabricated (one sqlite transaction, seconds), as a finished sweep of
300,000 tasks on two nodes leaves it: every task one attempt, 1 % of them
a failed first attempt and a second one, ten tasks failed for good. No timing here
(scripts/bench/sweep times them): the tests check that the answers are aggregates —
bounded output, bounded objects — and that their figures are right.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from hpcorch.cli.main import cli
from hpcorch.cli.progress import read_snapshot
from hpcorch.journal import JOURNAL_NAME, Journal, status_summary
from hpcorch.report.gantt import layout
from hpcorch.report.large import GANTT_BINS, large_report
from hpcorch.report.load import load_report

N = 300_000  # well above LARGE_RUN_TASKS; the bench times a million
RETRIED = range(0, N, 100)  # 1 %: failed once, then succeeded
FAILED = range(50, 1000, 100)  # 10 other tasks: failed for good


@pytest.fixture(scope="module")
def huge(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("huge") / "run"
    journal = Journal.create(
        run_dir, run_id="sweep-1m", name="sweep", source=None, site="local", time_scale=None
    )
    journal.set_run_state("failed")
    journal.close()
    failed = set(FAILED)
    conn = sqlite3.connect(run_dir / JOURNAL_NAME)
    with conn:
        conn.executemany(
            "INSERT INTO tasks (task_id, kind, state, priority) VALUES (?, 'function', ?, 1)",
            ((f"sim-{i}", "failed" if i in failed else "succeeded") for i in range(N)),
        )
        # task i starts at i/1000 s on node i%2 and takes 2 ms, one core
        conn.executemany(
            "INSERT INTO attempts (task_id, n, start, end, node, cores, failure_class) "
            "VALUES (?, 1, ?, ?, ?, ?, ?)",
            (
                (
                    f"sim-{i}",
                    1000.0 + i / 1000,
                    1000.0 + i / 1000 + 0.002,
                    f"n{i % 2}",
                    str(i % 2),
                    "user_error" if i % 100 == 0 or i in failed else None,
                )
                for i in range(N)
            ),
        )
        conn.executemany(
            "INSERT INTO attempts (task_id, n, start, end, node, cores) VALUES (?, 2, ?, ?, ?, ?)",
            ((f"sim-{i}", 2000.0, 2000.002, f"n{i % 2}", "0") for i in RETRIED),
        )
    conn.close()
    return run_dir


def test_status_text_names_a_bounded_number_of_tasks(huge: Path) -> None:
    out = CliRunner().invoke(cli, ["status", str(huge)])
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert lines[0] == f"run sweep-1m: failed ({N - 10} succeeded, 10 failed)"
    assert lines[1:] == [f"  sim-{i}: failed user_error" for i in FAILED]
    summary = status_summary(huge)
    assert summary["attempts"] == N + len(RETRIED)


def test_status_text_counts_what_it_does_not_name(tmp_path: Path) -> None:
    run_dir = tmp_path / "r"
    with Journal.create(
        run_dir, run_id="c", name="c", source=None, site="local", time_scale=None
    ) as journal:
        journal.add_tasks((f"t{i}", "function", "pending", 0) for i in range(120))
        journal.cancel_unfinished()
    out = CliRunner().invoke(cli, ["status", str(run_dir)])
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert len(lines) == 1 + 50 + 1
    assert lines[-1] == "  ... and 70 more cancelled (hpcorch status RUN --json lists all)"


def test_progress_snapshot_counts(huge: Path) -> None:
    snap = read_snapshot(huge)
    assert snap.counts == {"succeeded": N - len(FAILED), "failed": len(FAILED)}
    assert snap.running == ()
    assert len(snap.failures) == 100  # the newest failures, not all 3,010


def test_report_aggregates(huge: Path) -> None:
    report = load_report(huge)
    assert report.tasks == N
    assert report.by_state == {"succeeded": N - len(FAILED), "failed": len(FAILED)}
    assert report.retries == len(RETRIED) and report.tasks_retried == len(RETRIED)
    assert report.failed_attempts_by_class == {"user_error": len(RETRIED) + len(FAILED)}
    assert report.failed_tasks_by_class == {"user_error": len(FAILED)}
    # every attempt's 2 ms on one core, summed
    assert report.core_hours_used == pytest.approx((N + len(RETRIED)) * 0.002 / 3600)
    # the local machine held from the first start to the last end
    assert report.core_hours_allocated is not None and report.core_hours_allocated > 0
    # bars per node, group, outcome and bin: two nodes, one group, three outcomes at most
    assert 0 < len(report.attempts) <= 2 * 3 * GANTT_BINS
    assert sum(int(a.task_id.split("(")[1][:-1]) for a in report.attempts) >= N
    assert {a.node for a in report.attempts} == {"n0", "n1"}
    assert report.critical_path is None and report.notes
    assert len(layout(report).bars) == len(report.attempts)


def test_report_groups_tasks_by_their_id_without_the_number(tmp_path: Path) -> None:
    run_dir = tmp_path / "r"
    ids = ["sim-1", "sim-22", "blastall_00000002", "prep", "42", "a1-2"]
    with Journal.create(
        run_dir, run_id="g", name="g", source=None, site="local", time_scale=None
    ) as journal:
        journal.add_tasks((t, "function", "succeeded", 0) for t in ids)
        journal.record_attempts(
            {"task_id": t, "n": 1, "start": 10.0 + i, "end": 11.0 + i, "node": "n0"}
            for i, t in enumerate(ids)
        )
    report = large_report(run_dir, sites={}, run_site="local")
    groups = {a.task_id.rsplit(" (", 1)[0] for a in report.attempts}
    assert groups == {"sim", "blastall", "prep", "42", "a1"}
    assert report.core_hours_used == pytest.approx(len(ids) / 3600)
