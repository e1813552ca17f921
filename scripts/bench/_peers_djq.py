"""dask-jobqueue side of scripts/bench/peers: run an emulated DAG on a raw SLURMCluster.

Runs as its own process (like the other engines) so that every engine is timed
from the launch of a user's program, imports included. Input: the JSON file of
_peers_parsl.py, a run directory and the launch time (epoch seconds). Output
(last stdout line): {"makespan_s", "first_result_s", "tasks"}, from the launch.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from dask_jobqueue import SLURMCluster
from distributed import Client, as_completed


def _sleep(seconds: float, *parents: object) -> float:
    time.sleep(seconds)
    return seconds


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    run_dir = Path(sys.argv[2])
    launched = float(sys.argv[3])
    with SLURMCluster(
        queue=spec["partition"], cores=spec["cores_per_node"], processes=1,
        memory="7000MiB", walltime="00:30:00", interface="lo", python=sys.executable,
        log_directory=str(run_dir / "logs"), job_script_prologue=["unset SLURM_JWT"],
        scheduler_options={"dashboard_address": None},
    ) as cluster, Client(cluster) as client:  # fmt: skip
        cluster.scale(jobs=spec["nodes"])
        futures: dict[str, Any] = {}
        for task in spec["tasks"]:  # topological order
            futures[task["id"]] = client.submit(
                _sleep, task["seconds"], *(futures[p] for p in task["parents"]),
                key=f"t-{task['id']}", pure=False,
            )  # fmt: skip
        first = None
        for _ in as_completed(list(futures.values())):
            if first is None:
                first = time.time() - launched
        makespan = time.time() - launched
    print(json.dumps({"makespan_s": makespan, "first_result_s": first, "tasks": len(futures)}))


if __name__ == "__main__":
    main()
