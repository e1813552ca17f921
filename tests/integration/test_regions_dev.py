"""Two dev clusters in one run: work goes where it finishes sooner for the money, under a budget.

``dev`` is the shared dev cluster; ``dev2`` is a second one this module brings
up (and takes down again at the end of the session when it started it). The
sites are test-generated copies of ``site-configs/dev.yaml`` pointing at each
cluster's slurm.conf, with the charge rates each test needs.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import distributed  # noqa: F401  (its config defaults must exist before any dask.config.set)
import pytest
import yaml

from hpcorch.engine.session import start_run
from hpcorch.environment import run_options
from hpcorch.journal import status
from hpcorch.spec import parse_workflow
from tests.conftest import REPO, DevCluster, ensure_dev_cluster
from tests.integration.scaling_helpers import burst, events, fast_scaling
from tests.waiting import wait_for

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="session")
def dev2() -> Iterator[DevCluster]:
    """The second dev cluster; taken down at the end when this session started it."""
    conf = REPO / ".dev-cluster" / "dev2" / "etc" / "slurm.conf"
    env = {k: v for k, v in os.environ.items() if k != "SLURM_JWT"} | {"SLURM_CONF": str(conf)}
    # `status` also checks munged, which the clusters of one host share: ask slurmctld
    answered = (
        conf.is_file()
        and subprocess.run(
            ["scontrol", "ping"], env=env, capture_output=True, check=False, timeout=30
        ).returncode
        == 0
    )
    cluster = ensure_dev_cluster("dev2")
    yield cluster
    if not answered:
        cluster.script_cmd("down", check=False)


def site_file(tmp: Path, name: str, cluster: DevCluster, su_per_node_hour: float) -> Path:
    """A copy of dev.yaml for ``cluster``: its slurm.conf, the CLI backend, these rates."""
    doc = yaml.safe_load((REPO / "site-configs" / "dev.yaml").read_text())
    doc["name"] = name
    doc["slurm"] = {
        "backends": ["cli"],
        "cluster": cluster.name,
        "version": "22.05",
        "conf": cluster.slurm_conf,
    }
    doc["charge"] = {"su_per_node_hour": su_per_node_hour, "su_per_gpu_hour": 0}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def regions(
    dev_cluster: DevCluster, dev2: DevCluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> tuple[Path, Path]:
    """Site files: ``dev`` at 3 SU per node-hour, ``dev2`` at 1."""
    fast_scaling(monkeypatch, tmp_path)
    here = site_file(tmp_path, "dev", dev_cluster, 3.0)
    there = site_file(tmp_path, "dev2", dev2, 1.0)
    monkeypatch.setenv("HPCORCH_REGIONS", str(there))
    return here, there


def fill(cluster: DevCluster, partition: str = "cpu") -> list[str]:
    """Other users' work: a long job on every node of the partition."""
    ids = []
    for _ in range(2):
        done = cluster.run(
            "sbatch",
            "--parsable",
            f"--partition={partition}",
            "--exclusive",
            "--nodes=1",
            "--time=30",
            "--job-name=someone-else",
            "--output=/dev/null",
            "--wrap=sleep 1800",
        )
        ids.append(done.stdout.strip().split(";")[0])

    # Only running jobs make the partition busy to the queue probe (sinfo's idle count).
    def running() -> bool:
        states = cluster.run("squeue", "-h", "-j", ",".join(ids), "-o", "%T").stdout.split()
        return states.count("RUNNING") == len(ids)

    wait_for(running, 60, f"the filler jobs {ids} RUNNING")
    return ids


def release(cluster: DevCluster, ids: list[str], partition: str = "cpu") -> None:
    """Cancel the filler jobs and wait until their nodes are idle again: the next test's
    queue probe reads sinfo at once, and a node still completing a job looks busy."""
    cluster.run("scancel", *ids, check=False)

    def idle() -> bool:
        states = cluster.run("sinfo", "-h", "-N", "-p", partition, "-o", "%t").stdout.split()
        return bool(states) and all(state == "idle" for state in states)

    wait_for(idle, 60, f"the {partition} nodes idle after cancelling {ids}")


def run(spec: dict[str, Any], site: Path, run_dir: Path) -> dict[str, Any]:
    # the options the environment sets (the fixtures' regions, budget and fast scaling)
    wf, options = parse_workflow(spec), run_options()
    with start_run(wf, site=str(site), run_dir=run_dir, options=options) as handle:
        summary = handle.wait(timeout=900)
    # Closing the run releases its allocations and writes the final accounting.
    data = status(run_dir)
    data["ok"] = summary.ok
    return data


def test_work_goes_to_the_idle_cluster_though_it_costs_more(
    regions: tuple[Path, Path], dev2: DevCluster, tmp_path: Path
) -> None:
    here, _ = regions
    # dev2 is the cheaper cluster but its nodes are taken for half an hour
    busy = fill(dev2)
    try:
        data = run(burst(24, 2.0), here, tmp_path / "run")
    finally:
        release(dev2, busy)
    assert data["ok"]
    sites = {a["site"] for a in data["allocations"]}
    assert sites == {"dev"}, data["allocations"]
    choices = events(tmp_path / "run", "region")
    assert choices and all(c["site"] == "dev" for c in choices)
    assert "dev" in choices[0]["reason"] and "expected start" in choices[0]["reason"]
    per_site = data["accounting"]["per_site"]
    assert set(per_site) == {"dev"} and per_site["dev"]["su"] > 0


def test_work_goes_to_the_cheaper_cluster_when_both_can_start_it(
    regions: tuple[Path, Path], tmp_path: Path
) -> None:
    here, _ = regions
    data = run(burst(24, 2.0), here, tmp_path / "run")
    assert data["ok"]
    assert {a["site"] for a in data["allocations"]} == {"dev2"}, data["allocations"]
    # job ids are per cluster: each attempt names the site of its job (HPCORCH_SITE)
    jobs = {(a["site"], a["job_id"]) for a in data["allocations"]}
    attempts = {(a["site"], a["job_id"]) for t in data["tasks"] for a in t["attempts"]}
    assert attempts and attempts <= jobs, (attempts, jobs)
    assert data["accounting"]["per_site"]["dev2"]["su"] > 0


def test_a_budget_cap_is_never_exceeded(
    regions: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, there = regions
    monkeypatch.delenv("HPCORCH_REGIONS")
    # one 5-minute node on dev2 costs 1/12 SU: the cap pays for one at a time, not two
    cap = 0.12
    monkeypatch.setenv("HPCORCH_BUDGET", f"{cap} SU")
    data = run(burst(32, 2.0), there, tmp_path / "run")
    assert data["ok"]
    assert 0 < data["accounting"]["total"]["su"] <= cap
    held = [e for e in events(tmp_path / "run", "scale") if e["action"] == "hold"]
    assert any("budget" in e["note"] for e in held), held


def test_a_spent_budget_submits_nothing_and_says_so(
    regions: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, there = regions
    monkeypatch.delenv("HPCORCH_REGIONS")
    monkeypatch.setenv("HPCORCH_BUDGET", "0.05 SU")  # less than one allocation costs
    data = run(burst(4, 1.0), there, tmp_path / "run")
    assert not data["ok"]
    assert data["allocations"] == []
    assert data["counts"]["cancelled"] == 4
    (stranded,) = [e for e in events(tmp_path / "run") if e["action"] == "stranded"]
    assert "raise the run's budget" in stranded["reason"]
