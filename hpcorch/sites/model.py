"""Frozen, validated models of a site (one cluster): partitions and node shapes.

This is the minimal core the engine and placement code rely on; the sites
module extends it (connection, account, QOS, limits, charge rates, prologue).
Field names here are part of the internal contract: extend, don't rename.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NodeShape(_Frozen):
    """One node's hardware as Slurm sees it."""

    sockets: int = Field(1, ge=1)
    cores_per_socket: int = Field(1, ge=1)
    memory: int = Field(..., gt=0, description="bytes of memory Slurm can allocate")
    gpus: int = Field(0, ge=0)
    gpu_type: str | None = None
    gpu_sockets: tuple[int, ...] = Field(
        (), description="socket of each GPU, by GPU index (empty: unknown)"
    )
    nvlinks: tuple[tuple[int, int], ...] = Field((), description="GPU index pairs joined by NVLink")

    @property
    def cores(self) -> int:
        return self.sockets * self.cores_per_socket


class Partition(_Frozen):
    name: str
    nodes: int = Field(..., ge=1, description="number of nodes in the partition")
    node: NodeShape
    max_walltime_s: float | None = None
    max_nodes_per_job: int | None = None
    default: bool = False


class Site(_Frozen):
    name: str
    kind: Literal["local", "slurm"]
    partitions: tuple[Partition, ...]
