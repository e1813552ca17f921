"""hpcorch doctor on the real dev cluster: all checks pass; a wrong site file exits 2;
an unreachable Slurm exits 3; the JWT never shows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, DevCluster

pytestmark = pytest.mark.slurm

HPCORCH = Path(sys.executable).parent / "hpcorch"


def doctor(cluster: DevCluster, site: str, *, jwt: bool = True) -> tuple[int, dict[str, Any], str]:
    env = cluster.cli_env()
    env["SLURMRESTD_URL"] = cluster.rest_url
    if jwt:
        env["SLURM_JWT"] = cluster.jwt  # for slurmrestd; doctor keeps it away from srun
    proc = subprocess.run(
        [str(HPCORCH), "doctor", "--site", site, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert cluster.jwt not in proc.stdout + proc.stderr
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def statuses(data: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["status"] for c in data["checks"]}


def site_file(tmp_path: Path, **changes: Any) -> str:
    site = yaml.safe_load((REPO / "site-configs" / "dev.yaml").read_text())
    site.update(changes)
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(site))
    return str(path)


def test_dev_site_is_ready(dev_cluster: DevCluster) -> None:
    code, data, _ = doctor(dev_cluster, "dev")
    assert statuses(data) == {
        "slurm rest": "ok",
        "slurm cli": "ok",
        "partition cpu": "ok",
        "partition gpu": "ok",
        "account": "ok",
        "dask ports": "ok",
        "mpi launcher": "ok",
        "python on compute": "ok",
    }, data
    assert code == data["exit_code"] == 0
    checks = {c["name"]: c for c in data["checks"]}
    assert "22.05" in checks["slurm rest"]["detail"]
    assert "--mpi=pmix" in checks["mpi launcher"]["detail"]


def test_site_file_that_disagrees_with_the_cluster_exits_2(
    dev_cluster: DevCluster, tmp_path: Path
) -> None:
    dev = yaml.safe_load((REPO / "site-configs" / "dev.yaml").read_text())
    bigmem = {**dev["partitions"][0], "name": "bigmem", "default": False}
    bigmem.pop("node_names", None)
    path = site_file(tmp_path, account="no-such-account", partitions=[*dev["partitions"], bigmem])
    code, data, _ = doctor(dev_cluster, path)
    got = statuses(data)
    assert got["partition bigmem"] == "fail"
    assert got["account"] == "fail"
    assert got["slurm cli"] == "ok"
    assert code == 2
    fixes = {c["name"]: c["fix"] for c in data["checks"]}
    assert "sites detect" in fixes["partition bigmem"]


def test_unreachable_slurm_exits_3(dev_cluster: DevCluster, tmp_path: Path) -> None:
    slurm = yaml.safe_load((REPO / "site-configs" / "dev.yaml").read_text())["slurm"]
    slurm["rest"]["url"] = "http://127.0.0.1:9"  # discard port: nothing listens
    slurm["conf"] = str(tmp_path / "missing" / "slurm.conf")
    code, data, _ = doctor(dev_cluster, site_file(tmp_path, slurm=slurm), jwt=True)
    got = statuses(data)
    assert got == {"slurm rest": "fail", "slurm cli": "fail"}, data
    assert code == 3
    assert all(c["fix"] for c in data["checks"])
