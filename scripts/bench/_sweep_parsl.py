"""Parsl side of scripts/bench/sweep: N trivial function tasks on HighThroughputExecutor.

Runs inside the benchmark-only virtualenv (.venv-bench-parsl), never in hpcorch's, on
this machine (LocalProvider, one block, a worker per core: the pool hpcorch's site
``local`` has). Arguments: tasks, cores, run directory. Last stdout line:
{"seconds", "tasks", "driver_peak_rss_gib"}, timed from the first submission.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

import parsl
from parsl.app.app import python_app
from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.providers import LocalProvider


@python_app
def noop(i: int) -> int:
    return i


def main() -> None:
    tasks, cores, run_dir = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    venv_bin = Path(sys.executable).parent
    os.environ["PATH"] = f"{venv_bin}:{os.environ['PATH']}"  # interchange, worker pool
    config = Config(
        executors=[
            HighThroughputExecutor(
                label="htex",
                address="127.0.0.1",
                cores_per_worker=1,
                max_workers_per_node=cores,
                provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1),
            )
        ],
        run_dir=str(run_dir),
        strategy="none",
    )
    parsl.load(config)
    noop(-1).result()  # the pool is up: time the tasks, not the start
    start = time.perf_counter()
    futures = [noop(i) for i in range(tasks)]
    for f in futures:
        f.result()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    parsl.dfk().cleanup()
    print(json.dumps({"seconds": seconds, "tasks": tasks, "driver_peak_rss_gib": peak}))


if __name__ == "__main__":
    main()
