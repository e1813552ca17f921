"""Hostile site prologue values on the real dev cluster: the worker job's shell
exports them as written and evaluates none (a marker file proves it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO
from tests.integration.test_engine_dev import _hpcorch

pytestmark = pytest.mark.slurm


def test_prologue_values_reach_tasks_unevaluated(dev_cluster: Any, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    values = {
        "V_SUBST": f"$(touch {marker})",
        "V_TICKS": f"`touch {marker}`",
        "V_LINES": f"a\nb; touch {marker}",
        "V_QUOTES": 'it\'s "quoted" with spaces',
    }
    site = yaml.safe_load((REPO / "site-configs" / "dev.yaml").read_text())
    site["name"] = "dev"  # the same cluster, one prologue more
    site["prologue"] = {**site.get("prologue", {}), "env": values}
    site_file = tmp_path / "dev-hostile.yaml"
    site_file.write_text(yaml.safe_dump(site))
    dump = (
        "import json, os; print(json.dumps({k: v for k, v in os.environ.items() if k[:2] == 'V_'}))"
    )
    workflow = tmp_path / "wf.yaml"
    task = {"id": "show", "command": ["python3", "-c", dump]}
    workflow.write_text(yaml.safe_dump({"tasks": [task]}))
    run_dir = tmp_path / "run"
    argv = ["run", str(workflow), "--site", str(site_file), "--run-dir", str(run_dir)]
    _hpcorch(dev_cluster, *argv, cwd=tmp_path)
    assert not marker.exists(), "a prologue value was evaluated in the worker job"
    seen = json.loads((run_dir / "logs" / "show.1.out").read_text())
    assert seen == values
