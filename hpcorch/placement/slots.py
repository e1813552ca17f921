"""A node's cores and GPUs, handed out to the tasks running on it.

One :class:`SlotAllocator` per node (per Dask worker that owns the node).
Tasks ask for a slot, get core ids and GPU ids that no other running task
holds, and give them back when they end. Choice of cores and GPUs is
:func:`~hpcorch.placement.choose.choose_slot`: NVLink-connected, same-socket
GPUs and cores near them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import replace

from hpcorch.errors import ResourceError
from hpcorch.placement.choose import choose_gpus, choose_slot
from hpcorch.placement.request import GPU_MILLI, NodeDemand, Request, Slot
from hpcorch.placement.state import NodeCapacity
from hpcorch.topology import NodeTopology

__all__ = ["SlotAllocator"]

logger = logging.getLogger(__name__)


class SlotAllocator:
    """Thread-safe free state of one node.

    ``gpus`` restricts the usable GPUs (the ones this worker's allocation
    holds); ``share_gpus`` allows GPU shares below 1 to co-locate on one GPU,
    otherwise a share takes a whole GPU. With ``require_links`` a task of
    several GPUs waits for a set as NVLink-connected as the best one the node
    has (two GPUs: an NVLink pair) instead of taking GPUs without links
    between them; best fit keeps such sets free for it.
    """

    def __init__(
        self,
        node: str,
        topology: NodeTopology,
        *,
        gpus: Sequence[int] | None = None,
        share_gpus: bool = True,
        require_links: bool = False,
    ) -> None:
        state = NodeCapacity.idle(node, topology)
        if gpus is not None:
            usable = set(gpus)
            state = replace(
                state,
                gpu_free=tuple(f if i in usable else 0 for i, f in enumerate(state.gpu_free)),
            )
        self.node = node
        self.topology = topology
        self.share_gpus = share_gpus
        self.require_links = require_links
        self._best_links: dict[int, int] = {}
        self._capacity = state
        self._state = state
        self._cond = threading.Condition()

    @property
    def state(self) -> NodeCapacity:
        with self._cond:
            return self._state

    def demand(self, request: Request) -> NodeDemand:
        """The single-node demand of ``request`` here; refuses what can never fit."""
        demands = request.demands()
        if len(demands) != 1:
            raise ResourceError(
                f"{request.node_count}-node request given to one node's allocator; "
                "multi-node tasks run as srun steps (hpcorch.mpi)"
            )
        demand = demands[0]
        if demand.shared and not self.share_gpus:
            demand = replace(demand, gpus_per_rank=1, gpu_milli=0)
        if not self._capacity.fits(demand):
            raise ResourceError(
                f"{self.node} can never hold {demand.cpus} cores, {demand.gpus} GPU(s) "
                f"(share {demand.gpu_milli / GPU_MILLI:g}), {demand.memory} bytes: it has "
                f"{self.topology.cores} cores and {len(self._capacity.whole_free_gpus)} usable "
                "GPU(s); lower the request or send it to a larger node"
            )
        return demand

    def try_allocate(self, request: Request) -> Slot | None:
        """A slot now, or None when the node is busy."""
        demand = self.demand(request)
        with self._cond:
            return self._take(demand)

    def allocate(self, request: Request, timeout: float | None = None) -> Slot:
        """A slot, waiting for running tasks to release one (up to ``timeout`` s)."""
        demand = self.demand(request)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                slot = self._take(demand)
                if slot is not None:
                    return slot
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(
                        f"no free slot on {self.node} within {timeout:g}s; "
                        "the worker runs more tasks than its cores/GPUs hold"
                    )
                self._cond.wait(left)

    def _links(self, gpus: Sequence[int]) -> int:
        return sum(1 for a, b in self.topology.nvlinks if a in gpus and b in gpus)

    def _best(self, k: int) -> int:
        """Most NVLink links any ``k`` of this worker's usable GPUs have among them."""
        if k not in self._best_links:
            usable = self._capacity.whole_free_gpus
            self._best_links[k] = self._links(choose_gpus(self.topology, usable, k))
        return self._best_links[k]

    def _take(self, demand: NodeDemand) -> Slot | None:
        slot = choose_slot(self._state, demand)
        if (
            slot is not None
            and self.require_links
            and len(slot.gpus) > 1
            and slot.gpu_milli == GPU_MILLI
            and self._links(slot.gpus) < self._best(len(slot.gpus))
        ):
            logger.debug("%s: GPUs %s lack NVLink; waiting for a linked set", self.node, slot.gpus)
            return None
        if slot is not None:
            self._state = self._state.take(slot)
            logger.debug("%s: slot cores=%s gpus=%s", self.node, slot.cores, slot.gpus)
        return slot

    def release(self, slot: Slot) -> None:
        """Give a slot back; wakes tasks waiting for one."""
        with self._cond:
            self._state = self._state.give(slot)
            self._cond.notify_all()
