"""Execute validated workflows on Dask: local LocalCluster or Slurm pools.

``run_workflow`` runs in the foreground, ``start_run`` in the background
(returns a :class:`RunHandle`), ``resume_run`` finishes a run whose driver
died, ``cancel_run`` stops one.

Names are loaded on first use: ``hpcorch cancel`` needs ``cancel_run`` alone,
not the engine and Dask behind the others (a second of start-up).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpcorch.engine.cancel import cancel_run
    from hpcorch.engine.runner import RunSummary, TaskFailure
    from hpcorch.engine.session import (
        RunHandle,
        resume_run,
        run_workflow,
        start_run,
        validate_run,
    )

__all__ = [
    "RunHandle",
    "RunSummary",
    "TaskFailure",
    "cancel_run",
    "resume_run",
    "run_workflow",
    "start_run",
    "validate_run",
]

_HOME = {
    "cancel_run": "cancel",
    "RunSummary": "runner",
    "TaskFailure": "runner",
    "RunHandle": "session",
    "resume_run": "session",
    "run_workflow": "session",
    "start_run": "session",
    "validate_run": "session",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"hpcorch.engine.{home}"), name)
