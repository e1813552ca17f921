"""Streaming readers of public cluster traces and workflow instances.

Each reader yields small immutable records (named tuples) one line at a time,
so a trace of millions of jobs never sits in memory as objects unless the
caller keeps them. A bare name is found in ``HPCORCH_TRACES_DIR``, in the
traces shipped with the package (``hpcorch/data/traces``: KTH-SP2 and the
openb lists whole, a slice of Philly) or in ``../shared/traces`` beside a
checkout; files are read where they lie, never copied.

    from hpcorch.traces import read_swf, resolve_trace
    for job in read_swf(resolve_trace("KTH-SP2-1996-2.1-cln.swf.gz")):
        ...
"""

from __future__ import annotations

from hpcorch.traces._paths import resolve_trace, search_dirs, shipped_traces_dir, traces_dir
from hpcorch.traces.detect import TraceKind, detect_kind
from hpcorch.traces.openb import OpenbNode, OpenbPod, read_openb_nodes, read_openb_pods
from hpcorch.traces.philly import PhillyJob, read_philly
from hpcorch.traces.swf import SwfJob, read_swf, read_swf_header
from hpcorch.traces.wfformat import WfTask, read_wfformat

__all__ = [
    "OpenbNode",
    "OpenbPod",
    "PhillyJob",
    "SwfJob",
    "TraceKind",
    "WfTask",
    "detect_kind",
    "read_openb_nodes",
    "read_openb_pods",
    "read_philly",
    "read_swf",
    "read_swf_header",
    "read_wfformat",
    "resolve_trace",
    "search_dirs",
    "shipped_traces_dir",
    "traces_dir",
]
