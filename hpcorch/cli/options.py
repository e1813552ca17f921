"""Options that ``hpcorch run``, ``submit`` and ``resume`` share, built into one
:class:`~hpcorch.options.RunOptions`.

Unset flags fall back to the ``HPCORCH_*`` variables (:mod:`hpcorch.environment`
reads them); bad values are refused here, before anything is submitted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from hpcorch.environment import run_options
from hpcorch.errors import OptionError
from hpcorch.options import RunOptions
from hpcorch.policies.scale import SCALING_POLICIES

__all__ = [
    "account_qos_options",
    "build_run_options",
    "dashboard_options",
    "env_run_options",
    "regions_budget_options",
]

F = TypeVar("F", bound=Callable[..., Any])


def regions_budget_options(fn: F) -> F:
    """Add ``--regions``, ``--budget`` and ``--scaling`` to a command."""
    fn = click.option(
        "--scaling",
        type=click.Choice(sorted(SCALING_POLICIES)),
        default=None,
        help="How allocations follow demand: 'demand' (default: sized to drain the queued "
        "work soon, with hysteresis and cool-down) or 'simple' (all queued work at once). "
        "Env: HPCORCH_SCALING.",
    )(fn)
    fn = click.option(
        "--budget",
        default=None,
        help="Cap on what the run may spend: '20' or '20 SU', or '50 EUR' (sites then need "
        "charge.price_per_su and charge.currency). Env: HPCORCH_BUDGET.",
    )(fn)
    fn = click.option(
        "--regions",
        default=None,
        help="More Slurm sites the run may send work to, by expected wait and cost: "
        "names or site files, comma-separated. Env: HPCORCH_REGIONS.",
    )(fn)
    return fn


def account_qos_options(fn: F) -> F:
    """Add ``--account`` and ``--qos`` (over the site's) to a command."""
    fn = click.option(
        "--qos",
        default=None,
        help="Slurm QOS of the run's jobs, over the site's and its partitions' (a task's "
        "own qos still wins). Env: HPCORCH_QOS.",
    )(fn)
    fn = click.option(
        "--account",
        "-A",
        default=None,
        help="Slurm account charged for the run's jobs, over the site's (set it once with "
        "'account: NAME' in ~/.config/hpcorch/sites/SITE.yaml). Env: HPCORCH_ACCOUNT.",
    )(fn)
    return fn


def dashboard_options(fn: F) -> F:
    """Add ``--dashboard`` and ``--dashboard-port`` to a command."""
    fn = click.option(
        "--dashboard-port",
        type=click.IntRange(0, 65535),
        default=None,
        help="Port of the dashboard on loopback (implies --dashboard; default: a free one). "
        "Env: HPCORCH_DASHBOARD.",
    )(fn)
    fn = click.option(
        "--dashboard",
        is_flag=True,
        default=False,
        help="Serve the Dask dashboard on the scheduler's host, on 127.0.0.1 only; a line "
        "on stderr says how to tunnel to it (ssh -L). Needs bokeh.",
    )(fn)
    return fn


def _dashboard_port(dashboard: bool, port: int | None) -> int | None:
    """What ``--dashboard``/``--dashboard-port`` ask for: a port (0: any), or None."""
    if port is not None:
        return port
    return 0 if dashboard else None


def _bad(exc: OptionError) -> click.BadParameter:
    hint = exc.option if exc.option.startswith("HPCORCH_") else f"--{exc.option}"
    return click.BadParameter(str(exc), param_hint=hint)


def env_run_options() -> RunOptions:
    """The options the environment sets; a bad value is a usage error (exit 2)."""
    try:
        return run_options()
    except OptionError as exc:
        raise _bad(exc) from None


def build_run_options(
    site: str | None,
    regions: str | None,
    budget: str | None,
    scaling: str | None,
    *,
    account: str | None = None,
    qos: str | None = None,
    dashboard: bool = False,
    dashboard_port: int | None = None,
) -> RunOptions:
    """The environment's options with the flags given in place of theirs, all checked now
    (bad input fails before anything is submitted)."""
    from hpcorch.provision.dashboard import check_available  # noqa: PLC0415  # CLI fast path: --help does not load it
    from hpcorch.sites.resolve import resolve_regions  # noqa: PLC0415  # CLI fast path: --help does not load it

    try:
        options = run_options().build(
            site=site,
            regions=regions,
            budget=budget,
            scaling=scaling,
            account=account,
            qos=qos,
            dashboard=_dashboard_port(dashboard, dashboard_port),
        )
        resolve_regions(options.regions)
        if options.dashboard is not None:
            check_available()
    except OptionError as exc:
        raise _bad(exc) from None
    return options
