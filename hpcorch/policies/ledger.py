"""The retry ledger: what the retry policy needs remembered between failures of one run.

Both the live engine (:mod:`hpcorch.engine.recovery`) and the simulator
(:mod:`hpcorch.sim`) keep one: each task's failed attempts, the run's count of
infrastructure failures, and the node strike table (within its window). Each
failure goes through :meth:`RetryLedger.failed`, which records it and asks the
bundle's retry policy (:class:`~hpcorch.policies.bundle.Policies`). Like the
policies, it does no I/O and reads no clock: the caller passes ``now``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

from hpcorch.failures import Diagnosis, FailureClass
from hpcorch.policies.bundle import Policies
from hpcorch.policies.retry import NodeStrike, RetryDecision, struck_nodes
from hpcorch.policies.state import Attempt, NodeHealth, SiteLimits, TaskInfo

__all__ = ["RetryLedger"]

K = TypeVar("K", bound=Hashable)


class RetryLedger(Generic[K]):
    """Failed attempts per task (keyed by ``K``: a task id, or the simulator's index)."""

    def __init__(self, policies: Policies | None = None) -> None:
        self.policies = policies or Policies()
        self.infrastructure_failures = 0
        self.strikes: deque[NodeStrike] = deque()
        """Strikes within the window (older ones are dropped as time passes)."""
        self._attempts: dict[K, list[Attempt]] = {}

    def attempts(self, key: K) -> list[Attempt]:
        return self._attempts.get(key, [])

    def struck(self, now: float) -> frozenset[str]:
        """Nodes the strike table excludes for every task at ``now``."""
        window_start = now - self.policies.retry_config.strike_window_s
        strikes = self.strikes
        while strikes and strikes[0].time < window_start:
            strikes.popleft()
        return struck_nodes(strikes, now, self.policies.retry_config) if strikes else frozenset()

    def failed(
        self,
        key: K,
        task: TaskInfo,
        attempt: Attempt,
        diagnosis: Diagnosis,
        limits: SiteLimits,
        *,
        now: float,
        unhealthy: frozenset[str] = frozenset(),
    ) -> tuple[RetryDecision, frozenset[str]]:
        """Record ``attempt`` of ``task`` that failed as ``diagnosis`` and decide its retry.

        Returns the decision and the nodes struck for everyone after it (a strike it
        caused included)."""
        history = self._attempts.setdefault(key, [])
        history.append(attempt)
        if diagnosis.failure is FailureClass.INFRASTRUCTURE:
            self.infrastructure_failures += 1
        health = NodeHealth(unhealthy, self.struck(now))
        decision = self.policies.retry(
            task,
            history,
            diagnosis,
            limits,
            health,
            run_infrastructure_failures=self.infrastructure_failures,
            config=self.policies.retry_config,
        )
        if not decision.strike_node:
            return decision, health.struck
        self.strikes.append(NodeStrike(decision.strike_node, task.id, now))
        return decision, self.struck(now)
