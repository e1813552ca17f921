"""WfFormat instances (what wfcommons writes, schema 1.4 to 1.6) as hpcorch workflows.

With a ``time_scale`` each task becomes emulated: it holds its ``coreCount``
cores (and ``memoryInBytes``, as a request) for ``runtimeInSeconds *
time_scale`` seconds. Without one, each task runs its recorded command
(``program`` + ``arguments``), which only makes sense where those programs exist.

A task may carry hpcorch's extension field ``"hpcorch": {"distributed": {...}}``
(the keys of :class:`hpcorch.spec.DistributedSpec`): a torch.distributed training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hpcorch.errors import WorkflowError
from hpcorch.spec import WorkflowSpec, parse_workflow
from hpcorch.traces.wfformat import read_wfformat

__all__ = ["load_wfformat"]


def _doc_tasks(path: Path, *, specification: bool = False) -> list[dict[str, Any]]:
    doc = json.loads(path.read_text())
    wf = doc.get("workflow", {})
    tasks: list[dict[str, Any]] = (wf.get("execution") or {}).get("tasks") or wf.get("tasks") or []
    if specification:
        tasks = [*((wf.get("specification") or {}).get("tasks") or []), *tasks]
    return [t for t in tasks if isinstance(t, dict)]


def _distributed(path: Path) -> dict[str, Any]:
    """Each task's ``hpcorch.distributed`` extension field, by task id."""
    found: dict[str, Any] = {}
    for t in _doc_tasks(path, specification=True):
        ext = t.get("hpcorch")
        if isinstance(ext, dict) and "distributed" in ext:
            found[str(t.get("id", t.get("name")))] = ext["distributed"]
    return found


def _commands(path: Path) -> dict[str, list[str]]:
    tasks = _doc_tasks(path)
    argv: dict[str, list[str]] = {}
    for t in tasks:
        cmd = t.get("command") or {}
        program = cmd.get("program") or t.get("name")
        if program:
            args = [str(a) for a in cmd.get("arguments", ())]
            argv[str(t.get("id", t.get("name")))] = [str(program), *args]
    return argv


def load_wfformat(path: Path, time_scale: float | None) -> WorkflowSpec:
    tasks = read_wfformat(path, strict=True)
    commands = _commands(path) if time_scale is None else {}
    distributed = _distributed(path) if time_scale is None else {}
    items: list[dict[str, Any]] = []
    for t in tasks:
        item: dict[str, Any] = {
            "id": t.id,
            "after": list(t.parents),
            "resources": {"cpus": t.cores, "memory": t.memory},
            "tags": ["wfformat"],
        }
        if time_scale is not None:
            item["duration"] = t.runtime * time_scale
        elif t.id in commands:
            item["command"] = commands[t.id]
            item["resources"]["walltime"] = max(t.runtime, 1.0)
            if t.id in distributed:
                item["distributed"] = distributed[t.id]
        else:
            raise WorkflowError(
                f"{path}: task {t.id!r} has no command; run with --time-scale F to emulate it"
            )
        items.append(item)
    try:
        return parse_workflow({"name": path.stem, "tasks": items})
    except WorkflowError as exc:
        raise WorkflowError(f"{path}: {exc}") from None
