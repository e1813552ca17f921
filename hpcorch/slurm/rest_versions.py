"""Which slurmrestd ``data_parser`` versions hpcorch speaks: one table, one row each.

A leaf module (no job-script imports), so site configs can validate a pinned
``api_version`` against the table without importing the request builders.
:mod:`hpcorch.slurm.rest_dialects` says how each version's bodies are shaped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AUTO",
    "DIALECTS",
    "Dialect",
    "choose",
    "newest_first",
    "served_versions",
    "valid_api_version",
    "version_order",
]

AUTO = "auto"
_PATH_VERSION = re.compile(r"^/slurm(db)?/(v\d+\.\d+\.\d+)/")


@dataclass(frozen=True, slots=True)
class Dialect:
    """One ``data_parser`` version: how to ask, and what the server can do."""

    version: str
    since: str  # the first Slurm release that serves it
    structured: bool  # v0.0.39+: env list, {"set", "number"} numbers, node lists, script in job
    exclusive_field: bool  # v0.0.39 to v0.0.41 still take "exclusive": ["true"]
    honours_no_requeue: bool  # v0.0.38 drops "requeue": false
    partition_flags: bool  # v0.0.39 to v0.0.44 do not say which partition is the default

    @property
    def base(self) -> str:
        return f"/slurm/{self.version}"

    @property
    def accounting_base(self) -> str:
        return f"/slurmdb/{self.version}"

    def submit_body(self, desc: dict[str, Any], script: str) -> dict[str, Any]:
        if self.structured:
            return {"job": {**desc, "script": script}}
        return {"script": script, "job": desc}


def _v(n: int, since: str, *, structured: bool = True, exclusive: bool = False) -> Dialect:
    return Dialect(
        f"v0.0.{n}",
        since,
        structured,
        exclusive,
        honours_no_requeue=structured,
        partition_flags=not structured or n >= 45,
    )


# The one table: every version hpcorch speaks, oldest first.
DIALECTS: dict[str, Dialect] = {
    d.version: d
    for d in (
        _v(38, "22.05", structured=False),
        _v(39, "23.02", exclusive=True),
        _v(40, "23.11", exclusive=True),
        _v(41, "24.05", exclusive=True),
        _v(42, "24.11"),
        _v(43, "25.05"),
        _v(44, "25.11"),
        _v(45, "26.05"),
    )
}


def version_order(version: str) -> tuple[int, ...]:
    """Sort key: ``v0.0.9`` before ``v0.0.10``."""
    return tuple(int(p) for p in re.findall(r"\d+", version))


def valid_api_version(value: str) -> str:
    """``value`` if it is ``auto`` or a version in the table; else ValueError listing them."""
    if value == AUTO or value in DIALECTS:
        return value
    raise ValueError(
        f"api_version {value!r} is not one hpcorch speaks; use one of: "
        f"{', '.join([AUTO, *DIALECTS])}"
    )


def served_versions(openapi: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """(slurmctld versions, slurmdbd versions) named by the paths of ``GET /openapi/v3``."""
    ctld: set[str] = set()
    dbd: set[str] = set()
    for path in openapi.get("paths") or {}:
        match = _PATH_VERSION.match(str(path))
        if match:
            (dbd if match.group(1) else ctld).add(match.group(2))
    return ctld, dbd


def choose(served: Iterable[str]) -> Dialect | None:
    """The newest version both the server and hpcorch speak (None: no common one)."""
    common = [v for v in served if v in DIALECTS]
    return DIALECTS[max(common, key=version_order)] if common else None


def newest_first() -> list[Dialect]:
    return sorted(DIALECTS.values(), key=lambda d: version_order(d.version), reverse=True)
