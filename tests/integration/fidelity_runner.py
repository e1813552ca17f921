"""Run a job stream on a real dev cluster and compare its starts with the simulator's.

Shared by tests/integration/test_sim_fidelity.py and scripts/bench/sim-fidelity.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hpcorch.sim.fidelity import (
    agreement,
    completion_latency,
    noise_floor,
    simulate_starts,
    stream,
)
from hpcorch.sim.schedconf import parse_slurm_conf
from tests.conftest import DevCluster, ensure_dev_cluster
from tests.waiting import wait_for

JOB_NAME = "hpcorch-fidelity"


def partition_cores(cluster: DevCluster, partition: str) -> tuple[int, int]:
    """Total cores of ``partition`` and cores per node (its nodes are alike)."""
    out = cluster.run("sinfo", "-h", "-p", partition, "-o", "%C %c").stdout.split()
    return int(out[0].split("/")[3]), int(out[1])  # allocated/idle/other/total, CPUs per node


def cluster_settings(cluster: DevCluster, cores_per_node: int) -> dict[str, Any]:
    """The simulated cluster's settings: the real one's slurm.conf scheduler, node shape."""
    conf = parse_slurm_conf(Path(cluster.slurm_conf).read_text(), cluster.slurm_conf)
    return conf.cluster_kwargs() | {"cores_per_node": cores_per_node}


def run_stream(
    jobs: int,
    *,
    seed: int = 1,
    run_scale: float = 1.0,
    partition: str = "cpu",
    cluster: DevCluster | None = None,
    log: Callable[[str], None] = lambda _: None,
    record: Path | None = None,
) -> dict[str, Any]:
    cluster = cluster or ensure_dev_cluster()
    capacity, per_node = partition_cores(cluster, partition)
    plan = stream(jobs, capacity, seed=seed, run_scale=run_scale)
    log(f"sim-fidelity: {jobs} jobs on {capacity} cores of {partition!r}, "
        f"~{plan[-1].offset_s:.0f} s of arrivals")  # fmt: skip
    ids: list[str] = []
    t0 = time.monotonic()
    try:
        for job in plan:
            delay = t0 + job.offset_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            out = cluster.run(
                "sbatch", "--parsable", "-p", partition, "-n", str(job.cores),
                f"--time={job.limit_min}", "--mem-per-cpu=100", "-J", JOB_NAME,
                "-o", "/dev/null", "--wrap", f"exec sleep {job.run_s}",
            )  # fmt: skip
            ids.append(out.stdout.strip().split(";")[0])
        joined = ",".join(ids)

        def queue_empty() -> bool:
            return not cluster.run("squeue", "-h", "-j", joined, "-o", "%i").stdout.strip()

        wait_for(queue_empty, timeout=60 + 4 * plan[-1].offset_s, what="the stream to finish")
    finally:
        if ids:  # nothing of the stream outlives it (a failed wait, an interrupt)
            cluster.run("scancel", *ids, check=False)
    env = cluster.cli_env() | {"SLURM_TIME_FORMAT": "%s"}

    def accounted() -> list[list[str]] | None:
        text = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-j", ",".join(ids), "-o", "JobIDRaw,Submit,Start,End"],
            env=env, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        rows = [line.split("|") for line in text.splitlines() if line.strip()]
        done = len(rows) == len(ids) and all(r[3].isdigit() and r[2].isdigit() for r in rows)
        return rows if done else None

    rows = wait_for(accounted, timeout=60, what="sacct to hold every job's start and end")
    by_id = {r[0]: r for r in rows}
    submit = [float(by_id[i][1]) for i in ids]
    start = [float(by_id[i][2]) for i in ids]
    end = [float(by_id[i][3]) for i in ids]
    base = min(submit)
    submit = [s - base for s in submit]
    start = [s - base for s in start]
    end = [e - base for e in end]
    settings = cluster_settings(cluster, per_node)
    # what Slurm adds after a job's end before its cores take the next job, as this run saw it
    settings["completing_s"] = completion_latency(submit, start, end)
    cores = [j.cores for j in plan]
    limit_s = [j.limit_min * 60.0 for j in plan]
    if record is not None:  # the real schedule, to replay offline
        record.write_text(json.dumps({
            "capacity": capacity, "submit": submit, "start": start, "end": end,
            "cores": cores, "limit_s": limit_s, "settings": settings,
        }))  # fmt: skip
    run_s = [e - s for s, e in zip(start, end, strict=True)]
    sim = simulate_starts(submit, cores, limit_s, run_s, capacity, **settings)
    result: dict[str, Any] = agreement(submit, start, sim).as_dict()
    result["capacity_cores"] = capacity
    result["cores_per_node"] = per_node
    result["completing_s"] = round(settings["completing_s"], 3)
    result["start_error_noise_floor"] = noise_floor(
        submit, cores, limit_s, run_s, capacity, **settings
    )
    result["makespan_real_s"] = max(end)
    log(f"sim-fidelity: {result}")
    return result
