"""``--dashboard``: the option's checks (exit 2, one line) and what the scheduler is given."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from click.testing import CliRunner

from hpcorch.cli.main import cli
from hpcorch.environment import options_env, run_options
from hpcorch.errors import OptionError
from hpcorch.options import RunOptions
from hpcorch.provision import dashboard


def _refused(*argv: str, env: dict[str, str] | None = None) -> str:
    result = CliRunner().invoke(cli, list(argv), env=env)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def _workflow(tmp_path: Path) -> str:
    path = tmp_path / "w.yaml"
    path.write_text("tasks:\n  - {id: a, command: ['true']}\n")
    return str(path)


@pytest.mark.parametrize("port", ["70000", "-1", "abc", ""])
def test_bad_port_is_refused_in_one_line(tmp_path: Path, port: str) -> None:
    line = _refused("run", _workflow(tmp_path), "--dashboard-port", port)
    assert "--dashboard-port" in line
    assert not (tmp_path / ".hpcorch").exists()


def test_bad_environment_port_is_refused_in_one_line(tmp_path: Path) -> None:
    line = _refused("run", _workflow(tmp_path), env={"HPCORCH_DASHBOARD": "eighty"})
    assert "HPCORCH_DASHBOARD" in line


def test_dashboard_without_bokeh_is_refused(tmp_path: Path, monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bokeh" else real(name, *a)
    )
    line = _refused("run", _workflow(tmp_path), "--dashboard")
    assert "bokeh" in line and "--dashboard" in line


def test_run_options_port_range() -> None:
    assert RunOptions(dashboard=0).dashboard == 0
    for bad in (-1, 65536, True):
        with pytest.raises(OptionError):
            RunOptions(dashboard=bad)


def test_environment_round_trip() -> None:
    assert run_options({}).dashboard is None
    assert run_options({"HPCORCH_DASHBOARD": "0"}).dashboard == 0
    assert options_env(RunOptions(dashboard=8787)) == {"HPCORCH_DASHBOARD": "8787"}
    assert "HPCORCH_DASHBOARD" not in options_env(RunOptions())


def test_off_by_default_and_on_loopback_when_asked() -> None:
    port, kwargs, config = dashboard.http_settings(None)
    assert port is None
    assert kwargs == {"dashboard_address": "127.0.0.1:0", "dashboard": False}
    assert config["distributed.scheduler.http.routes"] == []
    port, kwargs, config = dashboard.http_settings(0)
    assert port and kwargs == {"dashboard_address": f"127.0.0.1:{port}", "dashboard": True}
    assert config["distributed.scheduler.http.routes"] == []  # no JSON API, no /info
    origins = config["distributed.scheduler.dashboard.bokeh-application.allow_websocket_origin"]
    assert origins == [f"localhost:{port}", f"127.0.0.1:{port}"]


def test_tunnel_hint_names_the_port_on_both_ends() -> None:
    line = dashboard.tunnel_hint(40123, host="login1.example.org", user="ada")
    assert "ssh -N -L 40123:127.0.0.1:40123 ada@login1.example.org" in line
    assert "http://localhost:40123/status" in line
    assert "Other users of login1.example.org can reach it" in line
