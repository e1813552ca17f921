from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest

from hpcorch import gpu


@pytest.fixture(autouse=True)
def _fresh_probe() -> Iterator[None]:
    gpu.gpu_count(refresh=True)
    yield
    gpu.gpu_count(refresh=True)


def test_importing_hpcorch_does_not_import_cupy() -> None:
    code = "import sys, hpcorch, hpcorch.gpu; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_forced_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPCORCH_NO_GPU", "1")
    assert not gpu.gpu_available(refresh=True)
    assert gpu.xp() is np


def test_no_visible_device_means_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HPCORCH_NO_GPU", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpu.array_module() is np


def test_stand_in_devices_fall_back_to_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    # The dev cluster: Slurm sets CUDA_VISIBLE_DEVICES, but there is no CUDA.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setattr(gpu, "_cupy", lambda: None)
    assert not gpu.gpu_available(refresh=True)
    assert gpu.xp() is np


def test_same_task_code_runs_on_numpy() -> None:
    module = gpu.xp()
    a = module.arange(10, dtype=module.float64)
    assert float(gpu.to_numpy((a * a).sum())) == 285.0
    assert gpu.array_module(np.zeros(2)) is np


def test_cupy_on_a_real_gpu() -> None:
    if not gpu.gpu_available(refresh=True):
        pytest.skip("no CUDA GPU with CuPy here")
    cupy = gpu.xp()
    assert cupy.__name__ == "cupy"
    a = cupy.arange(10, dtype=cupy.float64)
    assert gpu.array_module(a) is cupy
    assert float(gpu.to_numpy((a * a).sum())) == 285.0
