"""The simulator against the real thing: one small workflow, same cluster shape, same makespan.

The same workflow of emulated tasks runs live on the dev cluster's ``cpu``
partition (2 nodes x 8 cores) and in the simulator on a simulated 2 x 8-core
cluster. Both makespans are read the
same way (``hpcorch report RUN --json``); they must agree within 15 %.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import DevCluster
from tests.integration.test_report_e2e import HPCORCH, run_id_of

pytestmark = pytest.mark.slurm

# id, seconds, cpus, after: four 4-core tasks fill both nodes, then two 8-core
# tasks, then a join; the critical path is 20 + 30 + 10 = 60 s.
TASKS = [
    ("a1", 20, 4, []),
    ("a2", 20, 4, []),
    ("a3", 20, 4, []),
    ("a4", 20, 4, []),
    ("b1", 30, 8, ["a1", "a2"]),
    ("b2", 30, 8, ["a3", "a4"]),
    ("c", 10, 1, ["b1", "b2"]),
]


def _workflow() -> str:
    """Emulated tasks: live workers hold the cores for ``duration`` seconds, the simulator
    advances its clock by as much, and both tell the policies the same estimates."""
    tasks = [
        {
            "id": task_id,
            "after": after,
            "duration": seconds,
            "resources": {"cpus": cpus, "walltime": "5m"},
        }
        for task_id, seconds, cpus, after in TASKS
    ]
    return yaml.safe_dump({"name": "sim-vs-live", "tasks": tasks})


def test_simulated_and_live_makespans_agree(dev_cluster: DevCluster, tmp_path: Path) -> None:
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

    (tmp_path / "wf.yaml").write_text(_workflow())
    run_id = run_id_of(hpcorch("run", "wf.yaml", "--site", "dev"))
    live = json.loads(hpcorch("report", run_id, "--json").stdout)["makespan_s"]
    hpcorch(
        "simulate",
        "--trace",
        "wf.yaml",
        "--nodes",
        "2",
        "--cores-per-node",
        "8",
        "--run-dir",
        "sim-run",
        "--json",
    )
    simulated = json.loads(hpcorch("report", "sim-run", "--json").stdout)["makespan_s"]
    print(f"makespan: live {live:.1f} s, simulated {simulated:.1f} s")
    assert simulated >= 60.0  # never below the critical path
    assert abs(simulated - live) <= 0.15 * live
