"""Bad input never escapes the contract: it loads, or the command exits 2 with one line.

Three layers: a corpus of hostile files (``tests/unit/data/fuzz/``, every case a
review found) through the real ``hpcorch run`` entry point in this process; a few
of them again as a real subprocess (its exit code and stderr); and Hypothesis over
the YAML, WfFormat and Python-facing loaders and the CLI's run-id, run-directory
and task arguments. Nothing may create a run directory or start a worker.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpcorch.cli.main import cli
from hpcorch.engine.rundir import new_run_dir, runs_root
from hpcorch.errors import HpcorchError, SpecError
from hpcorch.journal import Journal
from hpcorch.loaders import load_workflow
from hpcorch.sites import load_site
from hpcorch.spec import MAX_RETRIES, WorkflowSpec
from tests.unit.cli_helpers import hpcorch_exit, no_runs_home

CORPUS = Path(__file__).parent / "data" / "fuzz"
CASES = sorted(p.name for p in CORPUS.iterdir())
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Runs go under tmp; starting a pool or creating a journal fails the test."""

    def started(*args: object, **kwargs: object) -> None:
        raise AssertionError("bad input started a run")

    monkeypatch.setattr("hpcorch.engine.session.Journal.create", started)
    return no_runs_home(tmp_path, monkeypatch)


_hpcorch = hpcorch_exit


def _one_error_line(err: str) -> None:
    assert "Traceback" not in err, err
    assert err.count("\n") == 1 and err.startswith("hpcorch: error: "), err


def _run_argv(name: str) -> list[str]:
    # WfFormat tasks without commands run emulated; --time-scale reaches every check
    return ["run", str(CORPUS / name), "--site", "local"] + (
        ["--time-scale", "1"] if name.endswith(".json") else []
    )


@pytest.mark.parametrize("name", CASES)
def test_corpus_exits_2_with_one_line(
    name: str, home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _hpcorch(monkeypatch, *_run_argv(name)) == 2
    out, err = capsys.readouterr()
    assert out == ""
    _one_error_line(err)
    assert not (home / "runs").exists(), "a run directory was created for bad input"


def test_corpus_holds_every_reported_case() -> None:
    reported = {
        "deep-nesting.yaml",
        "deep-nesting.json",
        "memory-inf.yaml",
        "gpus-inf.yaml",
        "runtime-nan.json",
        "runtime-infinity.json",
        "runtime-string.json",
        "build-raises.py",
        "sys-exit-0.py",
        "alias-bomb.yaml",
        "env-key-equals.yaml",
        "env-key-nul.yaml",
        "cwd-missing.yaml",
        "walltime-inf.yaml",
        "duplicate-key.yaml",
        "retries-huge.yaml",
        "id-newline.yaml",
    }
    assert reported <= set(CASES)


# -- the real process: exit code and stderr as a shell sees them --------------------


def _journal(run_dir: Path) -> None:
    Journal.create(
        run_dir, run_id=run_dir.name, name="w", source=None, site="local", time_scale=None
    ).close()


def test_subprocess_exit_codes(tmp_path: Path) -> None:
    """What a shell sees: exit 2 and one line on stderr."""
    home = tmp_path / "home"
    run = home / "runs" / "r1"
    _journal(run)
    (home / "runs" / "damaged").mkdir()
    (home / "runs" / "damaged" / "journal.sqlite").write_bytes(b"not a database")
    ok = tmp_path / "ok.yaml"
    ok.write_text("tasks:\n  - {id: a, command: ['true']}\n")
    exe = Path(sys.executable).parent / "hpcorch"
    cases = [  # each costs an interpreter start: the rest run in this process
        _run_argv("sys-exit-0.py"),
        ["run", str(ok), "--site", "local", "--run-id", "../../../x"],
        ["logs", "r1", "*"],
        ["status", "damaged"],
    ]
    env = {**os.environ, "HPCORCH_HOME": str(home)}
    for argv in cases:
        proc = subprocess.run(
            [str(exe), *argv], capture_output=True, text=True, env=env, timeout=60, check=False
        )
        assert proc.returncode == 2, (argv, proc.stderr)
        _one_error_line(proc.stderr)
    assert sorted(p.name for p in (home / "runs").iterdir()) == ["damaged", "r1"]
    assert not (tmp_path / "x").exists()


# -- Hypothesis: the loaders ------------------------------------------------------

HOSTILE = [
    "$(touch pwn)",
    "`id`",
    "a\nb",
    "a\0b",
    "../x",
    "/abs",
    "*",
    "",
    " ",
    "A=B",
    "inf",
    "nan",
    "1e400",
    "-1",
    "10m",
    "4GiB",
    "x" * 300,
]
_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    _text,
    st.sampled_from(HOSTILE),
)
_value = st.recursive(
    _scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_resources = st.fixed_dictionaries(
    {},
    optional={k: _scalar for k in ("cpus", "memory", "gpus", "nodes", "walltime", "gpu_sharing")},
)
_task = st.fixed_dictionaries(
    {"id": _scalar | st.sampled_from(["a", "b_1", "x.y"])},
    optional={
        "command": st.lists(_scalar, max_size=3) | _scalar,
        "function": _scalar | st.just("os:getcwd"),
        "duration": _scalar,
        "kwargs": st.dictionaries(_text, _value, max_size=3) | _scalar,
        "env": st.dictionaries(_text | st.sampled_from(HOSTILE), _scalar, max_size=3) | _scalar,
        "cwd": _scalar,
        "retries": _scalar,
        "priority": _scalar,
        "after": st.lists(_scalar, max_size=2),
        "resources": _resources | _scalar,
        "mpi": st.fixed_dictionaries({"ranks": _scalar}, optional={"gpus_per_rank": _scalar}),
        "qos": _scalar | st.just("regular"),
        "constraint": _scalar | st.sampled_from(["gpu&hbm80g", "[a|b]"]),
        "reservation": _scalar,
        "account": _scalar | st.just("m1234"),
        "exclusive": _scalar,
        "container": st.fixed_dictionaries(
            {"runtime": _scalar | st.sampled_from(["podman", "apptainer", "shifter"])},
            optional={
                "image": _scalar | st.just("/nonexistent/i.sif"),
                "binds": st.lists(_scalar | st.just("/nonexistent:/d"), max_size=2) | _scalar,
                "flags": st.lists(_scalar, max_size=2),
                "python": _scalar,
            },
        )
        | _scalar,
        "modules": st.lists(_scalar | st.just("hpcorch-fuzz/1"), max_size=2) | _scalar,
        "module_purge": _scalar,
        "setup": _scalar,
        "extra": _value,
    },
)


def _check_loaded(spec: WorkflowSpec) -> None:
    """What loaded satisfies the contract downstream relies on."""
    for task in spec.tasks:
        assert "\n" not in task.id and "/" not in task.id and task.id[0] not in ".-"
        r = task.resources
        assert math.isfinite(r.gpus) and (r.walltime is None or math.isfinite(r.walltime))
        assert task.duration is None or math.isfinite(task.duration)
        assert 0 <= task.retries <= MAX_RETRIES
        assert all(k.isidentifier() and "\0" not in v for k, v in task.env.items())
        # Slurm knobs reach #SBATCH lines: plain words, no whitespace, no leading dash
        for value in task.slurm_knobs.values():
            if isinstance(value, str):
                assert value and value[0] != "-" and not any(c.isspace() for c in value)
                assert not any(c in value for c in "$`;'\"\\")


def _load_or_refuse(path: Path, time_scale: float | None = None) -> None:
    try:
        spec = load_workflow(path, time_scale=time_scale)
    except HpcorchError as exc:
        assert exc.exit_code == 2, exc
        assert "\n" not in str(exc), str(exc)
        return
    _check_loaded(spec)


@FUZZ
@given(tasks=st.lists(_task, min_size=1, max_size=3))
def test_yaml_tasks_load_or_refuse(tasks: list[dict[str, Any]], tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump({"tasks": tasks}, allow_unicode=True))
    _load_or_refuse(path)


@FUZZ
@given(text=st.text(max_size=200) | st.sampled_from(["tasks:\n  - " + h for h in HOSTILE]))
def test_yaml_text_loads_or_refuses(text: str, tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(text, errors="surrogatepass")
    _load_or_refuse(path)


@FUZZ
@given(
    runtime=_scalar,
    cores=_scalar,
    memory=_scalar,
    task_id=_scalar,
    parents=_value,
    scale=st.sampled_from([None, 0.01]),
)
def test_wfformat_loads_or_refuses(
    runtime: Any, cores: Any, memory: Any, task_id: Any, parents: Any, scale: Any, tmp_path: Path
) -> None:
    doc = {
        "name": "w",
        "schemaVersion": "1.5",
        "workflow": {
            "specification": {"tasks": [{"id": task_id, "parents": parents, "children": []}]},
            "execution": {
                "tasks": [
                    {
                        "id": task_id,
                        "runtimeInSeconds": runtime,
                        "coreCount": cores,
                        "memoryInBytes": memory,
                        "command": {"program": "true", "arguments": []},
                    }
                ]
            },
        },
    }
    path = tmp_path / "wf.json"
    try:
        path.write_text(json.dumps(doc))
    except (TypeError, ValueError):  # an id json cannot key (e.g. a dict)
        return
    _load_or_refuse(path, scale)


# -- Hypothesis: the CLI's run id, run directory and task arguments ---------------------


@FUZZ
@given(run_id=_text | st.sampled_from(HOSTILE))
def test_run_ids_stay_in_the_runs_directory(
    run_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HPCORCH_HOME", str(tmp_path / "home"))
    try:
        got, path = new_run_dir("w", load_site("local"), run_id=run_id)
    except SpecError as exc:
        assert "\n" not in str(exc)
    else:
        assert got == run_id and path.parent == runs_root() and path.name == run_id
    assert not (tmp_path / "home").exists()


@FUZZ
@given(path=_text | st.sampled_from(HOSTILE))
def test_slurm_run_dirs_are_plain_words(path: str) -> None:
    try:
        _, got = new_run_dir("w", load_site("dev"), run_dir=path or ".")
    except SpecError as exc:
        assert "\n" not in str(exc)
    else:
        assert shlex.quote(str(got)) == str(got) and "%" not in str(got)


@pytest.fixture
def one_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HPCORCH_HOME", str(tmp_path / "home"))
    run = tmp_path / "home" / "runs" / "r1"
    _journal(run)
    (run / "logs").mkdir()
    return run


@FUZZ
@given(task=_text | st.sampled_from(HOSTILE))
def test_logs_task_argument(task: str, one_run: Path) -> None:
    result = CliRunner().invoke(cli, ["logs", "r1", task])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    _one_error_line(result.stderr)


@FUZZ
@given(ref=_text | st.sampled_from(HOSTILE))
def test_run_argument(ref: str, one_run: Path) -> None:
    for command in ("status", "resume", "cancel", "report"):
        result = CliRunner().invoke(cli, [command, ref])
        if ref in ("r1", str(one_run)):
            continue
        assert result.exit_code == 2, (command, result.output)
        _one_error_line(result.stderr)


# -- site rules: new site keys, override files and --account/--qos ------------------

_SITE_KEYS = st.fixed_dictionaries(
    {},
    optional={
        "account": _scalar | st.just("m1234"),
        "account_required": _scalar,
        "qos": _scalar | st.just("regular"),
        "default_qos": _scalar,
        "reservation": _scalar,
        "submit": st.fixed_dictionaries(
            {},
            optional={
                k: _scalar
                for k in ("partition", "qos", "constraint", "walltime_s", "cpus", "memory")
            },
        )
        | _scalar,
        "partitions": st.fixed_dictionaries(
            {},
            optional={
                "gpu": st.fixed_dictionaries(
                    {},
                    optional={
                        "gpu_request": _scalar | st.sampled_from(["gres", "gpus", "gpus-per-task"]),
                        "gpu_bind": _scalar | st.just("closest"),
                        "qos": _scalar,
                        "reservation": _scalar,
                        "constraint": _scalar,
                        "gres": _scalar,
                        "select_by_name": _scalar,
                        "walltime_bins": st.lists(
                            st.fixed_dictionaries(
                                {"max_nodes": _scalar, "max_walltime_s": _scalar}
                            ),
                            max_size=2,
                        )
                        | _scalar,
                    },
                )
            },
        ),
    },
)


@FUZZ
@given(keys=_SITE_KEYS)
def test_site_overrides_plan_or_refuse(
    keys: dict[str, Any], home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user file over the shipped dev site (extends: dev): ``hpcorch plan`` prints a plan
    whose #SBATCH lines are single plain lines, or exits 2 with one line."""
    site = tmp_path / "mine.yaml"
    site.write_text(yaml.safe_dump({"extends": "dev", **keys}))
    wf = tmp_path / "wf.yaml"
    wf.write_text(
        "name: w\ntasks:\n  - {id: a, duration: 1, resources: {gpus: 1}}\n"
        "  - {id: b, duration: 1, mpi: {ranks: 2, ranks_per_node: 1}}\n"
    )
    result = CliRunner().invoke(cli, ["plan", str(wf), "--site", str(site)])
    if result.exit_code == 0:
        for line in result.stdout.splitlines():
            if line.strip().startswith("#SBATCH"):
                assert "\0" not in line and "`" not in line and "$(" not in line, line
        return
    assert result.exit_code == 2, (result.output, result.exception)
    _one_error_line(result.stderr)


@FUZZ
@given(account=_text | st.sampled_from(HOSTILE), qos=_text | st.sampled_from(HOSTILE))
def test_account_and_qos_options(account: str, qos: str, home: Path, tmp_path: Path) -> None:
    wf = tmp_path / "wf.yaml"
    wf.write_text("name: w\ntasks:\n  - {id: a, duration: 1}\n")
    args = ["plan", str(wf), "--site", "dev", "--account", account, "--qos", qos]
    result = CliRunner().invoke(cli, args)
    if result.exit_code == 0:
        assert f"#SBATCH -A {account.strip()}\n" in result.stdout or not account.strip()
        return
    assert result.exit_code == 2, (result.output, result.exception)
    _one_error_line(result.stderr)
