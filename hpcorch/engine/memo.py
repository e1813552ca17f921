"""Content hashes for opt-in memoization (``memoize: true``).

A function task hashes its qualified name, its source and its arguments; a
command hashes its argv, environment, working directory and the contents of
its declared ``inputs``; an emulated task its duration and resources. Each
hash includes the hashes of the task's parents, so a task is only memoized
when all its parents are too.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hpcorch.errors import WorkflowError
from hpcorch.spec import TaskRef, TaskSpec

__all__ = ["memo_keys"]

logger = logging.getLogger(__name__)


def _function_identity(fn: Any) -> bytes:
    if isinstance(fn, str):
        return fn.encode()
    name = f"{getattr(fn, '__module__', '')}:{getattr(fn, '__qualname__', repr(fn))}"
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):
        source = ""
    return f"{name}\n{source}".encode()


def _replace_refs(value: Any, keys: Mapping[str, str]) -> Any:
    if isinstance(value, TaskRef):
        return ("hpcorch-ref", keys[value.id])
    if isinstance(value, list | tuple):
        return type(value)(_replace_refs(v, keys) for v in value)
    if isinstance(value, dict):
        return {k: _replace_refs(v, keys) for k, v in sorted(value.items())}
    return value


def _task_key(task: TaskSpec, parent_keys: Mapping[str, str]) -> str:
    h = hashlib.sha256()
    h.update(f"{task.task_kind}\0".encode())
    if task.function is not None:
        h.update(_function_identity(task.function))
        try:
            h.update(pickle.dumps(_replace_refs((task.args, task.kwargs), parent_keys), protocol=4))
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise WorkflowError(
                f"task {task.id!r}: memoize needs picklable arguments ({exc}); set memoize: false"
            ) from None
    if task.command is not None:
        h.update("\0".join(task.command).encode())
        h.update(repr(sorted(task.env.items())).encode())
        h.update(repr(task.cwd).encode())
        for name in task.inputs:
            path = Path(task.cwd or ".") / name
            try:
                h.update(path.read_bytes())
            except OSError as exc:
                raise WorkflowError(
                    f"task {task.id!r}: input {name!r} cannot be read ({exc.strerror})"
                ) from None
    if task.duration is not None:
        h.update(repr((task.duration, task.resources.model_dump())).encode())
    for parent in sorted(set(task.after)):
        h.update(parent_keys[parent].encode())
    return h.hexdigest()


def memo_keys(tasks: Mapping[str, TaskSpec], order: Sequence[str]) -> dict[str, str]:
    """Hashes of the memoized tasks whose parents are all memoized, in ``order``."""
    keys: dict[str, str] = {}
    for task_id in order:
        task = tasks[task_id]
        if not task.memoize:
            continue
        missing = [p for p in task.after if p not in keys]
        if missing:
            logger.warning(
                "task %s is not memoized: its parent %s is not memoized", task_id, missing[0]
            )
            continue
        keys[task_id] = _task_key(task, keys)
    return keys
