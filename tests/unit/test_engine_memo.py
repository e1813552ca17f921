"""Memo hashes: same inputs, same hash; a change anywhere upstream, a new one."""

from __future__ import annotations

from pathlib import Path

from hpcorch import dag
from hpcorch.engine.memo import memo_keys
from hpcorch.spec import WorkflowSpec, parse_workflow


def _keys(spec: WorkflowSpec) -> dict[str, str]:
    return memo_keys(spec.by_id(), dag.topological_order({t.id: t.after for t in spec.tasks}))


def _spec(data: str, tmp_path: Path, arg: str = "1") -> WorkflowSpec:
    return parse_workflow(
        {
            "tasks": [
                {
                    "id": "a",
                    "command": ["cat", "in.txt"],
                    "inputs": ["in.txt"],
                    "cwd": str(tmp_path),
                    "memoize": True,
                },
                {
                    "id": "b",
                    "function": "os.path:join",
                    "args": [arg],
                    "after": ["a"],
                    "memoize": True,
                },
                {"id": "c", "command": ["true"], "after": ["b"]},
                {"id": "d", "command": ["true"], "after": ["c"], "memoize": True},
            ]
        }
    )


def test_same_inputs_same_hash_and_input_changes_propagate(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("one")
    first = _keys(_spec("one", tmp_path))
    assert set(first) == {"a", "b"}  # d has a parent that is not memoized
    assert _keys(_spec("one", tmp_path)) == first
    (tmp_path / "in.txt").write_text("two")
    second = _keys(_spec("two", tmp_path))
    assert second["a"] != first["a"] and second["b"] != first["b"]


def test_function_arguments_enter_the_hash(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("x")
    assert _keys(_spec("x", tmp_path, "1"))["b"] != _keys(_spec("x", tmp_path, "2"))["b"]
