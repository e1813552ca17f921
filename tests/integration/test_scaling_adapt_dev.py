"""``adapt()`` on a dask-jobqueue cluster, with hpcorch's scaler underneath, on dev."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest
from distributed import Client

from hpcorch.provision.adaptive import HpcorchSLURMCluster

pytestmark = pytest.mark.slurm


def double(x: int) -> int:
    time.sleep(1)
    return 2 * x


def test_adapt_scales_a_jobqueue_cluster_up_and_back_to_zero(
    dev_cluster: Any, tmp_path: Path
) -> None:

    with (
        HpcorchSLURMCluster(
            queue="cpu",
            cores=8,
            processes=1,
            memory="7800MiB",
            job_mem="7800M",
            walltime="01:00:00",
            python=sys.executable,
            log_directory=str(tmp_path / "logs"),
            job_script_prologue=["unset SLURM_JWT"],
            scheduler_options={"dashboard_address": "127.0.0.1:0"},
        ) as cluster,
        Client(cluster) as client,
    ):
        scaler = cluster.adapt(minimum=0, maximum=1, interval=1, idle_timeout=3, cooldown=3)
        assert not scaler.lives  # nothing before there is work
        assert client.gather(client.map(double, range(16))) == [2 * x for x in range(16)]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and any(
            life.end is None for life in scaler.lives.values()
        ):
            time.sleep(1)
        lives = list(scaler.lives.values())

    assert scaler.submitted == 1 and len(lives) == 1
    (life,) = lives
    assert life.end is not None and life.start is not None
    assert life.walltime_s <= 3600  # the policy's choice, within the cluster's walltime
