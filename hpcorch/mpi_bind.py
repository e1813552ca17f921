"""Give each rank of an srun step its own GPUs, then exec the real command.

``python -m hpcorch.mpi_bind GPUS_PER_RANK -- COMMAND...``

Slurm binds GPUs to tasks only where its task plugin does (task/cgroup,
task/affinity); elsewhere every rank sees all of the step's GPUs. This
wrapper slices ``CUDA_VISIBLE_DEVICES`` by the rank's node-local id
(``OMPI_COMM_WORLD_LOCAL_RANK``, else ``SLURM_LOCALID``), so rank ``i`` gets
GPUs ``i*G .. i*G+G-1`` in index order. With block:block distribution ranks
fill socket 0 first, and GPUs are numbered socket by socket, so each rank's
GPUs sit on its socket. When Slurm already bound them (a rank sees ``G``
GPUs or fewer), nothing changes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from hpcorch.gpu_env import apply_gpu_env, env_vendor, visible_gpus

__all__ = ["main", "rank_gpus"]


def rank_gpus(env: Mapping[str, str], per_rank: int) -> str | None:
    """This rank's share of the step's GPUs, as node-wide ids (None: leave them as they are).

    The step's GPUs are ``ROCR_VISIBLE_DEVICES`` on AMD, ``CUDA_VISIBLE_DEVICES`` on NVIDIA.
    """
    visible = visible_gpus(env)
    if visible is None or per_rank <= 0:
        return None
    names = list(visible)
    if len(names) <= per_rank:
        return None
    # Open MPI's own: under mpirun every rank of a node shares its daemon's SLURM_LOCALID.
    local = int(env.get("OMPI_COMM_WORLD_LOCAL_RANK", env.get("SLURM_LOCALID", "0")))
    first = local * per_rank
    return ",".join(names[(first + j) % len(names)] for j in range(per_rank))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or args[1] != "--" or not args[0].isdigit():
        sys.stderr.write("usage: python -m hpcorch.mpi_bind GPUS_PER_RANK -- COMMAND...\n")
        return 2
    gpus = rank_gpus(os.environ, int(args[0]))
    if gpus is not None:
        env = dict(os.environ)
        apply_gpu_env(env, gpus.split(","), env_vendor(env) or "nvidia")
        os.environ.clear()
        os.environ.update(env)
    command = args[2:]
    os.execvp(command[0], command)


if __name__ == "__main__":
    sys.exit(main())
