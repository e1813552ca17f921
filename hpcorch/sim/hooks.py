"""The policy calls the simulated driver makes: the live ones, bundled for substitution.

The driver never decides anything itself; it asks these functions, which are
the same ones the live engine calls. Where hpcorch.policies has no module yet
(scaling, region choice) a stand-in from :mod:`hpcorch.sim.defaults` fills
the slot until it lands. Tests and experiments pass their own bundle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from hpcorch.failures import Diagnosis, Evidence, diagnose
from hpcorch.policies import retry as retry_policy
from hpcorch.policies import walltime as walltime_policy
from hpcorch.policies.state import Allocation, PoolDemand, PoolShape, SiteQueue
from hpcorch.sim import defaults

__all__ = ["ScaleDecisionLike", "SimPolicies"]


class ScaleDecisionLike(Protocol):
    @property
    def submit(self) -> int: ...

    @property
    def cancel(self) -> tuple[str, ...]: ...


ScaleFn = Callable[..., ScaleDecisionLike]
SiteFn = Callable[[Sequence[SiteQueue], int], str]


def _scale(
    pool: PoolShape,
    demand: PoolDemand,
    allocations: Sequence[Allocation],
    now: float,
    **kwargs: Any,
) -> ScaleDecisionLike:
    return defaults.default_scale(pool, demand, allocations, now, **kwargs)


@dataclass(frozen=True)
class SimPolicies:
    """Which function answers each question. Defaults: the live policies."""

    diagnose: Callable[[Evidence], Diagnosis] = diagnose
    retry: Callable[..., retry_policy.RetryDecision] = retry_policy.decide_retry
    retry_config: retry_policy.RetryConfig = field(default_factory=retry_policy.RetryConfig)
    fits: Callable[..., bool] = walltime_policy.fits
    winding_down: Callable[..., bool] = walltime_policy.winding_down
    allocation_walltime: Callable[..., float] = walltime_policy.allocation_walltime
    walltime_config: walltime_policy.WalltimeConfig = field(
        default_factory=walltime_policy.WalltimeConfig
    )
    scale: ScaleFn = _scale
    choose_site: SiteFn = defaults.default_choose_site
