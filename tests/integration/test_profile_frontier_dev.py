"""The frontier-like dev cluster refuses, grants and places as OLCF documents, with raw
sbatch/srun (no hpcorch): -A required, walltime by node-count bin, 8 AMD GPUs per node in
ROCR_VISIBLE_DEVICES (Flags=amd_gpu_env), each GPU tied to its cores; then hpcorch on it
(site dev-frontier): mpi-then-gpu and a 1-8 GPU mix run with a real account, each GPU task
sees exactly GPUs Slurm granted its job through ROCR_VISIBLE_DEVICES (HIP_VISIBLE_DEVICES
counting from 0, no CUDA_VISIBLE_DEVICES); without an account, over a node-count bin's
walltime or with more nodes than any bin, hpcorch stops before submitting (exit 2, one line).

One cluster for the module (tests/integration/profiles.py), taken down at its end.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import DevCluster
from tests.integration.profiles import (
    PYTHON,
    REPO,
    SHOW_GPUS,
    WFCOMMONS,
    check_gpu_mix,
    gpu_mix,
    granted_cpus,
    granted_gpus,
    held_job,
    last_attempts,
    profile_cluster,
    refused,
    refused_run,
    run_status,
    step_view,
    submit_and_wait,
    wfcommons_run,
)

ACCOUNT = "csc001"
# Cores= of each GCD in the profile (Frontier's diagram, 2 cores per L3 region).
GPU_CORES = {0: {12, 13}, 1: {14, 15}, 2: {4, 5}, 3: {6, 7}, 4: {0, 1}, 5: {2, 3}, 6: {8, 9},
             7: {10, 11}}  # fmt: skip


@pytest.fixture(scope="module")
def fr() -> Iterator[DevCluster]:
    with profile_cluster("frontier-like") as cluster:
        yield cluster


def test_a_job_without_an_account_is_refused(fr: DevCluster) -> None:
    proc = fr.run("sbatch", "-o", "/dev/null", "--wrap", "true", check=False)
    assert "-A/--account" in refused(proc)


def test_walltime_limits_follow_the_node_count_bins(fr: DevCluster) -> None:
    base = ["-A", ACCOUNT]
    one_node = fr.run("sbatch", *base, "-N1", "-t", "03:00:00", "-o", "/dev/null", "--wrap",
                      "true", check=False)  # fmt: skip
    assert "120-min limit of the bin for up to 1 node" in refused(one_node)
    big = fr.run("sbatch", *base, "-N3", "-t", "13:00:00", "-o", "/dev/null", "--wrap", "true",
                 check=False)  # fmt: skip
    assert "720-min limit" in refused(big)
    debug = fr.run("sbatch", *base, "-q", "debug", "-N2", "-t", "03:00:00", "-o", "/dev/null",
                   "--wrap", "true", check=False)  # fmt: skip
    assert "QOSMaxWallDurationPerJobLimit" in refused(debug)
    # Three hours is fine on two nodes, seven on three.
    jobs = [
        held_job(fr, *base, "-N2", "-t", "03:00:00"),
        held_job(fr, *base, "-N3", "-t", "7:00:00"),
    ]
    fr.run("scancel", *jobs)


def test_amd_gpus_in_rocr_visible_devices_only_when_requested(fr: DevCluster) -> None:
    node = fr.run("scontrol", "show", "node", "-d", "gpu1").stdout
    assert "Gres=gpu:mi250x:8(S:0-7)" in node
    none = fr.run("srun", "-A", ACCOUNT, "-t", "2", "bash", "-c", SHOW_GPUS)
    seen, text = step_view(none.stdout)
    assert [v["rocr"] for v in seen.values()] == ["unset"] and granted_gpus(text) == {}
    three = fr.run("srun", "-A", ACCOUNT, "-N2", "--gpus-per-node=3", "-t", "2",
                   "bash", "-c", SHOW_GPUS)  # fmt: skip
    seen, text = step_view(three.stdout)
    granted = granted_gpus(text)
    assert sorted(seen) == sorted(granted) and len(seen) == 2
    for name, gpus in granted.items():
        assert len(gpus) == 3
        assert sorted(map(int, seen[name]["rocr"].split(","))) == gpus
        assert seen[name]["cuda"] == "unset"


def test_each_gpu_comes_with_its_own_cores(fr: DevCluster) -> None:
    for n_gpus in (1, 2):
        proc = fr.run("srun", "-A", ACCOUNT, "-t", "2", f"--gpus={n_gpus}", "-c", str(2 * n_gpus),
                      "--gres-flags=enforce-binding", "bash", "-c", SHOW_GPUS)  # fmt: skip
        _, text = step_view(proc.stdout)
        ((node, gpus),) = granted_gpus(text).items()
        cpus = set(granted_cpus(text)[node])
        assert cpus <= set().union(*(GPU_CORES[g] for g in gpus)), (gpus, cpus)


# ---------------------------------------------------------------- hpcorch on the profile

SITE = ("--site", "dev-frontier")
NODES = ("gpu1", "gpu2", "gpu3", "gpu4")


def test_mpi_then_gpu_with_an_account(fr: DevCluster, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    workflow = REPO / "workflows" / "mpi-then-gpu.yaml"
    status = run_status(fr, workflow, run_dir, *SITE, "--account", ACCOUNT)
    attempts = last_attempts(status)
    ranks = collections.Counter(attempts["simulate"]["ranks"])
    assert sorted(ranks.values()) == [4, 4] and set(ranks) <= set(NODES), ranks
    analyse = attempts["analyse"]
    assert analyse["node"] in NODES and len(analyse["gpus"]) == 1
    summary = json.loads((run_dir / "analysis.json").read_text())
    # what the task saw through ROCR_VISIBLE_DEVICES is the GPU the journal says it held
    assert summary["gpus"] == str(analyse["gpus"][0]) and summary["backend"] == "numpy"
    for alloc in status["allocations"]:
        text = fr.run("scontrol", "show", "job", alloc["job_id"]).stdout
        assert f"Account={ACCOUNT}" in text, text


@pytest.mark.parametrize(("recipe", "tasks"), WFCOMMONS)
def test_wfcommons_instances_with_an_account(
    fr: DevCluster, recipe: str, tasks: int, tmp_path: Path
) -> None:
    status = wfcommons_run(fr, recipe, tasks, tmp_path, *SITE, "-A", ACCOUNT)
    assert {a["node"] for a in last_attempts(status).values()} <= set(NODES)
    for alloc in status["allocations"]:
        text = fr.run("scontrol", "show", "job", alloc["job_id"]).stdout
        assert f"Account={ACCOUNT}" in text, text


def test_gpu_mix_sees_exactly_the_granted_gpus_through_rocr(fr: DevCluster, tmp_path: Path) -> None:
    workflow, wanted = gpu_mix(tmp_path, [1, 2, 8, 4, 3, 2, 1])
    run_dir = tmp_path / "run"
    attempts = last_attempts(run_status(fr, workflow, run_dir, *SITE, "-A", ACCOUNT))
    check_gpu_mix(run_dir, attempts, wanted, "rocr")
    for task_id, k in wanted.items():
        out = (run_dir / "logs" / f"{task_id}.1.out").read_text()
        hip = ",".join(map(str, range(k)))
        assert "cuda=unset rocr=" in out and f" hip={hip}" in out.splitlines()[0], out
        gpus = attempts[task_id]["gpus"]
        if k == 2:  # the two GCDs of one MI250X
            assert sorted(gpus) in ([0, 1], [2, 3], [4, 5], [6, 7]), (task_id, gpus)


def test_refused_before_submission_without_account_or_over_a_bin(
    fr: DevCluster, tmp_path: Path
) -> None:
    workflow = REPO / "workflows" / "mpi-then-gpu.yaml"
    line = refused_run(fr, workflow, tmp_path / "a", *SITE)
    assert "account" in line and "--account" in line, line

    def one(task: dict[str, object]) -> Path:
        path = tmp_path / f"{task['id']}.yaml"
        path.write_text(yaml.safe_dump({"name": str(task["id"]), "tasks": [task]}))
        return path

    three_hours = one({"id": "slow", "command": ["true"], "resources": {"walltime": "3h"}})
    line = refused_run(fr, three_hours, tmp_path / "b", *SITE, "-A", ACCOUNT)
    assert "bin" in line and "02:00:00" in line, line
    wide = one({
        "id": "wide", "command": [PYTHON, "-c", "pass"], "mpi": {"ranks": 5, "ranks_per_node": 1},
        "resources": {"walltime": "10m"},
    })  # fmt: skip
    line = refused_run(fr, wide, tmp_path / "c", *SITE, "-A", ACCOUNT)
    assert "node" in line.lower(), line


def test_submit_driver_runs_in_the_one_node_bin(fr: DevCluster, tmp_path: Path) -> None:
    driver, state = submit_and_wait(fr, "dev-frontier", ACCOUNT, tmp_path)
    assert driver["Account"] == ACCOUNT and driver["Partition"] == "batch", driver
    # scontrol says NumNodes=1-1 (min-max) while the job is pending, 1 once it runs
    assert driver["NumNodes"] in ("1", "1-1") and driver["TimeLimit"] <= "02:00:00", driver
    assert state == "succeeded"
