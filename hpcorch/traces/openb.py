"""Alibaba cluster-trace-gpu-v2023 (``openb_*``): GPU pods and the nodes they ran on.

Pods: ``name,cpu_milli,memory_mib,num_gpu,gpu_milli[,gpu_spec,qos,pod_phase,
creation_time,deletion_time,scheduled_time]`` (the ``multigpu50`` sample has
only the first five). ``gpu_milli`` < 1000 is a fractional, shared GPU.
Nodes: ``sn,cpu_milli,memory_mib,gpu,model``.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from typing import NamedTuple

from hpcorch.traces._paths import open_text

__all__ = ["OpenbNode", "OpenbPod", "read_openb_nodes", "read_openb_pods"]


class OpenbPod(NamedTuple):
    name: str
    cpu_milli: int
    memory_mib: int
    num_gpu: int
    gpu_milli: int
    gpu_spec: str
    qos: str
    phase: str
    creation: float
    deletion: float
    scheduled: float


class OpenbNode(NamedTuple):
    name: str
    cpu_milli: int
    memory_mib: int
    gpus: int
    model: str


def _num(value: str | None) -> float:
    return float(value) if value not in (None, "") else -1.0


def read_openb_pods(path: str | os.PathLike[str]) -> Iterator[OpenbPod]:
    """Yield pods in file order (the order the trace's own replays use)."""
    with open_text(path) as fh:
        for row in csv.DictReader(fh):
            yield OpenbPod(
                row["name"],
                int(row["cpu_milli"]),
                int(row["memory_mib"]),
                int(row["num_gpu"]),
                int(row["gpu_milli"]),
                row.get("gpu_spec") or "",
                row.get("qos") or "",
                row.get("pod_phase") or "",
                _num(row.get("creation_time")),
                _num(row.get("deletion_time")),
                _num(row.get("scheduled_time")),
            )


def read_openb_nodes(path: str | os.PathLike[str]) -> Iterator[OpenbNode]:
    with open_text(path) as fh:
        for row in csv.DictReader(fh):
            yield OpenbNode(
                row["sn"],
                int(row["cpu_milli"]),
                int(row["memory_mib"]),
                int(row["gpu"]),
                row.get("model") or "",
            )
