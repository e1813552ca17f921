"""Run a job stream on a real dev cluster and compare its starts with the simulator's.

Shared by tests/integration/test_sim_fidelity.py and scripts/bench/sim-fidelity.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from hpcorch.sim.fidelity import (
    agreement,
    ctld_log_times,
    ctld_timing,
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
    """The simulated cluster's settings: the real one's slurm.conf scheduler, node shape
    (multifactor's job size counts the whole cluster's nodes and CPUs, every partition's)."""
    conf = parse_slurm_conf(Path(cluster.slurm_conf).read_text(), cluster.slurm_conf)
    if conf.priority is not None:
        out = cluster.run("sinfo", "-h", "-N", "-o", "%N %c").stdout.split("\n")
        cpus = {line.split()[0]: int(line.split()[1]) for line in out if line.strip()}
        priority = replace(conf.priority, cluster_nodes=len(cpus), cluster_cpus=sum(cpus.values()))
        conf = replace(conf, priority=priority)
    return conf.cluster_kwargs() | {"cores_per_node": cores_per_node}


def ctld_started(text: str) -> float:
    """When slurmctld last started, by its log ``text`` (epoch seconds)."""
    stamps = re.findall(r"^\[([0-9T:.-]+)\] slurmctld version \S+ started", text, re.MULTILINE)
    if not stamps:
        raise RuntimeError("slurmctld's log shows no start")
    return datetime.fromisoformat(stamps[-1]).timestamp()


def ctld_log(cluster: DevCluster) -> Path:
    """slurmctld's log file, as the cluster's slurm.conf names it."""
    for line in Path(cluster.slurm_conf).read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip().lower() == "slurmctldlogfile":
            return Path(value.strip())
    raise RuntimeError(f"{cluster.slurm_conf} names no SlurmctldLogFile")


# The fidelity run's scheduler: a backfill cycle every second and a 5 s reservation
# grid make the real schedule far less discretised than the dev cluster's everyday
# bf_interval=5 and the default bf_resolution=60 (against 1-3 minute limits, half a second
# there moved whole-node reservations by a minute: the simulator against itself with its
# inputs moved by 0.3 s gave start_error_mean 0.15 on average, up to 0.50; with these,
# 0.06, up to 0.13).
FIDELITY_SCHEDULER = {"bf_interval": "1", "bf_resolution": "5"}


def with_scheduler_parameters(conf: str, values: dict[str, str]) -> str:
    """slurm.conf text with these SchedulerParameters set (others kept)."""
    lines = conf.splitlines()
    for n, line in enumerate(lines):
        key, sep, value = line.partition("=")
        if sep and key.strip().lower() == "schedulerparameters":
            items = [i for i in value.strip().split(",") if i and i.split("=")[0] not in values]
            lines[n] = "SchedulerParameters=" + ",".join(
                items + [f"{k}={v}" for k, v in values.items()]
            )
            break
    else:
        lines.append("SchedulerParameters=" + ",".join(f"{k}={v}" for k, v in values.items()))
    return "\n".join(lines) + "\n"


def quiet_partition(cluster: DevCluster, partition: str, timeout: float = 120) -> None:
    """Return once ``partition`` holds no job of anyone and each of its nodes is idle.

    A job left by an earlier run (an allocation still completing, a node drained by a
    fault test) takes cores the simulator is told are free, and every start after it
    would be compared against a different cluster."""

    def busy() -> str:
        jobs = cluster.run("squeue", "-h", "-p", partition, "-o", "%i %T").stdout.split("\n")
        states = cluster.run("sinfo", "-h", "-N", "-p", partition, "-o", "%N %T").stdout
        nodes = [line for line in states.split("\n") if line.strip()]
        not_idle = [line for line in nodes if line.split()[1] != "idle"]
        return "; ".join([line for line in jobs if line.strip()] + not_idle)

    wait_for(lambda: not busy(), timeout=timeout, what=f"partition {partition!r} to be idle")


def foreign_jobs(text: str, ids: list[str], partition: str) -> list[str]:
    """Jobs that slurmctld's log ``text`` shows starting in ``partition`` that are not
    the stream's."""
    started = re.findall(
        r"sched: Allocate JobId=(\d+) .*Partition=(\S+)|_start_job: Started JobId=(\d+) in (\S+)",
        text,
    )
    mine = set(ids)
    found = {a or c for a, pa, c, pc in started if (pa or pc) == partition}
    return sorted(found - mine, key=int)


def backfill_cycles(cluster: DevCluster) -> int:
    """sdiag's count of backfill cycles."""
    text = cluster.run("sdiag").stdout
    stats = text[text.index("Backfilling stats") :]
    return int(stats.split("Total cycles:", 1)[1].split()[0])


def settle_backfill(cluster: DevCluster, partition: str = "cpu") -> None:
    """Return once the backfill thread has run a cycle under the new configuration.

    After ``scontrol reconfigure`` the thread first sleeps out its old interval, and it
    only counts cycles that find a pending job: a one-core job holds a core while a job
    wanting the whole partition waits, until a cycle has seen it; then both go."""
    before = backfill_cycles(cluster)
    total, _ = partition_cores(cluster, partition)
    ids = [
        cluster.run(
            "sbatch", "--parsable", "-p", partition, "-n", str(n), "--time=2",
            "--mem-per-cpu=100", "-J", f"{JOB_NAME}-settle", "-o", "/dev/null",
            "--wrap", "exec sleep 100",
        ).stdout.strip().split(";")[0]
        for n in (1, total)
    ]  # fmt: skip
    try:
        wait_for(
            lambda: backfill_cycles(cluster) > before,
            timeout=60, what="a backfill cycle under the fidelity configuration",
        )  # fmt: skip
    finally:
        cluster.run("scancel", *ids, check=False)
    joined = ",".join(ids)
    wait_for(
        lambda: not cluster.run("squeue", "-h", "-j", joined, "-o", "%i").stdout.strip(),
        timeout=60, what="the settling jobs to leave",
    )  # fmt: skip


# priority/multifactor for a fidelity run (--multifactor): job size and age (PriorityMaxAge
# 2 minutes, recomputed every minute) both move the order within a short stream
MULTIFACTOR = {
    "PriorityType": "priority/multifactor",
    "PriorityWeightJobSize": "1000",
    "PriorityWeightAge": "1000",
    "PriorityMaxAge": "2",
    "PriorityCalcPeriod": "1",
}


def with_settings(conf: str, values: dict[str, str]) -> str:
    """slurm.conf text with these global settings replaced (or added before the nodes)."""
    lines = conf.splitlines()
    todo = dict(values)
    for n, line in enumerate(lines):
        key = line.partition("=")[0].strip()
        if key in todo:
            lines[n] = f"{key}={todo.pop(key)}"
    first_node = next((n for n, line in enumerate(lines) if line.startswith("NodeName=")), 0)
    lines[first_node:first_node] = [f"{k}={v}" for k, v in todo.items()]
    return "\n".join(lines) + "\n"


def restart_ctld(cluster: DevCluster) -> None:
    """Restart slurmctld with its state (a PriorityType change needs it) and wait for it."""
    subprocess.run(
        [str(cluster.script), "restart-ctld", "--name", cluster.name],
        env=cluster.cli_env(), check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    wait_for(
        lambda: cluster.run("scontrol", "ping", check=False).returncode == 0,
        timeout=60, what="slurmctld to answer after its restart",
    )  # fmt: skip


def _replace_text(path: Path, text: str) -> None:
    """Write ``path`` whole at once: slurmds still re-reading it after the last
    ``scontrol reconfigure`` must never find it empty (one died of that, fatally)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@contextlib.contextmanager
def scheduler_parameters(
    cluster: DevCluster, values: dict[str, str], settings: dict[str, str] | None = None
) -> Iterator[None]:
    """The cluster's slurmctld runs with these SchedulerParameters (``scontrol
    reconfigure``) and global ``settings`` (a restart) until the block ends; then its
    own slurm.conf is back."""
    conf = Path(cluster.slurm_conf)
    original = conf.read_text()
    changed = with_scheduler_parameters(original, values) if values else original
    _replace_text(conf, with_settings(changed, settings) if settings else changed)
    try:
        if settings:
            restart_ctld(cluster)
        else:
            cluster.run("scontrol", "reconfigure")
        settle_backfill(cluster)
        yield
    finally:
        _replace_text(conf, original)
        if settings:
            restart_ctld(cluster)
        else:
            cluster.run("scontrol", "reconfigure", check=False)


def run_stream(
    jobs: int,
    *,
    seed: int = 1,
    run_scale: float = 1.0,
    partition: str = "cpu",
    cluster: DevCluster | None = None,
    log: Callable[[str], None] = lambda _: None,
    record: Path | None = None,
    scheduler: dict[str, str] | None = None,
    multifactor: bool = False,
) -> dict[str, Any]:
    """Run the stream on the cluster with ``scheduler`` SchedulerParameters (default
    :data:`FIDELITY_SCHEDULER`; ``{}``: the cluster's own), under :data:`MULTIFACTOR`
    priority when asked, and compare."""
    cluster = cluster or ensure_dev_cluster()
    values = FIDELITY_SCHEDULER if scheduler is None else scheduler
    settings = MULTIFACTOR if multifactor else None
    if not values and not settings:
        return _run_stream(jobs, seed, run_scale, partition, cluster, log, record)
    with scheduler_parameters(cluster, values, settings):
        return _run_stream(jobs, seed, run_scale, partition, cluster, log, record)


def _run_stream(
    jobs: int,
    seed: int,
    run_scale: float,
    partition: str,
    cluster: DevCluster,
    log: Callable[[str], None],
    record: Path | None,
) -> dict[str, Any]:
    quiet_partition(cluster, partition)
    capacity, per_node = partition_cores(cluster, partition)
    plan = stream(jobs, capacity, seed=seed, run_scale=run_scale)
    log(f"sim-fidelity: {jobs} jobs on {capacity} cores of {partition!r}, "
        f"~{plan[-1].offset_s:.0f} s of arrivals")  # fmt: skip
    log_file = ctld_log(cluster)
    log_from = log_file.stat().st_size  # this stream's lines are those written from here
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
        quiet_partition(cluster, partition, timeout=30)  # no node went down under it
    finally:
        if ids:  # nothing of the stream outlives it (a failed wait, an interrupt)
            cluster.run("scancel", *ids, check=False)

    def logged() -> str | None:
        with log_file.open("rb") as f:
            f.seek(log_from)
            text = f.read().decode(errors="replace")
        times = ctld_log_times(text)
        return text if all(i in times for i in ids) else None

    # slurmctld's log, not sacct: its stamps are milliseconds, sacct's whole seconds
    text = wait_for(logged, timeout=60, what="slurmctld's log to show every job's end")
    by_id = ctld_log_times(text)
    others = foreign_jobs(text, ids, partition)
    if others:  # the real schedule was not this stream's alone: nothing to compare
        raise RuntimeError(f"jobs {others}, not the stream's, started during it")
    submit = [by_id[i][0] for i in ids]
    start = [by_id[i][1] for i in ids]
    end = [by_id[i][2] for i in ids]
    base = min(submit)
    submit = [s - base for s in submit]
    start = [s - base for s in start]
    end = [e - base for e in end]
    settings = cluster_settings(cluster, per_node)
    # the ctld's clock: bf_resolution rounds wall-clock time; its threads' phases and
    # what it adds after a job's end before its cores take the next, as this run saw them
    settings["clock_origin_s"] = base
    settings.update(ctld_timing(text, base))
    if settings["priority"] is not None:  # its decay thread runs every period from its start
        started = ctld_started(log_file.read_text(errors="replace")) - base
        settings["priority"] = replace(settings["priority"], calc_phase_s=started)
    cores = [j.cores for j in plan]
    limit_s = [j.limit_min * 60.0 for j in plan]
    if record is not None:  # the real schedule, to replay offline
        record.write_text(json.dumps({
            "capacity": capacity, "submit": submit, "start": start, "end": end,
            "cores": cores, "limit_s": limit_s,
            "settings": {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v
                         for k, v in settings.items()},
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
