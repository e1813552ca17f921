"""Choose cores and GPUs on one node for one demand (pure functions).

- k whole GPUs: the set with most NVLink links inside it, on fewest sockets,
  leaving the most NVLink pairs intact among the GPUs still free, taken from
  the socket with the fewest free GPUs (so whole sockets stay free).
- a GPU share: the GPU with the least free share that still fits (best fit),
  so partly used GPUs fill up before a whole one is broken.
- cores: each rank's cores on one socket when possible, the GPUs' socket
  first, otherwise the socket with the fewest free cores that fit (packing
  ranks socket by socket); a rank straddles sockets only when no socket fits.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection, Iterable, Sequence

from hpcorch.placement.request import GPU_MILLI, NodeDemand, RankSlot, Slot
from hpcorch.placement.state import NodeCapacity
from hpcorch.topology import NodeTopology

__all__ = ["choose_cores", "choose_gpus", "choose_share", "choose_slot"]

# Above this many candidate GPU sets, a greedy choice replaces enumeration.
_MAX_COMBINATIONS = 256


def _links_within(topology: NodeTopology, gpus: Iterable[int]) -> int:
    chosen = sorted(gpus)
    return sum(1 for a, b in topology.nvlinks if a in chosen and b in chosen)


def _by_socket(topology: NodeTopology, gpus: Iterable[int]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for gpu in gpus:
        socket = topology.gpus[gpu].socket
        out.setdefault(-1 if socket is None else socket, []).append(gpu)
    return out


def choose_gpus(topology: NodeTopology, free: Sequence[int], k: int) -> tuple[int, ...]:
    """Pick ``k`` of the ``free`` whole GPUs (see module docstring for the order)."""
    if k <= 0:
        return ()
    if k > len(free):
        raise ValueError(f"{k} GPUs asked, {len(free)} free")
    if k == len(free):
        return tuple(sorted(free))
    per_socket = _by_socket(topology, free)
    if topology.nvlinks and math.comb(len(free), k) <= _MAX_COMBINATIONS:
        free_set = set(free)

        def score(combo: tuple[int, ...]) -> tuple[int, int, int, int, tuple[int, ...]]:
            sockets = {topology.gpus[g].socket for g in combo}
            left = free_set.difference(combo)
            crowd = sum(len(per_socket[-1 if s is None else s]) for s in sockets)
            return (
                -_links_within(topology, combo),
                len(sockets),
                -_links_within(topology, left),
                crowd,
                combo,
            )

        return min(itertools.combinations(sorted(free), k), key=score)
    # Greedy: fill from the socket with the fewest free GPUs that still hold k,
    # else from the fullest sockets down.
    fitting = [s for s, gpus in per_socket.items() if len(gpus) >= k]
    if fitting:
        socket = min(fitting, key=lambda s: (len(per_socket[s]), s))
        return tuple(sorted(per_socket[socket])[:k])
    chosen: list[int] = []
    for socket in sorted(per_socket, key=lambda s: (-len(per_socket[s]), s)):
        chosen.extend(sorted(per_socket[socket])[: k - len(chosen)])
        if len(chosen) == k:
            break
    return tuple(sorted(chosen))


def choose_share(state: NodeCapacity, milli: int) -> int:
    """The GPU to take a ``milli`` share of: best fit, breaking a whole GPU last."""
    topology = state.topology
    whole = set(state.whole_free_gpus)
    candidates = [g for g, free in enumerate(state.gpu_free) if free >= milli]
    if not candidates:
        raise ValueError(f"no GPU on {state.name} has {milli} milli free")

    def score(gpu: int) -> tuple[int, int, int]:
        # Among whole GPUs, break one with no free NVLink partner first.
        partners = sum(1 for other in whole if other != gpu and topology.linked(gpu, other))
        return (state.gpu_free[gpu], partners, gpu)

    return min(candidates, key=score)


def choose_cores(
    topology: NodeTopology, free: Collection[int], n: int, prefer: Collection[int] = ()
) -> tuple[int, ...]:
    """Pick ``n`` of the ``free`` core ids, on one socket when possible."""
    if n <= 0:
        return ()
    if n > len(free):
        raise ValueError(f"{n} cores asked, {len(free)} free")
    per_socket: dict[int, list[int]] = {s: [] for s in range(topology.sockets)}
    for core in free:
        per_socket[topology.socket_of_core(core)].append(core)
    fitting = [s for s, cores in per_socket.items() if len(cores) >= n]
    if fitting:
        socket = min(fitting, key=lambda s: (s not in prefer, len(per_socket[s]), s))
        return tuple(sorted(per_socket[socket])[:n])
    chosen: list[int] = []
    for socket in sorted(per_socket, key=lambda s: (s not in prefer, -len(per_socket[s]), s)):
        chosen.extend(sorted(per_socket[socket])[: n - len(chosen)])
        if len(chosen) == n:
            break
    return tuple(sorted(chosen))


def choose_slot(
    state: NodeCapacity, demand: NodeDemand, share_gpu: int | None = None
) -> Slot | None:
    """Cores and GPUs for ``demand`` on this node, ranks bound socket by socket.

    ``share_gpu`` names the GPU for a shared demand when the caller (a policy
    scoring each GPU) already chose it. Returns None when the demand does not fit.
    """
    if not state.fits(demand):
        return None
    topology = state.topology
    milli = GPU_MILLI
    if demand.shared:
        gpus: tuple[int, ...] = (
            share_gpu if share_gpu is not None else choose_share(state, demand.gpu_milli),
        )
        milli = demand.gpu_milli
    else:
        gpus = choose_gpus(topology, state.whole_free_gpus, demand.gpus)

    def socket_key(gpu: int) -> tuple[int, int]:
        socket = topology.gpus[gpu].socket
        return (-1 if socket is None else socket, gpu)

    ordered = sorted(gpus, key=socket_key)
    all_sockets = {s for g in gpus if (s := topology.gpus[g].socket) is not None}
    free = set(state.free_cores)
    ranks: list[RankSlot] = []
    per = demand.gpus_per_rank
    for rank in range(demand.ranks):
        rank_gpus = tuple(ordered[rank * per : (rank + 1) * per]) if per else tuple(gpus)
        prefer = {s for g in rank_gpus if (s := topology.gpus[g].socket) is not None}
        cores = choose_cores(topology, free, demand.cpus_per_rank, prefer or all_sockets)
        free.difference_update(cores)
        ranks.append(RankSlot(cores, rank_gpus))
    return Slot(
        node=state.name,
        cores=tuple(sorted(c for r in ranks for c in r.cores)),
        gpus=tuple(sorted(gpus)),
        gpu_milli=milli,
        memory=demand.memory,
        ranks=tuple(ranks) if demand.ranks > 1 else (),
    )
