"""The ``sweep:`` form of a YAML task: one entry, one task per point of a parameter matrix.

::

    - id: sim
      function: mymodel:simulate
      kwargs: {steps: 100}
      sweep:
        seed: {range: [0, 1000]}     # 0, 1, ..., 999
        alpha: [0.1, 0.5]
    - id: collect
      command: [python, collect.py]
      after: [sim]                   # after every task of the sweep

makes ``sim-0`` ... ``sim-1999`` (the product, last parameter fastest), each
with the point's values added to its ``kwargs``; a command task's argv takes
them through ``{name}`` placeholders (``[simulate, --seed, "{seed}"]``). A task
naming the sweep's id in ``after`` waits for all of its tasks.

The first point is validated as any task is; the others are copies of it that
differ only in id and values (the values themselves are checked once, per
parameter), so a sweep of a million points costs seconds, not minutes.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from hpcorch.errors import WorkflowError
from hpcorch.spec import TaskSpec, check_values, parse_task

__all__ = ["MAX_SWEEP_TASKS", "expand_sweeps"]

MAX_SWEEP_TASKS = 10_000_000
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_SCALARS = (str, int, float, bool)


def _values(task: str, name: str, given: Any) -> list[Any]:
    where = f"task {task!r}: sweep.{name}"
    if isinstance(given, Mapping):
        if set(given) != {"range"}:
            raise WorkflowError(
                f"{where}: give a list of values or {{range: [start, stop(, step)]}}"
            )
        bounds = given["range"]
        if (
            not isinstance(bounds, list | tuple)
            or not 2 <= len(bounds) <= 3
            or not all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)
        ):
            raise WorkflowError(f"{where}: range takes 2 or 3 integers, [start, stop(, step)]")
        if len(bounds) == 3 and bounds[2] == 0:
            raise WorkflowError(f"{where}: a range's step must not be 0")
        values: list[Any] = list(range(*bounds))
    elif isinstance(given, list | tuple):
        values = list(given)
        try:
            check_values(values)
        except ValueError as exc:
            raise WorkflowError(f"{where}: {exc}") from None
    else:
        raise WorkflowError(
            f"{where}: give a list of values or {{range: [start, stop(, step)]}}, "
            f"not {type(given).__name__}"
        )
    if not values:
        raise WorkflowError(f"{where}: no values; a sweep parameter needs at least one")
    return values


def _parameters(task: str, sweep: Any) -> list[tuple[str, list[Any]]]:
    if not isinstance(sweep, Mapping) or not sweep:
        raise WorkflowError(
            f"task {task!r}: sweep must map parameter names to lists of values, "
            "e.g. sweep: {seed: [1, 2, 3]}"
        )
    params = []
    for name, given in sweep.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise WorkflowError(
                f"task {task!r}: sweep parameter {name!r:.60} must be a name (letters, digits, _)"
            )
        params.append((name, _values(task, name, given)))
    total = math.prod(len(v) for _, v in params)
    if total > MAX_SWEEP_TASKS:
        raise WorkflowError(
            f"task {task!r}: the sweep makes {total:,} tasks, more than {MAX_SWEEP_TASKS:,}; "
            "split it into several workflows"
        )
    return params


def _argv(task: str, command: Sequence[Any], names: set[str]) -> None:
    for arg in command:
        for used in _PLACEHOLDER.findall(str(arg)):
            if used not in names:
                raise WorkflowError(
                    f"task {task!r}: command placeholder {{{used}}} is not a sweep parameter "
                    f"(parameters: {', '.join(sorted(names))})"
                )


def _fill(command: Sequence[str], point: Mapping[str, Any]) -> tuple[str, ...]:
    # A plain substitution, not str.format: no attribute or index lookups in user text.
    return tuple(_PLACEHOLDER.sub(lambda m: str(point[m.group(1)]), arg) for arg in command)


def _sweep_tasks(entry: Mapping[str, Any], after: tuple[str, ...]) -> list[TaskSpec]:
    task = str(entry["id"])
    params = _parameters(task, entry["sweep"])
    names = [n for n, _ in params]
    base = {k: v for k, v in entry.items() if k != "sweep"}
    base["after"] = list(after)
    command = base.get("command")
    if base.get("function") is not None:
        clash = set(names) & set(base.get("kwargs") or {})
        if clash:
            raise WorkflowError(
                f"task {task!r}: {sorted(clash)[0]!r} is both a sweep parameter and in kwargs"
            )
    elif isinstance(command, list | tuple):
        for name, values in params:
            for v in values:
                if not isinstance(v, _SCALARS):
                    raise WorkflowError(
                        f"task {task!r}: sweep.{name}: a command takes plain values "
                        f"(numbers, strings), not {type(v).__name__}"
                    )
                if isinstance(v, str) and "\0" in v:
                    raise WorkflowError(f"task {task!r}: sweep.{name}: a value contains NUL")
        _argv(task, command, set(names))
    else:
        raise WorkflowError(
            f"task {task!r}: sweep applies to function and command tasks (give function or command)"
        )
    tasks: list[TaskSpec] = []
    template: TaskSpec | None = None
    for i, combo in enumerate(itertools.product(*(v for _, v in params))):
        point = dict(zip(names, combo, strict=True))
        update: dict[str, Any] = {"id": f"{task}-{i}"}
        if command is None:
            update["kwargs"] = {**(base.get("kwargs") or {}), **point}
        else:
            update["command"] = _fill([str(a) for a in command], point)
        if template is None:
            template = parse_task({**base, **update})
            tasks.append(template)
        else:
            tasks.append(template.variant(**update))
    return tasks


def expand_sweeps(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """``data`` (a parsed YAML workflow) with each ``sweep:`` entry replaced by its tasks
    (built :class:`~hpcorch.spec.TaskSpec` objects) and ``after`` naming a sweep expanded."""
    tasks = data.get("tasks")
    if not isinstance(tasks, list) or not any(
        isinstance(t, Mapping) and "sweep" in t for t in tasks
    ):
        return data
    groups: dict[str, list[str]] = {}
    for entry in tasks:
        if isinstance(entry, Mapping) and "sweep" in entry:
            task = entry.get("id")
            if not isinstance(task, str):
                raise WorkflowError("a task with sweep needs an id (its tasks are <id>-0, ...)")
            count = math.prod(len(v) for _, v in _parameters(task, entry["sweep"]))
            groups[task] = [f"{task}-{i}" for i in range(count)]
    out: list[Any] = []
    for entry in tasks:
        if not isinstance(entry, Mapping):
            out.append(entry)
            continue
        after = entry.get("after", ())
        if isinstance(after, list | tuple) and any(a in groups for a in after):
            after = tuple(x for a in after for x in groups.get(a, [a]))
        if "sweep" in entry:
            out.extend(_sweep_tasks(entry, tuple(after)))
        else:
            out.append({**entry, "after": after} if "after" in entry else entry)
    if len(out) > MAX_SWEEP_TASKS:
        raise WorkflowError(f"the workflow has {len(out):,} tasks, more than {MAX_SWEEP_TASKS:,}")
    return {**data, "tasks": out}
