"""``hpcorch doctor --site SITE``: check what a run on SITE needs, and say what to fix."""

from __future__ import annotations

import json
import logging

import click
from rich.console import Console
from rich.markup import escape

from hpcorch.doctor import Check, exit_code, run_doctor
from hpcorch.errors import InfrastructureError, SiteConfigError
from hpcorch.sites import load_site

__all__ = ["doctor"]

_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red"}


def _quiet_dask() -> None:
    """The probe scheduler's start-up chatter is not a finding (dask sets levels per logger)."""
    import distributed  # noqa: F401, PLC0415  (configures its loggers on import; heavy)

    for name in list(logging.root.manager.loggerDict):
        if name == "distributed" or name.startswith("distributed."):
            logging.getLogger(name).setLevel(logging.WARNING)


@click.command()
@click.option("--site", "site_name", required=True, help="Site name or site file to check.")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON (stdout only).")
def doctor(site_name: str, as_json: bool) -> None:
    """Check that SITE can run a workflow: Slurm reachable by each backend, account valid,
    partitions as configured, Dask ports usable, the MPI launcher and Python on compute nodes.

    Exit status: 0 all usable (warnings allowed), 2 the site file disagrees with the
    cluster, 3 the infrastructure is unavailable.

    \b
    Example:
      hpcorch doctor --site dev
    """

    site = load_site(site_name)
    _quiet_dask()
    checks = run_doctor(site)
    code = exit_code(checks)
    if as_json:
        payload = {"site": site.name, "exit_code": code, "checks": [c.to_dict() for c in checks]}
        click.echo(json.dumps(payload))
        _conclude(site.name, checks, code)
        return

    console = Console(highlight=False)
    console.print(f"[bold]hpcorch doctor — site {escape(site.name)}[/]")
    for c in checks:
        status = f"[{_STYLE[c.status]}]{c.status:<4}[/]"
        console.print(f"{status} [bold]{escape(c.name)}[/]: {escape(c.detail)}")
        if c.fix:
            console.print(f"     [italic]fix:[/] {escape(c.fix)}")
    _conclude(site.name, checks, code)


def _conclude(site: str, checks: list[Check], code: int) -> None:
    """Say the verdict; exit 2 or 3 through the error tree, like every other command."""
    failed = ", ".join(c.name for c in checks if c.status == "fail")
    if code == 3:
        raise InfrastructureError(f"site {site}: not usable now ({failed} failed); see the fixes")
    if code == 2:
        raise SiteConfigError(
            f"site {site}: the site file disagrees with the cluster ({failed}); see the fixes"
        )
    click.echo(f"site {site}: ready to run", err=True)
