"""Chain backends: when one is down, carry on with the next, and say so once.

Reads (jobs, nodes, partitions, steps, version) and cancels move to the next
backend on any transient :class:`~hpcorch.errors.SlurmError`. A submission
moves only on :class:`~hpcorch.slurm.client.BackendDown` (never delivered),
so no job is ever submitted twice. While on a fallback, the preferred backend
is tried again every ``recheck_s`` seconds and resumed when it answers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from hpcorch.errors import SlurmError
from hpcorch.slurm.client import BackendDown, SlurmClient
from hpcorch.slurm.models import JobInfo, NodeInfo, PartitionInfo, StepInfo
from hpcorch.slurm.script import JobRequest

__all__ = ["FallbackClient"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class FallbackClient:
    """A :class:`~hpcorch.slurm.client.SlurmClient` over several, in order of preference."""

    def __init__(
        self,
        backends: Sequence[SlurmClient],
        *,
        recheck_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not backends:
            raise ValueError("FallbackClient needs at least one backend")
        self.backends = list(backends)
        self._active = 0
        self._recheck = recheck_s
        self._clock = clock
        self._fell_back_at: float | None = None
        self.fallbacks = 0

    @property
    def name(self) -> str:
        return self.backends[self._active].name

    @property
    def active(self) -> SlurmClient:
        return self.backends[self._active]

    def _call(self, what: str, op: Callable[[SlurmClient], T], *, delivered_ok: bool) -> T:
        self._maybe_recover()
        last: SlurmError | None = None
        for index in range(self._active, len(self.backends)):
            backend = self.backends[index]
            try:
                result = op(backend)
            except SlurmError as exc:
                movable = isinstance(exc, BackendDown) or (delivered_ok and exc.transient)
                if not movable or index == len(self.backends) - 1:
                    raise
                last = exc
                continue
            if index != self._active:
                self._switch(index, last)
            return result
        raise last or SlurmError("no Slurm backend answered")

    def _switch(self, index: int, cause: SlurmError | None) -> None:
        old, new = self.backends[self._active].name, self.backends[index].name
        self._active = index
        self._fell_back_at = self._clock()
        self.fallbacks += 1
        # The one log line per switch: what failed, and where we carry on.
        logger.warning("slurm backend %s failed (%s); falling back to %s", old, cause, new)

    def _maybe_recover(self) -> None:
        if self._active == 0 or self._fell_back_at is None:
            return
        if self._clock() - self._fell_back_at < self._recheck:
            return
        try:
            self.backends[0].version  # noqa: B018 - a cheap probe
        except SlurmError:
            self._fell_back_at = self._clock()
            return
        logger.warning("slurm backend %s answers again; using it", self.backends[0].name)
        self._active = 0
        self._fell_back_at = None

    # ------------------------------------------------------------------ protocol

    @property
    def version(self) -> str:
        return self._call("version", lambda b: b.version, delivered_ok=True)

    def submit(self, job: JobRequest | str) -> str:
        return self._call("submit", lambda b: b.submit(job), delivered_ok=False)

    def cancel(self, job_ids: Iterable[str]) -> None:
        ids = list(job_ids)
        self._call("cancel", lambda b: b.cancel(ids), delivered_ok=True)

    def jobs(self, job_ids: Iterable[str]) -> list[JobInfo]:
        ids = list(job_ids)
        return self._call("jobs", lambda b: b.jobs(ids), delivered_ok=True)

    def nodes(self, partitions: Iterable[str] | None = None) -> list[NodeInfo]:
        parts = None if partitions is None else list(partitions)
        return self._call("nodes", lambda b: b.nodes(parts), delivered_ok=True)

    def pending_jobs(self, partition: str) -> list[JobInfo]:
        return self._call("pending_jobs", lambda b: b.pending_jobs(partition), delivered_ok=True)

    def start_estimate(self, partition: str, nodes: int, walltime_s: float) -> float | None:
        return self._call(
            "start_estimate",
            lambda b: b.start_estimate(partition, nodes, walltime_s),
            delivered_ok=True,
        )

    def partitions(self) -> list[PartitionInfo]:
        return self._call("partitions", lambda b: b.partitions(), delivered_ok=True)

    def steps(self, job_id: str) -> list[StepInfo]:
        return self._call("steps", lambda b: b.steps(job_id), delivered_ok=True)

    def close(self) -> None:
        for backend in self.backends:
            backend.close()
