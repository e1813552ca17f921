"""A run on the dev cluster reports its allocations: hours allocated vs used, SU, GPU rows."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import DevCluster
from tests.integration.test_report_browser import check_page_in_browser
from tests.integration.test_report_e2e import HPCORCH, run_id_of

pytestmark = pytest.mark.slurm

WORKFLOW = """
name: dev-report
tasks:
  - id: prep
    command: [python3, -c, "import time; time.sleep(2)"]
    resources: {cpus: 2, walltime: 5m}
  - id: analyse
    after: [prep]
    command: [python3, -c, "import time; time.sleep(2)"]
    resources: {cpus: 1, gpus: 2, walltime: 5m}
  - id: post
    after: [prep]
    command: [python3, -c, "import time; time.sleep(1)"]
    resources: {cpus: 1, walltime: 5m}
"""


def test_dev_run_report(dev_cluster: DevCluster, tmp_path: Path) -> None:
    workflow = tmp_path / "wf.yaml"
    workflow.write_text(WORKFLOW)
    env = {**dev_cluster.cli_env(), "HPCORCH_HOME": str(tmp_path / ".hpcorch")}
    env["SLURMRESTD_URL"] = dev_cluster.rest_url

    def hpcorch(*args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(HPCORCH), *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        return proc

    run_id = run_id_of(hpcorch("run", str(workflow), "--site", "dev"))
    html = tmp_path / "report.html"
    data = json.loads(hpcorch("report", run_id, "--json", "--html", str(html)).stdout)

    assert data["state"] == "succeeded"
    assert data["critical_path"][0] == "prep"
    dev = next(s for s in data["sites"] if s["site"] == "dev")
    assert dev["allocations"] >= 1
    assert dev["core_hours"] > 0
    assert 0 < dev["core_hours_used"] <= dev["core_hours"]
    assert dev["su"] > 0  # dev charges 1 SU per node-hour
    assert 0 < data["cpu_utilization"] <= 1
    analyse = next(a for a in data["attempts"] if a["task_id"] == "analyse")
    assert analyse["node"].startswith("gpu")
    assert len(analyse["gpus"]) >= 2
    duration = analyse["end"] - analyse["start"]
    # GPU-hours used are the 2 GPUs analyse asked for, whatever its worker could see.
    assert data["gpu_hours_used"] == pytest.approx(2 * duration / 3600, rel=1e-6)
    prep = next(a for a in data["attempts"] if a["task_id"] == "prep")
    assert prep["gpus"] == []
    check_page_in_browser(html, tmp_path, "report-dev-run.png")
