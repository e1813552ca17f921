"""How report figures read: hours and shares, the same on the terminal and in HTML."""

from __future__ import annotations

from collections.abc import Sequence

from hpcorch.report.model import SiteUsage

__all__ = ["SITE_COLUMNS", "hours", "percent", "site_rows"]


def hours(value: float | None) -> str:
    """``—`` when unknown; three significant digits below one hour, so short runs show."""
    if value is None:
        return "—"
    if value == 0:
        return "0"
    return f"{value:.3g}" if value < 1 else f"{value:,.2f}"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f} %"


SITE_COLUMNS = (
    "site",
    "allocations",
    "node-hours",
    "core-hours used / allocated",
    "GPU-hours used / allocated",
    "SU",
    "cost",
)


def site_rows(sites: Sequence[SiteUsage]) -> list[tuple[str, ...]]:
    """One row per site under :data:`SITE_COLUMNS`, for the terminal and the HTML page."""
    return [
        (
            u.site,
            str(u.allocations),
            hours(u.node_hours),
            f"{hours(u.core_hours_used)} / {hours(u.core_hours)}",
            f"{hours(u.gpu_hours_used)} / {hours(u.gpu_hours)}",
            hours(u.su),
            "—" if u.cost is None else f"{u.cost:.2f} {u.currency or ''}".strip(),
        )
        for u in sites
    ]
