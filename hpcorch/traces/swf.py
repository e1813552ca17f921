"""Standard Workload Format (Parallel Workloads Archive).

18 whitespace-separated fields per job; ``;`` lines are the header. Fields
used here (1-based, as the SWF definition numbers them): 1 job number,
2 submit time, 3 wait time, 4 run time, 5 allocated processors, 8 requested
processors, 9 requested time, 11 status (1 completed, 0 failed, 5 cancelled).
``-1`` means unknown.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import NamedTuple

from hpcorch.errors import SpecError
from hpcorch.traces._paths import open_text

__all__ = ["SwfJob", "read_swf", "read_swf_header"]

_FIELDS = 18


class SwfJob(NamedTuple):
    job_id: int
    submit: float
    wait: float
    run: float
    procs: int
    req_procs: int
    req_time: float
    status: int
    user: int = -1  # -1: not recorded
    partition: int = -1


def read_swf(path: str | os.PathLike[str]) -> Iterator[SwfJob]:
    """Yield one :class:`SwfJob` per data line, in file order (submit order for PWA logs)."""
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip() or line.lstrip().startswith(";"):
                continue
            f = line.split()
            if len(f) < _FIELDS:
                raise SpecError(
                    f"{path}:{lineno}: SWF lines have {_FIELDS} fields, found {len(f)}; "
                    "is this a Standard Workload Format file?"
                )
            yield SwfJob(
                int(f[0]),
                float(f[1]),
                float(f[2]),
                float(f[3]),
                int(f[4]),
                int(f[7]),
                float(f[8]),
                int(f[10]),
                int(f[11]),
                int(f[15]),
            )


def read_swf_header(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``; Key: value`` header lines (``MaxNodes``, ``MaxProcs``, ``UnixStartTime``...)."""
    header: dict[str, str] = {}
    with open_text(path) as fh:
        for line in fh:
            if not line.lstrip().startswith(";"):
                break
            key, sep, value = line.lstrip()[1:].partition(":")
            if sep and key.strip() and " " not in key.strip():
                header[key.strip()] = value.strip()
    return header
