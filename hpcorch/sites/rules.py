"""A site's rules for one job: which account, QOS, constraint and reservation it gets,
how it asks for GPUs, and the limits it must stay under (pure).

Every job hpcorch would submit (worker pools, the ``submit`` driver) goes through
:func:`job_settings` and :func:`check_job` before anything is submitted: a job the
site would refuse (no account where one is required, a walltime over the QOS,
partition or node-count bin limit, too many nodes) is a
:class:`~hpcorch.errors.SiteRuleError` naming the rule and the fix, never a raw
sbatch error. What wins, most specific first: the task's own knob, the run's
option (``--account``/``--qos``, folded in by :func:`site_with`), the
partition's, the site's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hpcorch.errors import SiteRuleError
from hpcorch.sites.model import Partition, Site
from hpcorch.units import format_duration

__all__ = [
    "JobSettings",
    "WalltimeLimit",
    "check_job",
    "combine_constraints",
    "gpu_directives",
    "job_settings",
    "settings_directives",
    "site_with",
    "walltime_limit",
]


@dataclass(frozen=True, slots=True)
class JobSettings:
    """The Slurm knobs of one job, resolved (None: leave it to Slurm)."""

    partition: str
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    reservation: str | None = None
    exclusive: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "account": self.account,
            "qos": self.qos,
            "constraint": self.constraint,
            "reservation": self.reservation,
            "exclusive": self.exclusive,
        }


@dataclass(frozen=True, slots=True)
class WalltimeLimit:
    """The tightest walltime limit a job is under, and the rule that sets it."""

    seconds: float | None
    rule: str


def site_with(site: Site, *, account: str | None = None, qos: str | None = None) -> Site:
    """``site`` with a run's ``--account``/``--qos`` in place of its own (a QOS given
    for the run also replaces the partitions' own)."""
    update: dict[str, Any] = {}
    if account:
        update["account"] = account
    if qos:
        update["default_qos"] = qos
        update["partitions"] = tuple(
            p.model_copy(update={"qos": None}) if p.qos else p for p in site.partitions
        )
    return site.model_copy(update=update) if update else site


_AND_ONLY = re.compile(r"[A-Za-z0-9_.:-]+(&[A-Za-z0-9_.:-]+)*")


def combine_constraints(base: str | None, extra: str | None) -> str | None:
    """The partition's node features and a task's, as one ``--constraint``.

    ``gpu`` and ``gpu&hbm80g`` give ``gpu&hbm80g``; ``cpu`` and ``bigmem`` give
    ``cpu&bigmem``. An expression with ``|`` or brackets must name the partition's
    features itself (Slurm has no precedence rule hpcorch could rely on): ValueError."""
    if not extra or extra == base:
        return base or extra
    if not base:
        return extra
    if _AND_ONLY.fullmatch(base) and _AND_ONLY.fullmatch(extra):
        features = base.split("&") + [f for f in extra.split("&") if f not in base.split("&")]
        return "&".join(features)
    if base in re.split(r"[&|,\[\]()*]", extra):
        return extra
    raise ValueError(
        f"constraint {extra!r} cannot be joined to the partition's {base!r}: write the "
        f"whole expression with {base!r} in it (e.g. '{base}&...'), or use only '&'"
    )


def job_settings(
    site: Site, partition: Partition, knobs: Mapping[str, Any] | None = None
) -> JobSettings:
    """The account, QOS, constraint, reservation of a job on ``partition``; ``knobs``: a
    task's own (:attr:`hpcorch.spec.TaskSpec.slurm_knobs`) or the driver's."""
    knobs = knobs or {}
    try:
        constraint = combine_constraints(partition.constraint, knobs.get("constraint"))
    except ValueError as exc:
        raise SiteRuleError(f"site {site.name}: partition {partition.name}: {exc}") from None
    return JobSettings(
        partition=partition.name,
        account=knobs.get("account") or site.account,
        qos=knobs.get("qos") or partition.qos or site.qos_default,
        constraint=constraint,
        reservation=knobs.get("reservation") or partition.reservation or site.reservation,
        exclusive=bool(knobs.get("exclusive")),
    )


def settings_directives(settings: JobSettings) -> list[str]:
    """sbatch options for the knobs (the partition and account are the caller's)."""
    out = []
    if settings.qos:
        out.append(f"--qos={settings.qos}")
    if settings.constraint:
        out.append(f"--constraint={settings.constraint}")
    if settings.reservation:
        out.append(f"--reservation={settings.reservation}")
    if settings.exclusive:
        out.append("--exclusive")
    return out


def gpu_directives(partition: Partition, *, nodes: int = 1, tasks_per_node: int = 1) -> list[str]:
    """sbatch options that ask for every GPU of ``nodes`` nodes the way the site wants,
    plus ``--gpu-bind`` where the site sets one. Empty: the partition has no GPUs."""
    gpus = partition.node.gpus
    method = partition.gpu_method
    if not gpus or method is None:
        return []
    if method == "gres":
        out = [f"--gres={partition.gres or 'gpu'}:{gpus}"]
    elif method == "gpus-per-node":
        out = [f"--gpus-per-node={gpus}"]
    elif method == "gpus-per-task":
        if gpus % tasks_per_node:
            raise SiteRuleError(
                f"partition {partition.name!r}: {gpus} GPUs per node do not split over "
                f"{tasks_per_node} tasks per node (gpu_request: gpus-per-task)"
            )
        out = [f"--gpus-per-task={gpus // tasks_per_node}"]
    else:
        out = [f"--gpus={gpus * nodes}"]
    if partition.gpu_bind:
        out.append(f"--gpu-bind={partition.gpu_bind}")
    return out


def walltime_limit(site: Site, partition: Partition, qos: str | None, nodes: int) -> WalltimeLimit:
    """The tightest of the site's, the partition's, its node-count bin's and the QOS's
    walltime limits for a job of ``nodes`` nodes."""
    limits: list[tuple[float, str]] = []
    if site.limits.max_walltime_s:
        limits.append((site.limits.max_walltime_s, f"site {site.name} limits.max_walltime_s"))
    if partition.max_walltime_s:
        limits.append((partition.max_walltime_s, f"partition {partition.name} max_walltime_s"))
    chosen = partition.bin_for(nodes)
    if chosen is not None:
        limits.append(
            (
                chosen.max_walltime_s,
                f"partition {partition.name} walltime bin of up to {chosen.max_nodes} nodes",
            )
        )
    named = site.qos_named(qos)
    if named is not None and named.max_walltime_s:
        limits.append((named.max_walltime_s, f"QOS {named.name} max_walltime_s"))
    if not limits:
        return WalltimeLimit(None, "no limit known")
    seconds, rule = min(limits, key=lambda lim: lim[0])
    return WalltimeLimit(seconds, rule)


def _where(site: Site, what: str) -> str:
    return f"site {site.name}: {what}"


def check_job(
    site: Site,
    partition: Partition,
    settings: JobSettings,
    *,
    nodes: int,
    walltime_s: float | None,
    what: str,
) -> WalltimeLimit:
    """Raise :class:`SiteRuleError` if the site would refuse this job; else the walltime
    limit it was checked against. ``what`` names the job (``pool gpu``, ``the driver``)."""
    if site.account_required and not settings.account:
        raise SiteRuleError(
            f"{_where(site, what)}: the site requires an account (account_required); set "
            f"it once with 'account: NAME' in ~/.config/hpcorch/sites/{site.name}.yaml, or "
            "pass --account NAME"
        )
    if settings.qos and site.qos and site.qos_named(settings.qos) is None:
        names = ", ".join(q.name for q in site.qos)
        raise SiteRuleError(
            f"{_where(site, what)}: QOS {settings.qos!r} is not one the site lists ({names}); "
            f"pick one of them, or add it under 'qos:' in ~/.config/hpcorch/sites/{site.name}.yaml"
        )
    caps: list[tuple[int, str]] = []
    if partition.max_nodes_per_job:
        caps.append((partition.max_nodes_per_job, f"partition {partition.name} max_nodes_per_job"))
    named = site.qos_named(settings.qos)
    if named is not None and named.max_nodes_per_job:
        caps.append((named.max_nodes_per_job, f"QOS {named.name} max_nodes_per_job"))
    if site.limits.max_nodes_per_job:
        caps.append((site.limits.max_nodes_per_job, f"site {site.name} limits.max_nodes_per_job"))
    if partition.walltime_bins and partition.bin_for(nodes) is None:
        top = partition.walltime_bins[-1].max_nodes
        caps.append((top, f"partition {partition.name}'s largest walltime bin"))
    for cap, rule in caps:
        if nodes > cap:
            raise SiteRuleError(
                f"{_where(site, what)}: {nodes} nodes are more than {rule} allows ({cap}); "
                f"ask for at most {cap} nodes per job (resources.nodes / mpi.ranks)"
            )
    limit = walltime_limit(site, partition, settings.qos, nodes)
    if walltime_s is not None and limit.seconds is not None and walltime_s > limit.seconds:
        raise SiteRuleError(
            f"{_where(site, what)}: walltime {format_duration(walltime_s)} is over {limit.rule} "
            f"({format_duration(limit.seconds)}); ask for at most that (resources.walltime, "
            "--walltime) or use a QOS/partition that allows more (--qos)"
        )
    return limit
