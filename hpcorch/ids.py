"""The names users give that become file names, job names and environment values.

Task ids and run ids name files (``logs/<task>.<n>.out``, ``runs/<run-id>/``), Slurm
job names and environment values of tasks, so both follow one pattern: letters,
digits and ``_ . : @ + -``, not starting with a dot or dash. Checked with
``fullmatch``: a pattern ending in ``$`` also accepts a trailing newline.
"""

from __future__ import annotations

import re

__all__ = ["ID_MAX_LENGTH", "check_constraint", "check_id", "check_slurm_name"]

ID_MAX_LENGTH = 200
_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@+\-]*")


def check_id(value: str, what: str = "task id") -> str:
    """``value`` if it is a valid id, else ValueError saying what one looks like."""
    if not isinstance(value, str) or len(value) > ID_MAX_LENGTH or not _ID.fullmatch(value):
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise ValueError(
            f"{what} {shown} must start with a letter, digit or '_', use only letters, "
            f"digits and _ . : @ + -, and have at most {ID_MAX_LENGTH} characters"
        )
    return value


# Slurm names (account, QOS, reservation, partition): what sacctmgr/scontrol accept, and
# what stands unquoted in an #SBATCH line or a dask-jobqueue script.
_SLURM_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")
# Node feature expressions (sbatch --constraint): features joined by & | , and grouped
# with [] or (), with a *count; e.g. 'gpu&hbm80g', '[rack1|rack2]'.
_CONSTRAINT = re.compile(r"[A-Za-z0-9_.&|,*\[\]()!:-]+")


def check_slurm_name(value: str, what: str) -> str:
    """``value`` if it is a Slurm name (account, QOS, reservation), else ValueError."""
    if not _SLURM_NAME.fullmatch(value):
        raise ValueError(
            f"{what} {value!r:.60} is not a Slurm name: use letters, digits and _ . + - "
            "(not starting with - or .)"
        )
    return value


def check_constraint(value: str, what: str = "constraint") -> str:
    """``value`` if it is a node feature expression sbatch's --constraint takes."""
    if not _CONSTRAINT.fullmatch(value) or value.startswith("-"):
        raise ValueError(
            f"{what} {value!r:.60} is not a node feature expression: use feature names "
            "joined by & | , with [ ] ( ) * (e.g. 'gpu&hbm80g')"
        )
    return value
