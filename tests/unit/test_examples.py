"""Every example in workflows/ runs on site local (mpi-then-gpu needs dev: see
tests/integration/test_engine_gpu_mpi.py)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hpcorch.cli.main import cli

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HPCORCH_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "home"


def _run(*argv: str) -> dict[str, Any]:
    """``hpcorch run ARGV --site local --run-dir R``, then ``status R --json``."""
    runner = CliRunner()
    run_dir = Path("run")
    result = runner.invoke(cli, ["run", *argv, "--site", "local", "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "succeeded" in result.stdout
    status = runner.invoke(cli, ["status", str(run_dir), "--json"])
    assert status.exit_code == 0, status.output
    data: dict[str, Any] = json.loads(status.stdout)
    assert data["state"] == "succeeded"
    return data


def test_cpu_pipeline() -> None:
    data = _run(str(WORKFLOWS / "cpu-pipeline.yaml"))
    assert data["counts"]["succeeded"] == 7
    assert int(Path("run/data/total.txt").read_text()) > 0


def test_wfformat_replay_with_a_small_time_scale() -> None:
    data = _run(str(WORKFLOWS / "seismology-110.json"), "--time-scale", "0.001")
    instance = json.loads((WORKFLOWS / "seismology-110.json").read_text())
    tasks = instance["workflow"].get("specification", instance["workflow"]).get("tasks")
    assert data["counts"]["succeeded"] == len(tasks)


def test_montecarlo_pi_from_the_cli() -> None:
    data = _run(str(WORKFLOWS / "montecarlo_pi.py"))
    assert data["counts"]["succeeded"] == 9


def test_param_sweep_from_the_cli() -> None:
    data = _run(str(WORKFLOWS / "param_sweep.py"))
    assert data["counts"]["succeeded"] == 3 * 9 + 1


def _module(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_param_sweep_from_python_finds_the_resonance() -> None:
    sweep = _module(WORKFLOWS / "param_sweep.py")
    with sweep.wf.submit(site="local") as run:  # returns at once; futures resolve later
        top = run.result(sweep.best_point.id, timeout=120)
    assert abs(top["frequency"] - 1.0) < 0.05  # the natural frequency
    assert top["damping"] == min(sweep.DAMPING)
