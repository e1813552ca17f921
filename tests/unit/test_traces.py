"""Trace readers on the public traces shipped in hpcorch/data/traces and on hand-written files."""

from __future__ import annotations

import gzip
import itertools
import json
import tomllib
from pathlib import Path

import pytest

from hpcorch.errors import SpecError, WorkflowError
from hpcorch.traces import (
    TraceKind,
    detect_kind,
    read_openb_nodes,
    read_openb_pods,
    read_philly,
    read_swf,
    read_swf_header,
    read_wfformat,
    resolve_trace,
    search_dirs,
    shipped_traces_dir,
    traces_dir,
)

KTH = "KTH-SP2-1996-2.1-cln.swf.gz"
PHILLY = "philly-first-1000.csv"
REPO = Path(__file__).resolve().parents[2]


def test_traces_dir_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HPCORCH_TRACES_DIR", str(tmp_path))
    assert traces_dir() == tmp_path
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.swf").write_text("1 0 0 1 1 -1 -1 1 1 -1 1 -1 -1 -1 -1 -1 -1 -1\n")
    assert resolve_trace("x.swf") == tmp_path / "sub" / "x.swf"
    with pytest.raises(FileNotFoundError, match="HPCORCH_TRACES_DIR"):
        resolve_trace("missing.swf")


def test_bare_names_find_the_shipped_copies(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # What a bare clone or an install sees: nothing at ../shared, the shipped copies found.
    shipped = shipped_traces_dir()
    monkeypatch.delenv("HPCORCH_TRACES_DIR", raising=False)
    assert search_dirs()[0] == shipped
    assert resolve_trace(KTH) == shipped / "pwa" / KTH
    assert resolve_trace("alibaba-gpu-2023/openb_pod_list_default.csv").is_relative_to(shipped)
    monkeypatch.setenv("HPCORCH_TRACES_DIR", str(tmp_path))  # an empty folder of the user's
    assert resolve_trace(PHILLY) == shipped / "philly" / PHILLY
    (tmp_path / KTH).write_bytes(b"")  # the user's folder wins over the shipped copies
    assert resolve_trace(KTH) == tmp_path / KTH


def test_shipped_traces_are_package_data() -> None:
    """Every file under hpcorch/data/traces matches a package-data glob, so wheels carry it."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["hpcorch"]
    package = REPO / "hpcorch"
    shipped = {p for p in shipped_traces_dir().rglob("*") if p.is_file()}
    covered = {p for pattern in globs for p in package.glob(pattern) if p.is_file()}
    assert shipped and shipped <= covered, sorted(str(p) for p in shipped - covered)
    assert sum(p.stat().st_size for p in shipped) < 1_600_000  # small enough to ship


def test_swf_kth_first_jobs_and_header() -> None:
    path = resolve_trace(KTH)
    first = list(itertools.islice(read_swf(path), 3))
    assert first[0].job_id == 15
    assert first[0].submit == 599850 and first[0].wait == 192180 and first[0].run == 3477
    assert first[0].procs == 4 and first[0].req_procs == 4 and first[0].req_time == 53940
    assert first[0].status == 1
    assert first[2].status == 0
    header = read_swf_header(path)
    assert header["MaxNodes"] == "100"
    assert detect_kind(path) is TraceKind.SWF


def test_swf_rejects_short_lines(tmp_path: Path) -> None:
    bad = tmp_path / "bad.swf.gz"
    with gzip.open(bad, "wt") as fh:
        fh.write("; Version: 2\n1 2 3\n")
    with pytest.raises(SpecError, match="18 fields"):
        list(read_swf(bad))


def test_openb_pods_and_nodes() -> None:
    pods = list(itertools.islice(read_openb_pods(resolve_trace("openb_pod_list_default.csv")), 3))
    assert pods[1].name == "openb-pod-0001"
    assert (pods[1].cpu_milli, pods[1].memory_mib, pods[1].num_gpu, pods[1].gpu_milli) == (
        6000,
        12288,
        1,
        460,
    )
    assert pods[1].phase == "Running" and pods[1].creation == 427061
    short = next(read_openb_pods(resolve_trace("openb_pod_list_multigpu50.csv")))
    assert short.phase == "" and short.creation == -1
    nodes = list(read_openb_nodes(resolve_trace("openb_node_list_gpu_node.csv")))
    assert len(nodes) == 1213
    assert sum(n.gpus for n in nodes) == 6212
    assert detect_kind(resolve_trace("openb_pod_list_default.csv")) is TraceKind.OPENB


def test_philly_first_rows() -> None:
    path = resolve_trace(PHILLY)
    job = next(read_philly(path))
    assert job.duration == 66.0 and job.gpus == 1 and job.cluster == "11cb48"
    assert job.submit == 1507532515.0  # 2017-10-09 07:01:55 UTC
    assert detect_kind(path) is TraceKind.PHILLY


def _wf15() -> dict[str, object]:
    return {
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
                "makespanInSeconds": 3,
                "executedAt": "2024-01-01T00:00:00Z",
                "tasks": [
                    {"id": "a", "runtimeInSeconds": 1.5, "coreCount": 2},
                    {"id": "b", "runtimeInSeconds": 2.0, "memoryInBytes": 1024},
                ],
            },
        },
    }


def test_wfformat_15_and_legacy(tmp_path: Path) -> None:
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(_wf15()))
    tasks = read_wfformat(path)
    assert [(t.id, t.parents, t.cores, t.memory, t.runtime) for t in tasks] == [
        ("a", (), 2, 0, 1.5),
        ("b", ("a",), 1, 1024, 2.0),
    ]
    assert detect_kind(path) is TraceKind.WFFORMAT
    legacy = tmp_path / "old.json"
    legacy.write_text(
        json.dumps(
            {"workflow": {"tasks": [{"name": "x", "runtime": 4, "cores": 3, "parents": []}]}}
        )
    )
    (task,) = read_wfformat(legacy)
    assert (task.id, task.cores, task.runtime) == ("x", 3, 4.0)
    broken = tmp_path / "broken.json"
    broken.write_text("{}")
    with pytest.raises(WorkflowError, match="WfFormat"):
        read_wfformat(broken)
