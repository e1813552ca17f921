"""Parsl side of scripts/bench/sweep: N trivial function tasks on HighThroughputExecutor.

Runs inside the benchmark-only virtualenv (.venv-bench-parsl), never in hpcorch's, on
this machine (LocalProvider, one block, a worker per core: the pool hpcorch's site
``local`` has). Arguments: tasks, cores, run directory. Last stdout line:
{"seconds", "tasks", "driver_peak_rss_gib"}, timed from the first submission.

With ``slurm PARTITION NODES LAUNCHED`` after them: on the dev cluster, a block per node
through SlurmProvider (as scripts/bench/_peers_parsl.py), timed from ``LAUNCHED``
(epoch seconds: imports and the blocks' start included, as for the other sides).
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
from parsl.launchers import SrunLauncher
from parsl.providers import LocalProvider, SlurmProvider


@python_app
def noop(i: int) -> int:
    return i


def _provider(cores: int) -> tuple[object, float | None]:
    """The block provider, and the launch time to time from (None: the first submission)."""
    if len(sys.argv) <= 4:
        return LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1), None
    partition, nodes, launched = sys.argv[5], int(sys.argv[6]), float(sys.argv[7])
    venv_bin = Path(sys.executable).parent
    provider = SlurmProvider(
        partition=partition,
        nodes_per_block=1,
        init_blocks=nodes,
        min_blocks=0,
        max_blocks=nodes,
        cores_per_node=cores,
        walltime="01:00:00",
        exclusive=False,
        launcher=SrunLauncher(),
        # slurmd of Slurm 22.05 rejects JWT-authenticated srun: keep munge.
        worker_init=f"unset SLURM_JWT; export PATH={venv_bin}:$PATH",
    )
    os.environ.pop("SLURM_JWT", None)
    return provider, launched


def main() -> None:
    tasks, cores, run_dir = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    venv_bin = Path(sys.executable).parent
    os.environ["PATH"] = f"{venv_bin}:{os.environ['PATH']}"  # interchange, worker pool
    provider, launched = _provider(cores)
    config = Config(
        executors=[
            HighThroughputExecutor(
                label="htex",
                address="127.0.0.1",
                cores_per_worker=1,
                max_workers_per_node=cores,
                provider=provider,
            )
        ],
        run_dir=str(run_dir),
        strategy="none" if launched is None else "simple",
    )
    parsl.load(config)
    if launched is None:
        noop(-1).result()  # the pool is up: time the tasks, not the start
    start = time.perf_counter()
    futures = [noop(i) for i in range(tasks)]
    for f in futures:
        f.result()
    seconds = time.perf_counter() - start if launched is None else time.time() - launched
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    parsl.dfk().cleanup()
    print(json.dumps({"seconds": seconds, "tasks": tasks, "driver_peak_rss_gib": peak}))


if __name__ == "__main__":
    main()
