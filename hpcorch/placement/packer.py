"""The placement policy: which node (and which GPU) each request goes to.

:func:`place` is a pure function of node states and a queue of requests. It
runs a :class:`Packer`, the mutable working form the simulator keeps across
arrivals and departures: per-node free capacity lives in numpy arrays, so
scoring every node for a request costs a few vector operations even at
10,000 nodes, and only the node that changed is recomputed.

Policies (lower score wins, infeasible nodes score +inf):

``fgd``
    Fragmentation gradient descent (Weng et al., "Beware of Fragmentation",
    USENIX ATC 2023). The fragmentation of a node for a task class is the
    free GPU share that class could not use there: all of it when the class
    does not fit the node (cores, memory, GPUs), else the free share of GPUs
    too small for one of its GPUs. The node's expected fragmentation weighs
    the classes by their share of the workload; a request goes where that
    expectation grows least. Ties go to the tighter node (best fit).
``best_fit``
    The node left with the least free resources (GPU, cores, memory, each
    normalised by the cluster's mean node).
``random_fit``
    A feasible node chosen uniformly at random.

Within the chosen node, :func:`~hpcorch.placement.choose.choose_slot` picks
the cores and GPUs (NVLink sets, socket packing).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from hpcorch.placement.choose import choose_slot
from hpcorch.placement.request import GPU_MILLI, NodeDemand, Placement, Request, Slot
from hpcorch.placement.state import NodeState

__all__ = ["POLICIES", "Packer", "Policy", "TaskClass", "place", "workload_classes"]

logger = logging.getLogger(__name__)

Policy = Literal["fgd", "best_fit", "random_fit"]
POLICIES: tuple[Policy, ...] = ("fgd", "best_fit", "random_fit")

Int = npt.NDArray[np.int64]
Float = npt.NDArray[np.float64]

# Weight of the best-fit tie-break under fgd: small enough never to override
# a real difference in fragmentation (those are at least 1 milli-GPU).
_TIE = 1e-6


@dataclass(frozen=True, slots=True)
class TaskClass:
    """A kind of task in the expected workload, and its share of it (for ``fgd``)."""

    cpus: int
    memory: int
    gpus: int  # whole GPUs; 1 for a share
    gpu_milli: int  # GPU_MILLI for whole GPUs, the share otherwise; 0 without GPUs
    weight: float


def workload_classes(requests: Iterable[Request], limit: int = 64) -> tuple[TaskClass, ...]:
    """The ``limit`` most common per-node demands of ``requests``, weighted by count."""
    counts: Counter[tuple[int, int, int, int]] = Counter()
    for request in requests:
        d = request.demands()[0]
        if d.shared:
            key = (d.cpus, d.memory, 1, d.gpu_milli)
        else:
            key = (d.cpus, d.memory, d.gpus, GPU_MILLI if d.gpus else 0)
        counts[key] += 1
    common = counts.most_common(limit)
    total = sum(n for _, n in common) or 1
    return tuple(TaskClass(c, m, g, milli, n / total) for (c, m, g, milli), n in common)


class Packer:
    """Free capacity of many nodes, and the policy that fills them.

    Not thread-safe; one owner (the engine's scheduler loop or the simulator).
    """

    def __init__(
        self,
        nodes: Sequence[NodeState],
        policy: Policy = "fgd",
        *,
        workload: Sequence[TaskClass] = (),
        seed: int = 0,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown placement policy {policy!r} (known: {', '.join(POLICIES)})")
        if policy == "fgd" and not workload:
            raise ValueError("the fgd policy needs the expected workload (workload_classes)")
        self.policy: Policy = policy
        self._states = list(nodes)
        self._index = {s.name: i for i, s in enumerate(self._states)}
        n = len(self._states)
        width = max([s.topology.gpu_count for s in self._states] + [1])
        self._cpu: Int = np.zeros(n, np.int64)
        self._mem: Int = np.zeros(n, np.int64)
        self._gpu: Int = np.zeros((n, width), np.int64)  # absent GPUs stay at 0 free
        self._cpu_cap = np.array([s.topology.cores for s in self._states], np.float64)
        self._mem_cap = np.array([s.topology.memory for s in self._states], np.float64)
        self._gpu_cap = np.array([s.topology.gpu_count for s in self._states], np.float64)
        # Best-fit normalisation: the cluster's mean node, so units do not matter.
        self._norm = (
            max(float(self._cpu_cap.mean()), 1.0) if n else 1.0,
            max(float(self._mem_cap.mean()), 1.0) if n else 1.0,
            max(float(self._gpu_cap.mean()) * GPU_MILLI, 1.0) if n else 1.0,
        )
        classes = [c for c in workload if c.weight > 0]
        self._c: Int = np.array([c.cpus for c in classes], np.int64)
        self._m: Int = np.array([c.memory for c in classes], np.int64)
        self._k: Int = np.array([c.gpus for c in classes], np.int64)
        self._t: Int = np.array([c.gpu_milli or GPU_MILLI for c in classes], np.int64)
        self._p: Float = np.array([c.weight for c in classes], np.float64)
        self._p /= self._p.sum() if classes else 1.0
        self._ge: Int = np.zeros((n, len(classes)), np.int64)  # GPUs with free >= class need
        self._lt: Int = np.zeros((n, len(classes)), np.int64)  # free share below class need
        self._frag: Float = np.zeros(n, np.float64)
        self._rng = np.random.default_rng(seed)
        for i in range(n):
            self._refresh(i)

    # ------------------------------------------------------------ state

    @property
    def states(self) -> list[NodeState]:
        return list(self._states)

    def state(self, node: str) -> NodeState:
        return self._states[self._index[node]]

    def gpu_milli_in_use(self) -> int:
        """Sum over all GPUs of the share handed out, in milli-GPUs."""
        return int(self._gpu_cap.sum() * GPU_MILLI - self._gpu.sum())

    def _refresh(self, i: int) -> None:
        state = self._states[i]
        self._cpu[i] = len(state.free_cores)
        self._mem[i] = state.free_memory
        self._gpu[i, :] = 0
        self._gpu[i, : len(state.gpu_free)] = state.gpu_free
        if self._p.size:
            free = self._gpu[i][:, None]
            self._ge[i] = (free >= self._t).sum(0)
            self._lt[i] = (free * (free < self._t)).sum(0)
            self._frag[i] = self._expected_frag(
                self._cpu[i : i + 1],
                self._mem[i : i + 1],
                self._gpu[i : i + 1].sum(1),
                self._ge[i : i + 1],
                self._lt[i : i + 1],
            )[0]

    def _apply(self, slot: Slot, *, release: bool = False) -> None:
        i = self._index[slot.node]
        state = self._states[i]
        self._states[i] = state.give(slot) if release else state.take(slot)
        self._refresh(i)

    # ------------------------------------------------------------ scoring

    def _expected_frag(self, cpu: Int, mem: Int, total: Int, ge: Int, lt: Int) -> Float:
        """Expected fragmentation over the workload; leading axes broadcast."""
        fits = (cpu[..., None] >= self._c) & (mem[..., None] >= self._m) & (ge >= self._k)
        frag = np.where(fits & (self._k > 0), lt, total[..., None])
        result: Float = frag @ self._p
        return result

    def scores(self, demand: NodeDemand) -> tuple[Float, Int]:
        """Score of every node for ``demand`` (+inf: does not fit) and, for a
        shared demand, the GPU each node would give (-1 otherwise)."""
        fit = (self._cpu >= demand.cpus) & (self._mem >= demand.memory)
        if demand.shared:
            options = (self._gpu >= demand.gpu_milli) & fit[:, None]
            raw = self._shared_scores(demand, options)
            raw = np.where(options, raw, np.inf)
            best = raw.argmin(1)
            score = raw[np.arange(len(best)), best]
            return score, np.where(np.isfinite(score), best, -1)
        fit &= (self._gpu == GPU_MILLI).sum(1) >= demand.gpus
        raw = self._whole_scores(demand, fit)
        return np.where(fit, raw, np.inf), np.full(len(fit), -1, np.int64)

    def _left(self, demand: NodeDemand, gpu_taken: int) -> Float:
        cpu_n, mem_n, gpu_n = self._norm
        left: Float = (
            (self._cpu - demand.cpus) / cpu_n
            + (self._mem - demand.memory) / mem_n
            + (self._gpu.sum(1) - gpu_taken) / gpu_n
        )
        return left

    def _whole_scores(self, demand: NodeDemand, fit: npt.NDArray[np.bool_]) -> Float:
        taken = demand.gpus * GPU_MILLI
        if self.policy == "random_fit":
            result: Float = self._rng.random(len(fit))
            return result
        left = self._left(demand, taken)
        if self.policy == "best_fit":
            return left
        after = self._expected_frag(
            self._cpu - demand.cpus,
            self._mem - demand.memory,
            self._gpu.sum(1) - taken,
            self._ge - np.where(self._k > 0, demand.gpus, 0),
            self._lt,
        )
        return after - self._frag + _TIE * left

    def _shared_scores(self, demand: NodeDemand, options: npt.NDArray[np.bool_]) -> Float:
        share = demand.gpu_milli
        if self.policy == "random_fit":
            result: Float = self._rng.random(options.shape)
            return result
        # Tighter GPU first within a node (best fit on the GPU itself).
        tight = (self._gpu - share) / GPU_MILLI
        left = self._left(demand, share)[:, None] + _TIE * tight
        if self.policy == "best_fit":
            return left
        rows = np.flatnonzero(options.any(1))
        out = np.full(options.shape, np.inf)
        if rows.size == 0:
            return out
        free = self._gpu[rows][:, :, None]
        after_free = free - share
        t = self._t
        ge = self._ge[rows][:, None, :] - (free >= t) + (after_free >= t)
        lt = self._lt[rows][:, None, :] - free * (free < t) + after_free * (after_free < t)
        frag = self._expected_frag(
            (self._cpu[rows] - demand.cpus)[:, None].repeat(free.shape[1], 1),
            (self._mem[rows] - demand.memory)[:, None].repeat(free.shape[1], 1),
            (self._gpu[rows].sum(1) - share)[:, None].repeat(free.shape[1], 1),
            ge,
            lt,
        )
        out[rows] = frag - self._frag[rows][:, None] + _TIE * left[rows]
        return out

    # ------------------------------------------------------------ actions

    def place(self, request: Request) -> Placement | None:
        """Place ``request`` now, or return None when it does not fit anywhere."""
        demands = request.demands()
        if len(demands) == 1:
            score, gpu = self.scores(demands[0])
            i = int(score.argmin()) if score.size else -1
            if i < 0 or not np.isfinite(score[i]):
                return None
            chosen = [(i, int(gpu[i]))]
        else:
            # The first node carries the most ranks; score all nodes for it and
            # take the best distinct ones (a node holds one part of a request).
            score, gpu = self.scores(demands[0])
            order = np.argsort(score, kind="stable")[: len(demands)]
            if len(order) < len(demands) or not np.isfinite(score[order]).all():
                return None
            chosen = [(int(i), int(gpu[i])) for i in order]
        slots: list[Slot] = []
        for (i, share_gpu), demand in zip(chosen, demands, strict=True):
            slot = choose_slot(self._states[i], demand, share_gpu if share_gpu >= 0 else None)
            if slot is None:  # pragma: no cover - scores said it fits
                raise RuntimeError(f"node {self._states[i].name} scored feasible but has no slot")
            slots.append(slot)
        for slot in slots:
            self._apply(slot)
        return Placement(request, tuple(slots))

    def release(self, placement: Placement) -> None:
        """Give a placement's cores, memory and GPU shares back."""
        for slot in placement.slots:
            self._apply(slot, release=True)


def place(
    nodes: Sequence[NodeState],
    requests: Sequence[Request],
    policy: Policy = "fgd",
    *,
    workload: Sequence[TaskClass] | None = None,
    seed: int = 0,
    stop_at_first_failure: bool = False,
) -> tuple[list[Placement | None], list[NodeState]]:
    """Place ``requests`` in queue order on ``nodes``; pure: inputs are not changed.

    Returns one placement per request (None: does not fit now; with
    ``stop_at_first_failure`` the list ends there) and the nodes' new states.
    ``workload`` defaults to the classes of ``requests`` themselves.
    """
    classes = workload if workload is not None else workload_classes(requests)
    packer = Packer(nodes, policy, workload=classes or (TaskClass(1, 0, 0, 0, 1.0),), seed=seed)
    out: list[Placement | None] = []
    for request in requests:
        placement = packer.place(request)
        out.append(placement)
        if placement is None and stop_at_first_failure:
            break
    return out, packer.states
