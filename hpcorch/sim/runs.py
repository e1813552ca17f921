"""Entry points: simulate a workflow on a simulated cluster, or replay any trace file.

:func:`simulate_trace` is what ``hpcorch simulate --trace FILE`` runs: it tells
the format from the file and returns one dict of figures, always with
``mean_wait_s``, ``makespan_s`` and ``utilization``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hpcorch.loaders import load_workflow
from hpcorch.placement import POLICIES, workload_classes
from hpcorch.policies.bundle import Policies
from hpcorch.sim.driver import WorkflowSim
from hpcorch.sim.engine import EventLoop
from hpcorch.sim.openb import compare_policies, event_replay, load_openb
from hpcorch.sim.output import summary, write_journal
from hpcorch.sim.replay import ReplayJob, TraceFeeder, replay_philly, replay_swf, swf_jobs
from hpcorch.sim.slurm import SimSlurm
from hpcorch.sim.state import DriverConfig, Region
from hpcorch.sim.validate import recorded_wait_split
from hpcorch.sim.workload import SimWorkload, from_spec
from hpcorch.traces import TraceKind, detect_kind, resolve_trace

__all__ = ["simulate_trace", "simulate_workflow"]

logger = logging.getLogger(__name__)

DEFAULT_WORKFLOW_NODES = 100
DEFAULT_PHILLY_GPUS = 512  # the trace's mean demand is about 374 GPUs


def simulate_workflow(
    workload: SimWorkload,
    *,
    nodes: int = DEFAULT_WORKFLOW_NODES,
    cores_per_node: int = 32,
    memory_per_node: int = 0,
    gpus_per_node: int = 0,
    max_walltime_s: float | None = None,
    mtbf_s: float | None = None,
    repair_s: float = 3600.0,
    background: Iterable[ReplayJob] | None = None,
    config: DriverConfig | None = None,
    policies: Policies | None = None,
    site: str = "sim",
) -> WorkflowSim:
    """Run ``workload`` to its end on one simulated site; returns the finished driver.

    ``background`` jobs (for instance an SWF trace) share the cluster's queue, so the
    workflow's allocations wait behind other users' work as on a real site.
    """
    config = config or DriverConfig()
    loop = EventLoop()
    cluster = SimSlurm(loop, nodes, name=site, mtbf_s=mtbf_s, repair_s=repair_s, seed=config.seed)
    if background is not None:
        TraceFeeder(loop, cluster, iter(background))
    region = Region(
        cluster,
        cores_per_node,
        memory_per_node=memory_per_node,
        gpus_per_node=gpus_per_node,
        max_walltime_s=max_walltime_s,
    )
    sim = WorkflowSim(loop, workload, [region], config, policies)
    sim.run()
    return sim


def simulate_trace(
    path: str | os.PathLike[str],
    *,
    nodes: int | None = None,
    mtbf_s: float | None = None,
    seed: int = 0,
    replay_options: dict[str, Any] | None = None,
    **workflow_options: Any,
) -> dict[str, Any]:
    """Replay or run the trace at ``path`` (SWF, openb pods, Philly, WfFormat or YAML).

    ``replay_options`` go to the SWF replay: ``overrun``, ``over_time_limit_s``,
    ``default_time_s`` (see :mod:`hpcorch.sim.replay`).
    """
    source = resolve_trace(path)
    suffix = Path(source).suffix.lower()
    if suffix in (".yaml", ".yml", ".py"):
        return _workflow_file(source, nodes, mtbf_s, seed, **workflow_options)
    kind = detect_kind(source)
    if kind is TraceKind.SWF:
        result = replay_swf(source, nodes, mtbf_s=mtbf_s, seed=seed, **(replay_options or {}))
        out: dict[str, Any] = {"kind": "swf", "trace": str(source), **result.as_dict()}
        split = recorded_wait_split(swf_jobs(source), result.nodes)
        out["recorded_blocked_wait_s"] = split.mean_blocked_wait_s
        return out
    if kind is TraceKind.PHILLY:
        gpus = nodes or DEFAULT_PHILLY_GPUS
        result = replay_philly(source, gpus, mtbf_s=mtbf_s, seed=seed)
        return {"kind": "philly", "trace": str(source), "unit": "gpu", **result.as_dict()}
    if kind is TraceKind.OPENB:
        return _openb(source, seed)
    return _workflow_file(source, nodes, mtbf_s, seed, **workflow_options)


def _workflow_file(
    source: Path, nodes: int | None, mtbf_s: float | None, seed: int, **options: Any
) -> dict[str, Any]:

    spec = load_workflow(source, time_scale=1.0 if source.suffix.lower() == ".json" else None)
    workload = from_spec(spec)
    run_dir = options.pop("run_dir", None)
    config = DriverConfig(
        nodes_per_allocation=options.pop("nodes_per_allocation", 1),
        seed=seed,
        user_error_rate=options.pop("user_error_rate", 0.0),
        placement=options.pop("placement", None),
    )
    sim = simulate_workflow(
        workload, nodes=nodes or DEFAULT_WORKFLOW_NODES, mtbf_s=mtbf_s, config=config, **options
    )
    out = {"trace": str(source), **summary(sim)}
    if run_dir is not None:
        out["run_id"] = write_journal(sim, Path(run_dir), source=str(source))
        out["run_dir"] = str(run_dir)
    if not math.isfinite(out["makespan_s"]):
        out["makespan_s"] = None
    return out


def _openb(source: Path, seed: int) -> dict[str, Any]:

    nodes, pods, times = load_openb(source)
    classes = workload_classes(pods)
    fills = compare_policies(nodes, pods, classes)
    default = POLICIES[0]
    timed = event_replay(default, nodes, pods, times, classes, seed=seed)
    return {
        "kind": "openb",
        "trace": str(source),
        "nodes": len(nodes),
        "gpus": sum(n.topology.gpu_count for n in nodes),
        "pods": len(pods),
        "policy": default,
        "alloc_rate": fills[default]["alloc_rate"],
        **{f"{p}_alloc_rate": fills[p]["alloc_rate"] for p in POLICIES},
        "fill": fills,
        "mean_wait_s": timed["mean_wait_s"],
        "makespan_s": timed["makespan_s"],
        "utilization": timed["utilization"],
        "timed": timed,
    }
