"""`hpcorch run` inside a user's sbatch script: the allocation's nodes run the tasks, and
no other Slurm job is submitted."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO, DevCluster


def _wait_for_job(
    dev_cluster: DevCluster, job_id: str, timeout: float, seen: set[str] | None = None
) -> str:
    """Wait for the job to end; ``seen`` collects the queue's jobs from the job's directory."""
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        if seen is not None:
            workdir = dev_cluster.run("squeue", "-h", "-j", job_id, "-o", "%Z").stdout.strip()
            queue = dev_cluster.run("squeue", "-h", "-o", "%i %Z").stdout.splitlines()
            seen |= {q.split()[0] for q in queue if workdir and q.split()[-1] == workdir}
        out = dev_cluster.run("sacct", "-X", "-n", "-P", "-j", job_id, "-o", "State").stdout
        state = out.strip().split("\n")[0].split()[0] if out.strip() else ""
        if state and state not in ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING"):
            return state
        time.sleep(2)
    dev_cluster.run("scancel", job_id, check=False)
    raise AssertionError(f"job {job_id} still {state or 'unknown'} after {timeout:.0f}s")


def test_run_in_an_sbatch_script_uses_the_allocation(
    dev_cluster: DevCluster, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    run_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "hpcorch", "run", str(REPO / "workflows" / "cpu-pipeline.yaml")]
    argv += ["--site", "dev", "--run-dir", str(run_dir)]
    script = tmp_path / "job.sh"
    script.write_text(
        f"#!/bin/bash\nexport HPCORCH_HOME={shlex.quote(str(home))}\n{shlex.join(argv)}\n"
    )
    started = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 5))
    # --exclusive: whole nodes (the pipeline's `sum` task wants 2 cores on one node).
    sbatch = dev_cluster.run(
        "sbatch", "--parsable", "-N2", "-p", "cpu", "--exclusive", "-t", "10",
        "-J", "user-script", "-o", str(tmp_path / "job.out"), f"--chdir={tmp_path}",
        str(script),
    )  # fmt: skip
    job_id = sbatch.stdout.strip().split(";")[0]
    # Other runs share the two cpu nodes: the script may queue a while.
    seen: set[str] = set()
    state = _wait_for_job(dev_cluster, job_id, timeout=900, seen=seen)
    assert seen == {job_id}, f"jobs besides the script's were queued: {seen}"
    output = (tmp_path / "job.out").read_text()
    assert state == "COMPLETED", output

    status = json.loads(
        subprocess.run(
            [sys.executable, "-m", "hpcorch", "status", str(run_dir), "--json"],
            capture_output=True, text=True, check=True, env=dev_cluster.cli_env(),
        ).stdout
    )  # fmt: skip
    assert status["state"] == "succeeded", output
    nodes = set(dev_cluster.run("scontrol", "show", "hostnames", "cpu[1-2]").stdout.split())
    attempts = [a for t in status["tasks"] for a in t["attempts"]]
    assert attempts and all(a["job_id"] == job_id for a in attempts), attempts
    assert {a["node"] for a in attempts} <= nodes
    # The run's only allocation is the script's own.
    assert [a["job_id"] for a in status["allocations"]] == [job_id]

    # Slurm saw no other job from this directory: only the script's, whose workers
    # were one job step on both nodes.
    jobs = dev_cluster.run(
        "sacct", "-n", "-P", "-S", started, "-o", "JobID,JobName,WorkDir,NodeList", "-X",
    ).stdout.splitlines()  # fmt: skip
    ours = [j.split("|") for j in jobs if j.split("|")[2] == str(tmp_path)]
    assert [j[0] for j in ours] == [job_id], ours
    steps = dev_cluster.run("sacct", "-n", "-P", "-j", job_id, "-o", "JobID,NodeList").stdout
    worker_steps = [s.split("|") for s in steps.splitlines() if s.startswith(f"{job_id}.0")]
    assert worker_steps and worker_steps[0][1] == "cpu[1-2]", steps


def test_add_allocations_lets_the_run_grow_past_the_script(
    dev_cluster: DevCluster, tmp_path: Path
) -> None:
    site = (REPO / "site-configs" / "dev.yaml").read_text().replace("name: dev\n", "name: devadd\n")
    (tmp_path / "devadd.yaml").write_text(site + "allocation: {add_allocations: true}\n")
    tasks = "".join(
        f"  - {{id: t{i}, command: [sleep, '8'], resources: {{cpus: 4, walltime: 2m}}}}\n"
        for i in range(8)
    )
    (tmp_path / "wf.yaml").write_text(f"name: grow\ntasks:\n{tasks}")
    run_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "hpcorch", "run", str(tmp_path / "wf.yaml")]
    argv += ["--site", str(tmp_path / "devadd.yaml"), "--run-dir", str(run_dir)]
    script = tmp_path / "job.sh"
    script.write_text(
        "#!/bin/bash\n"
        f"export HPCORCH_HOME={shlex.quote(str(tmp_path / 'home'))} HPCORCH_SCALE_INTERVAL=2\n"
        f"{shlex.join(argv)}\n"
    )
    sbatch = dev_cluster.run(
        "sbatch", "--parsable", "-N1", "-p", "cpu", "--exclusive", "-t", "10",
        "-J", "user-script", "-o", str(tmp_path / "job.out"), f"--chdir={tmp_path}",
        str(script),
    )  # fmt: skip
    job_id = sbatch.stdout.strip().split(";")[0]
    state = _wait_for_job(dev_cluster, job_id, timeout=900)
    output = (tmp_path / "job.out").read_text()
    assert state == "COMPLETED", output
    status = json.loads(
        subprocess.run(
            [sys.executable, "-m", "hpcorch", "status", str(run_dir), "--json"],
            capture_output=True, text=True, check=True, env=dev_cluster.cli_env(),
        ).stdout
    )  # fmt: skip
    assert status["state"] == "succeeded", output
    allocations = status["allocations"]
    assert job_id in [a["job_id"] for a in allocations]
    # 8 four-core tasks on one 8-core node: the scaler asked for more, and ended them all.
    added = [a for a in allocations if a["job_id"] != job_id]
    assert added, "the run added no allocation"
    assert all(a["end"] is not None for a in added), added
    live = dev_cluster.run("squeue", "-h", "-o", "%i").stdout.split()
    assert not {a["job_id"] for a in added} & set(live)


def test_gpu_tasks_inside_an_allocation_get_their_own_gpus(
    dev_cluster: DevCluster, tmp_path: Path
) -> None:
    task = "command: [bash, -c, 'echo $CUDA_VISIBLE_DEVICES; sleep 3']"
    (tmp_path / "wf.yaml").write_text(
        "name: gpus\ntasks:\n"
        f"  - {{id: one, {task}, resources: {{gpus: 1, walltime: 1m}}}}\n"
        f"  - {{id: two, {task}, resources: {{gpus: 2, walltime: 1m}}}}\n"
        f"  - {{id: other, {task}, resources: {{gpus: 1, walltime: 1m}}}}\n"
    )
    run_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "hpcorch", "run", str(tmp_path / "wf.yaml"), "--site", "dev"]
    argv += ["--run-dir", str(run_dir)]
    script = tmp_path / "job.sh"
    script.write_text(
        f"#!/bin/bash\nexport HPCORCH_HOME={shlex.quote(str(tmp_path / 'home'))}\n"
        f"{shlex.join(argv)}\n"
    )
    sbatch = dev_cluster.run(
        "sbatch", "--parsable", "-N1", "-p", "gpu", "--exclusive", "--gres=gpu:sim:4",
        "-t", "10", "-J", "user-script", "-o", str(tmp_path / "job.out"),
        f"--chdir={tmp_path}", str(script),
    )  # fmt: skip
    job_id = sbatch.stdout.strip().split(";")[0]
    assert _wait_for_job(dev_cluster, job_id, timeout=900) == "COMPLETED", (
        tmp_path / "job.out"
    ).read_text()
    seen = {
        t: (run_dir / "logs" / f"{t}.1.out").read_text().strip() for t in ("one", "two", "other")
    }
    gpus = {t: set(v.split(",")) for t, v in seen.items()}
    assert len(gpus["one"]) == 1 and len(gpus["two"]) == 2 and len(gpus["other"]) == 1, seen
    # They ran at once on one 4-GPU node: no GPU was given twice; the pair is NVLinked.
    assert not (gpus["one"] & gpus["two"]) and not (gpus["other"] & gpus["two"]), seen
    assert gpus["two"] in ({"0", "1"}, {"2", "3"}), seen
