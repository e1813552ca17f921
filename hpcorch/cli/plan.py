"""``hpcorch plan``: every job script and srun line a run would start, nothing submitted."""

from __future__ import annotations

import json
from pathlib import Path

import click

from hpcorch.cli.options import account_qos_options, build_run_options

__all__ = ["plan"]


@click.command()
@click.argument("workflow", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--site", default=None, help="Site name or file (default: the workflow's).")
@account_qos_options
@click.option(
    "--walltime", default=None, help="Walltime of the driver job, as for 'hpcorch submit'."
)
@click.option("--mail-type", default=None, help="As for 'hpcorch submit'.")
@click.option("--mail-user", default=None, help="As for 'hpcorch submit'.")
@click.option(
    "--time-scale",
    type=float,
    default=None,
    help="Emulate WfFormat tasks for runtimeInSeconds x F seconds.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON (stdout only).")
def plan(
    workflow: Path,
    site: str | None,
    account: str | None,
    qos: str | None,
    walltime: str | None,
    mail_type: str | None,
    mail_user: str | None,
    time_scale: float | None,
    as_json: bool,
) -> None:
    """Print, without submitting anything, every job script and srun line a run of
    WORKFLOW would start (worker pools, the 'hpcorch submit' driver, MPI steps) and
    the decisions behind each: partition or constraint, QOS, account, GPU request,
    walltime and the limit it was checked against. A job the site would refuse
    ends the command with exit 2 and the rule it breaks.

    \b
    Examples:
      hpcorch plan workflows/mpi-then-gpu.yaml --site perlmutter --account m1234
      hpcorch plan workflows/mpi-then-gpu.yaml --site frontier -A abc123 --json
    """
    from hpcorch.engine.session import validate_run  # noqa: PLC0415  # CLI fast path: --help does not load it
    from hpcorch.loaders import load_workflow  # noqa: PLC0415  # CLI fast path: --help does not load it
    from hpcorch.plan import format_plan, plan_run  # noqa: PLC0415  # CLI fast path: --help does not load it
    from hpcorch.units import parse_duration  # noqa: PLC0415  # CLI fast path: --help does not load it

    try:
        walltime_s = parse_duration(walltime) if walltime is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--walltime") from None
    options = build_run_options(site, None, None, None, account=account, qos=qos)
    spec = load_workflow(workflow, time_scale=time_scale)
    resolved = validate_run(spec, site, options)
    result = plan_run(
        spec,
        resolved,
        options=options,
        workflow=workflow,
        walltime_s=walltime_s,
        mail_type=mail_type,
        mail_user=mail_user,
    )
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
    else:
        click.echo(format_plan(result), nl=False)
