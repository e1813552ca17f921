"""The policy calls a run makes, bundled: the live engine and the simulator ask the same ones.

:class:`Policies` says which function answers each question — how to classify a
failure, whether and how to retry, how many allocations to have, which site a
task goes to, how long to ask for — and with which configuration. Neither the
engine nor the simulator decides anything itself. Tests and experiments pass
their own bundle; :meth:`Policies.named` picks the scaling policy by name
(:data:`~hpcorch.policies.scale.SCALING_POLICIES`), as Parsl's ``Strategy`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hpcorch.failures import Diagnosis, Evidence, diagnose
from hpcorch.policies import region as region_policy
from hpcorch.policies import retry as retry_policy
from hpcorch.policies import scale as scale_policy
from hpcorch.policies import walltime as walltime_policy

__all__ = ["Policies"]


@dataclass(frozen=True)
class Policies:
    """Which function answers each question, and its configuration. Defaults: the live ones."""

    diagnose: Callable[[Evidence], Diagnosis] = diagnose
    retry: Callable[..., retry_policy.RetryDecision] = retry_policy.decide_retry
    retry_config: retry_policy.RetryConfig = field(default_factory=retry_policy.RetryConfig)
    fits: Callable[..., bool] = walltime_policy.fits
    winding_down: Callable[..., bool] = walltime_policy.winding_down
    walltime_config: walltime_policy.WalltimeConfig = field(
        default_factory=walltime_policy.WalltimeConfig
    )
    scale: scale_policy.ScalePolicy = scale_policy.decide_scale
    record_scale: Callable[..., dict[str, scale_policy.PoolHistory]] = scale_policy.record
    scale_config: scale_policy.ScaleConfig = field(default_factory=scale_policy.ScaleConfig)
    choose_site: Callable[..., region_policy.RegionDecision] = region_policy.choose_site
    update_wait: Callable[..., float] = region_policy.update_wait
    region_config: region_policy.RegionConfig = field(default_factory=region_policy.RegionConfig)

    @classmethod
    def named(cls, scaling: str = "demand", **changes: Any) -> Policies:
        """The live policies with the scaling policy called ``scaling`` (a ValueError names
        the valid ones) and ``changes`` applied."""
        return cls(scale=scale_policy.scale_policy(scaling), **changes)
