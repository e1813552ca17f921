"""The scheduler settings of a ``slurm.conf`` that change predicted waits.

``SchedulerType`` (``sched/backfill`` or ``sched/builtin``), the backfill
parameters of ``SchedulerParameters`` and ``OverTimeLimit``; everything else in
the file is ignored. Defaults are Slurm's own (slurm.conf(5)): bf_interval 30 s,
bf_resolution 60 s, bf_window 1440 minutes, bf_max_job_test 500, OverTimeLimit 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from hpcorch.errors import SpecError
from hpcorch.sim.slurm import Scheduler

__all__ = ["SchedulerConfig", "parse_slurm_conf"]


@dataclass(frozen=True)
class SchedulerConfig:
    scheduler: Scheduler = "slurm"
    bf_interval_s: float = 30.0
    bf_resolution_s: float = 60.0
    bf_window_s: float = 1440 * 60.0
    bf_max_job_test: int | None = 500
    over_time_limit_s: float = 0.0
    # Not slurm.conf scheduler settings, but they move waits as much: the node shape
    # (units per node: >1 when jobs share nodes) and the seconds a job's resources
    # stay held after it ends (COMPLETING: epilog, messages, the scheduler's pass).
    cores_per_node: int = 1
    completing_s: float = 0.0

    def cluster_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~hpcorch.sim.slurm.SimSlurm`."""
        return asdict(self)


_KINDS: dict[str, Scheduler] = {"sched/backfill": "slurm", "sched/builtin": "fifo"}
_SECONDS = {"bf_interval": 1.0, "bf_resolution": 1.0, "bf_window": 60.0}


def parse_slurm_conf(text: str, source: str = "slurm.conf") -> SchedulerConfig:
    """The scheduler settings of slurm.conf ``text`` (keys are case-insensitive)."""
    values: dict[str, Any] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key, value = key.strip().lower(), value.strip()
        try:
            if key == "schedulertype":
                kinds = {"sched/backfill": "slurm", "sched/builtin": "fifo"}
                if value not in kinds:
                    raise ValueError(
                        f"SchedulerType {value!r} is not sched/backfill or sched/builtin"
                    )
                values["scheduler"] = kinds[value]
            elif key == "overtimelimit":
                values["over_time_limit_s"] = (
                    0.0 if value.upper() == "UNLIMITED" else float(value) * 60
                )
            elif key == "schedulerparameters":
                for item in value.split(","):
                    name, _, number = item.strip().partition("=")
                    if name in _SECONDS:
                        values[f"{name}_s"] = float(number) * _SECONDS[name]
                    elif name == "bf_max_job_test":
                        values["bf_max_job_test"] = int(number)
        except ValueError as exc:
            raise SpecError(f"{source}:{lineno}: {exc}") from None
    return SchedulerConfig(**values)
