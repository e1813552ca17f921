"""hpcorch's settings from the environment: the one module that reads ``HPCORCH_*``.

The edges (the CLI, the Python API) call :func:`run_options` to start from
the environment and then apply their own flags or keyword arguments; the few
settings that are not a run's (where runs, sites and traces live, whether to
look for a GPU) have their own reader here. Nothing else in hpcorch reads
``os.environ`` for a setting; reading it to build a child process's environment,
or to learn the Slurm job a process runs in, is not a setting
(``tests/unit/test_settings_edge.py`` keeps the list).

Variables: ``HPCORCH_REGIONS`` (comma-separated sites), ``HPCORCH_BUDGET``
(``"20 SU"``), ``HPCORCH_SCALING`` (a scaling policy's name),
``HPCORCH_SCALE_INTERVAL`` (5s), ``HPCORCH_IDLE_TIMEOUT`` (60s),
``HPCORCH_SCALE_COOLDOWN`` (30s), ``HPCORCH_DRAIN_TARGET`` (5s),
``HPCORCH_LOOKAHEAD`` (30s) as seconds or durations (``2m``),
``HPCORCH_USE_ALLOCATION`` (``0`` opts out), ``HPCORCH_ACCOUNT`` and ``HPCORCH_QOS``
(over the site's), ``HPCORCH_DASHBOARD`` (a port on loopback, ``0`` any; unset: no
dashboard), ``HPCORCH_HOME``,
``HPCORCH_SITE_PATH``, ``HPCORCH_TRACES_DIR``, ``HPCORCH_NO_GPU``. A training's
ranks read what their worker set (:mod:`hpcorch.training`): ``HPCORCH_TORCH_BACKEND``,
``HPCORCH_CHECKPOINT_DIR``, ``HPCORCH_CHECKPOINT``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from hpcorch.errors import OptionError
from hpcorch.options import RunOptions, ScalerSettings
from hpcorch.policies.scale import ScaleConfig
from hpcorch.units import parse_duration

__all__ = [
    "TRACES_DIR",
    "checkpoint",
    "checkpoint_dir",
    "config_home",
    "no_gpu",
    "options_env",
    "run_options",
    "runs_home",
    "site_path",
    "torch_backend",
    "traces_dir_override",
]

TRACES_DIR = "HPCORCH_TRACES_DIR"

# The scaler's knobs: variable -> ScaleConfig field.
_SCALE_FIELDS = {
    "HPCORCH_IDLE_TIMEOUT": "idle_timeout_s",
    "HPCORCH_SCALE_COOLDOWN": "cooldown_s",
    "HPCORCH_DRAIN_TARGET": "drain_target_s",
    "HPCORCH_LOOKAHEAD": "lookahead_s",
}
_FALSE = ("0", "false", "no")


def _environ(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def _seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    value = environ.get(name, "").strip()
    if not value:
        return default
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise OptionError(name, f"{name}={value!r}: {exc}") from None


def scaler_settings(env: Mapping[str, str] | None = None) -> ScalerSettings:
    """The defaults, with ``HPCORCH_SCALE_INTERVAL`` and friends where set."""
    environ = _environ(env)
    base = ScaleConfig()
    values = {f: _seconds(environ, name, getattr(base, f)) for name, f in _SCALE_FIELDS.items()}
    try:
        config = replace(
            base,
            idle_timeout_s=values["idle_timeout_s"],
            cooldown_s=values["cooldown_s"],
            drain_target_s=values["drain_target_s"],
            lookahead_s=values["lookahead_s"],
        )
    except ValueError as exc:
        raise OptionError("HPCORCH_SCALE_*", str(exc)) from None
    base_settings = ScalerSettings()
    return ScalerSettings(
        _seconds(environ, "HPCORCH_SCALE_INTERVAL", base_settings.interval_s),
        config,
        environ.get("HPCORCH_SCALING", "").strip() or base_settings.policy,
    )


def run_options(env: Mapping[str, str] | None = None) -> RunOptions:
    """The run options the environment sets (unset variables keep the defaults)."""
    environ = _environ(env)
    return RunOptions(
        scaler=scaler_settings(environ),
        use_allocation=environ.get("HPCORCH_USE_ALLOCATION", "1").strip().lower() not in _FALSE,
        dashboard=_port(environ, "HPCORCH_DASHBOARD"),
    ).build(
        regions=environ.get("HPCORCH_REGIONS") or None,
        budget=environ.get("HPCORCH_BUDGET") or None,
        account=environ.get("HPCORCH_ACCOUNT") or None,
        qos=environ.get("HPCORCH_QOS") or None,
    )


def options_env(options: RunOptions) -> dict[str, str]:
    """The variables that hand ``options`` to a child hpcorch (``hpcorch submit``'s driver
    job reads them back with :func:`run_options`)."""
    out: dict[str, str] = {}
    if options.regions:
        out["HPCORCH_REGIONS"] = ",".join(options.regions)
    if options.budget is not None:
        out["HPCORCH_BUDGET"] = f"{options.budget.amount:g} {options.budget.unit}"
    scaler, default = options.scaler, ScalerSettings()
    if scaler.policy != default.policy:
        out["HPCORCH_SCALING"] = scaler.policy
    if scaler.interval_s != default.interval_s:
        out["HPCORCH_SCALE_INTERVAL"] = f"{scaler.interval_s:g}"
    for name, f in _SCALE_FIELDS.items():
        if getattr(scaler.scale, f) != getattr(default.scale, f):
            out[name] = f"{getattr(scaler.scale, f):g}"
    if not options.use_allocation:
        out["HPCORCH_USE_ALLOCATION"] = "0"
    if options.account:
        out["HPCORCH_ACCOUNT"] = options.account
    if options.qos:
        out["HPCORCH_QOS"] = options.qos
    if options.dashboard is not None:
        out["HPCORCH_DASHBOARD"] = str(options.dashboard)
    return out


def _port(environ: Mapping[str, str], name: str) -> int | None:
    text = environ.get(name, "").strip()
    if not text:
        return None
    if not text.isdigit():
        raise OptionError(name, f"{name} must be a port number (0: any free one), not {text!r}")
    return int(text)


def runs_home(env: Mapping[str, str] | None = None) -> Path:
    """``$HPCORCH_HOME``, by default ``.hpcorch`` in the current directory."""
    return Path(_environ(env).get("HPCORCH_HOME", ".hpcorch"))


def site_path(env: Mapping[str, str] | None = None) -> list[Path]:
    """The directories of ``$HPCORCH_SITE_PATH`` (``:``-separated), in order."""
    return [Path(p) for p in _environ(env).get("HPCORCH_SITE_PATH", "").split(os.pathsep) if p]


def config_home(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME``, else ``~/.config``."""
    return Path(_environ(env).get("XDG_CONFIG_HOME") or Path.home() / ".config")


def traces_dir_override(env: Mapping[str, str] | None = None) -> Path | None:
    """``$HPCORCH_TRACES_DIR`` when set."""
    value = _environ(env).get(TRACES_DIR)
    return Path(value) if value else None


def no_gpu(env: Mapping[str, str] | None = None) -> bool:
    """``HPCORCH_NO_GPU=1``: tasks run on NumPy even where a GPU is visible."""
    return _environ(env).get("HPCORCH_NO_GPU", "") not in ("", "0")


def torch_backend(env: Mapping[str, str] | None = None) -> str:
    """A training rank's torch.distributed backend (``gloo`` where none was set)."""
    return _environ(env).get("HPCORCH_TORCH_BACKEND") or "gloo"


def checkpoint_dir(env: Mapping[str, str] | None = None) -> Path | None:
    """Where a training keeps its checkpoints (None: it declared none)."""
    value = _environ(env).get("HPCORCH_CHECKPOINT_DIR")
    return Path(value) if value else None


def gpu_usage_dir(env: Mapping[str, str] | None = None) -> Path | None:
    """Where a training's ranks write their GPUs' NVML figures (None: not asked)."""
    value = _environ(env).get("HPCORCH_GPU_USAGE_DIR")
    return Path(value) if value else None


def checkpoint(env: Mapping[str, str] | None = None) -> Path | None:
    """The newest complete checkpoint of an earlier attempt (None: start from scratch)."""
    value = _environ(env).get("HPCORCH_CHECKPOINT")
    return Path(value) if value else None
