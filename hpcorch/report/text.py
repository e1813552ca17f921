"""How report figures read: hours and shares, the same on the terminal and in HTML."""

from __future__ import annotations

__all__ = ["hours", "percent"]


def hours(value: float | None) -> str:
    """``—`` when unknown; three significant digits below one hour, so short runs show."""
    if value is None:
        return "—"
    if value == 0:
        return "0"
    return f"{value:.3g}" if value < 1 else f"{value:,.2f}"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f} %"
