"""``--regions`` and ``--budget`` on ``hpcorch run`` / ``submit``: checked first, then handed on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from hpcorch.cli.main import cli
from hpcorch.cli.options import apply_regions_budget


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # setenv first: delenv of an unset variable records nothing, so what the options
    # export would leak into the tests that run after these
    for name in ("HPCORCH_BUDGET", "HPCORCH_REGIONS"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def _wf(tmp_path: Path) -> str:
    path = tmp_path / "wf.yaml"
    path.write_text("tasks:\n  - id: a\n    command: [true]\n")
    return str(path)


@pytest.mark.parametrize("command", ["run", "submit"])
def test_a_bad_budget_is_refused_before_anything_runs(command: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, [command, _wf(tmp_path), "--site", "dev", "--budget", "lots"])
    assert result.exit_code == 2
    assert "--budget" in result.output and "'100 SU'" in result.output
    assert "HPCORCH_BUDGET" not in os.environ


@pytest.mark.parametrize("command", ["run", "submit"])
def test_an_unknown_or_local_region_is_refused(command: str, tmp_path: Path) -> None:
    wf = _wf(tmp_path)
    unknown = CliRunner().invoke(cli, [command, wf, "--site", "dev", "--regions", "dev,nowhere"])
    assert unknown.exit_code == 2
    assert "--regions" in unknown.output and "nowhere" in unknown.output
    local = CliRunner().invoke(cli, [command, wf, "--site", "dev", "--regions", "local"])
    assert local.exit_code == 2
    assert "regions are Slurm sites" in local.output


def test_the_environment_variable_is_checked_too(tmp_path: Path) -> None:
    result = CliRunner(env={"HPCORCH_BUDGET": "12 parsecs"}).invoke(
        cli, ["run", _wf(tmp_path), "--site", "dev"]
    )
    assert result.exit_code == 2
    assert "12 parsecs" in result.output


def test_good_values_reach_the_engine_through_the_environment() -> None:

    apply_regions_budget(" eiger , frontier ", "20 SU")
    assert os.environ["HPCORCH_REGIONS"] == "eiger,frontier"
    assert os.environ["HPCORCH_BUDGET"] == "20 SU"
