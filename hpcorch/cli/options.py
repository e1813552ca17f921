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

__all__ = ["build_run_options", "env_run_options", "regions_budget_options"]

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
    site: str | None, regions: str | None, budget: str | None, scaling: str | None
) -> RunOptions:
    """The environment's options with the flags given in place of theirs, all checked now
    (bad input fails before anything is submitted)."""
    from hpcorch.sites.resolve import resolve_regions  # noqa: PLC0415  # CLI fast path: --help does not load it

    try:
        options = run_options().build(site=site, regions=regions, budget=budget, scaling=scaling)
        resolve_regions(options.regions)
    except OptionError as exc:
        raise _bad(exc) from None
    return options
