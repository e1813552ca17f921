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
from tests.integration.final_logs import final_log
from tests.waiting import wait_for

_LIVE = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING")


def _wait_for_job(
    dev_cluster: DevCluster,
    job_id: str,
    workdir: Path,
    timeout: float,
    seen: set[str] | None = None,
) -> str:
    """Wait for the job's accounting record to say it ended; return its state.

    The record is the one of ``job_id`` whose WorkDir is ``workdir``: a dev cluster
    started afresh numbers its jobs from 1 again, and slurmdbd keeps the older jobs of
    that number (``sacct -j`` answers with one of them until it has this one's).
    ``seen`` collects the queue's jobs from ``workdir`` meanwhile.
    """

    def ended() -> str:
        if seen is not None:
            queue = dev_cluster.run("squeue", "-h", "-o", "%i %Z").stdout.splitlines()
            seen.update(q.split()[0] for q in queue if q.split()[-1] == str(workdir))
        rows = dev_cluster.run(
            "sacct", "-X", "-n", "-P", "-D", "-j", job_id, "-o", "State,WorkDir"
        ).stdout.splitlines()
        states = [r.split("|")[0].split()[0] for r in rows if r.endswith(f"|{workdir}")]
        return next((state for state in states if state not in _LIVE), "")

    try:
        return wait_for(ended, timeout, f"the accounting record of job {job_id} to end")
    except AssertionError:
        dev_cluster.run("scancel", job_id, check=False)
        raise


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
    # A minute early: the window only has to hold the job; the WorkDir tells it apart.
    started = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 60))
    # --exclusive: whole nodes (the pipeline's `sum` task wants 2 cores on one node).
    sbatch = dev_cluster.run(
        "sbatch", "--parsable", "-N2", "-p", "cpu", "--exclusive", "-t", "10",
        "-J", "user-script", "-o", str(tmp_path / "job.out"), f"--chdir={tmp_path}",
        str(script),
    )  # fmt: skip
    job_id = sbatch.stdout.strip().split(";")[0]
    # Other runs share the two cpu nodes: the script may queue a while.
    seen: set[str] = set()
    state = _wait_for_job(dev_cluster, job_id, tmp_path, timeout=900, seen=seen)
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
    # were one job step on both nodes. -D: every job of the window, older ones of the
    # same number too (without it sacct may show one of those instead of ours).
    def ours() -> list[list[str]]:
        jobs = dev_cluster.run(
            "sacct", "-n", "-P", "-D", "-X", "-S", started, "-o", "JobID,JobName,WorkDir",
        ).stdout.splitlines()  # fmt: skip
        return [j.split("|") for j in jobs if j.split("|")[2] == str(tmp_path)]

    found = wait_for(ours, 60, f"job {job_id} in sacct's window from {started}")
    assert [j[0] for j in found] == [job_id], found

    def worker_steps() -> list[list[str]]:
        steps = dev_cluster.run("sacct", "-n", "-P", "-j", job_id, "-o", "JobID,NodeList")
        return [s.split("|") for s in steps.stdout.splitlines() if s.startswith(f"{job_id}.0")]

    step = wait_for(worker_steps, 60, f"the accounting record of step {job_id}.0")
    assert step[0][1] == "cpu[1-2]", step


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
    state = _wait_for_job(dev_cluster, job_id, tmp_path, timeout=900)
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
    # The scaler cancelled them; Slurm lists a cancelled job until it has cleaned up.
    added_ids = {a["job_id"] for a in added}
    wait_for(
        lambda: not added_ids & set(dev_cluster.run("squeue", "-h", "-o", "%i").stdout.split()),
        60,
        f"the added allocations {sorted(added_ids)} to leave squeue",
    )


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
    assert _wait_for_job(dev_cluster, job_id, tmp_path, timeout=900) == "COMPLETED", (
        tmp_path / "job.out"
    ).read_text()
    seen = {t: final_log(run_dir, t).strip() for t in ("one", "two", "other")}
    gpus = {t: set(v.split(",")) for t, v in seen.items()}
    assert len(gpus["one"]) == 1 and len(gpus["two"]) == 2 and len(gpus["other"]) == 1, seen
    # They ran at once on one 4-GPU node: no GPU was given twice; the pair is NVLinked.
    assert not (gpus["one"] & gpus["two"]) and not (gpus["other"] & gpus["two"]), seen
    assert gpus["two"] in ({"0", "1"}, {"2", "3"}), seen
