"""Slurm's multifactor job priority (``PriorityType=priority/multifactor``), as 22.05 has it.

A pending job's priority is a weighted sum of factors in [0, 1]
(slurm.conf(5), priority_multifactor.c):

* age: time since it became eligible (its submit) over ``PriorityMaxAge``, capped at 1;
* job size: the share of the cluster's nodes and of its CPUs it asks for, averaged
  (``PriorityFavorSmall``: one minus each);
* partition: its partition's ``PriorityJobFactor`` over the highest of any partition;
* QOS: its QOS's priority over the highest of any QOS;
* fair-share: Fair Tree (22.05's default) on a flat tree of users with equal shares:
  users ranked by shares over usage (usage: CPU-seconds, halved every
  ``PriorityDecayHalfLife``), the factor is rank / users (the least-used user 1.0).

Usage decays and fair-share factors are recomputed once every
``PriorityCalcPeriod`` (Slurm's decay thread); the order of pending jobs follows
their current priority at every scheduling pass: against the dev cluster's
slurmctld (PriorityCalcPeriod 1 minute, PriorityMaxAge 2 minutes) a model that
changed priorities only once a minute put starts 0.47 of the mean wait off, one
that reorders at every pass (or every 0.5-15 s) 0.14-0.18. Ties go to the earlier
submit (lower job id). Associations deeper than one level, ``PriorityFlags`` and
TRES weights are not modelled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["Multifactor", "fair_tree_factors"]


@dataclass(frozen=True)
class Multifactor:
    """The priority/multifactor settings of a slurm.conf (weights are Slurm's integers)."""

    weight_age: float = 0.0
    weight_job_size: float = 0.0
    weight_partition: float = 0.0
    weight_qos: float = 0.0
    weight_fairshare: float = 0.0
    max_age_s: float = 7 * 86400.0
    favor_small: bool = False
    calc_period_s: float = 300.0
    decay_half_life_s: float = 7 * 86400.0
    # partition name -> PriorityJobFactor; QOS name -> Priority
    partition_factors: Mapping[str, float] = field(default_factory=dict)
    qos_priorities: Mapping[str, float] = field(default_factory=dict)
    # what the job-size factor divides by: the whole cluster's nodes and CPUs, every
    # partition's (None: the simulated cluster's own)
    cluster_nodes: int | None = None
    cluster_cpus: int | None = None
    # when (simulated time) the decay thread ran once: it runs every calc period from
    # slurmctld's start
    calc_phase_s: float = 0.0

    def next_calc(self, now: float) -> float:
        """The decay thread's first run after ``now``."""
        period = self.calc_period_s
        return self.calc_phase_s + (math.floor((now - self.calc_phase_s) / period) + 1) * period

    def __post_init__(self) -> None:
        if self.max_age_s <= 0 or self.calc_period_s <= 0:
            raise ValueError("PriorityMaxAge and PriorityCalcPeriod must be positive")

    def job_size(self, nodes: int, cpus: int, cluster_nodes: int, cluster_cpus: int) -> float:
        cluster_nodes = self.cluster_nodes or cluster_nodes
        cluster_cpus = self.cluster_cpus or cluster_cpus
        node_share = min(1.0, nodes / cluster_nodes)
        cpu_share = min(1.0, cpus / cluster_cpus)
        if self.favor_small:
            node_share, cpu_share = 1.0 - node_share, 1.0 - cpu_share
        return (node_share + cpu_share) / 2

    def static(
        self, nodes: int, cpus: int, cluster_nodes: int, cluster_cpus: int,
        partition: str = "", qos: str = "",
    ) -> float:  # fmt: skip
        """The part of a job's priority that does not change while it waits."""
        part_max = max(self.partition_factors.values(), default=0.0)
        qos_max = max(self.qos_priorities.values(), default=0.0)
        part = self.partition_factors.get(partition, 0.0) / part_max if part_max > 0 else 0.0
        qos_f = self.qos_priorities.get(qos, 0.0) / qos_max if qos_max > 0 else 0.0
        return (
            self.weight_job_size * self.job_size(nodes, cpus, cluster_nodes, cluster_cpus)
            + self.weight_partition * part
            + self.weight_qos * qos_f
        )

    def priority(self, static: float, age_s: float, fairshare: float) -> float:
        age = min(1.0, max(0.0, age_s) / self.max_age_s)
        # Slurm keeps the sum as a whole number
        return float(math.floor(static + self.weight_age * age + self.weight_fairshare * fairshare))

    def decay(self, elapsed_s: float) -> float:
        """The factor usage is multiplied by after ``elapsed_s`` seconds."""
        if self.decay_half_life_s <= 0:
            return 1.0
        return math.pow(0.5, elapsed_s / self.decay_half_life_s)


def fair_tree_factors(usage: Sequence[float]) -> list[float]:
    """Fair Tree's factor of each user of a flat tree with equal shares: users ranked by
    level fair-share (shares over usage share; no usage ranks first), the factor is
    rank / users, ties sharing a rank."""
    n = len(usage)
    if not n:
        return []
    order = sorted(range(n), key=lambda u: usage[u])  # least used first: highest levelFS
    factors = [0.0] * n
    rank = n
    for pos, u in enumerate(order):
        if pos and usage[u] != usage[order[pos - 1]]:
            rank = n - pos
        factors[u] = rank / n
    return factors
