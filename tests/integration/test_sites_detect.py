"""`hpcorch sites detect` on the live dev cluster reproduces site-configs/dev.yaml."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hpcorch.sites import load_site, parse_site
from hpcorch.sites.detect import detect_site
from hpcorch.slurm.connect import connect, slurm_conf_path

pytestmark = pytest.mark.slurm


def test_detect_reproduces_dev_yaml_up_to_names(dev_cluster: object) -> None:
    detected = detect_site(name="whatever", env=dev_cluster.cli_env())  # type: ignore[attr-defined]
    dev = load_site("dev")
    assert detected.name == "whatever"
    assert detected.slurm is not None and detected.slurm.cluster == "dev"
    assert detected.partitions == dev.partitions
    assert detected.limits == dev.limits
    assert detected.mpi == dev.mpi


def test_detect_command_prints_a_loadable_site(dev_cluster: object) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from hpcorch.cli.main import main; main()", "sites", "detect"],
        capture_output=True,
        text=True,
        env=dev_cluster.cli_env(),  # type: ignore[attr-defined]
        check=False,
    )
    assert done.returncode == 0, done.stderr
    site = parse_site(done.stdout)
    assert site.name == "dev" and site.partitions == load_site("dev").partitions


def test_dev_site_connects_to_the_dev_cluster(dev_cluster: object) -> None:
    env = {**dev_cluster.cli_env(), "SLURM_JWT": dev_cluster.jwt}  # type: ignore[attr-defined]
    site = load_site("dev")
    assert slurm_conf_path(site, env) == dev_cluster.slurm_conf  # type: ignore[attr-defined]
    client = connect(site, env)
    try:
        assert client.name == "rest"
        assert client.version.startswith("22.05")
        assert {p.name for p in client.partitions()} == {"cpu", "gpu"}
    finally:
        client.close()
