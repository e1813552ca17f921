"""Loaders: YAML, WfFormat (wfcommons output, 1.4 to 1.6) and Python files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from wfcommons import WorkflowGenerator
from wfcommons.wfchef.recipes import BlastRecipe

from hpcorch.errors import WorkflowError
from hpcorch.loaders import load_workflow

REPO = Path(__file__).resolve().parents[2]


def test_cpu_pipeline_example_loads() -> None:
    spec = load_workflow(REPO / "workflows" / "cpu-pipeline.yaml")
    assert spec.name == "cpu-pipeline"
    assert spec.task("sum").after == ("square-0", "square-1", "square-2", "square-3")
    assert all(t.kind == "command" for t in spec.tasks)


def test_design_example_shape_loads(tmp_path: Path) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text(
        """
name: demo
site: local
tasks:
  - id: prep
    command: [python, prep.py]
    resources: {cpus: 2, memory: 4GiB, gpus: 0, walltime: 10m}
    retries: 2
  - id: sim
    after: [prep]
    command: [python, -m, mpi4py.bench, ringtest]
    mpi: {ranks: 8, ranks_per_node: 4}
  - id: analyse
    after: [sim]
    function: mypkg.analysis:summarise
    resources: {gpus: 1}
"""
    )
    spec = load_workflow(path)
    assert [t.id for t in spec.tasks] == ["prep", "sim", "analyse"]
    assert spec.task("prep").retries == 2 and spec.task("sim").mpi is not None


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ntasks:\n  - id: a\n    command: [true\n")
    with pytest.raises(WorkflowError, match=r"bad.yaml: line \d+"):
        load_workflow(path)


def test_yaml_errors_carry_the_file(tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text("tasks:\n  - {id: a, command: ['true'], after: [b]}\n")
    with pytest.raises(WorkflowError, match=r"wf\.yaml: task 'a' depends on unknown task 'b'"):
        load_workflow(path)


def test_unknown_suffix_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WorkflowError, match="no such workflow file"):
        load_workflow(tmp_path / "nope.yaml")
    (tmp_path / "wf.toml").write_text("")
    with pytest.raises(WorkflowError, match=r"unknown workflow type '\.toml'"):
        load_workflow(tmp_path / "wf.toml")


def _wfcommons_instance(tmp_path: Path) -> Path:

    workflow = WorkflowGenerator(BlastRecipe.from_num_tasks(60)).build_workflow()
    path = tmp_path / "blast.json"
    workflow.write_json(path)
    return path


def test_wfformat_time_scale_makes_emulated_tasks(tmp_path: Path) -> None:
    path = _wfcommons_instance(tmp_path)
    doc = json.loads(path.read_text())
    assert doc["schemaVersion"] in ("1.5", "1.6")
    spec = load_workflow(path, time_scale=0.001)
    runtime = {t["id"]: t["runtimeInSeconds"] for t in doc["workflow"]["execution"]["tasks"]}
    parents = {t["id"]: set(t["parents"]) for t in doc["workflow"]["specification"]["tasks"]}
    assert len(spec.tasks) == len(runtime)
    for task in spec.tasks:
        assert task.kind == "emulated"
        assert task.duration == pytest.approx(runtime[task.id] * 0.001)
        assert set(task.after) == parents[task.id]


def test_wfformat_without_time_scale_runs_commands(tmp_path: Path) -> None:
    spec = load_workflow(_wfcommons_instance(tmp_path))
    assert all(t.kind == "command" for t in spec.tasks)
    assert spec.tasks[0].command is not None and spec.tasks[0].command[0] == "split_fasta"


def test_wfformat_legacy_1_4(tmp_path: Path) -> None:
    path = tmp_path / "old.json"
    path.write_text(
        json.dumps(
            {
                "name": "old",
                "schemaVersion": "1.4",
                "workflow": {
                    "tasks": [
                        {"name": "a", "parents": [], "runtime": 10, "cores": 2, "memory": 1024},
                        {"name": "b", "parents": ["a"], "runtime": 20},
                    ]
                },
            }
        )
    )
    spec = load_workflow(path, time_scale=0.5)
    assert spec.task("a").duration == 5 and spec.task("a").resources.cpus == 2
    assert spec.task("a").resources.memory == 1024 * 1024
    assert spec.task("b").after == ("a",) and spec.task("b").duration == 10


def test_wfformat_not_json(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text("{nope")
    with pytest.raises(WorkflowError, match="not JSON"):
        load_workflow(path, time_scale=1)


def test_python_workflow_file(tmp_path: Path) -> None:
    path = tmp_path / "flow.py"
    path.write_text(
        """
import hpcorch

wf = hpcorch.Workflow("pyflow")

@wf.task(cpus=1)
def double(x):
    return 2 * x

a = double(1)
b = double(a)
wf.add(["echo", "done"], id="echo", after=[b])
"""
    )
    spec = load_workflow(path)
    assert spec.name == "pyflow"
    assert [t.id for t in spec.tasks] == ["double", "double-2", "echo"]
    assert spec.task("double-2").after == ("double",)


def test_python_file_without_workflow(tmp_path: Path) -> None:
    path = tmp_path / "empty.py"
    path.write_text("x = 1\n")
    with pytest.raises(WorkflowError, match="define exactly one module-level Workflow"):
        load_workflow(path)


def test_time_scale_scales_yaml_emulated_tasks(tmp_path: Path) -> None:
    path = tmp_path / "e.yaml"
    path.write_text("tasks:\n  - {id: a, duration: 10}\n")
    assert load_workflow(path, time_scale=0.1).task("a").duration == pytest.approx(1.0)
