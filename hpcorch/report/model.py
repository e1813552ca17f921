"""What a run report holds: frozen records, built by :func:`hpcorch.report.build.build_report`.

Times in a :class:`Report` are seconds from the run's start (``t0``, a Unix
time), so renderers never deal with wall clocks. Hours are core-hours and
GPU-hours; ``None`` means "not known" (no allocation recorded, no site shape),
never zero.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = ["OUTCOMES", "AttemptSpan", "Outcome", "Report", "SiteUsage", "TaskDecl"]

Outcome = Literal["succeeded", "failed", "running"]
OUTCOMES: tuple[Outcome, ...] = ("succeeded", "failed", "running")


@dataclass(frozen=True, slots=True)
class TaskDecl:
    """What the workflow declared about a task, when the report can read it."""

    after: tuple[str, ...] = ()
    cpus: int = 1
    gpus: float = 0


@dataclass(frozen=True, slots=True)
class AttemptSpan:
    """One attempt on the timeline: where it ran, when, and how it ended."""

    task_id: str
    n: int
    node: str
    start: float
    end: float
    outcome: Outcome
    failure_class: str | None
    cores: int
    gpus: tuple[int, ...]
    """GPU indices on ``node`` (empty: a CPU attempt, or indices unknown)."""
    log: str | None = None
    """A failed attempt's log file (its ``.err``, else ``.out``); None: none was written."""

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class SiteUsage:
    """What one site's allocations held, and what that costs."""

    site: str
    allocations: int
    node_hours: float
    core_hours: float | None
    """Allocated (None: the site's node shape is unknown)."""
    gpu_hours: float | None
    core_hours_used: float
    gpu_hours_used: float
    su: float | None
    cost: float | None
    currency: str | None


@dataclass(frozen=True, slots=True)
class Report:
    run_id: str
    state: str
    t0: float
    """Unix time the timeline starts at (first allocation or attempt start)."""
    makespan_s: float
    tasks: int
    by_state: dict[str, int]
    failed_attempts_by_class: dict[str, int]
    failed_tasks_by_class: dict[str, int]
    """Tasks that ended failed, by their last attempt's failure class."""
    retries: int
    """Attempts beyond each task's first."""
    tasks_retried: int
    core_hours_used: float
    gpu_hours_used: float
    core_hours_allocated: float | None
    gpu_hours_allocated: float | None
    cpu_utilization: float | None
    gpu_utilization: float | None
    sites: tuple[SiteUsage, ...]
    critical_path: tuple[str, ...] | None
    """Longest chain of dependent tasks by observed span (None: dependencies unknown)."""
    critical_path_s: float | None
    attempts: tuple[AttemptSpan, ...]
    notes: tuple[str, ...]
    """What the report had to assume or could not compute, in words."""
    training_restarts: tuple[str, ...] = ()
    """A training's attempts that resumed from a checkpoint: task, attempt, step, why."""
    gpu_idle_share: float | None = None
    """Share of the NVML-sampled GPU time of the run's trainings spent idle (None: no figures)."""
    gpu_usage: tuple[str, ...] = ()
    """Per training attempt: its GPUs' peak memory and mean utilization, or 'no GPU: why'."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``hpcorch report --json``)."""
        return asdict(self)
