"""Run directories: where a run's journal, logs and stored results live."""

from __future__ import annotations

import os
import re
import secrets
import time
from pathlib import Path

from hpcorch.errors import JournalError
from hpcorch.journal import JOURNAL_NAME

__all__ = ["find_run", "new_run_id", "runs_root"]


def runs_root() -> Path:
    """``$HPCORCH_HOME/runs``, by default ``.hpcorch/runs`` in the current directory."""
    return Path(os.environ.get("HPCORCH_HOME", ".hpcorch")) / "runs"


def new_run_id(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:40] or "run"
    return f"{slug}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def find_run(ref: str | os.PathLike[str]) -> Path:
    """A run directory from a path or a run id under :func:`runs_root`."""
    path = Path(ref)
    for candidate in (path, runs_root() / path):
        try:
            if (candidate / JOURNAL_NAME).is_file():
                return candidate
        except PermissionError:  # another user's run directory
            raise JournalError(
                f"cannot read the run directory {candidate}: permission denied; "
                "run hpcorch as the user who owns the run directory"
            ) from None
    raise JournalError(
        f"no run {str(ref)!r}: pass a run directory or a run id under {runs_root()} "
        "(see the run id printed by 'hpcorch run')"
    )
