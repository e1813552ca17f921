"""The perlmutter-like dev cluster refuses, grants and places as NERSC documents, with raw
sbatch/srun: -A required, -C cpu/gpu required, QOS limits refused at submission
(DenyOnLimit), GPUs granted only when asked for and exactly those in CUDA_VISIBLE_DEVICES;
then hpcorch on it (site dev-perlmutter): mpi-then-gpu and a 1-4 GPU mix run with a real
account and QOS, each GPU task sees exactly GPUs Slurm granted its job; without an account
or over the QOS walltime, hpcorch stops before submitting (exit 2, one line).

One cluster for the module (tests/integration/profiles.py), taken down at its end.
"""

from __future__ import annotations

import collections
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import DevCluster
from tests.integration.profiles import (
    REPO,
    SHOW_GPUS,
    WFCOMMONS,
    check_gpu_mix,
    gpu_mix,
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

ACCOUNT = "m0001"


@pytest.fixture(scope="module")
def pm() -> Iterator[DevCluster]:
    with profile_cluster("perlmutter-like") as cluster:
        yield cluster


def test_a_job_without_an_account_or_a_node_type_is_refused(pm: DevCluster) -> None:
    no_account = pm.run("sbatch", "-C", "cpu", "-o", "/dev/null", "--wrap", "true", check=False)
    assert "-A/--account" in refused(no_account)
    no_type = pm.run("sbatch", "-A", ACCOUNT, "-o", "/dev/null", "--wrap", "true", check=False)
    assert "-C cpu or -C gpu" in refused(no_type)
    unknown = pm.run("sbatch", "-A", "m9999", "-C", "cpu", "-o", "/dev/null", "--wrap", "true",
                     check=False)  # fmt: skip
    assert "Invalid account" in refused(unknown)


def test_qos_limits_are_refused_at_submission(pm: DevCluster) -> None:
    base = ["-A", ACCOUNT, "-C", "cpu"]
    # debug is the default QOS: 30 minutes at most.
    over = pm.run("sbatch", *base, "-t", "01:00:00", "-o", "/dev/null", "--wrap", "true",
                  check=False)  # fmt: skip
    assert "QOSMaxWallDurationPerJobLimit" in refused(over)
    shared = pm.run("sbatch", *base, "-q", "shared", "-n", "8", "-o", "/dev/null", "--wrap",
                    "true", check=False)  # fmt: skip
    assert "QOSMaxCpuPerJobLimit" in refused(shared)
    wf_nodes = pm.run("sbatch", *base, "-q", "workflow", "-N", "2", "-o", "/dev/null", "--wrap",
                      "true", check=False)  # fmt: skip
    assert "QOSMax" in refused(wf_nodes)
    not_ours = pm.run("sbatch", *base, "-q", "premium", "-o", "/dev/null", "--wrap", "true",
                      check=False)  # fmt: skip
    assert "Invalid qos" in refused(not_ours)
    # The same hour is fine in regular; a small long-lived driver fits workflow.
    jobs = [
        held_job(pm, *base, "-q", "regular", "-t", "01:00:00"),
        held_job(pm, *base, "-q", "workflow", "-n", "1", "-t", "7-00:00:00"),
    ]
    pm.run("scancel", *jobs)


def test_gpus_only_when_requested_and_exactly_those_granted(pm: DevCluster) -> None:
    none = pm.run("srun", "-A", ACCOUNT, "-C", "gpu", "-t", "2", "bash", "-c", SHOW_GPUS)
    seen, text = step_view(none.stdout)
    (node,) = seen
    assert node.startswith("gpu") and seen[node]["cuda"] == "unset", seen
    assert granted_gpus(text) == {}
    two = pm.run("srun", "-A", ACCOUNT, "-C", "gpu", "--gpus-per-node=2", "-t", "2",
                 "bash", "-c", SHOW_GPUS)  # fmt: skip
    seen, text = step_view(two.stdout)
    (node,) = seen
    granted = granted_gpus(text)[node]
    assert len(granted) == 2
    assert sorted(map(int, seen[node]["cuda"].split(","))) == granted
    assert seen[node]["rocr"] == "unset"


def test_constraints_pick_node_types(pm: DevCluster) -> None:
    hbm80 = pm.run("srun", "-A", ACCOUNT, "-C", "gpu&hbm80g", "--gpus=1", "-t", "2",
                   "printenv", "SLURMD_NODENAME")  # fmt: skip
    assert hbm80.stdout.strip() == "gpu2"
    cpu = pm.run("srun", "-A", ACCOUNT, "-C", "cpu", "-N", "2", "-t", "2",
                 "printenv", "SLURMD_NODENAME")  # fmt: skip
    assert sorted(cpu.stdout.split()) == ["cpu1", "cpu2"]


# ---------------------------------------------------------------- hpcorch on the profile

SITE = ("--site", "dev-perlmutter")


def _job(pm: DevCluster, job_id: str) -> dict[str, str]:
    """Account, QOS and Features of a job (slurmctld keeps it MinJobAge=300 s after its end)."""
    text = pm.run("scontrol", "show", "job", job_id).stdout
    return {k: v for k, v in re.findall(r"\b(Account|QOS|Features|Partition)=(\S+)", text)}


def test_mpi_then_gpu_with_an_account_and_qos(pm: DevCluster, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    workflow = REPO / "workflows" / "mpi-then-gpu.yaml"
    status = run_status(pm, workflow, run_dir, *SITE, "--account", ACCOUNT)
    attempts = last_attempts(status)
    assert collections.Counter(attempts["simulate"]["ranks"]) == {"cpu1": 4, "cpu2": 4}
    analyse = attempts["analyse"]
    assert analyse["node"] in ("gpu1", "gpu2") and len(analyse["gpus"]) == 1
    summary = json.loads((run_dir / "analysis.json").read_text())
    assert summary["gpus"] == str(analyse["gpus"][0]) and summary["backend"] == "numpy"
    jobs = {a["job_id"]: _job(pm, a["job_id"]) for a in status["allocations"]}
    assert {j["Account"] for j in jobs.values()} == {ACCOUNT}
    assert {j["QOS"] for j in jobs.values()} == {"regular"}  # the site's default_qos
    assert {j["Features"] for j in jobs.values()} == {"cpu", "gpu"}  # by constraint, no -p


@pytest.mark.parametrize(("recipe", "tasks"), WFCOMMONS)
def test_wfcommons_instances_with_an_account_and_qos(
    pm: DevCluster, recipe: str, tasks: int, tmp_path: Path
) -> None:
    status = wfcommons_run(pm, recipe, tasks, tmp_path, *SITE, "-A", ACCOUNT)
    assert {a["node"] for a in last_attempts(status).values()} <= {"cpu1", "cpu2"}
    jobs = [_job(pm, alloc["job_id"]) for alloc in status["allocations"]]
    assert jobs and {j["Account"] for j in jobs} == {ACCOUNT}
    assert {(j["QOS"], j["Features"]) for j in jobs} == {("regular", "cpu")}, jobs


def test_gpu_mix_sees_exactly_the_granted_gpus(pm: DevCluster, tmp_path: Path) -> None:
    workflow, wanted = gpu_mix(tmp_path, [1, 2, 4, 1, 3, 2])
    run_dir = tmp_path / "run"
    attempts = last_attempts(run_status(pm, workflow, run_dir, *SITE, "-A", ACCOUNT))
    check_gpu_mix(run_dir, attempts, wanted, "cuda")
    for task_id in wanted:
        out = (run_dir / "logs" / f"{task_id}.1.out").read_text()
        assert "rocr=unset hip=unset" in out, out  # NVIDIA: CUDA_VISIBLE_DEVICES alone


def test_refused_before_submission_without_account_or_over_qos(
    pm: DevCluster, tmp_path: Path
) -> None:
    workflow = REPO / "workflows" / "mpi-then-gpu.yaml"
    line = refused_run(pm, workflow, tmp_path / "a", *SITE)
    assert "account" in line and "--account" in line, line
    long = tmp_path / "long.yaml"
    long.write_text(yaml.safe_dump({"name": "long", "tasks": [
        {"id": "hour", "command": ["true"], "resources": {"cpus": 1, "walltime": "1h"}},
    ]}))  # fmt: skip
    line = refused_run(pm, long, tmp_path / "b", *SITE, "-A", ACCOUNT, "--qos", "debug")
    assert "debug" in line and "walltime" in line.lower(), line


def test_submit_driver_runs_small_in_the_workflow_qos(pm: DevCluster, tmp_path: Path) -> None:
    driver, state = submit_and_wait(pm, "dev-perlmutter", ACCOUNT, tmp_path)
    assert driver["Account"] == ACCOUNT and driver["QOS"] == "workflow", driver
    # scontrol says NumNodes=1-1 (min-max) while the job is pending, 1 once it runs
    assert driver["Features"] == "cpu" and driver["NumNodes"] in ("1", "1-1"), driver
    assert state == "succeeded"
