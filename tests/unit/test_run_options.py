"""RunOptions: built at the edges (CLI, Python API, environment), passed down to the engine."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import hpcorch
from hpcorch.environment import options_env, run_options
from hpcorch.errors import OptionError
from hpcorch.options import RunOptions, ScalerSettings
from hpcorch.policies.retry import RetryConfig
from hpcorch.policies.scale import decide_scale, decide_simple, scale_policy
from hpcorch.policies.state import Budget
from hpcorch.sites import load_site
from hpcorch.submit import driver_request


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HPCORCH_BUDGET", "HPCORCH_REGIONS", "HPCORCH_SCALING", "HPCORCH_SCALE_INTERVAL"):
        monkeypatch.delenv(name, raising=False)


def test_options_are_frozen_and_checked() -> None:
    options = RunOptions()
    with pytest.raises(AttributeError):
        options.site = "dev"  # type: ignore[misc]
    with pytest.raises(OptionError, match="budget") as bad:
        options.build(budget="lots")
    assert bad.value.option == "budget"
    with pytest.raises(OptionError, match="choose one of: demand, simple"):
        options.build(scaling="fast")
    with pytest.raises(OptionError):
        RunOptions(regions=["dev"])  # type: ignore[arg-type]
    assert options.build(regions="a, b,a", budget="3 eur").regions == ("a", "b")
    assert options.build(budget="3 eur").budget == Budget(3.0, "EUR")


def test_the_environment_is_read_in_one_place() -> None:
    env = {
        "HPCORCH_REGIONS": "eiger,frontier",
        "HPCORCH_BUDGET": "20",
        "HPCORCH_SCALING": "simple",
        "HPCORCH_SCALE_INTERVAL": "2",
        "HPCORCH_IDLE_TIMEOUT": "1m",
        "HPCORCH_USE_ALLOCATION": "no",
    }
    options = run_options(env)
    assert options.regions == ("eiger", "frontier")
    assert options.budget == Budget(20.0, "SU")
    assert options.scaler.policy == "simple"
    assert options.scaler.interval_s == 2.0
    assert options.scaler.scale.idle_timeout_s == 60.0
    assert not options.use_allocation
    assert run_options(options_env(options)) == options  # what a driver job reads back
    with pytest.raises(OptionError, match="HPCORCH_LOOKAHEAD"):
        run_options({"HPCORCH_LOOKAHEAD": "soon"})
    assert run_options({}) == RunOptions()


def test_scaling_policies_by_name() -> None:
    assert scale_policy("demand") is decide_scale
    assert scale_policy("simple") is decide_simple
    with pytest.raises(ValueError, match="demand, simple"):
        scale_policy("none-such")


def test_the_driver_job_carries_the_options(tmp_path: Path) -> None:
    options = RunOptions(budget=Budget(20.0, "SU"), scaler=ScalerSettings(policy="simple"))
    request = driver_request(
        tmp_path / "wf.yaml", load_site("dev"), tmp_path, "r-1", walltime_s=3600, options=options
    )
    assert request.env == {"HPCORCH_BUDGET": "20 SU", "HPCORCH_SCALING": "simple"}


class _Reached(Exception):
    pass


def test_the_python_api_takes_the_cli_options_and_they_reach_the_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[Any, RunOptions]] = []

    def workers(site: Any, spec: Any, run_dir: Path, **kw: Any) -> None:
        seen.append((site, kw["options"]))
        raise _Reached

    monkeypatch.setattr("hpcorch.provision.pools.SlurmWorkers", workers)
    monkeypatch.setenv("HPCORCH_SCALE_INTERVAL", "7")  # the environment fills what is not given
    wf = hpcorch.Workflow("opts")
    wf.add(["true"], id="a")
    retry = RetryConfig(user_backoff_s=0.5)
    for call in (wf.run, wf.submit):
        with pytest.raises(_Reached):
            call(
                site="dev",
                run_dir=tmp_path / call.__name__,
                regions=["dev"],
                budget="20 SU",
                scaling="simple",
                retry_config=retry,
            )
    assert len(seen) == 2
    for site, options in seen:
        assert site.name == "dev"
        assert options.regions == ("dev",)
        assert options.budget == Budget(20.0, "SU")
        assert options.scaler.policy == "simple"
        assert options.scaler.interval_s == 7.0
        assert options.retry == retry
        assert options == replace(seen[0][1])


def test_the_python_api_refuses_bad_options_before_anything_starts(tmp_path: Path) -> None:
    wf = hpcorch.Workflow("opts")
    wf.add(["true"], id="a")
    with pytest.raises(OptionError, match="'100 SU'"):
        wf.run(site="dev", run_dir=tmp_path / "r", budget="lots")
    with pytest.raises(OptionError, match="regions are Slurm sites"):
        wf.submit(site="dev", run_dir=tmp_path / "r", regions="local")
    with pytest.raises(OptionError, match="scaling"):
        wf.run(site="dev", run_dir=tmp_path / "r", scaling="eager")
    assert not (tmp_path / "r").exists()
