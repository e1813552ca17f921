"""Parse and format the quantities users write: memory sizes and durations.

``4GiB``, ``500M``, ``8 GB`` → bytes; ``10m``, ``1h30m``, ``01:30:00``,
``2-00:00:00`` (Slurm's days-hours form), ``90`` (seconds) → seconds.
"""

from __future__ import annotations

import math
import re

__all__ = ["format_duration", "format_memory", "parse_duration", "parse_memory"]

_MEM_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1000,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
_MEM_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")
_DUR_PART_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(d|h|m|s)", re.IGNORECASE)
_DUR_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_memory(value: str | int | float) -> int:
    """Return bytes. Bare numbers are bytes; `M`/`G` without `B` are binary, as in Slurm."""
    if isinstance(value, bool):
        raise ValueError(f"memory must be a size like '4GiB', got {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"memory must be a finite size, not negative, got {value!r}")
        return int(value)
    match = _MEM_RE.fullmatch(value)
    if not match or match.group(2).lower() not in _MEM_UNITS:
        raise ValueError(f"memory must be a size like '4GiB', '512MB' or '2G', got {value!r}")
    return int(float(match.group(1)) * _MEM_UNITS[match.group(2).lower()])


def parse_duration(value: str | int | float) -> float:
    """Return seconds from ``90``, ``10m``, ``1h30m``, ``HH:MM:SS`` or ``D-HH:MM:SS``."""
    if isinstance(value, bool):
        raise ValueError(f"duration must be like '10m' or '01:00:00', got {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"duration must be finite, not negative, got {value!r}")
        return float(value)
    text = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    slurm = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)", text)
    if slurm:
        days, hours, minutes, seconds = (int(g) if g else 0 for g in slurm.groups())
        return float(days * 86400 + hours * 3600 + minutes * 60 + seconds)
    parts = _DUR_PART_RE.findall(text)
    if parts and "".join(f"{n}{u}" for n, u in parts) == re.sub(r"\s+", "", text):
        return float(sum(float(n) * _DUR_SECONDS[u.lower()] for n, u in parts))
    raise ValueError(f"duration must be like '90', '10m', '1h30m' or '01:30:00', got {value!r}")


def format_duration(seconds: float) -> str:
    """Slurm's ``[D-]HH:MM:SS``, rounded up to whole seconds (a walltime never shrinks)."""
    total = max(0, int(-(-seconds // 1)))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    hms = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{hms}" if days else hms


def format_memory(nbytes: int) -> str:
    """Whole mebibytes with Slurm's ``M`` suffix, rounded up."""
    return f"{max(1, -(-nbytes // 1024**2))}M"
