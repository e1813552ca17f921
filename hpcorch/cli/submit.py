"""``hpcorch submit``: the run's driver as a Slurm job, so the run survives logout."""

from __future__ import annotations

import json
from pathlib import Path

import click

from hpcorch.cli.options import (
    account_qos_options,
    build_run_options,
    dashboard_options,
    regions_budget_options,
)
from hpcorch.sites import load_site
from hpcorch.units import parse_duration

__all__ = ["submit"]


@click.command()
@click.argument("workflow", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--site", required=True, help="A Slurm site (see 'hpcorch sites list').")
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run directory (default: .hpcorch/runs/RUN_ID).",
)
@click.option(
    "--partition", default=None, help="Partition of the driver job (default: the site's)."
)
@click.option(
    "--walltime",
    default=None,
    help="Driver walltime; it requeues itself and resumes before it runs out (default: "
    "the site's submit.walltime_s, else 24h or the limit if lower).",
)
@click.option(
    "--time-scale",
    type=float,
    default=None,
    help="Emulate WfFormat tasks for runtimeInSeconds x F seconds.",
)
@regions_budget_options
@account_qos_options
@click.option(
    "--mail-type",
    default=None,
    help="Slurm mail on the driver job: e.g. END,FAIL (sbatch --mail-type).",
)
@click.option("--mail-user", default=None, help="Where that mail goes (sbatch --mail-user).")
@dashboard_options
@click.option("--json", "as_json", is_flag=True, help="Print {run_id, job_id, run_dir} only.")
def submit(
    workflow: Path,
    site: str,
    run_dir: Path | None,
    partition: str | None,
    walltime: str | None,
    time_scale: float | None,
    regions: str | None,
    budget: str | None,
    scaling: str | None,
    account: str | None,
    qos: str | None,
    mail_type: str | None,
    mail_user: str | None,
    dashboard: bool,
    dashboard_port: int | None,
    as_json: bool,
) -> None:
    """Submit WORKFLOW as a Slurm driver job; print the run id and the driver's job id.

    \b
    Example:
      hpcorch submit workflows/cpu-pipeline.yaml --site dev
      hpcorch status RUN_ID        # from any shell, later
    """
    from hpcorch.submit import submit_driver  # noqa: PLC0415  # CLI fast path: --help does not load it

    try:
        walltime_s = parse_duration(walltime) if walltime is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--walltime") from None
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
    job = submit_driver(
        workflow,
        load_site(site),
        run_dir=run_dir,
        walltime_s=walltime_s,
        partition=partition,
        time_scale=time_scale,
        options=options,
        mail_type=mail_type,
        mail_user=mail_user,
    )
    if as_json:
        click.echo(
            json.dumps({"run_id": job.run_id, "job_id": job.job_id, "run_dir": str(job.run_dir)})
        )
        return
    click.echo(f"run {job.run_id} submitted as driver job {job.job_id}")
    click.echo(f"follow it with: hpcorch status {job.run_id}")
