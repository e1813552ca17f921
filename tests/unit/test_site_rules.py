"""Site rules: the new site/partition/task keys, user overrides layered over shipped
sites, the rules checked before submitting, and how pools and the driver use them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from hpcorch.cli.main import cli
from hpcorch.environment import options_env, run_options
from hpcorch.errors import SiteConfigError, SiteRuleError, SpecError, WorkflowError
from hpcorch.options import RunOptions
from hpcorch.placement.placing import knobs_resource
from hpcorch.provision.slurm_pool import job_options, plan_pools
from hpcorch.sites import load_site, parse_site
from hpcorch.sites.loader import layer_site
from hpcorch.sites.model import Site
from hpcorch.sites.rules import (
    check_job,
    combine_constraints,
    gpu_directives,
    job_settings,
    site_with,
    walltime_limit,
)
from hpcorch.slurm.script import render_sbatch
from hpcorch.spec import TaskSpec, parse_workflow
from hpcorch.submit import driver_plan, driver_request, mail_directives


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("HPCORCH_SITE_PATH", raising=False)
    sites = tmp_path / "hpcorch" / "sites"
    sites.mkdir(parents=True)
    return sites


# -- overrides without copying files ------------------------------------------------


def test_a_user_file_with_just_an_account_completes_the_shipped_site(config_home: Path) -> None:
    (config_home / "frontier.yaml").write_text("account: abc123\n")
    site = load_site("frontier")
    assert site.account == "abc123"
    assert site.partition("batch").walltime_bins  # the shipped file's keys are all there
    assert site.docs


def test_user_file_sets_qos_by_name_and_partitions_by_name(config_home: Path) -> None:
    (config_home / "perlmutter.yaml").write_text(
        "qos: debug\npartitions:\n  gpu: {reservation: demo}\n"
    )
    site = load_site("perlmutter")
    assert site.qos_default == "debug" and {q.name for q in site.qos} >= {"debug", "regular"}
    gpu = site.partition("gpu")
    assert gpu.reservation == "demo" and gpu.gpu_request == "gpus-per-node"
    assert [p.name for p in site.partitions] == ["gpu", "cpu"]


def test_a_file_given_by_path_extends_a_site(tmp_path: Path) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text("extends: perlmutter\naccount: m1234\n")
    site = load_site(mine)
    assert site.name == "perlmutter" and site.account == "m1234"
    with pytest.raises(SiteConfigError, match="unknown site"):
        parse_site("extends: nowhere\n")


def test_layers_merge_deeply_and_lists_replace() -> None:
    merged = layer_site(
        {"name": "a", "dask": {"interface": "ib0", "local_directory": "/tmp"}, "docs": ["x"]},
        {"dask": {"interface": "hsn0"}, "docs": ["y"]},
    )
    assert merged["dask"] == {"interface": "hsn0", "local_directory": "/tmp"}
    assert merged["docs"] == ["y"]


def test_an_override_error_names_both_files(config_home: Path) -> None:
    (config_home / "frontier.yaml").write_text("account: '--uid=0'\n")
    with pytest.raises(SiteConfigError) as info:
        load_site("frontier")
    assert "frontier.yaml + " in str(info.value) and "not a Slurm name" in str(info.value)


# -- the model ----------------------------------------------------------------------


def _site(**partition: object) -> dict[str, object]:
    return {
        "name": "s",
        "kind": "slurm",
        "slurm": {"backends": ["cli"]},
        "partitions": [
            {
                "name": "gpu",
                "nodes": 4,
                "node": {"cores_per_socket": 8, "memory": "64G", "gpus": 4},
                **partition,
            }
        ],
    }


def test_a_gpu_partition_needs_a_way_to_ask_for_gpus(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="no way to ask for them"):
        Site.model_validate(_site())
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_site()))
    result = CliRunner().invoke(cli, ["sites", "validate", str(path)])
    assert result.exit_code == 2 and "gpu_request" in result.stderr
    assert result.stderr.count("\n") == 1
    for ok in ({"gres": "gpu:a100"}, {"gpu_request": "gpus"}):
        Site.model_validate(_site(**ok))


def test_bins_must_grow() -> None:
    bins = [{"max_nodes": 9, "max_walltime_s": "1h"}, {"max_nodes": 3, "max_walltime_s": "2h"}]
    with pytest.raises(Exception, match="walltime_bins"):
        Site.model_validate(_site(gres="gpu", walltime_bins=bins))


# -- rules ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("gres", ["--gres=gpu:a100:4"]),
        ("gpus-per-node", ["--gpus-per-node=4"]),
        ("gpus-per-task", ["--gpus-per-task=4"]),
        ("gpus", ["--gpus=8"]),
    ],
)
def test_gpu_requests(method: str, expected: list[str]) -> None:
    site = Site.model_validate(_site(gres="gpu:a100", gpu_request=method))
    assert gpu_directives(site.partition(), nodes=2) == expected
    bound = Site.model_validate(_site(gres="gpu", gpu_request=method, gpu_bind="closest"))
    assert gpu_directives(bound.partition(), nodes=2)[-1] == "--gpu-bind=closest"


def test_constraints_join() -> None:
    assert combine_constraints("gpu", "gpu&hbm80g") == "gpu&hbm80g"
    assert combine_constraints("gpu", "hbm80g") == "gpu&hbm80g"
    assert combine_constraints(None, "x") == "x" and combine_constraints("cpu", None) == "cpu"
    assert combine_constraints("cpu", "[cpu|big]") == "[cpu|big]"
    with pytest.raises(ValueError, match="cannot be joined"):
        combine_constraints("cpu", "a|b")


def test_what_wins_task_then_run_then_partition_then_site() -> None:
    site = load_site("perlmutter").model_copy(update={"account": "site"})
    gpu = site.partition("gpu")
    assert job_settings(site, gpu).qos == "regular"
    ran = site_with(site, account="run", qos="debug")
    assert job_settings(ran, ran.partition("gpu")).account == "run"
    assert job_settings(ran, ran.partition("gpu")).qos == "debug"
    task = job_settings(ran, ran.partition("gpu"), {"qos": "shared", "account": "t"})
    assert (task.qos, task.account) == ("shared", "t")


def test_walltime_limit_is_the_tightest() -> None:
    site = load_site("frontier")
    batch = site.partition("batch")
    assert walltime_limit(site, batch, None, 1).seconds == 2 * 3600
    assert walltime_limit(site, batch, None, 100).seconds == 6 * 3600
    assert walltime_limit(site, batch, None, 1000).seconds == 12 * 3600
    settings = job_settings(site, batch, {"account": "a"})
    with pytest.raises(SiteRuleError, match="more than partition batch max_nodes_per_job"):
        check_job(site, batch, settings, nodes=9999, walltime_s=60, what="x")


# -- per-task knobs: their own pools ----------------------------------------------------


def test_tasks_with_knobs_get_pools_of_their_own() -> None:
    spec = parse_workflow(
        {
            "name": "w",
            "tasks": [
                {"id": "a", "duration": 1, "resources": {"gpus": 1}},
                {"id": "b", "duration": 1, "resources": {"gpus": 1}, "constraint": "hbm80g"},
                {"id": "c", "duration": 1, "resources": {"gpus": 1}, "qos": "debug"},
                {"id": "d", "duration": 1, "exclusive": True, "reservation": "r1"},
            ],
        }
    )
    site = load_site("perlmutter")
    plans = {p.name: p for p in plan_pools(spec, site)}
    assert len(plans) == 4 and "gpu" in plans
    by_knobs = {dict(p.knobs).get("constraint"): p for p in plans.values()}
    hbm = by_knobs["hbm80g"]
    options = job_options(hbm, site, Path("/run"))
    assert "--constraint=gpu&hbm80g" in options["job_extra_directives"]
    b = spec.task("b")
    assert f"{knobs_resource(b)}=64" in options["worker_extra_args"][1]
    assert knobs_resource(spec.task("a")) is None
    d = next(p for p in plans.values() if dict(p.knobs).get("exclusive"))
    extra = job_options(d, site, Path("/run"))["job_extra_directives"]
    assert "--exclusive" in extra and "--reservation=r1" in extra


def test_task_knobs_are_checked() -> None:
    for bad in ({"qos": "a b"}, {"account": "-x"}, {"constraint": "a;b"}, {"reservation": ""}):
        with pytest.raises(WorkflowError):
            parse_workflow({"name": "w", "tasks": [{"id": "a", "duration": 1, **bad}]})
    assert TaskSpec(id="a", duration=1, qos="regular").slurm_knobs == {"qos": "regular"}


# -- run options and the driver ----------------------------------------------------------


def test_account_and_qos_reach_the_driver_through_the_environment() -> None:
    options = RunOptions(account="m1234", qos="regular")
    env = options_env(options)
    assert env["HPCORCH_ACCOUNT"] == "m1234" and env["HPCORCH_QOS"] == "regular"
    back = run_options(env)
    assert (back.account, back.qos) == ("m1234", "regular")
    with pytest.raises(SpecError):
        RunOptions(account="a b")


def test_driver_runs_where_the_site_says(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/")
    site = load_site("perlmutter")
    plan = driver_plan(site)
    assert (plan.settings.qos, plan.settings.constraint, plan.walltime_s) == (
        "shared",
        "cpu",
        24 * 3600,
    )
    request = driver_request(
        Path("/w.yaml"),
        site,
        Path("/run"),
        "r",
        options=RunOptions(account="m1234"),
        mail_type="end,fail",
        mail_user="me@example.org",
    )
    text = render_sbatch(request)
    for line in ("--account=m1234", "--qos=shared", "--constraint=cpu", "--mail-type=END,FAIL"):
        assert f"#SBATCH {line}\n" in text
    assert "--partition" not in text  # Perlmutter selects nodes by constraint
    with pytest.raises(SpecError, match="mail type"):
        mail_directives("sometimes", None)
    with pytest.raises(SpecError, match="mail-user"):
        mail_directives(None, "a b@c")


def test_driver_walltime_defaults_under_the_limit() -> None:
    eiger = load_site("eiger")
    assert driver_plan(eiger).walltime_s == 24 * 3600
    frontier = site_with(load_site("frontier"), account="a")
    assert driver_plan(frontier).settings.partition == "extended"
    with pytest.raises(SiteRuleError, match="partition extended max_walltime_s"):
        driver_plan(frontier, walltime_s=25 * 3600)
    with pytest.raises(SiteRuleError, match="requires an account"):
        driver_plan(load_site("frontier"))


def test_python_api_keywords() -> None:
    import hpcorch  # noqa: PLC0415

    wf = hpcorch.Workflow("w")
    wf.add(["true"], id="t", qos="regular", constraint="gpu&hbm80g", exclusive=True)
    assert wf.spec().task("t").slurm_knobs == {
        "qos": "regular",
        "constraint": "gpu&hbm80g",
        "exclusive": True,
    }
    options = wf.options("perlmutter", account="m1234", qos="debug")
    assert (options.account, options.qos) == ("m1234", "debug")
    with pytest.raises(WorkflowError):
        wf.add(["true"], id="u", reservation="a b")
