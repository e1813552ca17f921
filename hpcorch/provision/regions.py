"""Several sites in one run: route each ready task's demand to a site, under the run budget.

The :class:`Router` is the scaler's view of the region policy
(:func:`hpcorch.policies.region.choose_site`). For each ready task that more
than one site can run it probes the candidate sites' queues (at most every
``queue_ttl_s``; :func:`probe_queue`), gives the policy their charge rates,
the waits this run observed there and the run budget, and keeps the answer
for that task (sticky, so that demand does not hop between sites from one
interval to the next). The task's demand then counts in the chosen site's
pool, so the scaler brings up allocations there. Each choice goes to the
journal as a ``region`` event with the policy's reason.

The budget (:class:`~hpcorch.policies.state.Budget`, in SU or a currency)
holds every submission once spent + committed reach it
(:func:`hold`), and trims a submission to the allocations whose whole
walltime it can still pay (:func:`affordable`): so the accounted cost never
exceeds the cap. With the budget spent and no allocation left to run the
queued tasks, the scaler ends them with the policy's message.

:func:`probe_queue` is one ``squeue --json`` and one ``sinfo --json`` per
site and partition, plus, when no node is idle, ``sbatch --test-only`` for a
whole-node job like ours: Slurm's own estimate of when it would start.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from hpcorch.childenv import child_env, site_secrets
from hpcorch.errors import SlurmError
from hpcorch.policies.cost import Usage, account, amount_in, budget_status, charge, committed
from hpcorch.policies.region import RegionConfig, choose_site, update_wait
from hpcorch.policies.scale import Submit
from hpcorch.policies.state import Budget, ChargeRates, SiteQueue, charge_rates
from hpcorch.provision.accounting import AllocationLife
from hpcorch.provision.scaler import Candidate, Journaling, Load
from hpcorch.sites.model import Partition, Site
from hpcorch.slurm.cli import run_command
from hpcorch.slurm.connect import slurm_conf_path
from hpcorch.slurm.parse import parse_jobs_json, parse_nodes_json
from hpcorch.slurm.states import JobState, NodeState

__all__ = ["Candidate", "ObservedWaits", "Router", "parse_test_only", "probe_queue"]

logger = logging.getLogger(__name__)

_HOUR = 3600.0
_TEST_ONLY = re.compile(r"to start at (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)")

QueueProbe = Callable[[Site, Partition, float], SiteQueue]


def parse_test_only(stderr: str, now: float) -> float | None:
    """Seconds from ``now`` until ``sbatch --test-only`` says the job would start."""
    found = _TEST_ONLY.search(stderr)
    if not found:
        return None
    start = datetime.strptime(found.group(1), "%Y-%m-%dT%H:%M:%S").timestamp()
    return max(0.0, start - now)


def _slurm_env(site: Site) -> dict[str, str]:
    env = child_env(os.environ, site_secrets(site))
    conf = slurm_conf_path(site, env)
    if conf:
        env["SLURM_CONF"] = conf
    return env


def probe_queue(
    site: Site,
    partition: Partition,
    walltime_s: float,
    *,
    now: float,
    runner: Callable[..., Any] = run_command,
) -> SiteQueue:
    """The partition's queue now: idle nodes, work pending ahead, Slurm's start estimate."""
    env = _slurm_env(site)

    def call(*argv: str) -> Any:
        done = runner(list(argv), None, env, 30.0)
        if done.returncode != 0 and argv[0] != "sbatch":
            raise SlurmError(f"{argv[0]} on site {site.name} failed: {done.stderr.strip()}")
        return done

    jobs = parse_jobs_json(json.loads(call("squeue", "--json").stdout), "squeue")
    pending = sum(
        (j.node_count or 1) * (j.time_limit_s or 0.0)
        for j in jobs
        if j.partition == partition.name and j.state is JobState.PENDING
    )
    nodes = parse_nodes_json(json.loads(call("sinfo", "--json").stdout))
    idle = sum(
        1
        for n in nodes
        if partition.name in n.partitions and n.status.state is NodeState.IDLE and n.usable
    )
    start: float | None = None
    if idle == 0:
        done = call(
            "sbatch",
            "--test-only",
            f"--partition={partition.name}",
            "--nodes=1",
            "--exclusive",
            f"--time={max(1, math.ceil(walltime_s / 60))}",
            "--wrap=true",
        )
        start = parse_test_only(done.stderr + done.stdout, now)
    return SiteQueue(
        site=site.name,
        capacity_nodes=partition.nodes,
        idle_nodes=idle,
        pending_node_s=pending,
        slurm_start_s=start,
        cores_per_node=partition.node.cores,
        gpus_per_node=partition.node.gpus,
    )


@dataclass
class _Probe:
    queue: SiteQueue
    at: float


class ObservedWaits:
    """Each site's allocation wait (submission to start), exponentially weighted; every
    allocation counts once, when it is first seen started."""

    def __init__(self, config: RegionConfig | None = None) -> None:
        self.config = config or RegionConfig()
        self.waits: dict[str, float] = {}
        self._seen: set[str] = set()

    def observe(self, lives: Sequence[AllocationLife]) -> None:
        for life in lives:
            if life.start is not None and life.name not in self._seen:
                self._seen.add(life.name)
                wait = max(0.0, life.start - life.submitted_at)
                self.waits[life.site] = update_wait(self.waits.get(life.site), wait, self.config)

    def get(self, site: str) -> float | None:
        return self.waits.get(site)


class Router:
    """Sticky per-task site choice, observed waits and the run budget; see the module doc."""

    def __init__(
        self,
        sites: Mapping[str, Site],
        pools: Mapping[Candidate, str],
        *,
        budget: Budget | None = None,
        probe: QueueProbe | None = None,
        config: RegionConfig | None = None,
        queue_ttl_s: float = 30.0,
        default_estimate_s: float = 600.0,
        journal: Journaling | None = None,
    ) -> None:
        self.sites = dict(sites)
        self.pools = dict(pools)
        self.budget = budget
        self.config = config or RegionConfig()
        self.queue_ttl_s = queue_ttl_s
        self.default_estimate_s = default_estimate_s
        self.journal = journal
        self._probe = probe or self._probe_live
        self._probes: dict[Candidate, _Probe] = {}
        self.routes: dict[str, str | None] = {}
        self.waits = ObservedWaits(self.config)
        self._spent = Usage()
        self._committed = Usage()
        self.message: str | None = None
        """The budget's message once it is spent (None while open)."""

    # ------------------------------------------------------------------ budget

    def hold(self, lives: Sequence[AllocationLife], now: float) -> str | None:
        """Record the waits and the spending so far; the budget's message once it is spent."""
        self.waits.observe(lives)
        records = [life.record() for life in lives]
        self._spent = account(records, (), now).total
        self._committed = committed([r for r in records if r.end is None], now)
        if self.budget is None:
            return None
        status = budget_status(self.budget, self._spent, self._committed)
        if status.open:
            return None
        if self.message is None:
            logger.warning("%s", status.message)
            if self.journal is not None:
                self.journal.event("budget", message=status.message)
        self.message = status.message
        return status.message

    def affordable(
        self, submit: Submit, lives: Sequence[AllocationLife], now: float
    ) -> tuple[int, str]:
        """How many of the allocations the budget can pay for their whole walltime, and why."""
        if self.budget is None:
            return submit.count, "no budget"
        unit = self.budget.unit
        site, partition = next(c for c, p in self.pools.items() if p == submit.pool)
        part = self.sites[site].partition(partition)
        records = [life.record() for life in lives]
        spent = amount_in(account(records, (), now).total, unit)
        held = amount_in(committed([r for r in records if r.end is None], now), unit)
        one = amount_in(
            charge(
                _rates(self.sites[site], partition),
                submit.walltime_s / _HOUR,
                submit.nodes,
                submit.nodes * part.node.gpus,
            ),
            unit,
        )
        left = self.budget.amount - spent - held
        count = submit.count if one <= 0 else max(0, min(submit.count, math.floor(left / one)))
        note = (
            f"the run budget of {self.budget.amount:,.4g} {unit} has {max(0.0, left):,.4g} {unit} "
            f"left ({spent:,.4g} spent, {held:,.4g} committed) and one allocation of pool "
            f"{submit.pool} for {submit.walltime_s:.0f}s costs {one:,.4g} {unit}: raise the "
            "run's budget (HPCORCH_BUDGET) and resume it (`hpcorch resume RUN`)"
        )
        if count < submit.count and self.journal is not None and self.message != note:
            self.journal.event("budget", message=note)
        if count == 0:
            self.message = note
        return count, note

    def expected_wait(self, site: str) -> float | None:
        """The site's observed allocation wait, exponentially weighted (None: none yet)."""
        return self.waits.get(site)

    # ------------------------------------------------------------------ routing

    def route(self, load: Load, now: float) -> str | None:
        """The pool the task's demand goes to (None: the budget allows it nowhere)."""
        candidates = load.candidates
        if not candidates:
            return None
        if self.routes.get(load.task_id) is not None:
            return self.routes[load.task_id]
        if len(candidates) == 1 and self.budget is None:
            self.routes[load.task_id] = self.pools[candidates[0]]
            return self.routes[load.task_id]
        if load.running:  # started before we chose: where it runs is not ours to say
            return self.pools[candidates[0]]
        estimate = self.default_estimate_s if load.estimate_s is None else load.estimate_s
        queues = []
        rates: dict[str, ChargeRates] = {}
        by_site: dict[str, Candidate] = {}
        for site, partition in candidates:
            queue = self._queue((site, partition), estimate, now)
            if queue is None:
                continue
            queues.append(queue)
            rates[site] = _rates(self.sites[site], partition)
            by_site[site] = (site, partition)
        decision = choose_site(
            load.resources,
            estimate,
            queues,
            rates,
            budget=self.budget,
            spent=self._spent,
            commitment=self._committed,
            config=self.config,
        )
        pool = self.pools[by_site[decision.site]] if decision.site else None
        changed = load.task_id not in self.routes or self.routes[load.task_id] != pool
        self.routes[load.task_id] = pool
        if self.journal is not None and changed and (len(candidates) > 1 or pool is None):
            self.journal.event(
                "region", task=load.task_id, site=decision.site, reason=decision.reason
            )
        if pool is None and self.message is None:
            self.message = decision.reason
        return pool

    def _queue(self, candidate: Candidate, estimate_s: float, now: float) -> SiteQueue | None:
        cached = self._probes.get(candidate)
        if cached is None or now - cached.at >= self.queue_ttl_s:
            site, partition = candidate
            try:
                queue = self._probe(self.sites[site], self.sites[site].partition(partition), now)
            except (SlurmError, OSError, ValueError) as exc:
                logger.warning("cannot read the queue of site %s (%s); skipping it", site, exc)
                return cached.queue if cached else None
            cached = _Probe(queue, now)
            self._probes[candidate] = cached
        queue = cached.queue
        wait = self.waits.get(queue.site)
        if wait is not None:
            queue = _with_wait(queue, wait)
        return queue

    def _probe_live(self, site: Site, partition: Partition, now: float) -> SiteQueue:
        return probe_queue(site, partition, self.default_estimate_s, now=now)


def _with_wait(queue: SiteQueue, wait: float) -> SiteQueue:
    return replace(queue, observed_wait_s=wait)


def _rates(site: Site, partition: str) -> ChargeRates:
    return charge_rates(site, partition)
