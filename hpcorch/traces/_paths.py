"""Where the shared traces live, and how a bare trace name is found there."""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import IO

from hpcorch.environment import TRACES_DIR, traces_dir_override

__all__ = ["open_text", "resolve_trace", "traces_dir"]

ENV_VAR = TRACES_DIR


def traces_dir() -> Path:
    """``$HPCORCH_TRACES_DIR``, else ``../shared/traces`` beside the repository."""
    override = traces_dir_override()
    if override is not None:
        return override
    # hpcorch/traces/_paths.py -> repository root is two levels above the package.
    return Path(__file__).resolve().parents[2].parent / "shared" / "traces"


def resolve_trace(name: str | os.PathLike[str]) -> Path:
    """Return ``name`` if it exists, else the file of that name under :func:`traces_dir`."""
    path = Path(name)
    if path.exists():
        return path
    root = traces_dir()
    candidate = root / path
    if candidate.exists():
        return candidate
    matches = sorted(root.rglob(path.name)) if root.is_dir() else []
    if matches:
        return matches[0]
    raise FileNotFoundError(
        f"trace {str(name)!r} not found as a path nor under {root}; "
        f"give a path to the file or set {ENV_VAR} to the folder holding the traces"
    )


def open_text(path: str | os.PathLike[str]) -> IO[str]:
    """Open a trace as text, transparently decompressing ``.gz``."""
    if str(path).endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")
