"""hpcorch: run scientific workflows on Slurm clusters.

Importing hpcorch does no work: no Dask cluster, no Slurm call, no file I/O.
The workflow API (``Workflow``, ``load_workflow``) is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hpcorch._version import __version__
from hpcorch.errors import HpcorchError

if TYPE_CHECKING:
    from hpcorch.api import RunResult, TaskFuture, Workflow
    from hpcorch.loaders import load_workflow

__all__ = ["HpcorchError", "RunResult", "TaskFuture", "Workflow", "__version__", "load_workflow"]

_LAZY = {
    "Workflow": "hpcorch.api",
    "TaskFuture": "hpcorch.api",
    "RunResult": "hpcorch.api",
    "load_workflow": "hpcorch.loaders",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hpcorch' has no attribute {name!r}")
