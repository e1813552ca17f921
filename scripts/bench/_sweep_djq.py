"""Raw Dask side of ``scripts/bench/sweep --site dev``: ``client.map`` on dask-jobqueue pools.

A SLURMCluster of one job per node of the dev cluster's ``cpu`` partition (as
scripts/bench/_peers_djq.py makes it), N no-op tasks with ``client.map``, one Dask task
each. Arguments: tasks, nodes, cores per node, partition, run directory, launch time
(epoch seconds). Last stdout line: {"seconds", "tasks", "driver_peak_rss_gib"}, timed
from the launch (imports and the pool's start included, as for the other sides).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from dask_jobqueue import SLURMCluster
from distributed import Client, wait


def noop(i: int) -> int:
    return i


def main() -> None:
    tasks, nodes, cores = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    partition, run_dir, launched = sys.argv[4], Path(sys.argv[5]), float(sys.argv[6])
    with SLURMCluster(
        queue=partition, cores=cores, processes=1, memory="7000MiB", walltime="01:00:00",
        interface="lo", python=sys.executable, log_directory=str(run_dir / "logs"),
        job_script_prologue=["unset SLURM_JWT"], scheduler_options={"dashboard_address": None},
    ) as cluster, Client(cluster) as client:  # fmt: skip
        cluster.scale(jobs=nodes)
        futures = client.map(noop, range(tasks))
        wait(futures)
        seconds = time.time() - launched
        del futures
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"seconds": seconds, "tasks": tasks, "driver_peak_rss_gib": peak}))


if __name__ == "__main__":
    main()
