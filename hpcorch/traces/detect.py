"""Tell a trace's format from its name and first line."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path

from hpcorch.errors import SpecError
from hpcorch.traces._paths import open_text

__all__ = ["TraceKind", "detect_kind"]


class TraceKind(StrEnum):
    SWF = "swf"
    OPENB = "openb"
    PHILLY = "philly"
    WFFORMAT = "wfformat"


def detect_kind(path: str | os.PathLike[str]) -> TraceKind:
    name = Path(path).name.lower()
    if name.endswith((".swf", ".swf.gz")):
        return TraceKind.SWF
    if name.endswith((".json", ".json.gz")):
        return TraceKind.WFFORMAT
    with open_text(path) as fh:
        first = fh.readline().strip()
    if first.startswith("name,cpu_milli"):
        return TraceKind.OPENB
    if first.startswith("timestamp,duration,num_gpus"):
        return TraceKind.PHILLY
    if first.startswith(";") or first[:1].isdigit():
        return TraceKind.SWF
    if first.startswith("{"):
        return TraceKind.WFFORMAT
    raise SpecError(
        f"cannot tell the format of {path}: expected SWF (.swf[.gz]), WfFormat (.json), "
        "an Alibaba openb pod list or a Philly csv"
    )
