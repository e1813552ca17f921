"""Topology detection and GPU slots on the dev cluster's gpu nodes.

The gpu nodes carry four stand-in GPUs whose topology is real to Slurm
(gres.conf ``Cores=`` per socket, ``Links=`` NVLink pairs 0-1 and 2-3).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hpcorch.mpi import build_srun_step_argv, layout
from hpcorch.sites import load_site
from hpcorch.topology import NodeTopology, detect_topology
from tests.waiting import wait_for

pytestmark = pytest.mark.slurm

PYTHON = sys.executable

# Runs inside an srun step on a gpu node: a Dask worker with the SlotPlugin
# (topology detected from Slurm, GPUs from Slurm's CUDA_VISIBLE_DEVICES) runs
# a dozen GPU tasks of 1-4 GPUs; each reports the GPUs it held and when.
WORKER_SCRIPT = r"""
import json, os, time
from distributed import Client, LocalCluster
from hpcorch.placement import Request
from hpcorch.placement.plugin import SlotPlugin, slot_env, task_slot

def task(i, gpus):
    with task_slot(Request(cpus=1, gpus=gpus)) as slot:
        start = time.time()
        env = slot_env(slot, os.environ)
        time.sleep(0.3)
        return {"id": i, "node": slot.node, "gpus": list(slot.gpus), "cores": list(slot.cores),
                "visible": env["CUDA_VISIBLE_DEVICES"], "start": start, "end": time.time()}

def links(dask_worker):
    return sorted(dask_worker.plugins["hpcorch-slots"].allocator.topology.nvlinks)

if __name__ == "__main__":
    node = os.environ["SLURMD_NODENAME"]
    with LocalCluster(n_workers=1, threads_per_worker=12, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        # No topology given: the plugin detects it from Slurm and gres.conf.
        client.register_plugin(SlotPlugin(node=node))
        sizes = [1, 2, 1, 4, 2, 1, 3, 2, 1, 2, 4, 1]
        futures = [client.submit(task, i, g, pure=False) for i, g in enumerate(sizes)]
        print(json.dumps({"slurm_gpus": os.environ.get("CUDA_VISIBLE_DEVICES"),
                          "links": list(client.run(links).values())[0],
                          "results": client.gather(futures)}))
"""


REPO = Path(__file__).resolve().parents[2]


def step(cluster: Any, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run an srun step; the steps import this checkout of hpcorch."""
    env = cluster.cli_env() | {"PYTHONPATH": str(REPO)}
    return subprocess.run(
        list(argv), env=env, capture_output=True, text=True, timeout=300, check=False
    )


def _gres_conf(cluster: Any) -> str:
    return Path(cluster.slurm_conf).with_name("gres.conf").read_text()


def _gpu_shape() -> NodeTopology:
    gpu = next(p for p in load_site("dev").partitions if p.name == "gpu")
    return NodeTopology.from_shape(gpu.node)


def _up_gpu_nodes(cluster: Any) -> list[str]:
    out = cluster.run("sinfo", "-h", "-p", "gpu", "-N", "-o", "%N %t").stdout
    return [n for n, state in (line.split() for line in out.splitlines()) if "*" not in state]


def test_detected_topology_matches_the_site_config(dev_cluster: Any) -> None:
    nodes = _up_gpu_nodes(dev_cluster)
    assert nodes, "no gpu node is up"
    for node in nodes:
        topology = detect_topology(node, _gres_conf(dev_cluster))
        assert topology is not None
        assert topology == _gpu_shape(), node


@pytest.fixture(scope="module")
def gpu_allocation(dev_cluster: Any) -> Iterator[str]:
    job_id = (
        dev_cluster.run(
            "sbatch",
            "--parsable",
            "--time=10",
            "--job-name=hpcorch-gpu-test",
            "-p",
            "gpu",
            "-N1",
            "--gres=gpu:4",
            "--exclusive",
            "--output=/dev/null",
            "--wrap",
            "sleep 600",
        )
        .stdout.strip()
        .split(";")[0]
    )
    try:
        wait_for(
            lambda: (
                dev_cluster.run("squeue", "-h", "-j", job_id, "-o", "%T").stdout.strip()
                == "RUNNING"
            ),
            120,
            f"gpu allocation {job_id} RUNNING",
        )
        yield job_id
    finally:
        dev_cluster.run("scancel", job_id, check=False)


def test_a_dozen_gpu_tasks_share_a_node_without_overlap(
    dev_cluster: Any, gpu_allocation: str, tmp_path: Path
) -> None:
    script = tmp_path / "gpu_worker.py"
    script.write_text(WORKER_SCRIPT)
    done = step(
        dev_cluster,
        "srun",
        f"--jobid={gpu_allocation}",
        "-n1",
        "--gres=gpu:4",
        "--overlap",
        PYTHON,
        str(script),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["slurm_gpus"] == "0,1,2,3"
    results = report["results"]
    assert len(results) == 12
    links = {tuple(pair) for pair in report["links"]}
    assert links == {(0, 1), (2, 3)}
    for r in results:
        assert r["visible"] == ",".join(map(str, r["gpus"]))
        if len(r["gpus"]) == 2:
            assert tuple(r["gpus"]) in links, r
    # No GPU (and no core) held by two tasks at the same time.
    for a in results:
        for b in results:
            if a["id"] < b["id"] and a["start"] < b["end"] and b["start"] < a["end"]:
                assert not set(a["gpus"]) & set(b["gpus"]), (a, b)
                assert not set(a["cores"]) & set(b["cores"]), (a, b)
    # Tasks did run side by side: at some moment at least 4 GPUs were busy.
    peak = max(
        sum(len(r["gpus"]) for r in results if r["start"] <= t["start"] < r["end"]) for t in results
    )
    assert peak == 4


def test_gpu_ranks_each_get_their_own_gpu(dev_cluster: Any, gpu_allocation: str) -> None:
    code = (
        "import os; print(os.environ.get('SLURM_PROCID'), os.environ.get('CUDA_VISIBLE_DEVICES'))"
    )
    argv = build_srun_step_argv(
        layout(4, 4, cpus_per_rank=1, gpus_per_rank=1),
        [PYTHON, "-c", code],
        job_id=gpu_allocation,
        launcher=load_site("dev").mpi.launcher,
        memory=200 * 1024**2,
        overlap=True,
    )
    done = step(dev_cluster, *argv)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split() for line in done.stdout.splitlines() if line.strip()]
    assert sorted(int(r[0]) for r in rows) == [0, 1, 2, 3]
    assert sorted(r[1] for r in rows) == ["0", "1", "2", "3"]


def test_cupy_task_falls_back_to_numpy_on_stand_in_gpus(
    dev_cluster: Any, gpu_allocation: str
) -> None:
    code = (
        "import os; from hpcorch.gpu import xp, to_numpy, gpu_available; m = xp(); "
        "a = m.arange(10, dtype=m.float64); "
        "print(os.environ.get('CUDA_VISIBLE_DEVICES'), gpu_available(), m.__name__, "
        "float(to_numpy((a * a).sum())))"
    )
    done = step(
        dev_cluster,
        "srun",
        f"--jobid={gpu_allocation}",
        "-n1",
        "--gres=gpu:1",
        "--overlap",
        PYTHON,
        "-c",
        code,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    visible, available, module, total = done.stdout.split()
    assert visible != "None"  # Slurm handed the step a (stand-in) GPU
    assert (available, module, total) == ("False", "numpy", "285.0")
