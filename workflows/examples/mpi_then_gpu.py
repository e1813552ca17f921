"""The two steps of ``workflows/mpi-then-gpu.yaml``: an MPI simulation, then a GPU analysis.

``simulate`` is an mpi4py function task: hpcorch starts it as an ``srun`` step
and every rank calls ``simulate(comm, ...)``. It solves the 1-D heat equation
on a rod split evenly over the ranks (one halo cell exchanged with each
neighbour per step), gathers the field on rank 0 and saves it to
``$HPCORCH_RUN_DIR/heat.npy``.

``analyse`` runs as a command task (``python -m workflows.examples.mpi_then_gpu
analyse``) in a slot of one GPU: :func:`hpcorch.gpu.xp` gives it CuPy on a GPU
node and NumPy elsewhere (the dev cluster's GPUs are stand-ins), so the same
code runs on both. It writes ``$HPCORCH_RUN_DIR/analysis.json``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np


def _run_dir() -> Path:
    return Path(os.environ.get("HPCORCH_RUN_DIR", "."))


def simulate(
    comm: Any, cells_per_rank: int = 50_000, steps: int = 200, alpha: float = 0.25
) -> dict[str, Any]:
    """Diffuse a hot spot along the rod; rank 0 saves the field and returns a summary."""
    from mpi4py import MPI

    rank, size = comm.Get_rank(), comm.Get_size()
    n = cells_per_rank
    x = (np.arange(n) + rank * n) / (n * size)
    u = np.zeros(n + 2)  # one ghost cell at each end
    u[1:-1] = np.exp(-(((x - 0.5) / 0.05) ** 2))
    left = rank - 1 if rank > 0 else MPI.PROC_NULL
    right = rank + 1 if rank < size - 1 else MPI.PROC_NULL
    for _ in range(steps):
        comm.Sendrecv(u[1:2], dest=left, recvbuf=u[-1:], source=right)
        comm.Sendrecv(u[-2:-1], dest=right, recvbuf=u[0:1], source=left)
        u[1:-1] += alpha * (u[:-2] - 2 * u[1:-1] + u[2:])
    heat = comm.allreduce(float(u[1:-1].sum()), op=MPI.SUM)
    field = comm.gather(u[1:-1], root=0)
    nodes = comm.gather(MPI.Get_processor_name(), root=0)
    if rank != 0:
        return {}
    path = _run_dir() / "heat.npy"
    np.save(path, np.concatenate(field))
    return {"ranks": size, "nodes": sorted(set(nodes)), "heat": heat, "field": str(path)}


def analyse(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Peak, total heat and the share of the power spectrum in its 10 lowest modes."""
    from hpcorch.gpu import to_numpy, xp
    from hpcorch.gpu_env import visible_gpus

    xp_ = xp()
    shown = visible_gpus(os.environ)  # CUDA_VISIBLE_DEVICES, or ROCR_VISIBLE_DEVICES on AMD
    u = xp_.asarray(np.load(path or _run_dir() / "heat.npy"))
    power = xp_.abs(xp_.fft.rfft(u)) ** 2
    summary = {
        "backend": xp_.__name__,
        "cells": int(u.size),
        "heat": float(to_numpy(u.sum())),
        "peak": float(to_numpy(u.max())),
        "low_mode_share": float(to_numpy(power[:10].sum() / power.sum())),
        "gpus": ",".join(shown) if shown is not None else None,
    }
    (_run_dir() / "analysis.json").write_text(json.dumps(summary))
    return summary


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["analyse"]:
        sys.stderr.write("usage: python -m workflows.examples.mpi_then_gpu analyse\n")
        return 2
    print(json.dumps(analyse()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
