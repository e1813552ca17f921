"""Smoke tests of the substrate: the real dev Slurm does what hpcorch relies on.

Each test is an integration test of scripts/dev-cluster AND a check that this
machine can run what the rest of the suite needs (sbatch, dask-jobqueue,
srun+PMIx+mpi4py, GRES topology, slurmrestd+JWT, slurmdbd accounting, node
failure). No mocks.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
from dask_jobqueue import SLURMCluster
from distributed import Client

from hpcorch.slurm.rest_versions import choose, served_versions
from tests.conftest import DevCluster, ensure_dev_cluster
from tests.waiting import wait_for

PYTHON = sys.executable


def job_field(cluster: DevCluster, job_id: str, field: str) -> str:
    out = cluster.run("scontrol", "show", "job", job_id, check=False).stdout
    match = re.search(rf"\b{field}=(\S+)", out)
    return match.group(1) if match else ""


def test_sbatch_job_runs_and_output_comes_back(dev_cluster: DevCluster, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    job = dev_cluster.run(
        "sbatch", "--parsable", "-o", str(out), "--wrap", "echo hello from $SLURMD_NODENAME"
    ).stdout.strip()
    wait_for(lambda: out.exists() and out.read_text().strip(), 60, what=f"output of job {job}")
    assert re.fullmatch(r"hello from cpu[12]", out.read_text().strip())


def test_dask_jobqueue_slurmcluster_two_workers(dev_cluster: DevCluster, tmp_path: Path) -> None:

    with (
        SLURMCluster(
            queue="cpu",
            cores=1,
            processes=1,
            memory="1GB",
            walltime="00:10:00",
            interface="lo",
            python=PYTHON,
            log_directory=str(tmp_path),
            job_script_prologue=["unset SLURM_JWT"],
        ) as cluster,
        Client(cluster) as client,
    ):
        cluster.scale(jobs=2)
        client.wait_for_workers(2, timeout=120)
        jobs = set(cluster.workers)
        assert len(jobs) == 2
        total = client.submit(sum, client.map(lambda x: x * x, range(100))).result(timeout=60)
        assert total == sum(x * x for x in range(100))
        squeue = dev_cluster.run("squeue", "-h", "-o", "%P %T").stdout.split("\n")
        assert sum("cpu RUNNING" in line for line in squeue) >= 2


def test_srun_pmix_mpi4py_allreduce_over_two_nodes(dev_cluster: DevCluster, tmp_path: Path) -> None:
    script = tmp_path / "allreduce.py"
    script.write_text(
        "import os\n"
        "from mpi4py import MPI\n"
        "comm = MPI.COMM_WORLD\n"
        "total = comm.allreduce(comm.Get_rank() + 1)\n"
        "print(comm.Get_rank(), comm.Get_size(), total, os.environ['SLURMD_NODENAME'])\n"
    )
    plugins = dev_cluster.run("srun", "--mpi=list", check=False)
    if "pmix" in plugins.stdout + plugins.stderr:
        argv = ["srun", "-p", "cpu", "-N2", "-n4", "--mpi=pmix", PYTHON, str(script)]
    else:  # Debian's 26.05 has no PMIx plugin: Open MPI's mpirun inside the allocation
        # (hpcorch's mpi fallback), its daemons started by srun; root needs the two ALLOWs.
        # Every emulated node is this one host, so PRRTE is told which is which (--host).
        argv = ["env", "OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1",
                "salloc", "-p", "cpu", "-N2", "-n4", "mpirun", "-n", "4",
                "--host", "cpu1:2,cpu2:2", "--map-by", "slot:OVERSUBSCRIBE",
                "--bind-to", "none", PYTHON, str(script)]  # fmt: skip
    proc = dev_cluster.run(*argv, timeout=180)
    rows = [line.split() for line in proc.stdout.strip().splitlines()]
    assert sorted(int(r[0]) for r in rows) == [0, 1, 2, 3]
    assert {int(r[1]) for r in rows} == {4}
    assert {int(r[2]) for r in rows} == {1 + 2 + 3 + 4}
    assert {r[3] for r in rows} == {"cpu1", "cpu2"}


def test_gpu_gres_and_topology_visible(dev_cluster: DevCluster) -> None:
    proc = dev_cluster.run(
        "srun", "-p", "gpu", "--gres=gpu:2", "bash", "-c", "echo $CUDA_VISIBLE_DEVICES"
    )
    ids = proc.stdout.strip().split(",")
    assert len(ids) == 2 and all(i.isdigit() for i in ids)
    node = dev_cluster.run("scontrol", "show", "node", "-d", "gpu1").stdout
    assert "Gres=gpu:sim:4(S:0-1)" in node
    # slurmd -G prints the GRES configuration Slurm built from gres.conf: Cores and Links.
    gres = subprocess.run(
        ["slurmd", "-G", "-N", "gpu1"], env=dev_cluster.cli_env(), capture_output=True,
        text=True, check=False,
    )  # fmt: skip
    text = gres.stdout + gres.stderr
    assert re.search(r"Cores?\D*0-3", text), text
    assert re.search(r"Cores?\D*4-7", text), text
    assert "Links:-1,1,0,0" in text.replace(" ", "") or "Links=-1,1,0,0" in text, text


def test_slurmrestd_answers_with_jwt_and_refuses_without(dev_cluster: DevCluster) -> None:
    auth = {"X-SLURM-USER-NAME": "root", "X-SLURM-USER-TOKEN": dev_cluster.jwt}
    # Each release serves its own data_parser versions (22.05: v0.0.38; 24.11: v0.0.40-42).
    openapi = httpx.get(f"{dev_cluster.rest_url}/openapi/v3", headers=auth, timeout=10)
    dialect = choose(served_versions(openapi.json())[0])
    assert dialect is not None, "slurmrestd serves no version hpcorch speaks"
    url = f"{dev_cluster.rest_url}{dialect.base}/nodes"
    refused = httpx.get(url, timeout=10)
    assert refused.status_code == 401
    ok = httpx.get(url, headers=auth, timeout=10)
    assert ok.status_code == 200
    names = {n["name"] for n in ok.json()["nodes"]}
    assert names == {"cpu1", "cpu2", "gpu1", "gpu2"}


def test_sacct_reports_state_and_exit_code(dev_cluster: DevCluster, tmp_path: Path) -> None:
    job = dev_cluster.run(
        "sbatch", "--parsable", "-o", "/dev/null", f"--chdir={tmp_path}", "--wrap", "exit 3"
    ).stdout.strip()

    def finished() -> str:
        # -D and the WorkDir: slurmdbd may hold older jobs of this number (a dev cluster
        # started afresh numbers from 1 again), and shows one until it has ours.
        out = dev_cluster.run(
            "sacct", "-n", "-P", "-X", "-D", "-j", job, "-o", "State,ExitCode,WorkDir",
            check=False,
        ).stdout  # fmt: skip
        ours = [r.rsplit("|", 1)[0] for r in out.splitlines() if r.endswith(f"|{tmp_path}")]
        return next((r for r in ours if not r.startswith(("PENDING", "RUNNING"))), "")

    assert wait_for(finished, 90, what=f"sacct record of job {job}") == "FAILED|3:0"


def test_fail_node_makes_node_failure_and_heal_returns_idle(dev_cluster: DevCluster) -> None:
    job = dev_cluster.run(
        "sbatch", "--parsable", "-w", "cpu2", "-o", "/dev/null", "--wrap", "sleep 600"
    ).stdout.strip()
    wait_for(lambda: job_field(dev_cluster, job, "JobState") == "RUNNING", 60, what="job start")
    try:
        t0 = time.monotonic()
        dev_cluster.script_cmd("fail-node", "cpu2")
        # The job's processes are gone within moments, as on a real node failure (in a
        # newer release's root a killed process can still be listed just after the kill).
        wait_for(
            lambda: not [pid for pid, cmd in _cmdlines().items() if "sleep 600" in cmd],
            5,
            what="the failed node's job processes to be gone",
            interval=0.1,
        )

        def node_down() -> bool:
            state = dev_cluster.run("sinfo", "-h", "-n", "cpu2", "-o", "%t").stdout.strip()
            return state.startswith("down")

        wait_for(node_down, 20 + 45, what="cpu2 down")  # SlurmdTimeout=20 plus a margin
        elapsed = time.monotonic() - t0

        def requeued_or_failed() -> tuple[str, int] | None:
            restarts = int(job_field(dev_cluster, job, "Restarts") or 0)
            state = job_field(dev_cluster, job, "JobState")
            return (state, restarts) if restarts >= 1 or state == "NODE_FAIL" else None

        wait_for(requeued_or_failed, 30, what=f"job {job} requeued or NODE_FAIL")
        assert elapsed < 65
    finally:
        dev_cluster.run("scancel", job, check=False)
        dev_cluster.script_cmd("heal-node", "cpu2")

    # heal-node waits for a state that takes jobs (idle, or still completing the failed job)
    def cpu2_idle() -> bool:
        return dev_cluster.run("sinfo", "-h", "-n", "cpu2", "-o", "%t").stdout.strip() == "idle"

    wait_for(cpu2_idle, 60, what="cpu2 idle after heal-node")


def _cmdlines() -> dict[int, str]:
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, NotADirectoryError):
            continue
        out[int(pid)] = raw.decode(errors="replace").replace("\0", " ")
    return out


def _processes_with_marker(root: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if f"HPCORCH_DEV_CLUSTER_ROOT={root}".encode() in environ.split(b"\0"):
            found.append(int(pid))
    return found


def test_up_then_down_leaves_nothing_running(dev_cluster: DevCluster) -> None:
    """A second, independent cluster comes up beside `dev`, runs a job, and goes away whole."""

    other = ensure_dev_cluster("updown")
    try:
        assert other.slurm_conf != dev_cluster.slurm_conf
        assert other.rest_url != dev_cluster.rest_url
        job = other.run("sbatch", "--parsable", "-o", "/dev/null", "--wrap", "sleep 300").stdout
        wait_for(
            lambda: job_field(other, job.strip(), "JobState") == "RUNNING", 60, what="job start"
        )
        pids = json.loads((Path(other.slurm_conf).parent.parent / "run" / "pids.json").read_text())
        assert {"slurmctld", "slurmdbd", "mariadbd", "slurmrestd"} <= set(pids)
    finally:
        other.script_cmd("down")
    root = str(Path(other.slurm_conf).parent.parent)
    for key, entry in pids.items():
        if key == "munged":  # shared by every dev cluster on the machine; `dev` still uses it
            continue
        assert _start(entry["pid"]) != entry["start"], f"{key} still runs"
    assert _processes_with_marker(root) == []
    # `dev` is untouched.
    assert dev_cluster.script_cmd("status", check=False).returncode == 0


def _start(pid: int) -> str | None:
    """Start time of a live process; None when gone or a zombie (this sandbox's init
    reaps orphans late)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]
