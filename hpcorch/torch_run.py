"""Each rank of a torch.distributed training: ``python -m hpcorch.torch_run -- COMMAND...``
or ``python -m hpcorch.torch_run PAYLOAD`` (a function task).

The worker launched the ranks as one srun step (:mod:`hpcorch.mpi`) with the
rendezvous in ``MASTER_ADDR``/``MASTER_PORT`` (:mod:`hpcorch.training`); this
shim adds what each rank is, torchrun's variables from the step's:
``RANK`` (``SLURM_PROCID``), ``WORLD_SIZE`` (``SLURM_NTASKS``), ``LOCAL_RANK``
(``SLURM_LOCALID``), ``LOCAL_WORLD_SIZE`` (this node's share of
``SLURM_STEP_TASKS_PER_NODE``), ``GROUP_RANK`` (``SLURM_NODEID``); under
``mpiexec`` (no Slurm) Open MPI's. A command then runs with them (exec); a
function gets ``fn(process_group, *args, **kwargs)`` after
``torch.distributed.init_process_group`` with the training's backend, and rank
0's value or exception comes back as :mod:`hpcorch.mpi_run`'s does.

Where the worker asks (``HPCORCH_GPU_USAGE_DIR``), each rank samples its GPUs
with NVML while it runs (:mod:`hpcorch.gpu_usage`) and writes
``rank-RANK.json``; with no GPU it writes why and execs the command as before.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path

import cloudpickle  # type: ignore[import-untyped]

from hpcorch.environment import gpu_usage_dir, torch_backend
from hpcorch.gpu_usage import GpuUsage, Sampler, encode, load_nvml, visible_indices
from hpcorch.mpi_run import _write

__all__ = ["main", "rank_env", "tasks_on_node"]


def tasks_on_node(tasks_per_node: str, node: int) -> int:
    """Slurm's ``2(x3),1`` (tasks on each node of a step) → the count on node ``node``."""
    counts: list[int] = []
    for part in tasks_per_node.split(","):
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if not m:
            raise ValueError(f"cannot read tasks per node {tasks_per_node!r}")
        counts += [int(m.group(1))] * int(m.group(2) or 1)
    return counts[node]


def rank_env(env: Mapping[str, str]) -> dict[str, str]:
    """torchrun's per-rank variables from an srun step's (or mpiexec's) environment."""
    if "SLURM_PROCID" in env:
        node = int(env.get("SLURM_NODEID", "0"))
        per_node = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
        world = env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or "1"
        return {
            "RANK": env["SLURM_PROCID"],
            "WORLD_SIZE": world,
            "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
            "LOCAL_WORLD_SIZE": str(tasks_on_node(per_node, node)) if per_node else world,
            "GROUP_RANK": str(node),
        }
    if "OMPI_COMM_WORLD_RANK" in env:
        return {
            "RANK": env["OMPI_COMM_WORLD_RANK"],
            "WORLD_SIZE": env["OMPI_COMM_WORLD_SIZE"],
            "LOCAL_RANK": env.get("OMPI_COMM_WORLD_LOCAL_RANK", "0"),
            "LOCAL_WORLD_SIZE": env.get("OMPI_COMM_WORLD_LOCAL_SIZE", "1"),
            "GROUP_RANK": env.get("OMPI_COMM_WORLD_NODE_RANK", "0"),
        }
    return {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}


def _run_function(payload: Path) -> int:
    import torch.distributed as dist  # noqa: PLC0415  # optional, only inside a training step

    with payload.open("rb") as fh:
        fn, fn_args, fn_kwargs = cloudpickle.load(fh)
    rank = int(os.environ["RANK"])
    dist.init_process_group(backend=torch_backend(os.environ))
    try:
        value = fn(dist.group.WORLD, *fn_args, **fn_kwargs)
    except BaseException as exc:
        if rank == 0:
            _write(Path(f"{payload}.result"), False, exc)
        traceback.print_exc()
        return 1  # srun --kill-on-bad-exit ends the other ranks
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if rank == 0:
        _write(Path(f"{payload}.result"), True, value)
    return 0


def _write_usage(usage: GpuUsage) -> None:
    """This rank's GPU figures where the worker asked for them (``HPCORCH_GPU_USAGE_DIR``)."""
    where = gpu_usage_dir()
    if where is None:
        return
    path = where / f"rank-{os.environ.get('RANK', '0')}.json"
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(encode(usage))
    os.replace(tmp, path)


def _sampler() -> Sampler | None:
    """A started NVML sampler of this rank's GPUs; None (and 'no GPU: why' written) without."""
    if gpu_usage_dir() is None:
        return None
    nvml, why = load_nvml()
    indices = visible_indices(nvml, os.environ.get("CUDA_VISIBLE_DEVICES")) if nvml else []
    if nvml is None or not indices:
        _write_usage(GpuUsage(none=why or "no GPU: none visible to this rank"))
        return None
    node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
    sampler = Sampler(nvml, indices, node)
    sampler.start()
    return sampler


def _run_sampled(argv: list[str], sampler: Sampler) -> int:
    """``argv`` as a child (not exec: this process samples its GPUs meanwhile)."""
    proc = subprocess.Popen(argv)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, lambda signum, _frame: proc.send_signal(signum))
    try:
        code = proc.wait()
    finally:
        _write_usage(sampler.stop())
    return code if code >= 0 else 128 - code


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    os.environ.update(rank_env(os.environ))
    sampler = _sampler()
    if len(args) >= 2 and args[0] == "--":
        if sampler is None:  # no GPU to watch: the command becomes the rank, as torchrun's
            os.execvp(args[1], args[1:])
        return _run_sampled(args[1:], sampler)
    if len(args) == 1 and args[0] != "--":
        try:
            return _run_function(Path(args[0]))
        finally:
            if sampler is not None:
                _write_usage(sampler.stop())
    sys.stderr.write("usage: python -m hpcorch.torch_run (-- COMMAND... | PAYLOAD)\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
