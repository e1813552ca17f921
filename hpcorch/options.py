"""The options of one run, as one frozen, validated object built at the edges.

:class:`RunOptions` carries everything a run is told besides its workflow: the
site, the extra sites it may send work to (regions), its budget, the scaler's
settings with the scaling policy by name, the retry policy's settings, whether
to use the allocation it runs in, and the account/QOS overrides. The edges
build it — the CLI from its flags, the Python API from its keyword arguments,
:mod:`hpcorch.environment` from the ``HPCORCH_*`` variables — and pass it down;
nothing below them reads the environment for a setting.

Construction checks the values; :meth:`RunOptions.build` turns the words a user
types (``"20 SU"``, ``"eiger,frontier"``, ``"simple"``) into them, and an
:class:`~hpcorch.errors.OptionError` names the option that is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from hpcorch.errors import OptionError
from hpcorch.ids import check_slurm_name
from hpcorch.policies.retry import RetryConfig
from hpcorch.policies.scale import DEFAULT_INTERVAL_S, SCALING_POLICIES, ScaleConfig
from hpcorch.policies.state import Budget, parse_budget

__all__ = ["RunOptions", "ScalerSettings", "parse_regions"]


@dataclass(frozen=True, slots=True)
class ScalerSettings:
    """How the live scaler runs: every ``interval_s``, ``policy`` (a name of
    :data:`~hpcorch.policies.scale.SCALING_POLICIES`) decides with ``scale``."""

    interval_s: float = DEFAULT_INTERVAL_S
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    policy: str = "demand"

    def __post_init__(self) -> None:
        if self.interval_s <= 0:
            raise OptionError("scale-interval", "the scaling interval must be positive")
        if self.policy not in SCALING_POLICIES:
            valid = ", ".join(sorted(SCALING_POLICIES))
            raise OptionError(
                "scaling", f"unknown scaling policy {self.policy!r}; choose one of: {valid}"
            )


def parse_regions(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"eiger, frontier"`` or ``["eiger", "frontier"]`` → ``("eiger", "frontier")``."""
    if text is None:
        return ()
    items = text.split(",") if isinstance(text, str) else list(text)
    return tuple(dict.fromkeys(n.strip() for n in items if n.strip()))


@dataclass(frozen=True, slots=True)
class RunOptions:
    site: str | None = None
    """The run's site; ``None``: the workflow's own, else ``local``."""
    regions: tuple[str, ...] = ()
    """More Slurm sites (names or site files) the run may send work to."""
    budget: Budget | None = None
    scaler: ScalerSettings = field(default_factory=ScalerSettings)
    retry: RetryConfig = field(default_factory=RetryConfig)
    use_allocation: bool = True
    """Inside a user's sbatch script, run on its nodes first (``HPCORCH_USE_ALLOCATION=0``
    opts out)."""
    account: str | None = None
    """Overrides the site's account in every job of the run (a task's own ``account``
    still wins): ``--account``, ``HPCORCH_ACCOUNT``."""
    qos: str | None = None
    """Overrides the site's and partitions' QOS (a task's own ``qos`` still wins):
    ``--qos``, ``HPCORCH_QOS``."""
    dashboard: int | None = None
    """The Dask dashboard's port on the scheduler's loopback (0: a free one); None: off
    (:mod:`hpcorch.provision.dashboard`)."""

    def __post_init__(self) -> None:
        if not isinstance(self.regions, tuple) or not all(
            isinstance(n, str) and n.strip() == n and n for n in self.regions
        ):
            raise OptionError("regions", "regions must be a tuple of site names or files")
        if self.budget is not None and self.budget.amount < 0:
            raise OptionError("budget", f"budget {self.budget.amount} must not be negative")
        if self.dashboard is not None and (
            isinstance(self.dashboard, bool)
            or not isinstance(self.dashboard, int)
            or not 0 <= self.dashboard <= 65535
        ):
            raise OptionError(
                "dashboard-port", f"the dashboard port must be 0 to 65535, not {self.dashboard!r}"
            )
        for name in ("site", "account", "qos"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise OptionError(name, f"{name} must be a non-empty name, not {value!r}")
        for name in ("account", "qos"):
            value = getattr(self, name)
            if value is not None:
                try:
                    check_slurm_name(value, name)
                except ValueError as exc:
                    raise OptionError(name, str(exc)) from None

    def build(
        self,
        *,
        site: str | None = None,
        regions: str | Sequence[str] | None = None,
        budget: str | Budget | None = None,
        scaling: str | None = None,
        retry: RetryConfig | None = None,
        scaler: ScalerSettings | None = None,
        account: str | None = None,
        qos: str | None = None,
        dashboard: int | None = None,
    ) -> RunOptions:
        """These options with each value given (not ``None``) in place of its own; text
        is parsed here (``budget="20 SU"``, ``regions="eiger,frontier"``)."""
        settings = scaler if scaler is not None else self.scaler
        if scaling is not None:
            settings = replace(settings, policy=scaling.strip())
        return replace(
            self,
            site=site if site is not None else self.site,
            regions=parse_regions(regions) if regions is not None else self.regions,
            budget=_budget(budget) if budget is not None else self.budget,
            scaler=settings,
            retry=retry if retry is not None else self.retry,
            account=account.strip() or None if account is not None else self.account,
            qos=qos.strip() or None if qos is not None else self.qos,
            dashboard=dashboard if dashboard is not None else self.dashboard,
        )


def _budget(value: str | Budget) -> Budget | None:
    if isinstance(value, Budget):
        return value
    if not value.strip():
        return None
    try:
        return parse_budget(value.strip())
    except ValueError as exc:
        raise OptionError("budget", str(exc)) from None
