"""``hpcorch run | status | resume | cancel | logs``: thin wrappers over :mod:`hpcorch.engine`.

Exit codes: 0 every task succeeded; 1 tasks failed (summary printed);
2 bad input (one line, nothing submitted); 3 infrastructure.
"""

from __future__ import annotations

import glob
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from hpcorch.cli.options import (
    account_qos_options,
    build_run_options,
    dashboard_options,
    env_run_options,
    regions_budget_options,
)
from hpcorch.cli.progress import Progress
from hpcorch.errors import HpcorchError, JournalError, RunError, SpecError
from hpcorch.ids import check_id
from hpcorch.journal import read_run, status_summary, tasks_in_states
from hpcorch.journal import status as read_status

if TYPE_CHECKING:
    from hpcorch.engine import RunSummary
    from hpcorch.spec import WorkflowSpec

__all__ = ["cancel", "logs", "resume", "run", "status"]

_NAMED_STATES = ("failed", "running", "cancelled")
_NAMED_PER_STATE = 50
"""Tasks ``hpcorch status`` names per state; a million cancelled ones are counted."""


def _logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(level)
    # The dashboard's address and the tunnel to it (logged only when --dashboard asked).
    logging.getLogger("hpcorch.provision.dashboard").setLevel(min(level, logging.INFO))
    # Dask's own chatter (worker errors are in the journal and the summary).
    # Importing distributed applies its logging config, so quiet it afterwards.
    import distributed  # noqa: F401, PLC0415  # heavy: only when a run starts

    quiet = logging.CRITICAL if verbose == 0 else level
    for name in list(logging.root.manager.loggerDict):
        if name == "distributed" or name.startswith("distributed."):
            logging.getLogger(name).setLevel(quiet)


def _progress(spec: WorkflowSpec, site: str | None) -> Progress:
    """The view for a run of ``spec``: its size, its tasks' GPUs, its site's GPUs per node."""
    from hpcorch.sites.resolve import resolve_site  # noqa: PLC0415  # CLI fast path: --help does not load it

    try:
        resolved = resolve_site(site or spec.site or "local")
    except HpcorchError:
        resolved = None  # the run itself says what is wrong with the site
    gpus = {t.id: float(t.gpus) for t in spec.tasks if t.gpus}
    return Progress(len(spec.tasks), gpus=gpus, site=resolved)


def _finish(summary: RunSummary, as_json: bool = False) -> None:
    if as_json:
        record = {
            "run_id": summary.run_id,
            "state": summary.state,
            "counts": summary.counts,
            "seconds": summary.seconds,
            "run_dir": str(summary.run_dir),
            "failures": [
                {"task": f.task_id, "failure_class": f.failure_class, "message": f.message}
                for f in summary.failures
            ],
        }
        click.echo(json.dumps(record))
    else:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(summary.counts.items()) if n)
        click.echo(f"run {summary.run_id} {summary.state} in {summary.seconds:.1f}s: {counts}")
        click.echo(f"run directory: {summary.run_dir}")
    if summary.ok:
        return
    if not as_json:
        for failure in summary.failures[:20]:
            click.echo(f"  {failure.task_id}: {failure.failure_class}: {failure.message}")
        if len(summary.failures) > 20:
            more = len(summary.failures) - 20
            click.echo(f"  ... and {more} more (hpcorch status {summary.run_id})")
    raise RunError(
        f"run {summary.run_id} {summary.state}; see 'hpcorch status {summary.run_id}' "
        f"and 'hpcorch logs {summary.run_id} TASK'"
    )


@click.command()
@click.argument("workflow", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--site", default=None, help="Site to run on (default: the workflow's, or local).")
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run directory (default: .hpcorch/runs/RUN_ID).",
)
@click.option(
    "--time-scale",
    type=float,
    default=None,
    help="Emulate WfFormat tasks for runtimeInSeconds x F seconds.",
)
@click.option(
    "--run-id",
    default=None,
    help="Run id: letters, digits and _ . : @ + - (default: a new one from the name).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the run's summary as JSON (stdout only)."
)
@regions_budget_options
@account_qos_options
@dashboard_options
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-vv for debug).")
def run(
    workflow: Path,
    site: str | None,
    run_dir: Path | None,
    time_scale: float | None,
    run_id: str | None,
    as_json: bool,
    regions: str | None,
    budget: str | None,
    scaling: str | None,
    account: str | None,
    qos: str | None,
    dashboard: bool,
    dashboard_port: int | None,
    verbose: int,
) -> None:
    """Run WORKFLOW (.yaml, WfFormat .json or .py) to the end.

    Inside a Slurm allocation (an sbatch script), the allocation's nodes run
    the tasks. Exit 0 when every task succeeded, 1 when some failed.

    \b
    Examples:
      hpcorch run workflows/cpu-pipeline.yaml --site local
      hpcorch run workflows/seismology-110.json --site dev --time-scale 0.01
    """
    from hpcorch.engine import run_workflow  # noqa: PLC0415  # CLI fast path: --help does not load it
    from hpcorch.loaders import load_workflow  # noqa: PLC0415  # CLI fast path: --help does not load it

    _logging(verbose)
    options = build_run_options(
        site,
        regions,
        budget,
        scaling,
        account=account,
        qos=qos,
        dashboard=dashboard,
        dashboard_port=dashboard_port,
    )
    spec = load_workflow(workflow, time_scale=time_scale)
    progress = _progress(spec, site)

    def started(run_id: str, path: Path) -> None:
        click.echo(f"run {run_id}: {len(spec.tasks)} tasks, run directory {path}", err=True)
        progress.start(run_id, path)

    try:
        summary = run_workflow(
            spec,
            site=site,
            run_dir=run_dir,
            source=str(workflow.resolve()),
            time_scale=time_scale,
            on_progress=progress,
            on_start=started,
            run_id=run_id,
            options=options,
        )
    finally:
        progress.close()
    _finish(summary, as_json)


@click.command()
@click.argument("run_ref", metavar="RUN")
@click.option("--json", "as_json", is_flag=True, help="Print the status object (stdout only).")
@click.option(
    "--summary",
    is_flag=True,
    help="Counts only (tasks per state, attempts, allocations): instant on a million tasks.",
)
def status(run_ref: str, as_json: bool, summary: bool) -> None:
    """Show the state of RUN (a run id or a run directory).

    \b
    Examples:
      hpcorch status cpu-pipeline-20261125-192234-bb6a
      hpcorch status .hpcorch/runs/cpu-pipeline-20261125-192234-bb6a --json | jq .counts
      hpcorch status sweep-20261203-101500-1a2b --summary --json
    """
    from hpcorch.engine.rundir import find_run  # noqa: PLC0415  # CLI fast path: --help does not load it

    if summary:
        counted = status_summary(find_run(run_ref))
        if as_json:
            click.echo(json.dumps(counted))
            return
        counts = ", ".join(f"{n} {s}" for s, n in counted["counts"].items() if n)
        click.echo(
            f"run {counted['run_id']}: {counted['state']} ({counts}); "
            f"{counted['attempts']} attempts, {counted['failed_attempts']} failed; "
            f"{counted['open_allocations']} of {counted['allocations']} allocations open"
        )
        return
    run_dir = find_run(run_ref)
    if as_json:
        click.echo(json.dumps(read_status(run_dir)))
        return
    # Counts and the tasks worth naming, from the journal's index: no object per task.
    counted = status_summary(run_dir)
    counts = ", ".join(f"{n} {s}" for s, n in counted["counts"].items() if n)
    click.echo(f"run {counted['run_id']}: {counted['state']} ({counts})")
    for task_id, state, why in tasks_in_states(run_dir, _NAMED_STATES, _NAMED_PER_STATE):
        click.echo(f"  {task_id}: {state} {why or ''}".rstrip())
    for state in _NAMED_STATES:
        more = counted["counts"].get(state, 0) - _NAMED_PER_STATE
        if more > 0:
            click.echo(f"  ... and {more} more {state} (hpcorch status RUN --json lists all)")


@click.command()
@click.argument("run_ref", metavar="RUN")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the run's summary as JSON (stdout only)."
)
@click.option("-v", "--verbose", count=True, help="More logging on stderr.")
def resume(run_ref: str, as_json: bool, verbose: int) -> None:
    """Finish RUN after its driver died; completed tasks do not run again.

    \b
    Example:
      hpcorch resume cpu-pipeline-20261125-192234-bb6a
    """
    from hpcorch.engine import resume_run  # noqa: PLC0415  # CLI fast path: --help does not load it
    from hpcorch.engine.rundir import find_run  # noqa: PLC0415  # CLI fast path: --help does not load it
    from hpcorch.loaders import load_workflow  # noqa: PLC0415  # CLI fast path: --help does not load it
    from hpcorch.sites.resolve import resolve_site  # noqa: PLC0415  # CLI fast path: --help does not load it

    _logging(verbose)
    options = env_run_options()  # a requeued driver job's regions and budget
    run_dir = find_run(run_ref)
    row = read_run(run_dir)
    progress = Progress(site=resolve_site(str(row["site"])))
    progress.start(str(row["run_id"]), run_dir)
    try:
        summary = resume_run(run_dir, load_workflow, on_progress=progress, options=options)
    finally:
        progress.close()
    _finish(summary, as_json)


@click.command()
@click.argument("run_ref", metavar="RUN")
def cancel(run_ref: str) -> None:
    """Cancel RUN: stop its driver and its tasks.

    \b
    Example:
      hpcorch cancel cpu-pipeline-20261125-192234-bb6a
    """
    from hpcorch.engine import cancel_run  # noqa: PLC0415  # CLI fast path: --help does not load it

    click.echo(f"run {run_ref}: {cancel_run(run_ref)}")


@click.command()
@click.argument("run_ref", metavar="RUN")
@click.argument("task")
@click.option(
    "--attempt",
    type=click.IntRange(min=1),
    default=None,
    help="Attempt number, from 1 (default: the last with a log).",
)
def logs(run_ref: str, task: str, attempt: int | None) -> None:
    """Print the stdout and stderr of TASK in RUN: a command's output, or what a
    function printed and logged (with the traceback of an attempt that raised).

    \b
    Example:
      hpcorch logs cpu-pipeline-20261125-192234-bb6a square-0 --attempt 1
    """
    from hpcorch.engine.rundir import find_run  # noqa: PLC0415  # CLI fast path: --help does not load it

    log_dir = find_run(run_ref) / "logs"
    try:
        check_id(task, "task id")  # also keeps the name a plain file name, never a pattern
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    prefix = f"{task}."
    attempts = sorted(
        {
            int(middle)
            for p in log_dir.glob(f"{glob.escape(task)}.*.*")
            if p.suffix in (".out", ".err")
            and (middle := p.name[len(prefix) : -len(p.suffix)]).isdigit()
        }
    )
    if not attempts:
        raise JournalError(
            f"no logs for task {task!r} in {log_dir.parent}: it wrote no output yet "
            "(a function writes its log on its first print or log record), or it is "
            "an emulated task"
        )
    n = attempt if attempt is not None else attempts[-1]
    if n not in attempts:
        raise JournalError(
            f"no attempt {n} of task {task!r} has a log (it wrote no output, or never ran); "
            f"attempts with logs: {attempts}"
        )
    for stream in ("out", "err"):
        path = log_dir / f"{task}.{n}.{stream}"
        text = path.read_text(errors="replace") if path.is_file() else ""
        if text:
            click.echo(f"--- {task} attempt {n} std{stream} ---")
            click.echo(text, nl=not text.endswith("\n"))
