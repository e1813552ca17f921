"""``hpcorch plan`` for every shipped site: stored plans (golden files), and every
rendered job script checked line by line against the rules the site's documentation
states (cited in each site-configs/*.yaml). Regenerate the stored plans after a
deliberate change with ``HPCORCH_UPDATE_EXPECTED=1 pytest tests/unit/test_plan_sites.py``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from hpcorch.cli.main import cli
from hpcorch.loaders import load_workflow
from hpcorch.options import RunOptions
from hpcorch.plan import JobPlan, RunPlan, format_plan, plan_run
from hpcorch.sites import load_site
from hpcorch.units import parse_duration

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = Path(__file__).parent / "expected" / "plans"
WORKFLOWS = {
    "local": "cpu-pipeline.yaml",
    "dev": "mpi-then-gpu.yaml",
    "perlmutter": "mpi-then-gpu.yaml",
    "frontier": "mpi-then-gpu.yaml",
    "eiger": "cpu-pipeline.yaml",
    "dev-perlmutter": "mpi-then-gpu.yaml",
    "dev-frontier": "mpi-then-gpu.yaml",
}
ACCOUNTS = {
    "frontier": "abc123",
    "perlmutter": "m1234",
    "dev-perlmutter": "m0001",
    "dev-frontier": "csc001",
}


def _plan(site_name: str, **options: str) -> RunPlan:
    workflow = ROOT / "workflows" / WORKFLOWS[site_name]
    spec = load_workflow(workflow)
    account = options.pop("account", ACCOUNTS.get(site_name))
    return plan_run(
        spec,
        load_site(site_name),
        options=RunOptions(account=account, **options),  # type: ignore[arg-type]
        workflow=Path("/work") / WORKFLOWS[site_name],
        run_dir=Path("/runs/RUN_DIR"),
        python="/venv/bin/python",
    )


@pytest.fixture(autouse=True)
def _at_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/")  # the driver's --chdir


@pytest.mark.parametrize("site_name", sorted(WORKFLOWS))
def test_plan_matches_the_stored_one(site_name: str) -> None:
    text = format_plan(_plan(site_name))
    path = EXPECTED / f"{site_name}.txt"
    if os.environ.get("HPCORCH_UPDATE_EXPECTED"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert text == path.read_text()


# -- the sites' documented rules, checked on every rendered script ---------------


def _directives(script: str) -> dict[str, list[str]]:
    """``#SBATCH`` options by long name (short forms as dask-jobqueue writes them)."""
    short = {"-p": "partition", "-A": "account", "-t": "time", "-J": "job-name", "-n": "ntasks"}
    out: dict[str, list[str]] = {}
    for line in script.splitlines():
        if not line.startswith("#SBATCH "):
            continue
        option = line.removeprefix("#SBATCH ").strip()
        if option.startswith("--"):
            name, _, value = option[2:].partition("=")
        else:
            flag, _, value = option.partition(" ")
            name = short.get(flag, flag)
        out.setdefault(name, []).append(value.strip('"'))
    return out


def _one(d: dict[str, list[str]], name: str) -> str | None:
    values = d.get(name, [])
    assert len(values) <= 1, f"--{name} given {len(values)} times: {values}"
    return values[0] if values else None


def _seconds(d: dict[str, list[str]]) -> float:
    value = _one(d, "time")
    assert value is not None, "every job states its walltime"
    return parse_duration(value)


def _nodes(d: dict[str, list[str]]) -> int:
    return int(_one(d, "nodes") or 1)


def _jobs(plan: RunPlan) -> list[tuple[JobPlan, dict[str, list[str]]]]:
    assert plan.jobs, "a Slurm site's plan has jobs"
    return [(job, _directives(job.script)) for job in plan.jobs]


def test_perlmutter_follows_nersc_rules() -> None:
    """docs.nersc.gov: nodes chosen by -C gpu / -C cpu (no partition); GPUs only when
    asked for (--gpus-per-node); QOS limits (debug 30 min/8 nodes, regular 48 h,
    shared 48 h/1 node); workflow managers in the shared QOS on a CPU node."""
    limits = {"debug": (1800, 8), "regular": (48 * 3600, None), "shared": (48 * 3600, 1)}
    for job, d in _jobs(_plan("perlmutter")):
        assert "partition" not in d, f"{job.name}: Perlmutter selects nodes with -C, not -p"
        constraint = _one(d, "constraint")
        assert constraint is not None and constraint.split("&")[0] in ("gpu", "cpu"), job.name
        qos = _one(d, "qos")
        assert qos in limits, f"{job.name}: QOS {qos} is not one NERSC documents"
        wall, nodes = limits[qos]
        assert _seconds(d) <= wall, f"{job.name}: walltime over QOS {qos}'s"
        assert nodes is None or _nodes(d) <= nodes, job.name
        if constraint.startswith("gpu") and job.kind == "pool":
            assert _one(d, "gpus-per-node") == "4", f"{job.name}: GPU node without a GPU request"
        if job.kind == "driver":
            assert (qos, constraint) == ("shared", "cpu"), "the driver belongs on a shared CPU"
            assert "gpus-per-node" not in d and "gres" not in d


def test_frontier_follows_olcf_rules() -> None:
    """Frontier user guide: -A on every job; batch walltime by node-count bin (1-91
    nodes 2 h, 92-183 6 h, else 12 h); extended 24 h and 64 nodes; GPUs asked with
    --gpus-per-node and bound --gpu-bind=closest."""
    bins = [(91, 2 * 3600), (183, 6 * 3600), (9472, 12 * 3600)]
    for job, d in _jobs(_plan("frontier")):
        assert _one(d, "account") == "abc123", f"{job.name}: Frontier charges every job to -A"
        partition = _one(d, "partition")
        assert partition in ("batch", "extended"), job.name
        nodes = _nodes(d)
        if partition == "batch":
            limit = next(wall for top, wall in bins if nodes <= top)
        else:
            assert nodes <= 64, job.name
            limit = 24 * 3600
        assert _seconds(d) <= limit, f"{job.name}: over the {partition} walltime for {nodes} nodes"
        if job.kind == "pool":
            assert _one(d, "gpus-per-node") == "8", job.name
            assert _one(d, "gpu-bind") == "closest", job.name
    assert _plan("frontier").jobs[-1].decisions["select"] == "--partition=extended"


def test_eiger_follows_cscs_rules() -> None:
    """docs.cscs.ch/clusters/eiger: partition normal, 24 h; CPU-only nodes."""
    for job, d in _jobs(_plan("eiger")):
        assert _one(d, "partition") == "normal", job.name
        assert _seconds(d) <= 24 * 3600, job.name
        assert not {"gres", "gpus-per-node", "gpus", "gpus-per-task"} & set(d), job.name


def test_dev_follows_its_slurm_conf() -> None:
    """scripts/dev-cluster: GPU nodes gpu[1-2] with Gres=gpu:sim:4, asked with --gres."""
    for job, d in _jobs(_plan("dev")):
        assert _one(d, "partition") in ("cpu", "gpu"), job.name
        if _one(d, "partition") == "gpu" and job.kind == "pool":
            assert _one(d, "gres") == "gpu:sim:4", job.name


def test_dev_perlmutter_follows_its_profile() -> None:
    """scripts/dev-cluster --profile perlmutter-like: one partition, -C cpu / -C gpu on every
    job (job_submit.lua refuses jobs without), -A m0001, QOS limits as sacctmgr sets them
    (debug 30 min/2 nodes, regular 48 h, shared and workflow one node), GPUs asked for."""
    limits = {"debug": (1800, 2), "regular": (48 * 3600, None), "workflow": (30 * 86400, 1)}
    for job, d in _jobs(_plan("dev-perlmutter")):
        assert "partition" not in d, job.name
        assert _one(d, "account") == "m0001", job.name
        constraint = _one(d, "constraint")
        assert constraint in ("cpu", "gpu"), job.name
        qos = _one(d, "qos")
        assert qos in limits, job.name
        wall, nodes = limits[qos]
        assert _seconds(d) <= wall and (nodes is None or _nodes(d) <= nodes), job.name
        if constraint == "gpu" and job.kind == "pool":
            assert _one(d, "gpus-per-node") == "4", job.name
        if job.kind == "driver":
            assert (qos, constraint) == ("workflow", "cpu"), job.name


def test_dev_frontier_follows_its_profile() -> None:
    """scripts/dev-cluster --profile frontier-like: -A csc001 on every job, partition batch,
    walltime by node-count bin as its job_submit.lua (1 node 2 h, 2 nodes 6 h, 3-4 12 h),
    8 GPUs per node asked with --gpus-per-node and bound closest."""
    bins = [(1, 2 * 3600), (2, 6 * 3600), (4, 12 * 3600)]
    for job, d in _jobs(_plan("dev-frontier")):
        assert _one(d, "account") == "csc001", job.name
        assert _one(d, "partition") == "batch", job.name
        nodes = _nodes(d)
        assert _seconds(d) <= next(wall for top, wall in bins if nodes <= top), job.name
        if job.kind == "pool":
            assert _one(d, "gpus-per-node") == "8", job.name
            assert _one(d, "gpu-bind") == "closest", job.name


def test_local_submits_nothing() -> None:
    assert _plan("local").jobs == ()


# -- refusals: before anything is submitted, exit 2, one line naming the rule ----------


def _wf(tmp_path: Path, task: str) -> Path:
    path = tmp_path / "wf.yaml"
    path.write_text(f"name: w\ntasks:\n  - {task}\n")
    return path


@pytest.mark.parametrize(
    ("site", "task", "args", "rule"),
    [
        ("frontier", "{id: a, duration: 1}", [], "requires an account"),
        (
            "frontier",
            "{id: a, duration: 1, resources: {walltime: 3h}}",
            ["-A", "abc123"],
            "walltime bin of up to 91 nodes",
        ),
        (
            "perlmutter",
            "{id: a, duration: 1, resources: {walltime: 1h}}",
            ["--qos", "debug"],
            "QOS debug max_walltime_s",
        ),
        (
            "perlmutter",
            "{id: a, duration: 1, mpi: {ranks: 16, ranks_per_node: 1}}",
            ["--qos", "debug"],
            "QOS debug max_nodes_per_job",
        ),
        ("perlmutter", "{id: a, duration: 1}", ["--qos", "premium"], "not one the site lists"),
        (
            "perlmutter",
            "{id: a, duration: 1, constraint: 'hbm80g|bigmem'}",
            [],
            "cannot be joined",
        ),
    ],
)
def test_refused_before_submitting(
    site: str, task: str, args: list[str], rule: str, tmp_path: Path
) -> None:
    for command in ("plan", "run"):
        result = CliRunner().invoke(cli, [command, str(_wf(tmp_path, task)), "--site", site, *args])
        assert result.exit_code == 2, result.output
        assert result.stderr.count("\n") == 1 and rule in result.stderr, result.stderr
        assert result.stderr.startswith("hpcorch: error: site ")


def test_too_many_nodes_for_every_bin(tmp_path: Path) -> None:
    mine = tmp_path / "small.yaml"
    mine.write_text(
        "extends: frontier\naccount: abc123\n"
        "partitions:\n  batch:\n    max_nodes_per_job: null\n"
        "    walltime_bins: [{max_nodes: 2, max_walltime_s: 1h}]\n"
    )
    wf = _wf(tmp_path, "{id: a, duration: 1, mpi: {ranks: 3, ranks_per_node: 1}}")
    result = CliRunner().invoke(cli, ["plan", str(wf), "--site", str(mine)])
    assert result.exit_code == 2
    assert "largest walltime bin" in result.stderr and result.stderr.count("\n") == 1


def test_submit_walltime_over_the_driver_limit(tmp_path: Path) -> None:
    wf = _wf(tmp_path, "{id: a, duration: 1}")
    args = ["submit", str(wf), "--site", "frontier", "-A", "abc123", "--walltime", "30h"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert "the driver job" in result.stderr and "partition extended" in result.stderr


def test_plan_json_names_the_decisions() -> None:
    plan = _plan("perlmutter").as_dict()
    gpu = next(j for j in plan["jobs"] if j["name"] == "gpu")
    assert gpu["decisions"]["gpus"].startswith("--gpus-per-node=4")
    assert gpu["decisions"]["limit_rule"] == "QOS regular max_walltime_s"
    assert plan["steps"][0]["task"] == "simulate"
    assert re.search(r"srun --jobid=\$SLURM_JOB_ID .*--ntasks=8", plan["steps"][0]["line"])
