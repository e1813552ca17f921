"""Options that ``hpcorch run`` and ``hpcorch submit`` share: the run's regions and budget.

Each also reads its environment variable (``HPCORCH_REGIONS``, ``HPCORCH_BUDGET``),
which is how the engine, and a driver job submitted with ``sbatch``, receive it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

from hpcorch.errors import SpecError

__all__ = ["apply_regions_budget", "regions_budget_options"]

F = TypeVar("F", bound=Callable[..., Any])


def regions_budget_options(fn: F) -> F:
    """Add ``--regions`` and ``--budget`` to a command."""
    fn = click.option(
        "--budget",
        envvar="HPCORCH_BUDGET",
        default=None,
        help="Cap on what the run may spend: '20' or '20 SU', or '50 EUR' (sites then need "
        "charge.price_per_su and charge.currency). Env: HPCORCH_BUDGET.",
    )(fn)
    fn = click.option(
        "--regions",
        envvar="HPCORCH_REGIONS",
        default=None,
        help="More Slurm sites the run may send work to, by expected wait and cost: "
        "names or site files, comma-separated. Env: HPCORCH_REGIONS.",
    )(fn)
    return fn


def apply_regions_budget(regions: str | None, budget: str | None) -> None:
    """Check both now (bad input fails before anything is submitted), then hand them on."""
    from hpcorch.provision.regions import parse_budget  # noqa: PLC0415  # CLI fast path: --help does not load it
    from hpcorch.sites.resolve import resolve_site  # noqa: PLC0415  # CLI fast path: --help does not load it

    if budget is not None and budget.strip():
        try:
            parse_budget(budget.strip())
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--budget") from None
        os.environ["HPCORCH_BUDGET"] = budget.strip()
    if regions is not None and regions.strip():
        names = [n.strip() for n in regions.split(",") if n.strip()]
        for name in names:
            try:
                site = resolve_site(name)
            except SpecError as exc:
                raise click.BadParameter(f"{name}: {exc}", param_hint="--regions") from None
            if site.kind != "slurm":
                raise click.BadParameter(
                    f"{name} is a {site.kind} site; regions are Slurm sites", param_hint="--regions"
                )
        os.environ["HPCORCH_REGIONS"] = ",".join(names)
