"""A task's GPU memory and utilization, sampled from NVML (``nvidia-ml-py``).

Each rank of a training (:mod:`hpcorch.torch_run`) samples the GPUs it sees,
every ``interval`` seconds while its command runs: per GPU the peak memory
used, the mean utilization and the share of samples the GPU sat idle (under
:data:`IDLE_BELOW` percent). Where NVML cannot load or sees no GPU, the result
says so in words ("no GPU: ...") and carries no figures: nothing is invented.

The journal keeps an attempt's result as JSON text (:func:`encode` /
:func:`decode`); the report turns the figures of a run into an idle-GPU share
(:func:`idle_share`). NVML is imported lazily (``pip install hpcorch[gpu]``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "IDLE_BELOW",
    "GpuFigures",
    "GpuUsage",
    "Sampler",
    "decode",
    "encode",
    "from_mapping",
    "idle_share",
    "load_nvml",
    "merge",
    "visible_indices",
]

IDLE_BELOW = 5
"""Utilization (percent) under which a sample counts its GPU idle."""


@dataclass(frozen=True, slots=True)
class GpuFigures:
    """One GPU over one attempt (of one rank)."""

    index: int
    """NVML's index of the GPU on its node."""
    node: str
    peak_memory: int
    """Bytes."""
    mean_utilization: float
    """Percent, 0-100."""
    idle_share: float
    """Share of the samples under :data:`IDLE_BELOW` percent."""
    samples: int


@dataclass(frozen=True, slots=True)
class GpuUsage:
    """An attempt's GPUs: figures, or why there are none (``none``: 'no GPU: ...')."""

    gpus: tuple[GpuFigures, ...] = ()
    none: str | None = None

    def __post_init__(self) -> None:
        if bool(self.gpus) == bool(self.none):
            raise ValueError("GpuUsage holds figures or a reason for none, not both")


def load_nvml(nvml: Any = None) -> tuple[Any | None, str]:
    """``(nvml module, '')`` initialised with at least one GPU, else ``(None, 'no GPU: why')``."""
    if nvml is None:
        try:
            import pynvml  # noqa: PLC0415  # optional (nvidia-ml-py)
        except ImportError:
            return None, "no GPU: NVML bindings (nvidia-ml-py) not installed"
        nvml = pynvml
    try:
        nvml.nvmlInit()
        count = int(nvml.nvmlDeviceGetCount())
    except Exception as exc:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ...
        return None, f"no GPU: NVML unavailable ({exc or type(exc).__name__})"
    if count == 0:
        return None, "no GPU: NVML sees none"
    return nvml, ""


def visible_indices(nvml: Any, cuda_visible: str | None) -> list[int]:
    """The NVML indices of the GPUs ``CUDA_VISIBLE_DEVICES`` names (all where unset);
    UUIDs are looked up, names NVML does not know are left out."""
    count = int(nvml.nvmlDeviceGetCount())
    if cuda_visible is None:
        return list(range(count))
    out: list[int] = []
    for item in (s.strip() for s in cuda_visible.split(",")):
        if item.isdigit():
            if int(item) < count:
                out.append(int(item))
        elif item.startswith(("GPU-", "MIG-")):
            try:
                handle = nvml.nvmlDeviceGetHandleByUUID(item)
                out.append(int(nvml.nvmlDeviceGetIndex(handle)))
            except Exception:  # an unknown UUID: not one of this node's
                continue
    return out


@dataclass
class _Tally:
    peak: int = 0
    util_sum: float = 0.0
    idle: int = 0
    samples: int = 0


@dataclass
class Sampler:
    """Samples ``indices`` every ``interval`` seconds on a thread (:meth:`start`,
    :meth:`stop`); :meth:`sample` takes one sample now."""

    nvml: Any
    indices: Sequence[int]
    node: str
    interval: float = 1.0
    _tallies: dict[int, _Tally] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> None:
        for i in self.indices:
            try:
                handle = self.nvml.nvmlDeviceGetHandleByIndex(i)
                used = int(self.nvml.nvmlDeviceGetMemoryInfo(handle).used)
                util = float(self.nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            except Exception:  # a GPU lost mid-run: its other samples stand
                continue
            t = self._tallies.setdefault(i, _Tally())
            t.peak = max(t.peak, used)
            t.util_sum += util
            t.idle += util < IDLE_BELOW
            t.samples += 1

    def _loop(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                return

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="hpcorch-nvml", daemon=True)
        self._thread.start()

    def stop(self) -> GpuUsage:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 5)
        figures = tuple(
            GpuFigures(
                index=i,
                node=self.node,
                peak_memory=t.peak,
                mean_utilization=t.util_sum / t.samples,
                idle_share=t.idle / t.samples,
                samples=t.samples,
            )
            for i, t in sorted(self._tallies.items())
            if t.samples
        )
        return GpuUsage(gpus=figures) if figures else GpuUsage(none="no GPU: NVML gave no samples")


def encode(usage: GpuUsage) -> str:
    if usage.none is not None:
        return json.dumps({"none": usage.none})
    return json.dumps({"gpus": [asdict(g) for g in usage.gpus]})


def decode(text: str | None) -> GpuUsage | None:
    """The journal's text back (None: nothing recorded, or unreadable)."""
    if not text:
        return None
    try:
        return from_mapping(json.loads(text))
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def merge(parts: Iterable[GpuUsage]) -> GpuUsage | None:
    """One attempt's usage from its ranks': every GPU that has figures, one
    GPU once (two ranks of a node may see the same); else the first reason."""
    seen: dict[tuple[str, int], GpuFigures] = {}
    reasons: list[str] = []
    for part in parts:
        for g in part.gpus:
            key = (g.node, g.index)
            if key not in seen or g.samples > seen[key].samples:
                seen[key] = g
        if part.none:
            reasons.append(part.none)
    if seen:
        return GpuUsage(gpus=tuple(seen[k] for k in sorted(seen)))
    return GpuUsage(none=reasons[0]) if reasons else None


def idle_share(usages: Iterable[GpuUsage]) -> float | None:
    """The share of all sampled GPU time that sat idle (None: no figures at all)."""
    idle = total = 0.0
    for usage in usages:
        for g in usage.gpus:
            idle += g.idle_share * g.samples
            total += g.samples
    return idle / total if total else None


def from_mapping(data: Mapping[str, Any]) -> GpuUsage:
    """A rank's file (:func:`encode`'s JSON, read back) as :class:`GpuUsage`."""
    if "none" in data:
        return GpuUsage(none=str(data["none"]))
    return GpuUsage(gpus=tuple(GpuFigures(**g) for g in data["gpus"]))
