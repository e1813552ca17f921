"""Every command through click's test runner: what it prints, its exit code, and its bad inputs.

Exit codes: 0 success, 1 tasks failed, 2 bad input, 3 infrastructure. A refusal
is one line on stderr; with ``--json`` stdout holds the JSON object and nothing else.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from hpcorch.cli.main import cli
from hpcorch.journal import Journal

REPO = Path(__file__).resolve().parents[2]
SEISMOLOGY = REPO / "workflows" / "seismology-110.json"

OK = """\
name: hello
tasks:
  - id: greet
    command: [python3, -c, "print('hello from greet')"]
  - id: after
    after: [greet]
    command: ['true']
"""
FAILING = """\
name: broken
tasks:
  - id: boom
    command: [python3, -c, "import sys; sys.exit(3)"]
    retries: 0
  - id: never
    after: [boom]
    command: ['true']
"""


def invoke(*argv: str) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in argv])


def refused(result: Result, code: int = 2) -> str:
    """The command exited ``code`` with one line on stderr and nothing on stdout."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert result.stdout == "", result.stdout
    err = result.stderr.strip()
    assert err.count("\n") == 0, err
    assert err.startswith("hpcorch: error: "), err
    return err


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(autouse=True)
def _env(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPCORCH_HOME", str(home))
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def finished(home: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One succeeded run on site local: its id, directory and the run command's result."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HPCORCH_HOME", str(home))
        wf = tmp_path_factory.mktemp("wf") / "ok.yaml"
        wf.write_text(OK)
        result = invoke("run", wf, "--site", "local")
    assert result.exit_code == 0, result.output
    run_id = re.search(r"^run (\S+) succeeded", result.stdout, re.M)
    assert run_id, result.stdout
    return {"run_id": run_id.group(1), "run_dir": home / "runs" / run_id.group(1), "result": result}


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    out = {
        "missing": tmp_path / "nope.yaml",
        "malformed_yaml": tmp_path / "bad.yaml",
        "malformed_json": tmp_path / "bad.json",
        "unknown_key": tmp_path / "typo.yaml",
    }
    out["malformed_yaml"].write_text("tasks: [\n")
    out["malformed_json"].write_text('{"workflow":')
    out["unknown_key"].write_text("tasks:\n  - {id: a, comand: ['true']}\n")
    return out


# -- run ---------------------------------------------------------------------


def test_run_succeeds_with_a_summary_and_timestamped_progress(finished: dict[str, Any]) -> None:
    result = finished["result"]
    assert f"run {finished['run_id']} succeeded" in result.stdout
    assert "2 succeeded" in result.stdout
    lines = result.stderr.splitlines()
    assert any(
        re.match(rf"^\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ run {finished['run_id']}: 2/2 done", x)
        for x in lines
    ), result.stderr


def test_run_with_failed_tasks_exits_1(tmp_path: Path) -> None:
    wf = tmp_path / "broken.yaml"
    wf.write_text(FAILING)
    result = invoke("run", wf, "--site", "local")
    assert result.exit_code == 1, result.output
    assert "boom: user_error" in result.stdout
    assert result.stderr.strip().splitlines()[-1].startswith("hpcorch: error: run broken-")
    assert re.search(r"task boom attempt 1 failed \(user_error\)", result.stderr)


def test_run_json_prints_the_summary_alone(tmp_path: Path) -> None:
    wf = tmp_path / "ok.yaml"
    wf.write_text(OK)
    result = invoke("run", wf, "--site", "local", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # nothing else on stdout
    assert data["state"] == "succeeded" and data["counts"] == {"succeeded": 2}
    assert Path(data["run_dir"]).is_dir() and data["failures"] == []

    wf.write_text(FAILING)
    result = invoke("run", wf, "--site", "local", "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["state"] == "failed"
    assert data["failures"][0]["task"] == "boom"
    assert data["failures"][0]["failure_class"] == "user_error"


@pytest.mark.parametrize("which", ["missing", "malformed_yaml", "malformed_json", "unknown_key"])
def test_run_refuses_bad_files(files: dict[str, Path], which: str, home: Path) -> None:
    before = set((home / "runs").glob("*"))
    err = refused(invoke("run", files[which], "--site", "local"))
    assert files[which].name in err
    assert set((home / "runs").glob("*")) == before, "a run directory was made for bad input"


def test_run_unknown_site() -> None:
    err = refused(invoke("run", REPO / "workflows" / "cpu-pipeline.yaml", "--site", "nosuch"))
    assert "unknown site 'nosuch'" in err and "known sites:" in err


def test_run_bad_option_value() -> None:
    result = invoke("run", REPO / "workflows" / "cpu-pipeline.yaml", "--time-scale", "fast")
    assert result.exit_code == 2
    assert "'fast' is not a valid float" in result.stderr


# -- submit --------------------------------------------------------------------


@pytest.mark.parametrize("which", ["missing", "malformed_yaml", "malformed_json"])
def test_submit_refuses_bad_files(files: dict[str, Path], which: str) -> None:
    assert files[which].name in refused(invoke("submit", files[which], "--site", "dev"))


def test_submit_unknown_site_and_local_site() -> None:
    wf = REPO / "workflows" / "cpu-pipeline.yaml"
    assert "unknown site 'nosuch'" in refused(invoke("submit", wf, "--site", "nosuch"))
    assert "not a Slurm site" in refused(invoke("submit", wf, "--site", "local"))


def test_submit_bad_walltime() -> None:
    wf = REPO / "workflows" / "cpu-pipeline.yaml"
    result = invoke("submit", wf, "--site", "dev", "--walltime", "soon")
    assert result.exit_code == 2
    assert "--walltime" in result.stderr


def test_submit_needs_a_site() -> None:
    result = invoke("submit", REPO / "workflows" / "cpu-pipeline.yaml")
    assert result.exit_code == 2
    assert "Missing option '--site'" in result.stderr


# -- status, resume, cancel, logs, report ---------------------------------------

RUN_COMMANDS = [
    ("status", "RUN"),
    ("status", "RUN", "--json"),
    ("resume", "RUN"),
    ("cancel", "RUN"),
    ("logs", "RUN", "greet"),
    ("report", "RUN"),
    ("report", "RUN", "--json"),
]


@pytest.mark.parametrize("argv", RUN_COMMANDS, ids=" ".join)
def test_unknown_run_id(argv: tuple[str, ...]) -> None:
    err = refused(invoke(*[a.replace("RUN", "no-such-run") for a in argv]))
    assert "no run 'no-such-run'" in err


@pytest.mark.parametrize("argv", RUN_COMMANDS, ids=" ".join)
def test_a_directory_without_journal(argv: tuple[str, ...], tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    err = refused(invoke(*[a.replace("RUN", str(tmp_path / "empty")) for a in argv]))
    assert "empty" in err


def test_status_text_and_json(finished: dict[str, Any]) -> None:
    text = invoke("status", finished["run_id"])
    assert text.exit_code == 0
    assert text.stdout.startswith(f"run {finished['run_id']}: succeeded (2 succeeded)")
    result = invoke("status", finished["run_dir"], "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)  # stdout is the JSON object alone
    assert data["run_id"] == finished["run_id"] and data["state"] == "succeeded"
    assert {t["id"] for t in data["tasks"]} == {"greet", "after"}
    attempt = data["tasks"][0]["attempts"][0]
    assert {"n", "start", "end", "exit_code", "failure_class", "node"} <= set(attempt)


def test_logs(finished: dict[str, Any]) -> None:
    result = invoke("logs", finished["run_id"], "greet")
    assert result.exit_code == 0
    assert "hello from greet" in result.stdout
    assert "no logs for task 'nosuch'" in refused(invoke("logs", finished["run_id"], "nosuch"))
    assert "no attempt 7" in refused(invoke("logs", finished["run_id"], "greet", "--attempt", "7"))


def test_report_text_and_json(finished: dict[str, Any], tmp_path: Path) -> None:
    text = invoke("report", finished["run_id"], "--png", tmp_path / "g.png")
    assert text.exit_code == 0, text.output
    assert (tmp_path / "g.png").stat().st_size > 0
    result = invoke("report", finished["run_id"], "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)


def test_cancel_a_finished_run_says_its_state(finished: dict[str, Any]) -> None:
    result = invoke("cancel", finished["run_id"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"run {finished['run_id']}: succeeded"


def test_resume_a_run_from_python_is_refused(tmp_path: Path) -> None:

    Journal.create(
        tmp_path / "r", run_id="py-1", name="py", source=None, site="local", time_scale=None
    ).close()
    assert "started from Python" in refused(invoke("resume", tmp_path / "r"))


# -- sites, doctor, simulate -----------------------------------------------------


def test_sites_list_show_validate_schema() -> None:
    listed = invoke("sites", "list")
    assert listed.exit_code == 0 and "dev" in listed.stdout and "local" in listed.stdout
    shown = invoke("sites", "show", "dev")
    assert shown.exit_code == 0 and "cpu" in shown.stdout
    valid = invoke("sites", "validate", REPO / "site-configs" / "dev.yaml")
    assert valid.exit_code == 0
    schema = invoke("sites", "schema")
    assert json.loads(schema.stdout)["title"] == "Site"


def test_sites_bad_inputs(files: dict[str, Path], tmp_path: Path) -> None:
    assert "unknown site 'nosuch'" in refused(invoke("sites", "show", "nosuch"))
    assert "nope.yaml" in refused(invoke("sites", "validate", files["missing"]))
    bad = tmp_path / "site.yaml"
    bad.write_text("name: x\nkind: slurmy\npartitions: 3\n")
    err = refused(invoke("sites", "validate", bad))  # two errors, one line
    assert "kind" in err and "partitions" in err
    refused(invoke("sites", "validate", files["malformed_yaml"]))


def test_doctor(files: dict[str, Path]) -> None:
    result = invoke("doctor", "--site", "local")
    assert result.exit_code == 0, result.output
    assert "unknown site 'nosuch'" in refused(invoke("doctor", "--site", "nosuch"))


def test_simulate_json_and_bad_traces(files: dict[str, Path]) -> None:
    result = invoke("simulate", "--trace", SEISMOLOGY, "--nodes", "2", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {"mean_wait_s", "makespan_s", "utilization"} <= set(data)
    assert "HPCORCH_TRACES_DIR" in refused(invoke("simulate", "--trace", files["missing"]))
    assert "bad.json" in refused(invoke("simulate", "--trace", files["malformed_json"], "--json"))


def test_unknown_command() -> None:
    result = invoke("frobnicate")
    assert result.exit_code == 2
    assert "No such command 'frobnicate'" in result.stderr
