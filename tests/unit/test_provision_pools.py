"""Pool planning for Slurm sites (pure) and the local resource rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcorch.errors import ResourceError
from hpcorch.placement.fit import check_fits, partition_for
from hpcorch.provision.pools import needs_resources, task_resources
from hpcorch.provision.slurm_pool import job_options, plan_pools
from hpcorch.sites import load_site
from hpcorch.spec import parse_workflow


def test_one_pool_per_partition_sized_by_demand() -> None:
    site = load_site("dev")
    spec = parse_workflow(
        {
            "tasks": [
                *({"id": f"c{i}", "command": ["true"], "resources": {"cpus": 2}} for i in range(6)),
                {"id": "g", "command": ["true"], "resources": {"gpus": 2, "walltime": "2h"}},
            ]
        }
    )
    plans = {p.name: p for p in plan_pools(spec, site)}
    assert set(plans) == {"cpu", "gpu"}
    assert plans["cpu"].jobs == 2  # at most: 12 cores of demand, 8-core nodes, 2 nodes
    assert plans["gpu"].jobs == 1
    # the 2h task, 10% + 2 min margin and wind-down, rounded up to the 3h bucket
    assert plans["gpu"].walltime_s == 3 * 3600
    assert plan_pools(spec, site)[0].name == "cpu"  # the default partition owns the scheduler


def test_job_options_carry_resources_gres_and_no_token(tmp_path: Path) -> None:
    site = load_site("dev")
    spec = parse_workflow({"tasks": [{"id": "g", "command": ["true"], "resources": {"gpus": 1}}]})
    (plan,) = plan_pools(spec, site)
    opts = job_options(plan, site, tmp_path)
    assert opts["queue"] == "gpu" and opts["cores"] == 8 and opts["processes"] == 1
    assert "--gres=gpu:sim:4" in opts["job_extra_directives"]
    assert opts["worker_extra_args"][:2] == [
        "--resources",
        f"cpus=8,memory={8000 * 1024**2},gpus=4",
    ]
    assert "unset SLURM_JWT" in opts["job_script_prologue"]
    # job ids repeat across sites: the workers' attempt records name theirs
    assert "export HPCORCH_SITE=dev" in opts["job_script_prologue"]
    assert opts["walltime"] == "00:15:00"  # the default 10 min estimate, padded, rounded


def test_smallest_fitting_partition_and_refusal() -> None:
    site = load_site("dev")
    cpu_task = parse_workflow({"tasks": [{"id": "a", "command": ["x"]}]}).tasks[0]
    assert partition_for(cpu_task, site).name == "cpu"
    with pytest.raises(ResourceError, match="task 'big' needs 16 cpus"):
        check_fits(
            parse_workflow({"tasks": [{"id": "big", "command": ["x"], "resources": {"cpus": 16}}]}),
            site,
        )
    mpi = parse_workflow(
        {"tasks": [{"id": "m", "command": ["x"], "mpi": {"ranks": 16, "ranks_per_node": 8}}]}
    )
    check_fits(mpi, site)  # 2 nodes of 8 ranks fit the cpu partition
    too_wide = parse_workflow(
        {"tasks": [{"id": "m", "command": ["x"], "mpi": {"ranks": 24, "ranks_per_node": 8}}]}
    )
    with pytest.raises(ResourceError, match="3 nodes"):
        check_fits(too_wide, site)


def test_resource_restrictions_only_when_needed() -> None:
    plain = parse_workflow({"tasks": [{"id": "a", "command": ["x"]}]})
    assert not needs_resources(plain)
    heavy = parse_workflow(
        {"tasks": [{"id": "a", "command": ["x"], "resources": {"cpus": 2, "memory": "1GiB"}}]}
    )
    assert needs_resources(heavy)
    assert task_resources(heavy.tasks[0]) == {"cpus": 2.0, "memory": float(1024**3)}
