"""NVML figures of a training's GPUs (issue 22): a fake NVML, the rank's file, the report."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from hpcorch import gpu_usage, torch_run
from hpcorch.engine import worker
from hpcorch.gpu_usage import GpuFigures, GpuUsage, Sampler
from hpcorch.report.build import build_report


class FakeNvml:
    """NVML's calls hpcorch makes, over scripted (memory used, utilization %) samples per GPU."""

    def __init__(self, samples: dict[int, list[tuple[int, int]]], fail_init: bool = False):
        self.samples = {i: list(s) for i, s in samples.items()}
        self.fail_init = fail_init

    def nvmlInit(self) -> None:  # NVML's names
        if self.fail_init:
            raise RuntimeError("Driver Not Loaded")

    def nvmlDeviceGetCount(self) -> int:
        return len(self.samples)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> int:
        if uuid != "GPU-b":
            raise KeyError(uuid)
        return 1

    def nvmlDeviceGetIndex(self, handle: int) -> int:
        return handle

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        return SimpleNamespace(used=self.samples[handle][0][0])

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        # the last call of a sample: the next sample reads the next pair (the last repeats)
        queue = self.samples[handle]
        return SimpleNamespace(gpu=(queue.pop(0) if len(queue) > 1 else queue[0])[1])


def test_no_nvml_or_no_gpu_says_so_with_no_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails: not installed
    nvml, why = gpu_usage.load_nvml()
    assert nvml is None and why.startswith("no GPU") and "nvidia-ml-py" in why
    nvml, why = gpu_usage.load_nvml(FakeNvml({}, fail_init=True))
    assert nvml is None and "Driver Not Loaded" in why
    assert gpu_usage.load_nvml(FakeNvml({}))[1] == "no GPU: NVML sees none"
    with pytest.raises(ValueError):
        GpuUsage()  # neither figures nor a reason


def test_sampler_tallies_peak_memory_mean_utilization_and_idle_share() -> None:
    fake = FakeNvml({0: [(100, 0), (300, 90), (200, 90), (50, 100)], 1: [(7, 0)]})
    nvml, why = gpu_usage.load_nvml(fake)
    assert nvml is fake and why == ""
    assert gpu_usage.visible_indices(fake, None) == [0, 1]
    assert gpu_usage.visible_indices(fake, "1,7") == [1]  # 7: not on this node
    assert gpu_usage.visible_indices(fake, "GPU-b,GPU-zz") == [1]
    sampler = Sampler(fake, [0, 1], "gpu1")
    for _ in range(4):
        sampler.sample()
    usage = sampler.stop()  # never started: stopping still gives what was sampled
    g0, g1 = usage.gpus
    assert (g0.node, g0.index, g0.peak_memory, g0.samples) == ("gpu1", 0, 300, 4)
    assert g0.mean_utilization == pytest.approx(70.0) and g0.idle_share == 0.25
    assert g1.idle_share == 1.0 and g1.mean_utilization == 0
    assert gpu_usage.decode(gpu_usage.encode(usage)) == usage
    assert gpu_usage.idle_share([usage]) == pytest.approx((1 + 4) / 8)
    assert Sampler(fake, [], "gpu1").stop().none == "no GPU: NVML gave no samples"


def test_the_sampler_thread_starts_and_stops() -> None:
    sampler = Sampler(FakeNvml({0: [(10, 50)]}), [0], "n", interval=0.01)
    sampler.start()
    usage = sampler.stop()
    assert usage.gpus and usage.gpus[0].samples >= 1


def test_ranks_of_one_node_seeing_one_gpu_count_it_once() -> None:
    a = GpuFigures(0, "gpu1", 10, 50.0, 0.5, 4)
    b = GpuFigures(0, "gpu1", 10, 50.0, 0.5, 6)
    c = GpuFigures(0, "gpu2", 10, 50.0, 0.0, 6)
    merged = gpu_usage.merge([GpuUsage(gpus=(a,)), GpuUsage(gpus=(b, c))])
    assert merged == GpuUsage(gpus=(b, c))
    none = GpuUsage(none="no GPU: NVML sees none")
    assert gpu_usage.merge([none, none]) == none
    assert gpu_usage.merge([]) is None


def test_a_cpu_rank_writes_no_gpu_and_the_worker_journals_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    p = worker.Payload(run_id="r", task_id="train", n=2, kind="command", target=("x",))
    p = worker.dataclasses.replace(p, log_dir=str(tmp_path))
    where = worker._gpu_dir(p)
    where.mkdir()
    for rank in ("0", "1"):
        monkeypatch.setenv("HPCORCH_GPU_USAGE_DIR", str(where))
        monkeypatch.setenv("RANK", rank)
        assert torch_run._sampler() is None  # no GPU: nothing to watch, the rank execs
    assert sorted(q.name for q in where.iterdir()) == ["rank-0.json", "rank-1.json"]
    text = worker._gpu_usage(p)
    assert text is not None and json.loads(text)["none"].startswith("no GPU")


def test_a_gpu_rank_samples_while_its_command_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeNvml({0: [(2**30, 80)], 1: [(2**31, 0)]})
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setenv("HPCORCH_GPU_USAGE_DIR", str(tmp_path))
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    sampler = torch_run._sampler()
    assert sampler is not None and list(sampler.indices) == [0]
    assert torch_run._run_sampled([sys.executable, "-c", "raise SystemExit(3)"], sampler) == 3
    usage = gpu_usage.decode((tmp_path / "rank-3.json").read_text())
    assert usage is not None and usage.gpus[0].peak_memory == 2**30
    assert usage.gpus[0].mean_utilization == 80


def _status(usage: dict[str, Any]) -> dict[str, Any]:
    attempt = {"n": 1, "start": 0.0, "end": 10.0, "exit_code": 0, "gpu_usage": usage}
    task = {"id": "train", "state": "succeeded", "attempts": [attempt]}
    return {"run_id": "r", "state": "succeeded", "tasks": [task]}


def test_the_report_says_no_gpu_or_shows_the_idle_share() -> None:
    none = build_report(_status({"none": "no GPU: NVML sees none"}))
    assert none.gpu_idle_share is None
    assert none.gpu_usage == ("train #1: no GPU: NVML sees none",)
    figures = json.loads(
        gpu_usage.encode(GpuUsage(gpus=(GpuFigures(0, "gpu1", 3 * 2**30, 75.0, 0.25, 8),)))
    )
    r = build_report(_status(figures))
    assert r.gpu_idle_share == 0.25
    assert r.gpu_usage == ("train #1: gpu1:0 peak 3.0 GiB, 75% busy (25% idle)",)
    assert r.to_dict()["gpu_idle_share"] == 0.25
