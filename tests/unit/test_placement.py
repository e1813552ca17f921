from __future__ import annotations

import itertools
import random

import pytest

from hpcorch.errors import ResourceError
from hpcorch.placement import (
    NodeCapacity,
    Packer,
    Request,
    choose_cores,
    choose_gpus,
    choose_slot,
    place,
    workload_classes,
)
from hpcorch.placement.feasibility import check_feasible, feasible_partitions
from hpcorch.sites.model import NodeShape, Partition
from hpcorch.spec import TaskSpec
from hpcorch.topology import GpuInfo, NodeTopology

GIB = 1024**3

# The dev cluster's gpu node: 2 sockets x 4 cores, 4 GPUs, NVLink pairs 0-1, 2-3.
DEV_GPU = NodeTopology(
    sockets=2,
    cores_per_socket=4,
    memory=8 * GIB,
    gpus=tuple(GpuInfo(i, i // 2, "sim") for i in range(4)),
    nvlinks=frozenset({(0, 1), (2, 3)}),
)
DEV_CPU = NodeTopology(sockets=2, cores_per_socket=4, memory=8 * GIB)


def gpu_node(name: str = "gpu1") -> NodeCapacity:
    return NodeCapacity.idle(name, DEV_GPU)


# ---------------------------------------------------------------- requests


def test_request_layout_is_block_distribution() -> None:
    assert Request(ranks=8, ranks_per_node=4).layout() == (4, 4)
    assert Request(ranks=5, ranks_per_node=4).layout() == (4, 1)
    assert Request(ranks=4, nodes=3).layout() == (2, 1, 1)
    assert Request(cpus=2).layout() == (1,)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"gpus": 1.5}, "whole and shared"),
        ({"gpus": 0.5, "ranks": 2}, "single process"),
        ({"ranks": 3, "nodes": 1, "ranks_per_node": 2}, "do not fit"),
        ({"ranks": 1, "nodes": 2}, "each node needs a rank"),
    ],
)
def test_request_rejects_impossible_shapes(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ResourceError, match=match):
        Request(**kwargs)  # type: ignore[arg-type]


def test_unshared_fraction_takes_a_whole_gpu() -> None:
    assert Request(gpus=0.5).demands()[0].gpus == 1
    shared = Request(gpus=0.5, share_gpus=True).demands()[0]
    assert shared.shared and shared.gpu_milli == 500 and shared.gpus == 0


# ---------------------------------------------------------------- choice on one node


def test_two_gpus_land_on_an_nvlink_pair_on_one_socket() -> None:
    assert choose_gpus(DEV_GPU, (0, 1, 2, 3), 2) in {(0, 1), (2, 3)}
    # With GPU 0 taken, the intact pair 2-3 is chosen, not 1 and a stranger.
    assert choose_gpus(DEV_GPU, (1, 2, 3), 2) == (2, 3)


def test_single_gpu_keeps_nvlink_pairs_intact() -> None:
    # GPU 0 is busy: taking 1 keeps the 2-3 pair whole for a later 2-GPU task.
    assert choose_gpus(DEV_GPU, (1, 2, 3), 1) == (1,)


def test_cores_follow_the_gpus_socket() -> None:
    slot = choose_slot(gpu_node(), Request(cpus=2, gpus=2).demands()[0])
    assert slot is not None
    sockets = {DEV_GPU.gpus[g].socket for g in slot.gpus}
    assert {DEV_GPU.socket_of_core(c) for c in slot.cores} == sockets


def test_cores_pack_one_socket_before_straddling() -> None:
    free = set(range(8))
    first = choose_cores(DEV_CPU, free, 3)
    free -= set(first)
    second = choose_cores(DEV_CPU, free, 1)
    # The second task fills socket 0's last core instead of opening socket 1.
    assert {DEV_CPU.socket_of_core(c) for c in (*first, *second)} == {0}
    assert len({DEV_CPU.socket_of_core(c) for c in choose_cores(DEV_CPU, set(range(8)), 6)}) == 2


def test_mpi_ranks_are_packed_by_socket_and_bound_to_gpus() -> None:
    slot = choose_slot(gpu_node(), Request(cpus=2, gpus=1, ranks=4).demands()[0])
    assert slot is not None and len(slot.ranks) == 4
    for rank in slot.ranks:
        (gpu,) = rank.gpus
        assert {DEV_GPU.socket_of_core(c) for c in rank.cores} == {DEV_GPU.gpus[gpu].socket}
    assert sorted(g for r in slot.ranks for g in r.gpus) == [0, 1, 2, 3]
    cpu_ranks = choose_slot(NodeCapacity.idle("cpu1", DEV_CPU), Request(ranks=4).demands()[0])
    assert cpu_ranks is not None
    assert all(DEV_CPU.socket_of_core(c) == 0 for r in cpu_ranks.ranks for c in r.cores)


def test_fractional_gpus_co_locate() -> None:
    state = gpu_node()
    request = Request(gpus=0.5, share_gpus=True).demands()[0]
    slots = []
    for _ in range(2):
        slot = choose_slot(state, request)
        assert slot is not None
        state = state.take(slot)
        slots.append(slot)
    assert slots[0].gpus == slots[1].gpus
    assert slots[0].gpu_milli == 500
    assert len(state.whole_free_gpus) == 3


def test_node_state_refuses_double_booking() -> None:
    state = gpu_node()
    slot = choose_slot(state, Request(gpus=2).demands()[0])
    assert slot is not None
    taken = state.take(slot)
    with pytest.raises(ValueError, match="in use"):
        taken.take(slot)
    assert taken.give(slot) == state
    with pytest.raises(ValueError, match="not in use"):
        state.give(slot)


# ---------------------------------------------------------------- the policy


def _no_gpu_twice(placements: list) -> None:  # type: ignore[type-arg]
    held: dict[tuple[str, int], int] = {}
    for p in placements:
        for slot in p.slots:
            for gpu in slot.gpus:
                held[(slot.node, gpu)] = held.get((slot.node, gpu), 0) + slot.gpu_milli
    assert all(v <= 1000 for v in held.values()), held


@pytest.mark.parametrize("policy", ["packing", "fgd", "best_fit", "random_fit"])
def test_policies_never_overbook(policy: str) -> None:
    rng = random.Random(7)
    nodes = [gpu_node(f"gpu{i}") for i in range(4)] + [NodeCapacity.idle("cpu1", DEV_CPU)]
    requests = [
        Request(
            cpus=rng.choice([1, 2]),
            gpus=rng.choice([0, 0.25, 0.5, 1, 2]),
            share_gpus=True,
            memory=GIB,
        )
        for _ in range(40)
    ]
    placements, states = place(nodes, requests, policy)  # type: ignore[arg-type]
    placed = [p for p in placements if p is not None]
    assert placed
    _no_gpu_twice(placed)
    for state in states:
        assert state.free_memory >= 0
    cores = [(s.node, c) for p in placed for s in p.slots for c in s.cores]
    assert len(cores) == len(set(cores))


def test_place_is_pure() -> None:
    nodes = [gpu_node()]
    before = list(nodes)
    place(nodes, [Request(gpus=2)])
    assert nodes == before


def test_packing_keeps_a_whole_node_for_a_large_task() -> None:
    nodes = [gpu_node("gpu1"), gpu_node("gpu2")]
    small = [Request(gpus=1, id=f"s{i}") for i in range(4)]
    large = Request(gpus=4, id="large")
    for policy in ("packing", "fgd", "best_fit"):
        placements, _ = place(nodes, [*small, large], policy)  # type: ignore[arg-type]
        assert all(p is not None for p in placements), policy
        assert {p.nodes for p in placements[:4] if p} == {placements[0].nodes}  # type: ignore[union-attr]


def test_every_two_gpu_task_gets_an_nvlink_pair() -> None:
    nodes = [gpu_node("gpu1"), gpu_node("gpu2")]
    requests = [Request(gpus=g) for g in (1, 2, 1, 2, 1, 1)]
    placements, _ = place(nodes, requests)
    for p in placements:
        assert p is not None
        if len(p.slots[0].gpus) == 2:
            assert DEV_GPU.linked(*p.slots[0].gpus)


def test_fractional_tasks_fill_a_gpu_before_breaking_another() -> None:
    placements, states = place([gpu_node()], [Request(gpus=0.25, share_gpus=True)] * 4)
    assert {p.slots[0].gpus for p in placements if p} == {placements[0].slots[0].gpus}  # type: ignore[union-attr]
    assert len(states[0].whole_free_gpus) == 3


def test_multi_node_mpi_request_spreads_over_distinct_nodes() -> None:
    nodes = [NodeCapacity.idle(f"cpu{i}", DEV_CPU) for i in (1, 2)]
    (placement,), _ = place(nodes, [Request(ranks=8, ranks_per_node=4)])
    assert placement is not None
    assert sorted(placement.nodes) == ["cpu1", "cpu2"]
    for slot in placement.slots:
        assert len(slot.ranks) == 4
        assert {DEV_CPU.socket_of_core(c) for c in slot.cores} == {0}
    assert place(nodes, [Request(ranks=12, ranks_per_node=4)])[0] == [None]


def test_packer_release_restores_capacity() -> None:
    nodes = [gpu_node()]
    packer = Packer(nodes, workload=workload_classes([Request(gpus=1)]))
    placements = [packer.place(Request(gpus=1)) for _ in range(4)]
    assert packer.place(Request(gpus=1)) is None
    assert packer.gpu_milli_in_use() == 4000
    for p in placements:
        assert p is not None
        packer.release(p)
    assert packer.states == nodes


def test_stop_at_first_failure() -> None:
    requests = [Request(gpus=4), Request(gpus=1), Request(gpus=0)]
    placements, _ = place([gpu_node()], requests, stop_at_first_failure=True)
    assert placements[1] is None and len(placements) == 2


def test_unknown_policy() -> None:
    with pytest.raises(ValueError, match="known: packing"):
        Packer([gpu_node()], "tetris")  # type: ignore[arg-type]


def test_exhaustive_small_cluster_never_double_books() -> None:
    # Every order of a small mixed queue, with releases in between.
    shapes = [
        Request(gpus=g, cpus=c, share_gpus=True) for g, c in ((2, 2), (1, 1), (0.5, 1), (0, 3))
    ]
    for order in itertools.permutations(shapes):
        packer = Packer([gpu_node()], workload=workload_classes(shapes))
        live = [p for r in order * 2 if (p := packer.place(r)) is not None]
        _no_gpu_twice(live)
        packer.release(live[0])
        again = packer.place(order[0])
        _no_gpu_twice([*live[1:], *([again] if again else [])])


# ---------------------------------------------------------------- feasibility


DEV_PARTITIONS = [
    Partition(name="cpu", nodes=2, node=NodeShape(sockets=2, cores_per_socket=4, memory=8 * GIB)),
    Partition(
        name="gpu",
        nodes=2,
        node=NodeShape(sockets=2, cores_per_socket=4, memory=8 * GIB, gpus=4),
    ),
]


def test_check_feasible_accepts_what_fits() -> None:
    check_feasible(Request(gpus=4, cpus=8), DEV_PARTITIONS)
    check_feasible(Request(ranks=8, ranks_per_node=4), DEV_PARTITIONS)
    assert [p.name for p in feasible_partitions(Request(gpus=1), DEV_PARTITIONS)] == ["gpu"]


def test_too_many_gpus_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ResourceError) as info:
        check_feasible(Request(gpus=8, id="train"), DEV_PARTITIONS)
    message = str(info.value)
    assert "task 'train'" in message
    assert "8 GPU(s) per node, nodes have 4" in message
    assert "partition gpu" in message and "lower its" in message


def test_too_many_ranks_per_node_is_refused() -> None:
    with pytest.raises(ResourceError, match=r"16 ranks x 1 cores per node, nodes have 8"):
        check_feasible(Request(ranks=32, ranks_per_node=16), DEV_PARTITIONS)
    with pytest.raises(ResourceError, match="3 nodes, the partition allows 2"):
        check_feasible(Request(ranks=12, ranks_per_node=4), DEV_PARTITIONS)
    with pytest.raises(ResourceError, match="65536M per node, nodes have 8192M"):
        check_feasible(Request(memory=64 * GIB), [p.node for p in DEV_PARTITIONS])


# ---------------------------------------------------------------- from task specs


def test_request_from_task_specs() -> None:

    gpu = TaskSpec.model_validate(
        {"id": "a", "command": ["x"], "resources": {"cpus": 2, "gpus": 0.5, "gpu_sharing": True}}
    )
    request = Request.from_task(gpu)
    assert (request.cpus, request.gpus, request.share_gpus, request.id) == (2, 0.5, True, "a")
    assert request.demands()[0].gpu_milli == 500
    mpi = TaskSpec.model_validate(
        {
            "id": "sim",
            "command": ["x"],
            "mpi": {"ranks": 8, "ranks_per_node": 4, "cpus_per_rank": 2, "gpus_per_rank": 1},
            "resources": {"memory": "1GiB"},
        }
    )
    request = Request.from_task(mpi)
    assert request.layout() == (4, 4)
    assert (request.cpus, request.gpus, request.memory) == (2, 1, GIB)
    with pytest.raises(ResourceError, match="4 ranks x 1 GPUs per node, nodes have 0"):
        check_feasible(request, DEV_PARTITIONS[:1])


def test_placement_records_for_the_journal() -> None:
    (placement,), _ = place([gpu_node()], [Request(cpus=2, gpus=0.25, share_gpus=True)])
    assert placement is not None
    (record,) = placement.records()
    assert record["node"] == "gpu1"
    assert len(record["cores"]) == 2 and len(record["gpus"]) == 1
    assert record["gpu_share"] == 0.25
