"""WfFormat workflow instances (wfcommons) as a flat list of tasks for the simulator.

Schema 1.5/1.6 splits a task into ``workflow.specification.tasks`` (id,
parents) and ``workflow.execution.tasks`` (``runtimeInSeconds``,
``coreCount``, ``memoryInBytes``); schema 1.4 and older keep one list in
``workflow.tasks`` (or ``workflow.jobs``) with ``runtime``/``cores``. The
simulator only needs ids, parents, cores, memory and runtime, so this reads
just those; the engine's loader owns full validation for live runs.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, NamedTuple

from hpcorch.errors import WorkflowError
from hpcorch.traces._paths import open_text

__all__ = ["WfTask", "read_wfformat"]


class WfTask(NamedTuple):
    id: str
    parents: tuple[str, ...]
    cores: int
    memory: int
    runtime: float


def _lenient_int(value: Any, default: int) -> int:
    try:
        return max(default, int(value))
    except (TypeError, ValueError, OverflowError):
        return default


def _strict_int(value: Any, default: int) -> int:
    """A value that is there must be a finite number (a live run asks for it)."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{value!r:.40} is not a finite number")
    return max(default, int(value))


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def read_wfformat(path: str | os.PathLike[str], *, strict: bool = False) -> list[WfTask]:
    """Return the tasks of a WfFormat instance, parents first is not guaranteed.

    ``strict`` (live runs): a core count or memory that is not a finite number, and
    NaN or Infinity anywhere, are errors; otherwise (replaying traces) they fall
    back to the defaults.
    """
    _int = _strict_int if strict else _lenient_int
    with open_text(path) as fh:
        try:
            doc = json.load(fh, parse_constant=_no_constant if strict else None)
        except json.JSONDecodeError as exc:
            raise WorkflowError(f"{path}: not JSON ({exc}); expected a WfFormat instance") from exc
    wf = doc.get("workflow") if isinstance(doc, dict) else None
    if not isinstance(wf, dict):
        raise WorkflowError(f"{path}: no 'workflow' object; expected a WfFormat instance")
    spec = wf.get("specification")
    if isinstance(spec, dict):
        execution = {t["id"]: t for t in (wf.get("execution") or {}).get("tasks", [])}
        tasks = []
        for t in spec.get("tasks", []):
            ex = execution.get(t["id"], {})
            tasks.append(
                WfTask(
                    str(t["id"]),
                    tuple(str(p) for p in t.get("parents", ())),
                    _int(ex.get("coreCount"), 1),
                    _int(ex.get("memoryInBytes"), 0),
                    float(ex.get("runtimeInSeconds", 0.0)),
                )
            )
        return tasks
    legacy = wf.get("tasks", wf.get("jobs"))
    if not isinstance(legacy, list):
        raise WorkflowError(f"{path}: neither workflow.specification nor workflow.tasks found")
    return [
        WfTask(
            str(t.get("id", t.get("name"))),
            tuple(str(p) for p in t.get("parents", ())),
            _int(t.get("cores"), 1),
            _int(t.get("memory"), 0) * 1024,  # 1.4 records memory in KB
            float(t.get("runtime", t.get("runtimeInSeconds", 0.0))),
        )
        for t in legacy
    ]
