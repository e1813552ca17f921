"""The simulator against a real slurmctld: the same job stream, start times job by job.

A short stream (varied core counts, 1-3 minute limits, runtimes of seconds, some
killed at their limit) runs on the dev cluster's ``cpu`` partition, its slurmctld
reconfigured for the run to bf_interval=1,bf_resolution=5 (a less discretised
schedule than the everyday bf_interval=5 and default bf_resolution=60); start and end
times come from slurmctld's log (milliseconds). The simulator replays it with the
cluster's scheduler settings, node shape and the ctld's timing as the log shows it.
The issue's thresholds: mean |sim - real| start within 10 % of the mean wait, start
order agreeing for at least 90 % of job pairs. The long run is
``scripts/bench/sim-fidelity``.

The comparison branches: on this stream one backfill decision taken a second apart (an
8-core job spread over both nodes, or kept on one) moves a dozen jobs by 15-30 s. Six
runs on one idle machine (2026-12-04) read a mean error of 0.067-0.209, and 0.551 once
(pair order 0.912), as one CI run did (0.56); the simulator against itself with its inputs
moved by 0.5 s gives 0.12-0.15. So the simulator's fidelity is pinned on recorded real
runs (tests/unit/test_sim_fidelity.py, deterministic), and this live run holds what
separates a working model and harness from a broken one: error under 0.75 (FIFO read 0.92
on the branching run, a parse slip reads inf) and pair order over 0.80. The runner
refuses a stream that ran beside other jobs or on a partition that was not idle.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import DevCluster
from tests.integration.fidelity_runner import run_stream

pytestmark = pytest.mark.slurm


def test_simulated_starts_agree_with_slurmctld(dev_cluster: DevCluster, tmp_path: Path) -> None:
    # the real schedule stays beside the test's output, to replay offline when it fails
    record = tmp_path / "fidelity-record.json"
    result = run_stream(40, seed=2, run_scale=0.5, cluster=dev_cluster, record=record)
    assert result["jobs"] == 40
    assert result["mean_real_wait_s"] > 5.0, f"no queue formed, nothing compared: {result}"
    assert result["start_error_mean"] <= 0.75, result  # goal 0.10: see the docstring
    assert result["pair_order_agreement"] >= 0.80, result
