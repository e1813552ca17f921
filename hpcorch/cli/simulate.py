"""``hpcorch simulate``: replay a trace, or run a workflow, on a simulated cluster."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from hpcorch.errors import SpecError
from hpcorch.policies.bundle import Policies
from hpcorch.policies.scale import SCALING_POLICIES
from hpcorch.units import parse_duration

__all__ = ["simulate"]

_FIGURES = (
    "mean_wait_s",
    "recorded_mean_wait_s",
    "recorded_blocked_wait_s",
    "makespan_s",
    "utilization",
    "alloc_rate",
    "tasks",
    "jobs",
    "retries",
    "allocations",
    "node_failures",
    "overrun_jobs",
    "killed_jobs",
    "missing_estimates",
    "default_time_s",
    "events",
)


@click.command()
@click.option(
    "--trace",
    "trace",
    required=True,
    help="SWF log (.swf[.gz]), Alibaba openb pod list, Philly csv, WfFormat .json or a "
    "workflow .yaml; a bare name is looked up in $HPCORCH_TRACES_DIR, the traces shipped "
    "with hpcorch, then ../shared/traces.",
)
@click.option(
    "--nodes",
    type=click.IntRange(min=1),
    help="Cluster size (SWF: the log's MaxNodes; Philly: GPUs, 512; workflows: 100).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--mtbf", help="Mean time between failures of one node, e.g. 30d (default: none).")
@click.option(
    "--nodes-per-allocation",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Workflows: nodes in each allocation the driver submits.",
)
@click.option(
    "--cores-per-node",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Workflows: cores of each simulated node.",
)
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Workflows: write the journal here, readable by `hpcorch status DIR --json`.",
)
@click.option(
    "--placement",
    type=click.Choice(["packing", "fgd", "best_fit", "random_fit"]),
    help="Workflows: place tasks on cores and GPUs with this hpcorch.placement policy "
    "(as live; slower) instead of the fast best fit on counts.",
)
@click.option(
    "--scaling",
    type=click.Choice(sorted(SCALING_POLICIES)),
    default="demand",
    show_default=True,
    help="Workflows: the scaling policy, as `hpcorch run --scaling`.",
)
@click.option(
    "--overrun",
    type=click.Choice(["replay", "kill"]),
    default="replay",
    show_default=True,
    help="SWF: a job running past its requested time runs its recorded time (replay) "
    "or is killed at its limit plus --over-time-limit (kill, as Slurm does).",
)
@click.option(
    "--over-time-limit",
    help="SWF with --overrun kill: slurm.conf OverTimeLimit, e.g. 1m (default: 0).",
)
@click.option(
    "--default-time",
    help="SWF: the time limit of jobs that asked for none, e.g. 4h "
    "(default: the log's longest request, as a partition's MaxTime).",
)
@click.option(
    "--slurm-conf",
    type=click.Path(dir_okay=False, path_type=Path),
    help="SWF: schedule as this slurm.conf says (SchedulerType, bf_interval, bf_resolution, "
    "bf_window, bf_max_job_test, OverTimeLimit) instead of textbook EASY.",
)
@click.option("--seed", type=int, default=0, show_default=True)
def simulate(
    *,
    trace: str,
    nodes: int | None,
    as_json: bool,
    mtbf: str | None,
    nodes_per_allocation: int,
    cores_per_node: int,
    run_dir: Path | None,
    placement: str | None,
    scaling: str,
    overrun: str,
    over_time_limit: str | None,
    default_time: str | None,
    slurm_conf: Path | None,
    seed: int,
) -> None:
    """Replay a trace through hpcorch's policies on a simulated Slurm cluster.

    \b
    Examples:
      hpcorch simulate --trace KTH-SP2-1996-2.1-cln.swf.gz --json
      hpcorch simulate --trace openb_pod_list_default.csv
      hpcorch simulate --trace montage.json --nodes 16 --run-dir sim-run
    """
    from hpcorch.sim.runs import simulate_trace  # noqa: PLC0415  # CLI fast path: --help does not load it

    mtbf_s = _duration("--mtbf", mtbf)
    replay_options: dict[str, Any] = {
        "overrun": overrun,
        "over_time_limit_s": _duration("--over-time-limit", over_time_limit) or 0.0,
        "default_time_s": _duration("--default-time", default_time),
    }
    if slurm_conf is not None:
        from hpcorch.sim.schedconf import parse_slurm_conf  # noqa: PLC0415  # CLI fast path

        try:
            text = slurm_conf.read_text()
        except OSError as exc:
            raise SpecError(f"--slurm-conf: cannot read {slurm_conf}: {exc.strerror}") from None
        config = parse_slurm_conf(text, str(slurm_conf))
        if over_time_limit is not None:  # the flag wins over the file
            config = replace(config, over_time_limit_s=replay_options["over_time_limit_s"])
        replay_options["schedconf"] = config
    try:
        result = simulate_trace(
            trace,
            nodes=nodes,
            mtbf_s=mtbf_s,
            seed=seed,
            replay_options=replay_options,
            nodes_per_allocation=nodes_per_allocation,
            cores_per_node=cores_per_node,
            run_dir=run_dir,
            placement=placement,
            policies=Policies.named(scaling),
        )
    except FileNotFoundError as exc:
        raise SpecError(str(exc)) from None
    if as_json:
        click.echo(json.dumps(_finite(result)))
        return
    table = Table("figure", "value", title=f"simulated: {result.get('trace', trace)}")
    for key in _FIGURES:
        if key in result and result[key] is not None:
            value = result[key]
            table.add_row(key, f"{value:,.3f}" if isinstance(value, float) else f"{value:,}")
    Console().print(table)
    if result.get("run_dir"):
        click.echo(f"journal: {result['run_dir']} (hpcorch status {result['run_dir']} --json)")


def _duration(flag: str, text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise SpecError(f"{flag}: {exc}") from None


def _finite(value: Any) -> Any:
    """JSON has no infinity: write null instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
