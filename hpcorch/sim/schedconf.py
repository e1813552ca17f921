"""The scheduler settings of a ``slurm.conf`` that change predicted waits.

``SchedulerType`` (``sched/backfill`` or ``sched/builtin``), the backfill
parameters of ``SchedulerParameters``, ``OverTimeLimit``, and the multifactor
priority (``PriorityType``, ``PriorityWeight*``, ``PriorityMaxAge``,
``PriorityDecayHalfLife``, ``PriorityCalcPeriod``, ``PriorityFavorSmall``, the
partitions' ``PriorityJobFactor``); everything else in the file is ignored.
Defaults are Slurm's own (slurm.conf(5)): bf_interval 30 s, bf_resolution 60 s,
bf_window 1440 minutes, bf_max_job_test 500, batch_sched_delay 3 s, OverTimeLimit 0.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from hpcorch.errors import SpecError
from hpcorch.sim.priority import Multifactor
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
    batch_sched_delay_s: float = 3.0
    # Not slurm.conf scheduler settings, but they move waits as much: the node shape
    # (units per node: >1 when jobs share nodes) and the seconds a job's resources
    # stay held after it ends (COMPLETING: epilog, messages, the scheduler's pass).
    cores_per_node: int = 1
    completing_s: float = 0.0
    # A replayed run's clock: the wall-clock time of its time 0 (bf_resolution rounds the
    # wall clock) and where in a second the backfill thread's cycles fall.
    clock_origin_s: float = 0.0
    bf_phase_s: float = 0.0
    sched_phase_s: float = 0.0
    # PriorityType=priority/multifactor (None: priority/basic, jobs in submit order)
    priority: Multifactor | None = None

    def cluster_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~hpcorch.sim.slurm.SimSlurm`."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


_KINDS: dict[str, Scheduler] = {"sched/backfill": "slurm", "sched/builtin": "fifo"}
_SECONDS = {
    "bf_interval": 1.0,
    "bf_resolution": 1.0,
    "bf_window": 60.0,
    "batch_sched_delay": 1.0,
}


_WEIGHTS = {
    "priorityweightage": "weight_age",
    "priorityweightjobsize": "weight_job_size",
    "priorityweightpartition": "weight_partition",
    "priorityweightqos": "weight_qos",
    "priorityweightfairshare": "weight_fairshare",
}
_TIMES = {
    "prioritymaxage": "max_age_s",
    "prioritydecayhalflife": "decay_half_life_s",
    "prioritycalcperiod": "calc_period_s",
}


def slurm_time_s(value: str) -> float:
    """Seconds of a Slurm time string: minutes, minutes:seconds, hours:minutes:seconds,
    days-hours, days-hours:minutes, days-hours:minutes:seconds."""
    days_text, dash, rest = value.strip().partition("-")
    parts = [float(p) for p in (rest if dash else days_text).split(":")]
    if dash:
        days = float(days_text)
        h, m, sec = [*parts, 0.0, 0.0][:3]
        return ((days * 24 + h) * 60 + m) * 60 + sec
    if len(parts) == 1:
        return parts[0] * 60
    if len(parts) == 2:
        return parts[0] * 60 + parts[1]
    if len(parts) == 3:
        return (parts[0] * 60 + parts[1]) * 60 + parts[2]
    raise ValueError(f"{value!r} is not a Slurm time (minutes, h:m:s or days-h:m:s)")


def parse_slurm_conf(
    text: str, source: str = "slurm.conf", qos_priorities: dict[str, float] | None = None
) -> SchedulerConfig:
    """The scheduler settings of slurm.conf ``text`` (keys are case-insensitive).

    QOS priorities live in the accounting database, not in slurm.conf: pass them as
    ``qos_priorities`` (QOS name -> Priority) for PriorityWeightQOS to count."""
    values: dict[str, Any] = {}
    multifactor = False
    prio: dict[str, Any] = {"qos_priorities": dict(qos_priorities or {})}
    partitions: dict[str, float] = {}
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
            elif key == "prioritytype":
                if value not in ("priority/multifactor", "priority/basic"):
                    raise ValueError(
                        f"PriorityType {value!r} is not priority/multifactor or priority/basic"
                    )
                multifactor = value == "priority/multifactor"
            elif key in _WEIGHTS:
                prio[_WEIGHTS[key]] = float(value)
            elif key in _TIMES:
                prio[_TIMES[key]] = slurm_time_s(value)
            elif key == "priorityfavorsmall":
                prio["favor_small"] = value.upper() in ("YES", "Y", "1", "TRUE")
            elif key == "partitionname":
                name, *options = value.split()
                for option in options:
                    opt, _, number = option.partition("=")
                    if opt.lower() in ("priorityjobfactor", "priority"):
                        partitions[name] = float(number)
        except ValueError as exc:
            raise SpecError(f"{source}:{lineno}: {exc}") from None
    if multifactor:
        try:
            values["priority"] = Multifactor(partition_factors=partitions, **prio)
        except ValueError as exc:
            raise SpecError(f"{source}: {exc}") from None
    return SchedulerConfig(**values)
