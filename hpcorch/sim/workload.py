"""A workflow as the simulator holds it: flat arrays indexed by task number.

A million tasks as pydantic models or dicts would cost gigabytes; here each
task is one slot in a handful of ``array`` columns, and the DAG is stored as
compressed rows (``child_ptr``/``child_idx``), so a 1,000,000-task workflow
fits in well under 100 MB. Build one from a validated
:class:`~hpcorch.spec.WorkflowSpec`, from WfFormat tasks, or synthetically.
"""

from __future__ import annotations

import random
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

from hpcorch.errors import WorkflowError
from hpcorch.spec import WorkflowSpec

__all__ = ["SimWorkload", "from_spec", "from_wftasks", "synthetic"]


@dataclass(eq=False)
class SimWorkload:
    """Columns of a workflow's tasks. ``duration`` is what a task really takes in the
    simulation; ``estimate`` is what the policies are told (walltime or estimate)."""

    name: str
    cpus: array[int]
    memory: array[int]
    gpus: array[int]
    duration: array[float]
    estimate: array[float]
    walltime: array[float]  # the task's own walltime limit; 0 for none
    retries: array[int]
    n_parents: array[int]
    child_ptr: array[int]
    child_idx: array[int]
    ids: Sequence[str] | None = None  # None: "t<number>"

    def __len__(self) -> int:
        return len(self.cpus)

    def task_id(self, i: int) -> str:
        return self.ids[i] if self.ids is not None else f"t{i}"

    def children(self, i: int) -> array[int]:
        return self.child_idx[self.child_ptr[i] : self.child_ptr[i + 1]]

    def critical_path(self) -> array[float]:
        """Longest chain of estimates from each task to a sink, its own included."""
        n = len(self)
        pending = array("q", self.n_parents)
        order = array("q", (t for t in range(n) if pending[t] == 0))
        ptr, idx = self.child_ptr, self.child_idx
        head = 0
        while head < len(order):  # Kahn: order grows as parents complete
            t = order[head]
            head += 1
            for c in idx[ptr[t] : ptr[t + 1]]:
                pending[c] -= 1
                if pending[c] == 0:
                    order.append(c)
        if len(order) != n:
            raise WorkflowError("the workflow has a dependency cycle")
        est = self.estimate
        cp = array("d", est)
        for t in reversed(order):
            below = max((cp[c] for c in idx[ptr[t] : ptr[t + 1]]), default=0.0)
            cp[t] = est[t] + below
        return cp


def _build(
    name: str,
    ids: Sequence[str] | None,
    *,
    cpus: Sequence[int],
    memory: Sequence[int],
    gpus: Sequence[int],
    duration: Sequence[float],
    estimate: Sequence[float],
    walltime: Sequence[float],
    retries: Sequence[int],
    parents: Sequence[Sequence[int]],
) -> SimWorkload:
    n = len(cpus)
    n_parents = array("q", (len(p) for p in parents))
    counts = [0] * (n + 1)
    for ps in parents:
        for p in ps:
            counts[p + 1] += 1
    for i in range(n):
        counts[i + 1] += counts[i]
    child_ptr = array("q", counts)
    fill = list(counts[:-1])
    child_idx = array("q", bytes(8 * counts[-1]))
    for child, ps in enumerate(parents):
        for p in ps:
            child_idx[fill[p]] = child
            fill[p] += 1
    return SimWorkload(
        name=name,
        cpus=array("q", cpus),
        memory=array("q", memory),
        gpus=array("q", gpus),
        duration=array("d", duration),
        estimate=array("d", estimate),
        walltime=array("d", walltime),
        retries=array("q", retries),
        n_parents=n_parents,
        child_ptr=child_ptr,
        child_idx=child_idx,
        ids=ids,
    )


def from_wftasks(tasks: Sequence[object], name: str = "wfformat") -> SimWorkload:
    """From :class:`~hpcorch.traces.WfTask` records (id, parents, cores, memory, runtime)."""
    index = {t.id: i for i, t in enumerate(tasks)}  # type: ignore[attr-defined]
    try:
        parents = [[index[p] for p in t.parents] for t in tasks]  # type: ignore[attr-defined]
    except KeyError as exc:
        raise WorkflowError(f"a task names an unknown parent {exc.args[0]!r}") from None
    runtimes = [float(t.runtime) for t in tasks]  # type: ignore[attr-defined]
    return _build(
        name,
        [t.id for t in tasks],  # type: ignore[attr-defined]
        cpus=[t.cores for t in tasks],  # type: ignore[attr-defined]
        memory=[t.memory for t in tasks],  # type: ignore[attr-defined]
        gpus=[0] * len(tasks),
        duration=runtimes,
        estimate=runtimes,
        walltime=[0.0] * len(tasks),
        retries=[0] * len(tasks),
        parents=parents,
    )


def from_spec(spec: object) -> SimWorkload:
    """From a validated :class:`~hpcorch.spec.WorkflowSpec`.

    Emulated tasks run for their ``duration``; other tasks for their walltime
    (else 60 s): the simulator has no way to know how long real code runs.
    """

    if not isinstance(spec, WorkflowSpec):
        raise TypeError(f"expected a WorkflowSpec, got {type(spec).__name__}")
    tasks = spec.tasks
    index = {t.id: i for i, t in enumerate(tasks)}
    durations = [
        t.duration if t.duration is not None else (t.resources.walltime or 60.0) for t in tasks
    ]
    return _build(
        spec.name,
        [t.id for t in tasks],
        cpus=[t.cpus for t in tasks],
        memory=[t.resources.memory for t in tasks],
        gpus=[int(-(-t.gpus // 1)) for t in tasks],
        duration=durations,
        estimate=[t.estimate if t.duration is None else t.duration for t in tasks],
        walltime=[t.resources.walltime or 0.0 for t in tasks],
        retries=[t.retries for t in tasks],
        parents=[[index[p] for p in t.after] for t in tasks],
    )


def synthetic(
    n: int,
    *,
    width: int | None = None,
    cpus: Sequence[int] = (1, 2, 4, 8),
    mean_duration_s: float = 600.0,
    retries: int = 1,
    seed: int = 0,
) -> SimWorkload:
    """``n`` tasks in stages of ``width``; each task after the first stage depends on two
    tasks of the previous stage (fan-in). Durations are log-normal around the mean;
    estimates are the duration give or take 20 % (users' estimates are rough)."""
    rng = random.Random(seed)
    width = width or max(2, n // 5)
    width += width % 2  # pairs (i, i ^ 1) stay inside one stage
    cpu_choice = [rng.choice(cpus) for _ in range(n)]
    sigma = 0.5
    mu_shift = mean_duration_s / 1.1331  # exp(sigma^2 / 2): keep the mean at mean_duration_s
    duration = [mu_shift * rng.lognormvariate(0.0, sigma) for _ in range(n)]
    estimate = [d * rng.uniform(0.8, 1.2) for d in duration]
    parents: list[Sequence[int]] = [
        () if i < width else tuple(sorted({i - width, (i - width) ^ 1})) for i in range(n)
    ]
    return _build(
        f"synthetic-{n}",
        None,
        cpus=cpu_choice,
        memory=[0] * n,
        gpus=[0] * n,
        duration=duration,
        estimate=estimate,
        walltime=[0.0] * n,
        retries=[retries] * n,
        parents=parents,
    )
