"""The engine on the dev Slurm cluster: WfFormat replays, mixed CPU/GPU pools over TLS."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from wfcommons import WorkflowGenerator
from wfcommons.wfchef import recipes

HPCORCH = Path(sys.executable).with_name("hpcorch")

pytestmark = pytest.mark.slurm


def _hpcorch(cluster: Any, *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(HPCORCH), *argv],
        cwd=cwd,
        env=cluster.cli_env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert proc.returncode == 0, f"hpcorch {' '.join(argv)} -> {proc.returncode}\n{proc.stderr}"
    return proc


def _status(cluster: Any, run_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        _hpcorch(cluster, "status", str(run_dir), "--json", cwd=run_dir.parent).stdout
    )
    return data


@pytest.mark.parametrize(("recipe", "tasks"), [("BlastRecipe", 120), ("EpigenomicsRecipe", 100)])
def test_wfcommons_instance_on_dev(
    dev_cluster: Any, recipe: str, tasks: int, tmp_path: Path
) -> None:

    instance = tmp_path / f"{recipe}.json"
    WorkflowGenerator(getattr(recipes, recipe).from_num_tasks(tasks)).build_workflow().write_json(
        instance
    )
    doc = json.loads(instance.read_text())
    total = sum(t["runtimeInSeconds"] for t in doc["workflow"]["execution"]["tasks"])
    run_dir = tmp_path / "run"
    _hpcorch(
        dev_cluster,
        "run",
        str(instance),
        "--site",
        "dev",
        "--run-dir",
        str(run_dir),
        "--time-scale",
        f"{6.0 / total:.3e}",
        cwd=tmp_path,
    )
    data = _status(dev_cluster, run_dir)
    parents = {t["id"]: t["parents"] for t in doc["workflow"]["specification"]["tasks"]}
    assert data["state"] == "succeeded" and data["counts"]["succeeded"] == len(parents)
    attempts = {t["id"]: t["attempts"][-1] for t in data["tasks"]}
    for task_id, ps in parents.items():
        a = attempts[task_id]
        assert a["job_id"] and a["node"] in ("cpu1", "cpu2"), a
        for p in ps:
            assert a["start"] >= attempts[p]["end"], f"{task_id} started before {p} ended"
    assert data["allocations"], "no Slurm allocation recorded"
    assert {al["job_id"] for al in data["allocations"]} >= {a["job_id"] for a in attempts.values()}
    assert all(al["end"] is not None for al in data["allocations"])


def test_cpu_and_gpu_pools_share_one_tls_scheduler(dev_cluster: Any, tmp_path: Path) -> None:
    workflow = tmp_path / "mixed.yaml"
    workflow.write_text(
        "name: mixed\n"
        "tasks:\n"
        "  - {id: prep, command: [hostname], resources: {cpus: 2}}\n"
        "  - {id: train, command: [hostname], after: [prep], resources: {gpus: 2, cpus: 4}}\n"
        "  - {id: post, command: [hostname], after: [train]}\n"
    )
    run_dir = tmp_path / "run"
    _hpcorch(
        dev_cluster, "run", str(workflow), "--site", "dev", "--run-dir", str(run_dir), cwd=tmp_path
    )
    data = _status(dev_cluster, run_dir)
    nodes = {t["id"]: t["attempts"][-1]["node"] for t in data["tasks"]}
    assert nodes["train"].startswith("gpu")
    partitions = {al["partition"] for al in data["allocations"]}
    assert partitions == {"cpu", "gpu"}
    job_logs = "".join(p.read_text() for p in (run_dir / "slurm").glob("*.err"))
    assert "tls://" in job_logs and "tcp://" not in job_logs
