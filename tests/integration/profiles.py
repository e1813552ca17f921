"""Site-shaped dev clusters (``scripts/dev-cluster up --profile NAME``) for the profile tests.

One cluster per profile and test module: :func:`profile_cluster` starts it on the release
pytest runs on (22.05 on the host; the root's release under ``scripts/dev-cluster exec
--slurm R``) and takes it down at the end when it started it, so CI pays for one ``up``
per profile. It fails (never skips) when it cannot start one.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from wfcommons import WorkflowGenerator
from wfcommons.wfchef import recipes

from hpcorch.slurm.hostlists import expand_hostlist
from tests.conftest import DEV_CLUSTER, IN_ROOT, TEST_SLURM, DevCluster, _parse_env, cluster_args
from tests.waiting import wait_for

STEMS = {"perlmutter-like": "perlmutter", "frontier-like": "frontier"}
ACCOUNTS = {"perlmutter-like": "m0001", "frontier-like": "csc001"}


def _dev_cluster(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DEV_CLUSTER), *args],
        capture_output=True, text=True, check=False, timeout=timeout,
    )  # fmt: skip


def profile_args(profile: str) -> list[str]:
    """dev-cluster options for PROFILE's cluster on the release under test."""
    cluster_args(None)  # fails when pytest runs outside the release it is told to test
    name = f"{STEMS[profile]}{TEST_SLURM.replace('.', '')}"
    return ["--name", name, "--slurm", IN_ROOT or TEST_SLURM, "--profile", profile]


@contextmanager
def profile_cluster(profile: str) -> Iterator[DevCluster]:
    """The running PROFILE cluster (started if need be; taken down after if started here)."""
    args = profile_args(profile)
    started = False
    if _dev_cluster("status", *args[:2]).returncode != 0:
        if os.geteuid() != 0:
            pytest.fail(f"run `sudo scripts/dev-cluster up {' '.join(args)}` first", pytrace=False)
        up = _dev_cluster("up", *args)
        if up.returncode != 0:
            pytest.fail(f"scripts/dev-cluster up {' '.join(args)} failed:\n{up.stderr[-4000:]}",
                        pytrace=False)  # fmt: skip
        started = True
    env = _dev_cluster("env", *args[:2])
    if env.returncode != 0:
        pytest.fail(f"scripts/dev-cluster env failed:\n{env.stderr}", pytrace=False)
    parsed = _parse_env(env.stdout)
    assert parsed["HPCORCH_DEV_CLUSTER_PROFILE"] == profile, parsed
    try:
        yield DevCluster(name=parsed["HPCORCH_DEV_CLUSTER_NAME"], env=parsed)
    finally:
        if started:
            _dev_cluster("down", *args[:2])


def refused(proc: subprocess.CompletedProcess[str]) -> str:
    """The submission error of a refused sbatch/srun (asserts that it was refused)."""
    assert proc.returncode != 0, f"accepted: {proc.stdout}"
    assert (
        "submission failed" in proc.stderr
        or "allocation failure" in proc.stderr
        or ("Unable to allocate" in proc.stderr)
    ), proc.stderr
    return proc.stderr


def held_job(cluster: DevCluster, *args: str) -> str:
    """Submit a held job (accepted, never started) and return its id; the caller cancels it."""
    proc = cluster.run("sbatch", "--parsable", "--hold", "-o", "/dev/null", *args,
                       "--wrap", "true", check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split(";")[0]


GRES_IDX = re.compile(r"GRES=gpu:[\w-]+:\d+\(IDX:([\d,-]+)\)")


def expand(ranges: str) -> list[int]:
    """'0-2,5' -> [0, 1, 2, 5]."""
    out: list[int] = []
    for part in ranges.split(","):
        first, _, last = part.partition("-")
        out += range(int(first), int(last or first) + 1)
    return out


def granted_gpus(scontrol_d: str) -> dict[str, list[int]]:
    """Per node, the GPU indexes ``scontrol show job -d`` says the job was granted."""
    out: dict[str, list[int]] = {}
    for line in scontrol_d.splitlines():
        node = re.search(r"\bNodes=(\S+)", line)
        idx = GRES_IDX.search(line)
        if node and idx and "CPU_IDs" in line:
            out.update(dict.fromkeys(expand_hostlist(node.group(1)), expand(idx.group(1))))
    return out


def granted_cpus(scontrol_d: str) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for line in scontrol_d.splitlines():
        node = re.search(r"\bNodes=(\S+)", line)
        cpus = re.search(r"\bCPU_IDs=([\d,-]+)", line)
        if node and cpus:
            out.update(dict.fromkeys(expand_hostlist(node.group(1)), expand(cpus.group(1))))
    return out


# What each GPU step prints: the node, the GPU variables, and Slurm's record of the job.
SHOW_GPUS = (
    'echo "node=$SLURMD_NODENAME cuda=${CUDA_VISIBLE_DEVICES-unset} '
    'rocr=${ROCR_VISIBLE_DEVICES-unset}"; scontrol show job -d "$SLURM_JOB_ID"'
)


def step_view(out: str) -> tuple[dict[str, dict[str, str]], str]:
    """(per node: {'cuda': ..., 'rocr': ...}, the scontrol text) from SHOW_GPUS output."""
    seen: dict[str, dict[str, str]] = {}
    for m in re.finditer(r"^node=(\S+) cuda=(\S*) rocr=(\S*)$", out, re.M):
        seen[m.group(1)] = {"cuda": m.group(2), "rocr": m.group(3)}
    return seen, out


# ---------------------------------------------------------------- the engine on a profile

REPO = DEV_CLUSTER.parent.parent
PYTHON = sys.executable
HPCORCH = str(Path(PYTHON).with_name("hpcorch"))

# A GPU task's command: what it may use and what Slurm granted its allocation, in one line
# each (node, the variables, then `scontrol show job -d` of the job the worker runs in).
GPU_TASK = (
    "import os, subprocess, time\n"
    "env = os.environ\n"
    "print('node=%s cuda=%s rocr=%s hip=%s' % (env['SLURMD_NODENAME'],"
    " env.get('CUDA_VISIBLE_DEVICES', 'unset'), env.get('ROCR_VISIBLE_DEVICES', 'unset'),"
    " env.get('HIP_VISIBLE_DEVICES', 'unset')))\n"
    "print(subprocess.run(['scontrol', 'show', 'job', '-d', env['SLURM_JOB_ID']],"
    " capture_output=True, text=True).stdout)\n"
    "time.sleep(3)\n"
)


def hpcorch(
    cluster: DevCluster, *argv: str, expect: int | None = 0
) -> subprocess.CompletedProcess[str]:
    """``hpcorch ARGV`` against CLUSTER from the repository root (task code imports from it)."""
    env = cluster.cli_env() | {
        "PATH": f"{Path(PYTHON).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HPCORCH_SCALE_INTERVAL": "1",
    }
    proc = subprocess.run(
        [HPCORCH, *argv], cwd=REPO, env=env, capture_output=True, text=True, check=False,
        timeout=900,
    )  # fmt: skip
    if expect is not None:
        assert proc.returncode == expect, (
            f"hpcorch {' '.join(argv)} -> {proc.returncode}\n" + (proc.stderr[-4000:])
        )
    return proc


def run_status(cluster: DevCluster, workflow: Path, run_dir: Path, *opts: str) -> dict[str, Any]:
    """Run WORKFLOW to success on CLUSTER's site and return ``status --json``."""
    hpcorch(cluster, "run", str(workflow), "--run-dir", str(run_dir), *opts)
    status: dict[str, Any] = json.loads(hpcorch(cluster, "status", str(run_dir), "--json").stdout)
    assert status["state"] == "succeeded", status["counts"]
    return status


def last_attempts(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["id"]: t["attempts"][-1] for t in status["tasks"]}


# wfcommons instances the profile tests run: the smallest each recipe builds (its base
# graph), each scaled to about WFCOMMONS_SECONDS
WFCOMMONS = [("BlastRecipe", 45), ("SeismologyRecipe", 103), ("EpigenomicsRecipe", 43)]
WFCOMMONS_SECONDS = 4.0


def wfcommons_run(
    cluster: DevCluster, recipe: str, tasks: int, tmp_path: Path, *opts: str
) -> dict[str, Any]:
    """Generate a RECIPE instance of about TASKS tasks, run it to success on CLUSTER with
    OPTS (site, account) and check that no task started before its parents ended; returns
    ``status --json``."""
    instance = tmp_path / f"{recipe}.json"
    recipe_obj = getattr(recipes, recipe).from_num_tasks(tasks)
    WorkflowGenerator(recipe_obj).build_workflow().write_json(instance)
    doc = json.loads(instance.read_text())
    total = sum(t["runtimeInSeconds"] for t in doc["workflow"]["execution"]["tasks"])
    scale = f"{WFCOMMONS_SECONDS / total:.3e}"
    status = run_status(cluster, instance, tmp_path / "run", "--time-scale", scale, *opts)
    parents = {t["id"]: t["parents"] for t in doc["workflow"]["specification"]["tasks"]}
    attempts = last_attempts(status)
    assert set(attempts) == set(parents), "every task of the instance ran"
    for task_id, ps in parents.items():
        for p in ps:
            assert attempts[task_id]["start"] >= attempts[p]["end"], f"{task_id} before {p}"
    return status


def gpu_mix(tmp_path: Path, gpus: list[int]) -> tuple[Path, dict[str, int]]:
    """A workflow of GPU_TASK tasks of GPUS GPUs each; returns it and {task id: GPUs}."""
    tasks = [
        {
            "id": f"gpu{i:02d}-{k}",
            "command": [PYTHON, "-c", GPU_TASK],
            "resources": {"gpus": k, "walltime": "5m"},
        }
        for i, k in enumerate(gpus)
    ]
    workflow = tmp_path / "gpu-mix.yaml"
    workflow.write_text(yaml.safe_dump({"name": "gpu-mix", "tasks": tasks}))
    return workflow, {t["id"]: t["resources"]["gpus"] for t in tasks}  # type: ignore[index]


def check_gpu_mix(
    run_dir: Path, attempts: dict[str, dict[str, Any]], wanted: dict[str, int], var: str
) -> None:
    """Every task saw in VAR exactly the GPUs the journal says it held, those are among the
    GPUs Slurm granted its job on its node, and no two overlapping attempts shared one."""
    for task_id, k in wanted.items():
        a = attempts[task_id]
        out = (run_dir / "logs" / f"{task_id}.1.out").read_text()
        seen, text = step_view_all(out)
        node, shown = seen
        assert node == a["node"], (task_id, node, a)
        assert len(a["gpus"]) == k == len(set(a["gpus"])), (task_id, a)
        assert shown[var] == ",".join(map(str, a["gpus"])), (task_id, shown, a)
        granted = granted_gpus(text)
        assert set(a["gpus"]) <= set(granted[node]), (task_id, a["gpus"], granted)
    for x, y in itertools.combinations(wanted, 2):
        a, b = attempts[x], attempts[y]
        if a["node"] == b["node"] and a["start"] < b["end"] and b["start"] < a["end"]:
            assert not set(a["gpus"]) & set(b["gpus"]), (x, a, y, b)


def step_view_all(out: str) -> tuple[tuple[str, dict[str, str]], str]:
    match = re.search(r"^node=(\S+) cuda=(\S*) rocr=(\S*) hip=(\S*)$", out, re.M)
    assert match, out
    shown = {"cuda": match.group(2), "rocr": match.group(3), "hip": match.group(4)}
    return (match.group(1), shown), out


def refused_run(cluster: DevCluster, workflow: Path, run_dir: Path, *opts: str) -> str:
    """``hpcorch run`` that must stop before submitting: exit 2, one line, no job queued."""
    before = cluster.run("squeue", "-h", "-o", "%A").stdout.split()
    proc = hpcorch(cluster, "run", str(workflow), "--run-dir", str(run_dir), *opts, expect=2)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "sbatch" not in lines[0].lower() or "error:" in lines[0], lines
    assert cluster.run("squeue", "-h", "-o", "%A").stdout.split() == before
    return lines[0]


def submit_and_wait(
    cluster: DevCluster, site: str, account: str, tmp_path: Path
) -> tuple[dict[str, str], str]:
    """``hpcorch submit`` a two-step chain on SITE, then wait for the run to succeed.

    Returns the driver's job fields (Account, QOS, Partition, Features, TimeLimit) read
    while it runs, and the run's final state."""
    workflow = tmp_path / "chain.yaml"
    workflow.write_text(yaml.safe_dump({"name": "chain", "tasks": [
        {"id": "s0", "command": ["sleep", "1"], "resources": {"walltime": "5m"}},
        {"id": "s1", "command": ["sleep", "1"], "after": ["s0"], "resources": {"walltime": "5m"}},
    ]}))  # fmt: skip
    proc = hpcorch(cluster, "submit", str(workflow), "--site", site, "-A", account, "--json",
                   "--run-dir", str(tmp_path / "run"))  # fmt: skip
    job = json.loads(proc.stdout)
    try:
        text = cluster.run("scontrol", "show", "job", job["job_id"]).stdout
        fields = dict(
            re.findall(r"\b(Account|QOS|Partition|Features|TimeLimit|NumNodes)=(\S+)", text)
        )

        def finished() -> str:
            out = hpcorch(cluster, "status", str(tmp_path / "run"), "--json", expect=None)
            if out.returncode != 0:
                return ""
            state = str(json.loads(out.stdout)["state"])
            return state if state in ("succeeded", "failed", "cancelled") else ""

        state = wait_for(finished, 400, what=f"run of driver job {job['job_id']}", interval=3)
    finally:
        hpcorch(cluster, "cancel", str(tmp_path / "run"), expect=None)
        cluster.run("scancel", job["job_id"], check=False)
    return fields, state
