"""`hpcorch report` with click's runner, on a journal written through hpcorch.journal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hpcorch.cli.main import cli
from hpcorch.journal import Journal
from hpcorch.journal import status as journal_status
from tests.unit.test_report_build import dev_status

HPCORCH = Path(sys.executable).parent / "hpcorch"


def write_journal(run_dir: Path, status: dict[str, Any], site: str = "dev") -> None:
    """A run directory whose journal holds ``status`` (written with the journal's API)."""
    with Journal.create(
        run_dir, run_id=status["run_id"], name="demo", source=None, site=site, time_scale=None
    ) as journal:
        journal.add_tasks((t["id"], "command", "pending", 0) for t in status["tasks"])
        journal.set_states((t["id"], t["state"]) for t in status["tasks"])
        journal.record_attempts(
            {
                **a,
                "task_id": t["id"],
                "gpus": ",".join(map(str, a["gpus"])) if a["gpus"] else None,
                "cores": ",".join(map(str, a["cores"])) if a["cores"] else None,
            }
            for t in status["tasks"]
            for a in t["attempts"]
        )
        for alloc in status["allocations"]:
            journal.record_allocation(**alloc)
        journal.set_run_state(status["state"])


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    path = tmp_path / "runs" / "demo"
    write_journal(path, dev_status())
    return path


def test_journal_round_trip_matches_the_fixture(run_dir: Path) -> None:
    # The hand-written fixture is what the journal's status builder produces.
    got = journal_status(run_dir)
    want = dev_status()
    assert got["tasks"] == want["tasks"]
    assert got["allocations"] == want["allocations"]
    assert got["counts"] == want["counts"]


def test_report_json(run_dir: Path) -> None:
    result = CliRunner().invoke(cli, ["report", str(run_dir), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["run_id"] == "demo-20251125-184700-ab12"
    assert data["failed_attempts_by_class"]["out_of_memory"] == 1
    assert data["sites"][0]["site"] == "dev"
    assert data["critical_path"] is None  # no workflow file recorded
    assert data["notes"]


def test_report_writes_png_and_html(run_dir: Path, tmp_path: Path) -> None:
    png, html = tmp_path / "g.png", tmp_path / "r.html"
    result = CliRunner().invoke(
        cli, ["report", str(run_dir), "--png", str(png), "--html", str(html)]
    )
    assert result.exit_code == 0, result.output
    assert png.read_bytes().startswith(b"\x89PNG")
    assert '<figure id="gantt"' in html.read_text()
    assert "makespan" in result.stdout
    assert "usage per site" in result.stdout


def test_report_by_run_id_under_hpcorch_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HPCORCH_HOME", str(tmp_path / "home"))
    write_journal(tmp_path / "home" / "runs" / "r-1", {**dev_status(), "run_id": "r-1"})
    result = CliRunner().invoke(cli, ["report", "r-1", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["run_id"] == "r-1"


def test_unknown_run_exits_2_and_says_what_to_pass(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(HPCORCH), "report", "no-such-run"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 2
    assert "no run 'no-such-run'" in proc.stderr
    assert proc.stdout == ""


def test_unwritable_output_is_a_clear_error(run_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "missing-dir" / "g.png"
    result = CliRunner().invoke(cli, ["report", str(run_dir), "--png", str(target)])
    assert result.exit_code != 0
    assert "cannot write" in result.output
