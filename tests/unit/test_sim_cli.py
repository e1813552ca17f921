"""``hpcorch simulate``: the JSON keys each trace kind prints, and the journal it can write."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from hpcorch.cli.main import cli
from hpcorch.traces import resolve_trace, shipped_traces_dir

KEYS = {"mean_wait_s", "makespan_s", "utilization"}


def _simulate(*args: str) -> dict[str, object]:
    result = CliRunner().invoke(cli, ["simulate", *args, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout.strip().splitlines()[-1])
    assert isinstance(doc, dict)
    assert doc.keys() >= KEYS
    return doc


def test_swf_trace_by_bare_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HPCORCH_TRACES_DIR", raising=False)
    doc = _simulate("--trace", "KTH-SP2-1996-2.1-cln.swf.gz")
    assert doc["kind"] == "swf" and doc["nodes"] == 100 and doc["jobs"] == 28475
    assert Path(str(doc["trace"])).is_relative_to(shipped_traces_dir())  # works from a bare clone
    assert doc["recorded_mean_wait_s"] is not None


def test_philly_slice(tmp_path: Path) -> None:
    rows = itertools.islice(resolve_trace("philly-first-1000.csv").open(), 301)
    path = tmp_path / "philly.csv"
    path.write_text("".join(rows))
    doc = _simulate("--trace", str(path), "--nodes", "64")
    assert doc["kind"] == "philly" and doc["jobs"] == 300 and doc["unit"] == "gpu"


def test_openb_slice_compares_policies(tmp_path: Path) -> None:
    rows = itertools.islice(resolve_trace("openb_pod_list_default.csv").open(), 201)
    path = tmp_path / "openb_pod_list_small.csv"
    path.write_text("".join(rows))
    doc = _simulate("--trace", str(path))
    assert doc["kind"] == "openb" and doc["pods"] == 200
    assert {"packing_alloc_rate", "fgd_alloc_rate", "best_fit_alloc_rate"} <= doc.keys()
    assert 0 < doc["alloc_rate"] <= 1  # type: ignore[operator]


def test_wfformat_workflow_writes_a_journal_status_reads(tmp_path: Path) -> None:
    wf = {
        "name": "tiny",
        "schemaVersion": "1.5",
        "workflow": {
            "specification": {
                "tasks": [
                    {"name": "a", "id": "a", "parents": [], "children": ["b"]},
                    {"name": "b", "id": "b", "parents": ["a"], "children": []},
                ],
                "files": [],
            },
            "execution": {
                "makespanInSeconds": 0,
                "executedAt": "2024-01-01T00:00:00Z",
                "tasks": [
                    {"id": "a", "runtimeInSeconds": 100, "coreCount": 4},
                    {"id": "b", "runtimeInSeconds": 50, "coreCount": 2},
                ],
            },
        },
    }
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(wf))
    run_dir = tmp_path / "run"
    doc = _simulate("--trace", str(path), "--nodes", "2", "--run-dir", str(run_dir))
    assert doc["makespan_s"] == 150.0 and doc["counts"] == {
        "pending": 0,
        "running": 0,
        "succeeded": 2,
        "failed": 0,
        "upstream_failed": 0,
    }
    result = CliRunner().invoke(cli, ["status", str(run_dir), "--json"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)
    assert status["run_id"] == doc["run_id"] and status["state"] == "succeeded"
    assert [t["id"] for t in status["tasks"]] == ["a", "b"]


def test_missing_trace_says_what_to_do() -> None:
    result = CliRunner().invoke(cli, ["simulate", "--trace", "no-such-trace.swf", "--json"])
    assert result.exit_code == 2
    assert "HPCORCH_TRACES_DIR" in result.stderr


def test_scaling_policy_by_name(tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    tasks = "".join(
        f"  - id: t{i}\n    command: [sleep, '60']\n    resources: {{cpus: 4, walltime: 2m}}\n"
        for i in range(16)
    )
    path.write_text(f"name: fan\ntasks:\n{tasks}")
    figures = {s: _simulate("--trace", str(path), "--scaling", s) for s in ("demand", "simple")}
    assert all(f["makespan_s"] for f in figures.values())
    refused = CliRunner().invoke(cli, ["simulate", "--trace", str(path), "--scaling", "eager"])
    assert refused.exit_code == 2


def test_overrun_modes_default_time_and_slurm_conf(tmp_path: Path) -> None:
    swf = tmp_path / "tiny.swf"
    swf.write_text(
        "; MaxProcs: 4\n"
        "1 0 -1 500 4 -1 -1 4 100 -1 1 -1 -1 -1 -1 -1 -1 -1\n"  # overruns 100 s by 400 s
        "2 1 -1 50 2 -1 -1 2 -1 -1 1 -1 -1 -1 -1 -1 -1 -1\n"  # asks for no time
    )
    replayed = _simulate("--trace", str(swf))
    assert replayed["overrun_jobs"] == 1 and replayed["killed_jobs"] == 0
    assert replayed["missing_estimates"] == 1 and replayed["default_time_s"] == 100.0
    killed = _simulate("--trace", str(swf), "--overrun", "kill", "--over-time-limit", "1m")
    assert killed["killed_jobs"] == 1 and killed["makespan_s"] == 160.0 + 50.0
    conf = tmp_path / "slurm.conf"
    conf.write_text("SchedulerType=sched/backfill\nSchedulerParameters=bf_interval=5\n")
    assert _simulate("--trace", str(swf), "--slurm-conf", str(conf))["jobs"] == 2
    bad = CliRunner().invoke(cli, ["simulate", "--trace", str(swf), "--slurm-conf", str(tmp_path)])
    assert bad.exit_code == 2 and "--slurm-conf" in bad.output
    refused = CliRunner().invoke(cli, ["simulate", "--trace", str(swf), "--default-time", "soon"])
    assert refused.exit_code == 2 and "--default-time" in refused.output
