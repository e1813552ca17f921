"""The policy calls the simulated driver makes: the live ones, bundled for substitution.

The driver never decides anything itself; it asks these functions, which are
the same ones the live engine calls (:mod:`hpcorch.failures`,
:mod:`hpcorch.policies`). Tests and experiments pass their own bundle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hpcorch.failures import Diagnosis, Evidence, diagnose
from hpcorch.policies import region as region_policy
from hpcorch.policies import retry as retry_policy
from hpcorch.policies import scale as scale_policy
from hpcorch.policies import walltime as walltime_policy

__all__ = ["SimPolicies"]


@dataclass(frozen=True)
class SimPolicies:
    """Which function answers each question, and its configuration. Defaults: the live ones."""

    diagnose: Callable[[Evidence], Diagnosis] = diagnose
    retry: Callable[..., retry_policy.RetryDecision] = retry_policy.decide_retry
    retry_config: retry_policy.RetryConfig = field(default_factory=retry_policy.RetryConfig)
    fits: Callable[..., bool] = walltime_policy.fits
    winding_down: Callable[..., bool] = walltime_policy.winding_down
    walltime_config: walltime_policy.WalltimeConfig = field(
        default_factory=walltime_policy.WalltimeConfig
    )
    scale: Callable[..., scale_policy.ScalePlan] = scale_policy.decide_scale
    record_scale: Callable[..., dict[str, scale_policy.PoolHistory]] = scale_policy.record
    scale_config: scale_policy.ScaleConfig = field(default_factory=scale_policy.ScaleConfig)
    choose_site: Callable[..., region_policy.RegionDecision] = region_policy.choose_site
    update_wait: Callable[..., float] = region_policy.update_wait
    region_config: region_policy.RegionConfig = field(default_factory=region_policy.RegionConfig)
