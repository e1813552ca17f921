from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
from distributed import Client, LocalCluster

from hpcorch.errors import InfrastructureError, ResourceError
from hpcorch.placement import Request, Slot
from hpcorch.placement.plugin import (
    SlotPlugin,
    bind_cpus,
    slot_env,
    start_in_slot,
    task_slot,
    visible_gpus,
)
from hpcorch.placement.slots import SlotAllocator
from hpcorch.topology import GpuInfo, NodeTopology

DEV_GPU = NodeTopology(
    sockets=2,
    cores_per_socket=4,
    memory=8 * 1024**3,
    gpus=tuple(GpuInfo(i, i // 2, "sim") for i in range(4)),
    nvlinks=frozenset({(0, 1), (2, 3)}),
)


def test_allocator_hands_each_gpu_to_one_task_and_takes_it_back() -> None:
    alloc = SlotAllocator("gpu1", DEV_GPU)
    a = alloc.try_allocate(Request(gpus=2))
    b = alloc.try_allocate(Request(gpus=2))
    assert a is not None and b is not None
    assert set(a.gpus).isdisjoint(b.gpus)
    assert DEV_GPU.linked(*a.gpus) and DEV_GPU.linked(*b.gpus)
    assert alloc.try_allocate(Request(gpus=1)) is None
    alloc.release(a)
    c = alloc.try_allocate(Request(gpus=1))
    assert c is not None and c.gpus[0] in a.gpus


def test_allocator_shares_only_when_allowed() -> None:
    shared = SlotAllocator("gpu1", DEV_GPU, share_gpus=True)
    slots = [shared.try_allocate(Request(gpus=0.5, share_gpus=True)) for _ in range(2)]
    assert slots[0] is not None and slots[1] is not None
    assert slots[0].gpus == slots[1].gpus
    exclusive = SlotAllocator("gpu1", DEV_GPU, share_gpus=False)
    slots = [exclusive.try_allocate(Request(gpus=0.5, share_gpus=True)) for _ in range(2)]
    assert slots[0] is not None and slots[1] is not None
    assert slots[0].gpus != slots[1].gpus
    assert slots[0].gpu_milli == 1000


def test_allocator_restricted_to_the_allocation_gpus() -> None:
    alloc = SlotAllocator("gpu1", DEV_GPU, gpus=[2, 3])
    slot = alloc.try_allocate(Request(gpus=2))
    assert slot is not None and slot.gpus == (2, 3)
    with pytest.raises(ResourceError, match="can never hold"):
        alloc.try_allocate(Request(gpus=3))


def test_allocate_waits_for_a_release() -> None:
    alloc = SlotAllocator("gpu1", DEV_GPU)
    held = alloc.allocate(Request(gpus=4))
    got: list[Slot] = []
    waiter = threading.Thread(target=lambda: got.append(alloc.allocate(Request(gpus=1))))
    waiter.start()
    time.sleep(0.05)
    assert not got
    alloc.release(held)
    waiter.join(5)
    assert len(got) == 1
    with pytest.raises(TimeoutError, match="no free slot"):
        alloc.allocate(Request(gpus=4), timeout=0.01)


def test_allocator_under_threads_never_double_books() -> None:
    alloc = SlotAllocator("gpu1", DEV_GPU)
    live: dict[int, str] = {}
    errors: list[str] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        request = Request(cpus=1 + i % 2, gpus=1 + i % 2)
        for _ in range(20):
            with task_slot(request, allocator=alloc) as slot:
                with lock:
                    for gpu in slot.gpus:
                        if gpu in live:
                            errors.append(f"GPU {gpu} held by {live[gpu]} and {i}")
                        live[gpu] = str(i)
                time.sleep(0.001)
                with lock:
                    for gpu in slot.gpus:
                        live.pop(gpu, None)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert alloc.state.gpu_free == (1000,) * 4


def test_slot_env() -> None:
    slot = Slot("gpu1", cores=(0, 1), gpus=(2, 3))
    env = slot_env(slot, {"PATH": "/bin"})
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert env["OMP_NUM_THREADS"] == "2"
    assert env["PATH"] == "/bin"
    assert slot_env(Slot("cpu1", cores=(4,)))["CUDA_VISIBLE_DEVICES"] == ""
    names = ("GPU-a", "GPU-b", "GPU-c", "GPU-d")
    assert slot_env(slot, gpu_names=names)["CUDA_VISIBLE_DEVICES"] == "GPU-c,GPU-d"


def test_visible_gpus() -> None:
    assert visible_gpus({}) is None
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "0, 2"}) == ("0", "2")
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == ()


def test_bind_cpus_only_where_permitted() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    assert not bind_cpus(Slot("n", cores=(10_000,)))
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os._exit(0 if bind_cpus(Slot("n", cores=(allowed[0],))) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def _gpu_task(i: int) -> tuple[str, tuple[int, ...], str]:
    with task_slot(Request(gpus=1 + i % 2)) as slot:
        env = slot_env(slot)
        time.sleep(0.05)
        return slot.node, slot.gpus, env["CUDA_VISIBLE_DEVICES"]


def test_plugin_on_a_dask_worker() -> None:
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=4, processes=False, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        # as the engine registers it (placement/placing.py): a 2-GPU task waits for an
        # NVLink pair; without require_links a busy node may hand it (0, 3) under load
        client.register_plugin(SlotPlugin(DEV_GPU, node="gpu1", require_links=True))
        results = client.gather(client.map(_gpu_task, range(8)))
    for node, gpus, visible in results:
        assert node == "gpu1"
        assert visible == ",".join(map(str, gpus))
        if len(gpus) == 2:
            assert DEV_GPU.linked(*gpus)


def test_task_slot_outside_a_worker() -> None:

    with pytest.raises(InfrastructureError, match="inside a task"), task_slot(Request()):
        pass


def test_start_in_slot_confines_the_subprocess() -> None:

    core = sorted(os.sched_getaffinity(0))[0]
    code = "import os; print(os.environ['CUDA_VISIBLE_DEVICES'], sorted(os.sched_getaffinity(0)))"
    proc = start_in_slot(
        [sys.executable, "-c", "import time; time.sleep(0.2); " + code],
        Slot("n", cores=(core,), gpus=(1,)),
        stdout=subprocess.PIPE,
        text=True,
    )
    out = proc.communicate(timeout=30)[0].strip()
    assert out.split(maxsplit=1) == ["1", f"[{core}]"]
