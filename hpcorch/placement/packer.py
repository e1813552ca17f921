"""The placement policy: which node (and which GPU) each request goes to.

:func:`place` is a pure function of node states and a queue of requests. It
runs a :class:`Packer`, the mutable working form the simulator keeps across
arrivals and departures: per-node free capacity lives in numpy arrays, so
scoring every node for a request costs a few vector operations even at
10,000 nodes, and only the node that changed is recomputed.

Policies (lower score wins, infeasible nodes score +inf):

``packing`` (default)
    ``fgd`` plus two terms that matter once a cluster is nearly full: GPU
    share *stranded* on a node because its free cores or memory cannot feed
    it at the workload's mean cores (bytes) per GPU, and the risk of taking
    away one of the last nodes that can host some class of task (each loss
    costs that class's GPU share divided by how many hosts it has left).
    Whole nodes thus stay free for large tasks, and CPU-only or CPU-heavy
    tasks go to nodes with cores to spare.
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

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from hpcorch.placement.choose import choose_slot
from hpcorch.placement.request import GPU_MILLI, NodeDemand, Placement, Request, Slot
from hpcorch.placement.state import NodeCapacity

__all__ = ["POLICIES", "Packer", "Policy", "TaskClass", "place", "workload_classes"]

Policy = Literal["packing", "fgd", "best_fit", "random_fit"]
POLICIES: tuple[Policy, ...] = ("packing", "fgd", "best_fit", "random_fit")

Int = npt.NDArray[np.int64]
Float = npt.NDArray[np.float64]

# Weight of the best-fit tie-break under fgd: small enough never to override
# a real difference in fragmentation (at least one milli-GPU times the weight
# of the rarest task class, itself at least one task of the workload).
_TIE = 1e-6
# Weight of losing one of a class's last hosts (see Packer._delta).
SCARCITY = 1.0


@dataclass(frozen=True, slots=True)
class TaskClass:
    """A kind of task in the expected workload, and its share of it (for ``fgd``)."""

    cpus: int
    memory: int
    gpus: int  # whole GPUs; 1 for a share
    gpu_milli: int  # GPU_MILLI for whole GPUs, the share otherwise; 0 without GPUs
    weight: float


def workload_classes(requests: Iterable[Request], limit: int = 256) -> tuple[TaskClass, ...]:
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
        nodes: Sequence[NodeCapacity],
        policy: Policy = "packing",
        *,
        workload: Sequence[TaskClass] = (),
        seed: int = 0,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown placement policy {policy!r} (known: {', '.join(POLICIES)})")
        if policy in ("fgd", "packing") and not workload:
            raise ValueError(f"the {policy} policy needs the expected workload (workload_classes)")
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
        m = len(classes)
        self._c: Int = np.array([c.cpus for c in classes], np.int64)
        self._m: Int = np.array([c.memory for c in classes], np.int64)
        self._k: Int = np.array([c.gpus for c in classes], np.int64)
        self._t: Int = np.array([c.gpu_milli or GPU_MILLI for c in classes], np.int64)
        self._p: Float = np.array([c.weight for c in classes], np.float64)
        self._p /= self._p.sum() if m else 1.0
        # The workload's mean GPU share per core and per byte, for "stranded" GPUs.
        gpu_use = float((self._p * self._k * self._t).sum())
        gpu_tasks = self._k > 0
        self._per_cpu = gpu_use / max(float((self._p * self._c)[gpu_tasks].sum()), 1e-9)
        self._per_byte = gpu_use / max(float((self._p * self._m)[gpu_tasks].sum()), 1e-9)
        self._ge: Int = np.zeros((n, m), np.int64)  # GPUs with a class's share free
        self._lt: Int = np.zeros((n, m), np.int64)  # free share on GPUs too small for it
        self._fits = np.zeros((n, m), np.bool_)  # node can host one task of the class
        self._hosts: Int = np.zeros(m, np.int64)  # nodes that can, per class
        self._frag: Float = np.zeros(n, np.float64)
        self._rng = np.random.default_rng(seed)
        # Nodes in the same free state score alike: each distinct state gets an
        # id, and only one node per id is scored (most nodes of a large,
        # uniform cluster are idle, so this is what keeps 10,000 nodes fast).
        self._state_ids: dict[tuple[int, int, tuple[int, ...], int], int] = {}
        self._key: Int = np.zeros(n, np.int64)
        for i in range(n):
            self._refresh(i)

    # ------------------------------------------------------------ state

    @property
    def states(self) -> list[NodeCapacity]:
        return list(self._states)

    def state(self, node: str) -> NodeCapacity:
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
        shape = (len(state.free_cores), state.free_memory, state.gpu_free, state.topology.cores)
        self._key[i] = self._state_ids.setdefault(shape, len(self._state_ids))
        if not self._p.size:
            return
        free = self._gpu[i][:, None]
        self._ge[i] = (free >= self._t).sum(0)
        self._lt[i] = (free * (free < self._t)).sum(0)
        fits = self._class_fits(self._cpu[i], self._mem[i], self._ge[i])
        self._hosts += fits.astype(np.int64) - self._fits[i]
        self._fits[i] = fits
        self._frag[i] = self._node_cost(
            self._cpu[i], self._mem[i], self._gpu[i].sum(), self._lt[i], fits
        )

    def _apply(self, slot: Slot, *, release: bool = False) -> None:
        i = self._index[slot.node]
        state = self._states[i]
        self._states[i] = state.give(slot) if release else state.take(slot)
        self._refresh(i)

    # ------------------------------------------------------------ scoring

    def _class_fits(self, cpu: Any, mem: Any, ge: Any) -> npt.NDArray[np.bool_]:
        fits: npt.NDArray[np.bool_] = (
            (np.asarray(cpu)[..., None] >= self._c)
            & (np.asarray(mem)[..., None] >= self._m)
            & (ge >= self._k)
        )
        return fits

    def _node_cost(self, cpu: Any, mem: Any, total: Any, lt: Any, fits: Any) -> Float:
        """Expected fragmentation (FGD) plus, for ``packing``, stranded GPU share."""
        total = np.asarray(total)
        frag = np.where(fits & (self._k > 0), lt, total[..., None])
        cost: Float = frag @ self._p
        if self.policy == "packing":
            # GPU share the free cores (memory) cannot feed at the workload's
            # mean cores (bytes) per GPU: stranded whatever lands there next.
            feedable = np.minimum(np.asarray(cpu) * self._per_cpu, np.asarray(mem) * self._per_byte)
            cost = cost + np.maximum(total - feedable, 0.0)
        return cost

    def _delta(self, rows: Int, cpu: Any, mem: Any, total: Any, *, ge: Any, lt: Any) -> Float:
        """Cost change on ``rows`` for after-states given with a trailing option axis."""
        fits = self._class_fits(cpu, mem, ge)
        delta: Float = self._node_cost(cpu, mem, total, lt, fits) - self._frag[rows][:, None]
        if self.policy == "packing":
            # Losing one of the last nodes able to host a class risks that
            # class's next task not fitting at all; the fewer hosts are left,
            # the more a loss costs (in the class's GPU share).
            lost = self._fits[rows][:, None, :] & ~fits
            scarce = SCARCITY * (self._k * self._t) / np.maximum(self._hosts, 1)
            delta = delta + (lost * scarce).sum(-1)
        return delta

    def scores(self, demand: NodeDemand) -> tuple[Float, Int]:
        """Score of every node for ``demand`` (+inf: does not fit) and, for a
        shared demand, the GPU each node would give (-1 otherwise)."""
        n = self._gpu.shape[0]
        fit = (self._cpu >= demand.cpus) & (self._mem >= demand.memory)
        if demand.shared:
            share = demand.gpu_milli
            # Two candidate GPUs per node: the tightest partly used one that
            # fits, and a whole one; whole GPUs are alike for scoring.
            partial = (self._gpu >= share) & (self._gpu < GPU_MILLI)
            tight = np.where(partial, self._gpu, GPU_MILLI + 1).argmin(1)
            whole = (self._gpu == GPU_MILLI).argmax(1)
            gpus = np.stack([tight, whole], 1)
            free = np.take_along_axis(self._gpu, gpus, 1)
            ok = fit[:, None] & np.stack([partial.any(1), self._gpu.max(1) == GPU_MILLI], 1)
            raw = np.full(ok.shape, np.inf)
            rows = np.flatnonzero(ok.any(1))
            if rows.size:
                reps, back = self._distinct(rows)
                raw[rows] = self._option_scores(demand, reps, free[reps])[back]
            raw = np.where(ok, raw, np.inf)
            pick = raw.argmin(1)
            score = raw[np.arange(n), pick]
            chosen = gpus[np.arange(n), pick]
            return score, np.where(np.isfinite(score), chosen, -1)
        fit &= (self._gpu == GPU_MILLI).sum(1) >= demand.gpus
        raw = np.full(n, np.inf)
        rows = np.flatnonzero(fit)
        if rows.size:
            reps, back = self._distinct(rows)
            taken = np.full((reps.size, 1), demand.gpus * GPU_MILLI)
            raw[rows] = self._option_scores(demand, reps, taken, whole=True)[back, 0]
        return raw, np.full(n, -1, np.int64)

    def _distinct(self, rows: Int) -> tuple[Int, Int]:
        """One row per distinct node state, and the map back to ``rows``."""
        if self.policy == "random_fit":  # every node draws its own number
            return rows, np.arange(rows.size)
        _, first, back = np.unique(self._key[rows], return_index=True, return_inverse=True)
        return rows[first], back.reshape(-1)

    def _option_scores(
        self, demand: NodeDemand, rows: Int, free: Int, *, whole: bool = False
    ) -> Float:
        """Scores of ``rows`` x options; ``free`` is each option's GPU free share
        (for whole GPUs, the share taken)."""
        if self.policy == "random_fit":
            result: Float = self._rng.random(free.shape)
            return result
        taken = free if whole else np.full_like(free, demand.gpu_milli)
        cpu_n, mem_n, gpu_n = self._norm
        cpu = (self._cpu[rows] - demand.cpus)[:, None]
        mem = (self._mem[rows] - demand.memory)[:, None]
        total = self._gpu[rows].sum(1)[:, None] - taken
        left = cpu / cpu_n + mem / mem_n + total / gpu_n
        if not whole:
            left = left + _TIE * (free - taken) / GPU_MILLI  # tighter GPU first
        if self.policy == "best_fit":
            best: Float = left
            return best
        t = self._t
        if whole:
            ge = self._ge[rows][:, None, :] - np.where(self._k > 0, demand.gpus, 0)
            lt = self._lt[rows][:, None, :].repeat(free.shape[1], 1)
        else:
            after = (free - taken)[..., None]
            before = free[..., None]
            ge = self._ge[rows][:, None, :] - (before >= t) + (after >= t)
            lt = self._lt[rows][:, None, :] - before * (before < t) + after * (after < t)
        cpu_b = np.broadcast_to(cpu, free.shape)
        mem_b = np.broadcast_to(mem, free.shape)
        result = self._delta(rows, cpu_b, mem_b, total, ge=ge, lt=lt) + _TIE * left
        return result

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
    nodes: Sequence[NodeCapacity],
    requests: Sequence[Request],
    policy: Policy = "packing",
    *,
    workload: Sequence[TaskClass] | None = None,
    seed: int = 0,
    stop_at_first_failure: bool = False,
) -> tuple[list[Placement | None], list[NodeCapacity]]:
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
