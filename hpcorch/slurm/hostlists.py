"""Slurm hostlists (``r[1-2]n[01-02],gpu7``) both ways, through python-hostlist.

python-hostlist (LUNARC, also used by NSC's and others' tooling) implements
Slurm's grammar: several bracket groups per name, zero padding kept per
range, comma lists inside and between brackets. hpcorch only adapts its
edges: Slurm's empty spellings (``(null)``, ``None``) expand to nothing, and
a malformed list raises :class:`ValueError` naming it.
"""

from __future__ import annotations

from collections.abc import Iterable

import hostlist as _hostlist

__all__ = ["compress_hostlist", "expand_hostlist"]

_EMPTY = ("", "(null)", "None")


def expand_hostlist(text: str | None) -> tuple[str, ...]:
    """``"r[1-2]n[01-02],gpu7"`` → ``("r1n01", "r1n02", "r2n01", "r2n02", "gpu7")``.

    Names keep Slurm's order (the order written, ranges ascending); a name
    written twice is kept once.
    """
    if text is None or text.strip() in _EMPTY:
        return ()
    try:
        names: list[str] = _hostlist.expand_hostlist(text.strip())
    except _hostlist.BadHostlist as exc:
        raise ValueError(f"bad Slurm hostlist {text!r}: {exc}") from None
    return tuple(names)


def compress_hostlist(names: Iterable[str]) -> str:
    """The shortest usual Slurm spelling of ``names``: ``("n01", "n02", "n03")`` → ``"n[01-03]"``.

    Order is not kept (Slurm sorts node lists anyway); duplicates collapse.
    """
    unique = sorted(set(names))
    if not unique:
        return ""
    try:
        return str(_hostlist.collect_hostlist(unique))
    except _hostlist.BadHostlist as exc:
        raise ValueError(f"cannot write {unique!r} as a Slurm hostlist: {exc}") from None
