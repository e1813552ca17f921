"""DAG functions: cycles named, unknown dependencies named, order, critical path."""

from __future__ import annotations

import random

import pytest

from hpcorch import dag
from hpcorch.errors import WorkflowError


def test_cycle_is_named_as_a_path() -> None:
    with pytest.raises(WorkflowError) as err:
        dag.validate({"a": ["c"], "b": ["a"], "c": ["b"], "d": []})
    msg = str(err.value)
    assert msg.startswith("the workflow has a cycle: ")
    path = msg.removeprefix("the workflow has a cycle: ").split(" -> ")
    assert path[0] == path[-1] and set(path) == {"a", "b", "c"} and len(path) == 4


def test_self_dependency() -> None:
    with pytest.raises(WorkflowError, match="a -> a"):
        dag.validate({"a": ["a"]})


def test_unknown_dependency_names_both_tasks() -> None:
    with pytest.raises(WorkflowError) as err:
        dag.validate({"prep": [], "sim": ["prp"]})
    assert str(err.value) == "task 'sim' depends on unknown task 'prp'; did you mean 'prep'?"


def test_topological_order_puts_parents_first() -> None:
    parents = {"d": ["b", "c"], "b": ["a"], "c": ["a"], "a": []}
    order = dag.topological_order(parents)
    pos = {t: i for i, t in enumerate(order)}
    assert all(pos[p] < pos[t] for t, ps in parents.items() for p in ps)


def test_critical_path_and_priorities() -> None:
    # a -> long -> end, a -> short -> end: 'long' is on the critical path.
    parents = {"a": [], "long": ["a"], "short": ["a"], "end": ["long", "short"]}
    est = {"a": 1.0, "long": 10.0, "short": 1.0, "end": 1.0}
    rank = dag.critical_path(parents, est)
    assert rank == {"a": 12.0, "long": 11.0, "short": 2.0, "end": 1.0}
    prio = dag.priorities(parents, est)
    assert prio["a"] > prio["long"] > prio["short"] > prio["end"]
    # A user priority outranks the critical path.
    prio = dag.priorities(parents, est, {"short": 1})
    assert prio["short"] > prio["a"]


def test_descendants() -> None:
    children = dag.children_of({"a": [], "b": ["a"], "c": ["b"], "d": []})
    assert dag.descendants(children, ["a"]) == {"b", "c"}


def test_twenty_thousand_tasks() -> None:
    rng = random.Random(1)
    parents = {f"t{i}": [f"t{j}" for j in rng.sample(range(i), min(i, 3))] for i in range(20_000)}
    dag.validate(parents)
    order = dag.topological_order(parents)
    assert len(order) == 20_000
    prio = dag.priorities(parents, {t: 1.0 for t in parents})
    assert prio["t0"] >= prio["t19999"]
    # A long cycle is still found and named.
    parents["t0"] = ["t19999"]
    with pytest.raises(WorkflowError, match="cycle: "):
        dag.validate(parents)
