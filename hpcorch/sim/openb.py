"""Replay Alibaba openb GPU pods through hpcorch's placement policy (:mod:`hpcorch.placement`).

Two replays on the trace's 1,213 GPU nodes:

- :func:`fill_replay`, the FGD paper's experiment ("Beware of Fragmentation",
  USENIX ATC 2023): pods in file (creation) order, each placed on arrival and
  never removed, until the first that fits nowhere; the figure is the share of
  all GPU capacity allocated then (shares as ``gpu_milli / 1000``). The trace
  is replayed again from its start should every pod fit, up to ``max_passes``.
- :func:`event_replay`, a simulation in time: pods arrive at their creation
  time, hold their resources until their deletion time, and wait in a FIFO
  queue when they fit nowhere; it gives the mean wait, makespan and GPU
  utilization under a policy.

Conversion (the same as ``scripts/bench/placement``): the trace counts CPU in
milli-cores and the policy hands out core ids, so a node gets one id per tenth
of a core and a pod its ``cpu_milli`` rounded up to tenths; nodes are
dual-socket when their GPUs split evenly; the trace has no NVLink data.
"""

from __future__ import annotations

import heapq
import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hpcorch.placement import POLICIES, NodeCapacity, Packer, Placement, Request, workload_classes
from hpcorch.placement.packer import Policy, TaskClass
from hpcorch.topology import GpuInfo, NodeTopology
from hpcorch.traces import read_openb_nodes, read_openb_pods, resolve_trace

__all__ = [
    "OpenbPodTimes",
    "compare_policies",
    "event_replay",
    "fill_replay",
    "load_openb",
    "openb_nodes",
    "openb_pods",
]

_MIB = 1024**2
CPU_UNIT_MILLI = 100
DEFAULT_NODES = "openb_node_list_gpu_node.csv"


@dataclass(frozen=True, slots=True)
class OpenbPodTimes:
    creation: float
    duration: float


def openb_nodes(path: str | os.PathLike[str]) -> list[NodeCapacity]:
    states = []
    for node in read_openb_nodes(path):
        units = node.cpu_milli // CPU_UNIT_MILLI
        sockets = 2 if units % 2 == 0 and node.gpus % 2 == 0 else 1
        gpus = tuple(
            GpuInfo(i, i * sockets // node.gpus, node.model or None) for i in range(node.gpus)
        )
        topology = NodeTopology(sockets, units // sockets, node.memory_mib * _MIB, gpus)
        states.append(NodeCapacity.idle(node.name, topology))
    return states


def openb_pods(path: str | os.PathLike[str]) -> tuple[list[Request], list[OpenbPodTimes]]:
    """Requests in file order, and each pod's creation time and lifetime (-1: unknown)."""
    requests = []
    times = []
    for pod in read_openb_pods(path):
        gpus = pod.gpu_milli / 1000 if pod.num_gpu and pod.gpu_milli < 1000 else float(pod.num_gpu)
        requests.append(
            Request(
                cpus=-(-pod.cpu_milli // CPU_UNIT_MILLI),
                memory=pod.memory_mib * _MIB,
                gpus=gpus,
                share_gpus=True,
                id=pod.name,
            )
        )
        begin = pod.scheduled if pod.scheduled > 0 else pod.creation
        duration = pod.deletion - begin if pod.deletion > begin >= 0 else -1.0
        times.append(OpenbPodTimes(pod.creation, duration))
    return requests, times


def load_openb(
    pods_path: str | os.PathLike[str], nodes_path: str | os.PathLike[str] | None = None
) -> tuple[list[NodeCapacity], list[Request], list[OpenbPodTimes]]:
    """Nodes (default: the GPU node list beside the pods) and pods of an openb trace."""
    nodes_file = resolve_trace(nodes_path or DEFAULT_NODES)
    requests, times = openb_pods(resolve_trace(pods_path))
    return openb_nodes(nodes_file), requests, times


def fill_replay(
    policy: Policy,
    nodes: Sequence[NodeCapacity],
    pods: Sequence[Request],
    classes: Sequence[TaskClass] | None = None,
    *,
    max_passes: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """The FGD experiment: place pods in order, never remove, stop at the first that fails."""
    classes = workload_classes(pods) if classes is None else classes
    packer = Packer(nodes, policy, workload=classes, seed=seed)
    total_milli = sum(n.topology.gpu_count for n in nodes) * 1000
    placed = 0
    first_unplaced = None
    for attempt in range(max_passes * len(pods)):
        pod = pods[attempt % len(pods)]
        if packer.place(pod) is None:
            first_unplaced = pod.id
            break
        placed += 1
    in_use = packer.gpu_milli_in_use()
    return {
        "policy": policy,
        "alloc_rate": in_use / total_milli if total_milli else 0.0,
        "pods_placed": placed,
        "first_unplaced": first_unplaced,
        "gpu_milli_allocated": in_use,
    }


def event_replay(
    policy: Policy,
    nodes: Sequence[NodeCapacity],
    pods: Sequence[Request],
    times: Sequence[OpenbPodTimes],
    classes: Sequence[TaskClass] | None = None,
    *,
    seed: int = 0,
    retry_window: int = 16,
) -> dict[str, Any]:
    """Pods arrive, hold, leave; those that fit nowhere wait (FIFO, with the next
    ``retry_window`` also tried when capacity frees). Pods without a known lifetime are
    left out."""
    classes = workload_classes(pods) if classes is None else classes
    packer = Packer(nodes, policy, workload=classes, seed=seed)
    total_milli = sum(n.topology.gpu_count for n in nodes) * 1000
    events: list[tuple[float, int, int]] = []  # (time, 0 departure | 1 arrival, pod)
    for i, t in enumerate(times):
        if t.duration > 0 and t.creation >= 0:
            events.append((t.creation, 1, i))
    heapq.heapify(events)
    holding: dict[int, Placement] = {}
    waiting: deque[int] = deque()
    start_of: dict[int, float] = {}
    milli_s = 0.0
    in_use = 0
    last = events[0][0] if events else 0.0
    first = last
    end = last

    def try_start(i: int, now: float) -> bool:
        placement = packer.place(pods[i])
        if placement is None:
            return False
        holding[i] = placement
        start_of[i] = now
        heapq.heappush(events, (now + times[i].duration, 0, i))
        return True

    while events:
        now, kind, i = heapq.heappop(events)
        milli_s += in_use * (now - last)
        last = now
        if kind == 1:
            if waiting or not try_start(i, now):
                waiting.append(i)
        else:
            packer.release(holding.pop(i))
            end = now
            tried = 0
            while waiting and tried < retry_window:
                j = waiting[0]
                if try_start(j, now):
                    waiting.popleft()
                else:
                    waiting.rotate(-1)
                    tried += 1
            if tried:
                waiting.rotate(tried)
        in_use = packer.gpu_milli_in_use()
    waits = [start_of[i] - times[i].creation for i in start_of]
    makespan = end - first
    return {
        "policy": policy,
        "pods": len(start_of),
        "never_started": len(waiting),
        "mean_wait_s": sum(waits) / len(waits) if waits else 0.0,
        "makespan_s": makespan,
        "utilization": milli_s / (total_milli * makespan) if makespan > 0 else 0.0,
    }


def compare_policies(
    nodes: Sequence[NodeCapacity],
    pods: Sequence[Request],
    classes: Sequence[TaskClass] | None = None,
    *,
    policies: Sequence[Policy] = POLICIES,
    random_seeds: int = 5,
) -> dict[str, dict[str, Any]]:
    """Fill replay of every policy on the same nodes and pods, as the placement bench
    prints; random fit's rate is the mean over ``random_seeds`` seeds."""
    classes = workload_classes(pods) if classes is None else classes
    out: dict[str, dict[str, Any]] = {}
    for policy in policies:
        if policy != "random_fit":
            out[policy] = fill_replay(policy, nodes, pods, classes)
            continue
        runs = [fill_replay(policy, nodes, pods, classes, seed=s) for s in range(random_seeds)]
        out[policy] = {
            "policy": policy,
            "alloc_rate": sum(r["alloc_rate"] for r in runs) / len(runs),
            "alloc_rate_per_seed": [r["alloc_rate"] for r in runs],
            "pods_placed_per_seed": [r["pods_placed"] for r in runs],
        }
    return out
