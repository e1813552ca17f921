"""A live run's accounting: its allocations' lives and its attempts, through the cost policy.

The scaler keeps one :class:`AllocationLife` per allocation it submitted
(submission, Slurm start and end, walltime, the partition's shape and charge
rates); :func:`accounts_payload` turns those and the journal's attempts into
the figures :func:`hpcorch.policies.cost.account` computes (core-hours and
GPU-hours allocated, used and idle, SU and cost, per site and for the run),
plus what live allocations still commit. The scaler writes the payload as the
journal's ``accounting`` event, which ``status --json`` shows under
``accounting``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpcorch.journal import started_attempts
from hpcorch.policies.cost import AllocationRecord, AttemptRecord, account, committed
from hpcorch.policies.state import ChargeRates

__all__ = ["AllocationLife", "accounts_payload", "journal_attempts"]


@dataclass
class AllocationLife:
    """One allocation of the run, updated as Slurm reports it (mutable: the scaler owns it)."""

    name: str
    """The pool's worker name for it (unique in the run, unlike job ids across sites)."""
    pool: str
    site: str
    partition: str
    nodes: int
    cores_per_node: int
    gpus_per_node: int
    rates: ChargeRates = field(default_factory=ChargeRates)
    submitted_at: float = 0.0
    walltime_s: float = 0.0
    job_id: str | None = None
    state: str = "PENDING"
    start: float | None = None
    end: float | None = None
    address: str | None = None
    """Its Dask worker's address, once connected (attempt records carry it)."""

    def record(self) -> AllocationRecord:
        return AllocationRecord(
            id=self.name,
            site=self.site,
            nodes=self.nodes,
            cores_per_node=self.cores_per_node,
            gpus_per_node=self.gpus_per_node,
            rates=self.rates,
            submitted_at=self.submitted_at,
            start=self.start,
            end=self.end,
            walltime_s=self.walltime_s,
        )

    def row(self) -> dict[str, Any]:
        """The journal's ``allocations`` row."""
        return {
            "job_id": self.job_id,
            "site": self.site,
            "partition": self.partition,
            "nodes": self.nodes,
            "state": self.state,
            "start": self.start,
            "end": self.end,
            "pool": self.pool,
        }


def journal_attempts(
    run_dir: Path, lives: Sequence[AllocationLife], cpus: Mapping[str, int]
) -> list[AttemptRecord]:
    """The journal's started attempts as accounting records, each tied to its allocation.

    An attempt is tied by its worker's address (unique in the run), else by its
    site and Slurm job id (job ids repeat across sites), or by its job id alone
    when it has no site (recorded by an older hpcorch). ``cpus`` gives each
    task's cores where the record lists none.
    """
    by_address = {life.address: life for life in lives if life.address}
    by_key = {(life.site, life.job_id): life for life in lives if life.job_id}
    by_job = {life.job_id: life for life in lives if life.job_id}
    out = []
    for row in started_attempts(run_dir):
        site, job_id, end = row["site"], row["job_id"], row["end"]
        life = by_address.get(row["worker"]) or (
            by_key.get((site, job_id)) if site else by_job.get(job_id)
        )
        out.append(
            AttemptRecord(
                site=life.site if life else "?",
                start=float(row["start"]),
                end=None if end is None else float(end),
                cores=_count(row["cores"]) or cpus.get(row["task_id"], 1),
                gpus=_count(row["gpus"]),
                allocation=life.name if life else None,
            )
        )
    return out


def _count(ids: str | None) -> int:
    return len([x for x in (ids or "").split(",") if x != ""])


def accounts_payload(
    lives: Sequence[AllocationLife], attempts: Sequence[AttemptRecord], now: float
) -> dict[str, Any]:
    """Accounting figures for the journal and ``status --json``: per site, total, committed."""
    accounts = account([life.record() for life in lives], attempts, now)
    live = [life.record() for life in lives if life.end is None]
    return {
        "time": now,
        "total": accounts.total.as_dict(),
        "per_site": {site: u.as_dict() for site, u in sorted(accounts.per_site.items())},
        "committed": committed(live, now).as_dict(),
        "allocations": len(lives),
    }
