"""Topology-aware placement by the engine on the dev cluster (issue 8).

Each test runs ``hpcorch run`` from the repository root (task code is
imported from it) and checks what ``hpcorch status --json`` shows:

- a dozen GPU tasks of 1-4 GPUs share the two gpu nodes, no GPU held by two
  tasks at once, every 2-GPU task on an NVLink pair (0-1 or 2-3);
- an MPI command (mpi4py's ringtest) and an mpi4py function task (allreduce)
  of 2 nodes x 4 ranks run as srun steps inside the run's own allocation, and
  the ranks' nodes in the status are where the ranks really ran;
- ``workflows/mpi-then-gpu.yaml`` runs end to end; its CuPy analysis falls
  back to NumPy on the dev cluster's stand-in GPUs.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
HPCORCH = Path(PYTHON).with_name("hpcorch")
NVLINK_PAIRS = ({0, 1}, {2, 3})


def _hpcorch(cluster: Any, *argv: str) -> subprocess.CompletedProcess[str]:
    env = cluster.cli_env() | {
        # commands name `python`: this virtualenv's; the scaler looks every second
        "PATH": f"{Path(PYTHON).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HPCORCH_SCALE_INTERVAL": "1",
    }
    proc = subprocess.run(
        [str(HPCORCH), *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert proc.returncode == 0, f"hpcorch {' '.join(argv)} -> {proc.returncode}\n{proc.stderr}"
    return proc


def _run(cluster: Any, workflow: Path, run_dir: Path) -> dict[str, Any]:
    _hpcorch(cluster, "run", str(workflow), "--site", "dev", "--run-dir", str(run_dir))
    status: dict[str, Any] = json.loads(_hpcorch(cluster, "status", str(run_dir), "--json").stdout)
    assert status["state"] == "succeeded", status["counts"]
    return status


def _last(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    # the last attempt: not always the first (a driver that lost its scheduler resubmits)
    return {t["id"]: t["attempts"][-1] for t in status["tasks"]}


def _overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return bool(a["start"] < b["end"] and b["start"] < a["end"])


GPUS = [1, 2, 1, 4, 2, 1, 3, 2, 1, 2, 4, 1]


def test_gpu_tasks_share_the_gpu_nodes_without_overlap(dev_cluster: Any, tmp_path: Path) -> None:
    show = "import os, time; print(os.environ['CUDA_VISIBLE_DEVICES']); time.sleep(4)"
    tasks: list[dict[str, Any]] = [
        {
            "id": f"gpu{i:02d}-{k}",
            "command": [PYTHON, "-c", show],
            "resources": {"gpus": k, "walltime": "2m"},
        }
        for i, k in enumerate(GPUS)
    ]
    # hpcorch.gpu: CuPy where a GPU is usable, NumPy on the dev cluster's stand-ins
    tasks.append(
        {
            "id": "cupy",
            "command": [PYTHON, "-c", "from hpcorch.gpu import xp; print(xp().__name__)"],
            "resources": {"gpus": 1, "walltime": "2m"},
        }
    )
    workflow = tmp_path / "gpus.yaml"
    workflow.write_text(yaml.safe_dump({"name": "gpus", "tasks": tasks}))
    run_dir = tmp_path / "run"
    attempts = _last(_run(dev_cluster, workflow, run_dir))

    gpu_tasks = {t["id"]: t["resources"]["gpus"] for t in tasks}
    for task_id, k in gpu_tasks.items():
        a = attempts[task_id]
        assert a["node"] in ("gpu1", "gpu2"), a
        assert len(a["gpus"]) == k and len(set(a["gpus"])) == k, (task_id, a)
        assert a["cores"], a  # cores of its own, near its GPUs
        seen = (run_dir / "logs" / f"{task_id}.{a['n']}.out").read_text().split()[0]
        if task_id != "cupy":  # what the task saw is what the journal says it held
            assert seen == ",".join(map(str, a["gpus"])), (task_id, seen, a)
        if k == 2:
            assert set(a["gpus"]) in NVLINK_PAIRS, (task_id, a["gpus"])
    assert (run_dir / "logs" / f"cupy.{attempts['cupy']['n']}.out").read_text().split() == ["numpy"]

    shared_node = 0
    for x, y in itertools.combinations(gpu_tasks, 2):
        a, b = attempts[x], attempts[y]
        if a["node"] == b["node"] and _overlap(a, b):
            shared_node += 1
            assert not set(a["gpus"]) & set(b["gpus"]), (x, a, y, b)
            assert not set(a["cores"]) & set(b["cores"]), (x, a, y, b)
    assert shared_node, "no two GPU tasks ever ran on one node at the same time"
    # (both gpu nodes are used when both are free; other runs may hold one of them)


def test_mpi_ringtest_and_allreduce_across_two_nodes(dev_cluster: Any, tmp_path: Path) -> None:
    mpi = {"ranks": 8, "ranks_per_node": 4}
    workflow = tmp_path / "mpi.yaml"
    workflow.write_text(
        yaml.safe_dump(
            {
                "name": "mpi",
                "tasks": [
                    {
                        "id": "ring",
                        "command": [PYTHON, "-m", "mpi4py.bench", "ringtest"],
                        "mpi": mpi,
                        "resources": {"walltime": "5m"},
                    },
                    {
                        "id": "allreduce",
                        "function": "tests.integration.mpi_tasks:allreduce",
                        "kwargs": {"base": 100},
                        "mpi": mpi,
                        "resources": {"walltime": "5m"},
                    },
                ],
            }
        )
    )
    run_dir = tmp_path / "run"
    status = _run(dev_cluster, workflow, run_dir)
    attempts = _last(status)
    for task_id in ("ring", "allreduce"):
        ranks = attempts[task_id]["ranks"]
        assert len(ranks) == 8 and collections.Counter(ranks) == {"cpu1": 4, "cpu2": 4}, ranks
        assert ranks[:4] == [ranks[0]] * 4  # block: a node's ranks before the next's
        assert attempts[task_id]["node"] == ranks[0]
    assert "time" in (run_dir / "logs" / f"ring.{attempts['ring']['n']}.out").read_text().lower()
    seen = json.loads((run_dir / "allreduce.json").read_text())
    assert seen["size"] == 8 and seen["total"] == 8 * 100 + sum(range(8))
    assert seen["nodes"] == attempts["allreduce"]["ranks"]  # the status says where ranks ran
    # both steps ran inside one 2-node allocation of the run, no sbatch of their own
    (job,) = {attempts[t]["job_id"] for t in ("ring", "allreduce")}
    allocation = next(a for a in status["allocations"] if a["job_id"] == job)
    assert allocation["nodes"] == 2 and allocation["partition"] == "cpu"


def test_mpi_then_gpu_example_workflow(dev_cluster: Any, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    attempts = _last(_run(dev_cluster, REPO / "workflows" / "mpi-then-gpu.yaml", run_dir))
    ranks = attempts["simulate"]["ranks"]
    assert collections.Counter(ranks) == {"cpu1": 4, "cpu2": 4}, ranks
    analyse = attempts["analyse"]
    assert analyse["node"] in ("gpu1", "gpu2") and len(analyse["gpus"]) == 1
    summary = json.loads((run_dir / "analysis.json").read_text())
    assert summary["backend"] == "numpy"  # stand-in GPUs: the NumPy fallback
    assert summary["gpus"] == str(analyse["gpus"][0])
    assert summary["cells"] == 8 * 50_000 and 0 < summary["peak"] < 1


def test_mpi_ranks_get_their_own_gpus(dev_cluster: Any, tmp_path: Path) -> None:
    show = (
        "import os; from mpi4py import MPI; "
        "print(MPI.COMM_WORLD.Get_rank(), os.environ['SLURMD_NODENAME'], "
        "os.environ['CUDA_VISIBLE_DEVICES'])"
    )
    workflow = tmp_path / "gpu-mpi.yaml"
    workflow.write_text(
        yaml.safe_dump(
            {
                "name": "gpu-mpi",
                "tasks": [
                    {
                        "id": "ranks",
                        "command": [PYTHON, "-c", show],
                        "mpi": {"ranks": 4, "ranks_per_node": 2, "gpus_per_rank": 1},
                        "resources": {"walltime": "2m"},
                    }
                ],
            }
        )
    )
    run_dir = tmp_path / "run"
    attempt = _last(_run(dev_cluster, workflow, run_dir))["ranks"]
    assert collections.Counter(attempt["ranks"]) == {"gpu1": 2, "gpu2": 2}
    log = run_dir / "logs" / f"ranks.{attempt['n']}.out"
    rows = sorted(line.split() for line in log.read_text().splitlines())
    assert [r[1] for r in rows] == attempt["ranks"]  # rank i ran where the status says
    for node in ("gpu1", "gpu2"):
        gpus = [r[2] for r in rows if r[1] == node]
        # one GPU each, two ranks of a node on an NVLink pair
        assert len(gpus) == 2 and {int(g) for g in gpus} in NVLINK_PAIRS, rows
