"""Execute validated workflows on Dask: local LocalCluster or Slurm pools.

``run_workflow`` runs in the foreground, ``start_run`` in the background
(returns a :class:`RunHandle`), ``resume_run`` finishes a run whose driver
died, ``cancel_run`` stops one.
"""

from hpcorch.engine.runner import RunSummary, TaskFailure
from hpcorch.engine.session import (
    RunHandle,
    cancel_run,
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
