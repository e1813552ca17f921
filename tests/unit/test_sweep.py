"""The YAML ``sweep:`` form and ``Workflow.map``: many tasks from one entry."""

from __future__ import annotations

from pathlib import Path

import pytest

import hpcorch
from hpcorch.errors import WorkflowError
from hpcorch.loaders.sweep import MAX_SWEEP_TASKS, expand_sweeps
from hpcorch.loaders.yamlfile import load_yaml
from hpcorch.placement.fit import distinct_shapes, shape_counts
from hpcorch.spec import TaskRef, resource_twin


def _load(tmp_path: Path, text: str) -> list[object]:
    path = tmp_path / "wf.yaml"
    path.write_text(text)
    return list(load_yaml(path).tasks)


def test_matrix_of_a_function_task(tmp_path: Path) -> None:
    tasks = _load(
        tmp_path,
        "name: s\ntasks:\n"
        "  - {id: sim, function: 'math:hypot', kwargs: {z: 0}, retries: 2,\n"
        "     sweep: {x: {range: [0, 3]}, y: [1, 2]}}\n"
        "  - {id: all, command: [echo, done], after: [sim]}\n",
    )
    sims = [t for t in tasks if t.id.startswith("sim-")]  # type: ignore[attr-defined]
    assert [t.id for t in sims] == [f"sim-{i}" for i in range(6)]  # type: ignore[attr-defined]
    assert sims[3].kwargs == {"z": 0, "x": 1, "y": 2}  # type: ignore[attr-defined]
    assert all(t.retries == 2 for t in sims)  # type: ignore[attr-defined]
    assert tasks[-1].after == tuple(f"sim-{i}" for i in range(6))  # type: ignore[attr-defined]


def test_command_placeholders(tmp_path: Path) -> None:
    tasks = _load(
        tmp_path,
        "name: s\ntasks:\n  - {id: run, command: [sim, --seed, '{seed}', 'out-{seed}.h5'],\n"
        "     sweep: {seed: [7, 8]}}\n",
    )
    assert tasks[1].command == ("sim", "--seed", "8", "out-8.h5")  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ("3", "must map parameter names"),
        ("{seed: []}", "no values"),
        ("{seed: {range: [1]}}", "range takes 2 or 3 integers"),
        ("{seed: {range: [1, 5, 0]}}", "step must not be 0"),
        ("{seed: {rng: [1, 5]}}", "list of values or"),
        ("{'1x': [1]}", "must be a name"),
        ("{seed: [[1, 2]]}", "plain values"),
        ("{other: [1]}", "placeholder {seed} is not a sweep parameter"),
        (
            "{a: {range: [0, 100000]}, b: {range: [0, 1000]}}",
            f"more than {MAX_SWEEP_TASKS:,}",
        ),
    ],
)
def test_bad_sweeps_say_what_to_fix(tmp_path: Path, sweep: str, message: str) -> None:
    with pytest.raises(WorkflowError, match="task 's'") as info:
        _load(tmp_path, f"name: b\ntasks:\n  - id: s\n    command: [echo, '{{seed}}']\n"
              f"    sweep: {sweep}\n")  # fmt: skip
    assert message in str(info.value)


def test_the_first_point_is_validated_as_any_task(tmp_path: Path) -> None:
    with pytest.raises(WorkflowError, match="task 's-0': retries"):
        _load(tmp_path, "name: b\ntasks:\n  - {id: s, function: 'm:f', retries: -1, "
              "sweep: {x: [1]}}\n")  # fmt: skip
    with pytest.raises(WorkflowError, match="both a sweep parameter and in kwargs"):
        _load(tmp_path, "name: b\ntasks:\n  - {id: s, function: 'm:f', kwargs: {x: 1}, "
              "sweep: {x: [1]}}\n")  # fmt: skip
    with pytest.raises(WorkflowError, match="needs an id"):
        expand_sweeps({"tasks": [{"function": "m:f", "sweep": {"x": [1]}}]})
    with pytest.raises(WorkflowError, match="function and command tasks"):
        expand_sweeps({"tasks": [{"id": "s", "duration": 1, "sweep": {"x": [1]}}]})


def test_without_sweep_the_data_is_untouched() -> None:
    data = {"tasks": [{"id": "a", "command": ["true"]}]}
    assert expand_sweeps(data) is data


def inc(x: int, y: int = 0) -> int:
    return x + y


def test_map_declares_one_task_per_item() -> None:
    wf = hpcorch.Workflow("m")
    first = wf.add(inc, 1, id="first")
    futures = wf.map(inc, range(5), iter([10, 20, 30]), cpus=2, retries=1)
    assert [f.id for f in futures] == ["inc-0", "inc-1", "inc-2"]
    spec = wf.spec()
    task = spec.task("inc-2")
    assert task.args == (2, 30) and task.resources.cpus == 2 and task.retries == 1
    # futures among the items: dependencies, as add() makes them
    later = wf.map(inc, [first, 3], id="later")
    assert wf.spec().task("later-0").after == ("first",)
    assert wf.spec().task("later-0").args == (TaskRef(id="first"),)
    assert wf.spec().task("later-1").after == ()
    assert len(later) == 2


def test_map_refuses_what_add_refuses() -> None:
    wf = hpcorch.Workflow("m")
    with pytest.raises(WorkflowError, match="at least one iterable"):
        wf.map(inc)
    wf.map(inc, [1])
    with pytest.raises(WorkflowError, match="already used"):
        wf.map(inc, [1, 2])
    with pytest.raises(WorkflowError, match="more than"):
        wf.map(inc, [0, list(range(2_000_000))], id="big")


def test_a_sweep_shares_one_shape_and_other_tasks_keep_theirs(tmp_path: Path) -> None:
    """Per-shape work (fit checks, pool plans, placements) is done once per sweep."""
    tasks = _load(
        tmp_path,
        "name: s\ntasks:\n"
        "  - {id: sim, function: 'math:hypot', resources: {cpus: 2}, sweep: {x: [1, 2, 3]}}\n"
        "  - {id: run, command: [sim, '{n}'], sweep: {n: [1, 2]}}\n"
        "  - {id: all, command: [echo, done], after: [sim, run]}\n",
    )
    sims, runs, last = tasks[:3], tasks[3:5], tasks[5]
    assert {id(resource_twin(t)) for t in sims} == {id(sims[0])}  # type: ignore[arg-type]
    assert {id(resource_twin(t)) for t in runs} == {id(runs[0])}  # type: ignore[arg-type]
    assert resource_twin(last) is last  # type: ignore[arg-type]
    counted = shape_counts(tasks)  # type: ignore[arg-type]
    assert [(t.id, n) for t, n in counted] == [("sim-0", 3), ("run-0", 2), ("all", 1)]
    assert [t.id for t in distinct_shapes(tasks)] == ["sim-0", "run-0", "all"]  # type: ignore[arg-type]
    assert all(t.cpus == 2 for t in sims)  # type: ignore[attr-defined]
    # a variant given a field of its own beyond id, arguments and command is its own shape
    odd = sims[0].variant(id="odd", retries=5)  # type: ignore[attr-defined]
    assert resource_twin(odd) is odd
