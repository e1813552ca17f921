"""Helpers for the code of a torch.distributed training that hpcorch launches.

Inside a ``distributed`` task every rank has torchrun's variables
(:mod:`hpcorch.torch_run`), so ``torch.distributed.init_process_group()`` needs
no arguments; :func:`init` adds the backend hpcorch chose. A training that
declared a ``checkpoint_dir`` saves with :func:`save_checkpoint` (rank 0;
written to a temporary file, then renamed, so a crash never leaves a partial
checkpoint that looks complete) and starts with :func:`load_checkpoint`, which
returns the newest complete checkpoint of an earlier attempt, or None.

Needs PyTorch (``pip install hpcorch[torch]``); imported lazily.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hpcorch.environment import checkpoint, checkpoint_dir, torch_backend
from hpcorch.errors import SpecError
from hpcorch.training import checkpoint_name

__all__ = ["init", "load_checkpoint", "rank", "save_checkpoint", "world_size"]


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init() -> None:
    """``init_process_group`` with the training's backend (once; again is a no-op)."""
    import torch.distributed as dist  # noqa: PLC0415  # optional dependency

    if not dist.is_initialized():
        dist.init_process_group(backend=torch_backend())


def save_checkpoint(state: Any, step: int, directory: str | os.PathLike[str] | None = None) -> Path:
    """Save ``state`` as the checkpoint of ``step`` (atomically: temp file, then rename).

    ``directory``: the task's ``checkpoint_dir`` where left out. Call it on one rank.
    """
    import torch  # noqa: PLC0415  # optional dependency

    where = Path(directory) if directory is not None else checkpoint_dir()
    if where is None:
        raise SpecError("no checkpoint directory: set distributed.checkpoint_dir on the task")
    where.mkdir(parents=True, exist_ok=True)
    final = where / checkpoint_name(step)
    tmp = final.with_name(f"{final.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    return final


def load_checkpoint(map_location: str = "cpu") -> Any:
    """The newest complete checkpoint an earlier attempt saved (None: none)."""
    import torch  # noqa: PLC0415  # optional dependency

    path = checkpoint()
    if path is None:
        return None
    return torch.load(path, map_location=map_location, weights_only=False)
