"""Where traces live, and how a bare trace name is found.

A bare name is looked up, in order, in ``$HPCORCH_TRACES_DIR`` when it is set,
in the public traces shipped inside the package (``hpcorch/data/traces``: the
KTH-SP2 log and the openb lists whole, a slice of Philly), and in
``../shared/traces`` beside a checkout when the variable is not set (the full
files benchmarks read).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import IO

from hpcorch.environment import TRACES_DIR, traces_dir_override

__all__ = ["open_text", "resolve_trace", "search_dirs", "shipped_traces_dir", "traces_dir"]

ENV_VAR = TRACES_DIR


def traces_dir() -> Path:
    """``$HPCORCH_TRACES_DIR``, else ``../shared/traces`` beside the repository."""
    override = traces_dir_override()
    if override is not None:
        return override
    # hpcorch/traces/_paths.py -> repository root is two levels above the package.
    return Path(__file__).resolve().parents[2].parent / "shared" / "traces"


def shipped_traces_dir() -> Path:
    """The traces shipped as package data (present in a checkout and in an install)."""
    return Path(__file__).resolve().parents[1] / "data" / "traces"


def search_dirs() -> tuple[Path, ...]:
    """Folders searched for a bare trace name, in order."""
    if traces_dir_override() is not None:
        # An explicit folder wins over the shipped copies and replaces ../shared/traces.
        return (traces_dir(), shipped_traces_dir())
    return (shipped_traces_dir(), traces_dir())


def resolve_trace(name: str | os.PathLike[str]) -> Path:
    """Return ``name`` if it exists, else the file of that name under :func:`search_dirs`."""
    path = Path(name)
    if path.exists():
        return path
    roots = search_dirs()
    for root in roots:
        candidate = root / path
        if candidate.is_file():
            return candidate
    for root in roots:
        matches = sorted(root.rglob(path.name)) if root.is_dir() else []
        if matches:
            return matches[0]
    where = ", ".join(str(root) for root in roots)
    raise FileNotFoundError(
        f"trace {str(name)!r} not found as a path nor under {where}; "
        f"give a path to the file or set {ENV_VAR} to the folder holding the traces"
    )


def open_text(path: str | os.PathLike[str]) -> IO[str]:
    """Open a trace as text, transparently decompressing ``.gz``."""
    if str(path).endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")
