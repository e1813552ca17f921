"""Task code the dev-cluster placement tests run (importable from the repository root)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def allreduce(comm: Any, base: int) -> dict[str, Any]:
    """An mpi4py function task: sum ``base + rank`` over all ranks; rank 0 writes what it saw."""
    from mpi4py import MPI  # noqa: PLC0415  # optional, only inside an MPI step

    nodes = comm.gather(os.environ.get("SLURMD_NODENAME"), root=0)
    total = comm.allreduce(base + comm.Get_rank(), op=MPI.SUM)
    size = comm.Get_size()
    if total != size * base + size * (size - 1) // 2:
        raise ValueError(f"allreduce gave {total}")
    out = {"size": size, "total": total, "nodes": nodes}
    if comm.Get_rank() == 0:
        Path(os.environ["HPCORCH_RUN_DIR"], "allreduce.json").write_text(json.dumps(out))
    return out
