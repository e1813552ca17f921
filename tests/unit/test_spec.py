"""Specs: frozen, validated, one-line errors that name the key and the valid keys."""

from __future__ import annotations

import pydantic
import pytest

from hpcorch.errors import WorkflowError
from hpcorch.spec import MpiSpec, ResourceSpec, TaskSpec, parse_workflow


def _wf(*tasks: dict[str, object]) -> dict[str, object]:
    return {"name": "t", "tasks": list(tasks)}


def test_units_and_kind_inference() -> None:
    spec = parse_workflow(
        _wf(
            {"id": "a", "command": ["echo", 1], "resources": {"memory": "4GiB", "walltime": "10m"}},
            {"id": "b", "function": "os.path:join", "after": ["a"]},
            {"id": "c", "duration": "1m30s", "after": ["b"]},
        )
    )
    a, b, c = spec.tasks
    assert a.kind == "command" and a.command == ("echo", "1")
    assert a.resources.memory == 4 * 1024**3 and a.resources.walltime == 600
    assert b.kind == "function" and c.kind == "emulated" and c.duration == 90


def test_specs_are_frozen() -> None:
    task = TaskSpec(id="a", command=["true"])
    with pytest.raises(pydantic.ValidationError):
        task.retries = 3  # type: ignore[misc]


def test_unknown_task_key_names_key_and_valid_keys() -> None:
    with pytest.raises(WorkflowError) as err:
        parse_workflow(_wf({"id": "prep", "command": ["true"], "retry": 2}))
    msg = str(err.value)
    assert "\n" not in msg
    assert "task 'prep'" in msg and "unknown key 'retry'" in msg
    assert "valid keys: id, kind, command, function" in msg and "retries" in msg


def test_unknown_resource_key_lists_resource_keys() -> None:
    with pytest.raises(WorkflowError, match=r"resources: unknown key 'cpu' \(valid keys: cpus, "):
        parse_workflow(_wf({"id": "a", "command": ["true"], "resources": {"cpu": 2}}))


def test_unknown_top_level_key() -> None:
    with pytest.raises(
        WorkflowError, match=r"unknown key 'taks' \(valid keys: name, site, bundle, tasks\)"
    ):
        parse_workflow({"taks": []})


def test_command_must_be_argv_list() -> None:
    with pytest.raises(WorkflowError, match="must be an argv list"):
        parse_workflow(_wf({"id": "a", "command": "rm -rf /tmp/x"}))


def test_yaml_boolean_in_argv_is_refused() -> None:
    with pytest.raises(WorkflowError, match=r"quote it, e\.g\. 'true'"):
        parse_workflow(_wf({"id": "a", "command": [True]}))


def test_exactly_one_of_command_function_duration() -> None:
    with pytest.raises(WorkflowError, match="give exactly one of"):
        parse_workflow(_wf({"id": "a", "command": ["true"], "duration": 3}))
    with pytest.raises(WorkflowError, match="got none"):
        parse_workflow(_wf({"id": "a"}))


def test_fractional_gpus_are_opt_in() -> None:
    with pytest.raises(pydantic.ValidationError, match="gpu_sharing"):
        ResourceSpec(gpus=0.5)
    assert ResourceSpec(gpus=0.5, gpu_sharing=True).gpus == 0.5


def test_bad_ids_and_missing_id() -> None:
    with pytest.raises(WorkflowError, match="task id 'a b'"):
        parse_workflow(_wf({"id": "a b", "command": ["true"]}))
    with pytest.raises(WorkflowError, match="task #1: id: missing required key"):
        parse_workflow(_wf({"command": ["true"]}))


def test_bad_quantity_says_what_is_expected() -> None:
    with pytest.raises(WorkflowError, match="memory must be a size like"):
        parse_workflow(_wf({"id": "a", "command": ["true"], "resources": {"memory": "lots"}}))


def test_mpi_counts_cores_per_node() -> None:
    task = TaskSpec(id="sim", command=["a.out"], mpi=MpiSpec(ranks=8, ranks_per_node=4))
    assert task.cpus == 4 and task.nodes == 2
    assert TaskSpec(id="s", command=["a.out"], mpi={"ranks": 3}).cpus == 3


def test_duplicate_ids_rejected() -> None:
    with pytest.raises(WorkflowError, match="'a'"):
        parse_workflow(_wf({"id": "a", "command": ["true"]}, {"id": "a", "command": ["true"]}))
