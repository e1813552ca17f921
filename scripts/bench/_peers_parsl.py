"""Parsl side of scripts/bench/peers: run an emulated DAG with HighThroughputExecutor on Slurm.

Runs inside the benchmark-only virtualenv (.venv-bench-parsl), never in hpcorch's.
Input: a JSON file {"tasks": [{"id", "parents", "seconds", "cores"}], "nodes", "partition",
"cores_per_node"}, a run directory and the launch time (epoch seconds). Output (last
stdout line): {"makespan_s", "first_result_s", "tasks"}, timed from the launch.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import parsl
from parsl.app.app import python_app
from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.launchers import SrunLauncher
from parsl.providers import SlurmProvider


@python_app
def emulate(seconds: float, *parents: object) -> float:

    time.sleep(seconds)
    return seconds


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    run_dir = Path(sys.argv[2])
    launched = float(sys.argv[3])
    venv_bin = Path(sys.executable).parent
    config = Config(
        executors=[
            HighThroughputExecutor(
                label="htex",
                address="127.0.0.1",
                cores_per_worker=1,
                max_workers_per_node=spec["cores_per_node"],
                provider=SlurmProvider(
                    partition=spec["partition"],
                    nodes_per_block=1,
                    init_blocks=spec["nodes"],
                    min_blocks=0,
                    max_blocks=spec["nodes"],
                    cores_per_node=spec["cores_per_node"],
                    walltime="00:30:00",
                    exclusive=False,
                    launcher=SrunLauncher(),
                    # slurmd of Slurm 22.05 rejects JWT-authenticated srun: keep munge.
                    worker_init=f"unset SLURM_JWT; export PATH={venv_bin}:$PATH",
                ),
            )
        ],
        run_dir=str(run_dir),
        strategy="simple",
        max_idletime=5,
    )
    os.environ.pop("SLURM_JWT", None)
    # Parsl starts interchange.py and process_worker_pool.py from PATH.
    os.environ["PATH"] = f"{venv_bin}:{os.environ['PATH']}"
    parsl.load(config)
    futures: dict[str, object] = {}
    for task in spec["tasks"]:  # topological order
        futures[task["id"]] = emulate(task["seconds"], *(futures[p] for p in task["parents"]))
    first = None
    pending = list(futures.values())
    while pending:
        done = [f for f in pending if f.done()]  # type: ignore[attr-defined]
        for f in done:
            f.result()  # type: ignore[attr-defined]
            if first is None:
                first = time.time() - launched
        pending = [f for f in pending if f not in done]
        time.sleep(0.05)
    makespan = time.time() - launched
    parsl.dfk().cleanup()
    print(json.dumps({"makespan_s": makespan, "first_result_s": first, "tasks": len(futures)}))


if __name__ == "__main__":
    main()
