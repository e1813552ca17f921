"""CuPy where a GPU is usable, NumPy otherwise: one task code for both, on both vendors.

::

    from hpcorch.gpu import xp, to_numpy

    def analyse(n):
        np_ = xp()                      # cupy on a GPU node, numpy elsewhere
        a = np_.arange(n, dtype=np_.float64)
        return float(to_numpy((a * a).sum()))

CuPy is imported on first use, never when hpcorch is imported. On AMD GPUs
that is CuPy's ROCm build (``cupy-rocm-*``, the same ``cupy`` module, with
``cupy.cuda.runtime.is_hip``), on NVIDIA its CUDA build. "Usable" means CuPy
imports and its runtime reports at least one device among those the process
may use (``CUDA_VISIBLE_DEVICES``; on AMD ``ROCR_VISIBLE_DEVICES`` and
``HIP_VISIBLE_DEVICES``); the dev cluster's stand-in devices pass none of
these, so tasks there run on NumPy. ``HPCORCH_NO_GPU=1`` forces NumPy.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
from types import ModuleType
from typing import Any

import numpy as np

from hpcorch.environment import no_gpu
from hpcorch.gpu_env import GPU_ENV_VARS

__all__ = ["array_module", "gpu_available", "gpu_backend", "gpu_count", "to_numpy", "xp"]

logger = logging.getLogger(__name__)


def _cupy() -> ModuleType | None:
    try:
        return importlib.import_module("cupy")
    except Exception as exc:  # ImportError, or a CUDA library that fails to load
        logger.debug("cupy not usable: %s", exc)
        return None


@functools.cache
def _probe() -> int:
    if no_gpu():
        return 0
    for var in GPU_ENV_VARS:
        visible = os.environ.get(var)
        if visible is not None and visible.strip() in ("", "-1", "NoDevFiles"):
            return 0
    cupy = _cupy()
    if cupy is None:
        return 0
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:  # CUDARuntimeError: no driver, no device
        logger.debug("CuPy's runtime (CUDA or HIP) has no usable device: %s", exc)
        return 0
    return count


def gpu_backend() -> str | None:
    """``"rocm"`` when CuPy's ROCm build drives the GPUs, ``"cuda"`` for its CUDA build,
    None when task code gets NumPy."""
    if not gpu_available():
        return None
    cupy = _cupy()
    is_hip = bool(getattr(getattr(getattr(cupy, "cuda", None), "runtime", None), "is_hip", False))
    return "rocm" if is_hip else "cuda"


def gpu_count(refresh: bool = False) -> int:
    """GPUs this process can use through CuPy, CUDA or ROCm (0 without CuPy or a GPU)."""
    if refresh:
        _probe.cache_clear()
    return _probe()


def gpu_available(refresh: bool = False) -> bool:
    """Whether task code here gets CuPy from :func:`xp`."""
    return gpu_count(refresh) > 0


def array_module(*arrays: Any) -> ModuleType:
    """The array module for ``arrays`` (CuPy if any is a CuPy array), else for this process."""
    if arrays:
        for array in arrays:
            if type(array).__module__.startswith("cupy"):
                cupy = _cupy()
                if cupy is not None:
                    return cupy
        return np
    if gpu_available():
        cupy = _cupy()
        if cupy is not None:
            return cupy
    return np


xp = array_module


def to_numpy(array: Any) -> Any:
    """A NumPy copy of a CuPy array; NumPy arrays and scalars pass through."""
    if type(array).__module__.startswith("cupy"):
        return array.get()
    return array
