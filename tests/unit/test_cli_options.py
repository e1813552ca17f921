"""``--regions``, ``--budget``, ``--scaling`` on ``hpcorch run`` / ``submit``: checked first,
then handed on as one RunOptions (never through the process environment)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from hpcorch.cli.main import cli
from hpcorch.cli.options import build_run_options
from hpcorch.environment import options_env, run_options
from hpcorch.policies.state import Budget


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HPCORCH_BUDGET", "HPCORCH_REGIONS", "HPCORCH_SCALING"):
        monkeypatch.delenv(name, raising=False)


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


@pytest.mark.parametrize("command", ["run", "submit"])
def test_an_unknown_scaling_policy_is_refused(command: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, [command, _wf(tmp_path), "--site", "dev", "--scaling", "x"])
    assert result.exit_code == 2
    assert "--scaling" in result.output and "demand" in result.output


def test_the_environment_variable_is_checked_too(tmp_path: Path) -> None:
    result = CliRunner(env={"HPCORCH_BUDGET": "12 parsecs"}).invoke(
        cli, ["run", _wf(tmp_path), "--site", "dev"]
    )
    assert result.exit_code == 2
    assert "12 parsecs" in result.output


def test_flags_win_over_the_environment_and_nothing_is_written_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HPCORCH_BUDGET", "5 SU")
    monkeypatch.setenv("HPCORCH_SCALING", "simple")
    options = build_run_options("dev", " dev , dev ", "20 SU", None)
    assert options.site == "dev"
    assert options.regions == ("dev",)
    assert options.budget == Budget(20.0, "SU")
    assert options.scaler.policy == "simple"  # from the environment: no flag given
    assert os.environ["HPCORCH_BUDGET"] == "5 SU"
    assert "HPCORCH_REGIONS" not in os.environ


def test_the_driver_job_gets_the_options_as_variables() -> None:
    options = build_run_options("dev", "dev", "20 SU", "simple")
    env = options_env(options)
    assert env == {"HPCORCH_REGIONS": "dev", "HPCORCH_BUDGET": "20 SU", "HPCORCH_SCALING": "simple"}
    assert run_options(env) == replace(options, site=None)
