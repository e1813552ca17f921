"""The simulator's journal reports like a live run's: `simulate --run-dir`, then `report`."""

from __future__ import annotations

import json
from pathlib import Path

from wfcommons import WorkflowGenerator
from wfcommons.wfchef import recipes

from tests.integration.test_report_e2e import hpcorch


def test_simulated_wfcommons_run_reports(tmp_path: Path) -> None:

    instance = tmp_path / "blast.json"
    WorkflowGenerator(recipes.BlastRecipe.from_num_tasks(60)).build_workflow().write_json(instance)
    hpcorch(tmp_path, "simulate", "--trace", str(instance), "--nodes", "2", "--run-dir", "sim-run")

    png = tmp_path / "sim.png"
    data = json.loads(hpcorch(tmp_path, "report", "sim-run", "--json", "--png", str(png)).stdout)
    tasks = len(json.loads(instance.read_text())["workflow"]["execution"]["tasks"])
    assert data["tasks"] == tasks
    assert data["state"] == "succeeded"
    assert data["makespan_s"] > 0
    # Dependencies come from the WfFormat file the simulation read.
    assert data["critical_path"] and data["critical_path_s"] <= data["makespan_s"]
    assert data["sites"][0]["allocations"] >= 1
    assert png.read_bytes().startswith(b"\x89PNG")
