"""Run directories: where a run's journal, logs and stored results live."""

from __future__ import annotations

import os
import re
import secrets
import time
from pathlib import Path

from hpcorch.environment import runs_home
from hpcorch.errors import JournalError, SpecError
from hpcorch.ids import check_id
from hpcorch.journal import JOURNAL_NAME
from hpcorch.sites.model import Site
from hpcorch.slurm.script import check_plain_path

__all__ = ["find_run", "new_run_dir", "new_run_id", "runs_root"]


def runs_root() -> Path:
    """``$HPCORCH_HOME/runs``, by default ``.hpcorch/runs`` in the current directory."""
    return runs_home() / "runs"


def new_run_id(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:40] or "run"
    return f"{slug}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def new_run_dir(
    name: str, site: Site, run_id: str | None = None, run_dir: str | os.PathLike[str] | None = None
) -> tuple[str, Path]:
    """The id and directory of a new run, checked before anything is created.

    A given run id must be a plain id (it names a directory under :func:`runs_root`
    and Slurm jobs); a directory that already holds a journal belongs to another
    run (``hpcorch resume`` finishes that one); on a Slurm site the directory's
    path is written unquoted into worker job scripts (dask-jobqueue), so it must
    be a plain path.
    """
    if run_id is not None:
        try:
            check_id(run_id, "run id")
        except ValueError as exc:
            raise SpecError(f"--run-id: {exc}") from None
    run_id = run_id or new_run_id(name)
    path = Path(run_dir) if run_dir is not None else runs_root() / run_id
    try:
        taken = (path / JOURNAL_NAME).exists()
    except (OSError, ValueError) as exc:  # a name too long, a NUL
        raise SpecError(f"run directory {str(path)!r:.80} cannot be used: {exc}") from None
    if taken:
        raise SpecError(
            f"{path} already holds a run; finish it with 'hpcorch resume {path}', or start "
            "a new one with another --run-id or --run-dir"
        )
    if site.kind == "slurm":
        try:
            check_plain_path(str(path), "run directory")
        except ValueError as exc:
            raise SpecError(f"{exc}; choose one with --run-dir") from None
    return run_id, path


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
        except (OSError, ValueError):  # a name too long, a NUL: no such run
            continue
    raise JournalError(
        f"no run {str(ref)!r}: pass a run directory or a run id under {runs_root()} "
        "(see the run id printed by 'hpcorch run')"
    )
