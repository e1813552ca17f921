"""plan_moves: oversubscribed workers give up the tasks they would run last."""

from __future__ import annotations

from hpcorch.placement.rebalance import WorkerLoad, plan_moves


def test_queue_on_first_worker_is_shared_with_a_late_one() -> None:
    four = {"cpus": 4.0}
    first = WorkerLoad("w1", {"cpus": 8.0}, [("a", four), ("b", four), ("c", four), ("d", four)])
    late = WorkerLoad("w2", {"cpus": 8.0}, [])
    moves = plan_moves([first, late])
    assert moves == [("d", "w1", "w2"), ("c", "w1", "w2")]


def test_no_move_without_room_or_without_oversubscription() -> None:
    eight = {"cpus": 8.0}
    busy = WorkerLoad("w1", {"cpus": 8.0}, [("a", eight), ("b", eight)])
    full = WorkerLoad("w2", {"cpus": 8.0}, [("c", eight)])
    assert plan_moves([busy, full]) == []
    fine = WorkerLoad("w1", {"cpus": 8.0}, [("a", {"cpus": 4.0})])
    idle = WorkerLoad("w2", {"cpus": 8.0}, [])
    assert plan_moves([fine, idle]) == []


def test_every_resource_must_fit_the_thief() -> None:
    gpu_task = {"cpus": 1.0, "gpus": 2.0}
    victim = WorkerLoad(
        "g1", {"cpus": 8.0, "gpus": 4.0}, [("a", gpu_task)] * 1 + [("b", gpu_task), ("c", gpu_task)]
    )
    cpu_only = WorkerLoad("c1", {"cpus": 8.0}, [])
    gpu_idle = WorkerLoad("g2", {"cpus": 8.0, "gpus": 4.0}, [])
    assert plan_moves([victim, cpu_only, gpu_idle]) == [("c", "g1", "g2")]


def test_incoming_tasks_count_on_the_thief() -> None:
    four = {"cpus": 4.0}
    victim = WorkerLoad("w1", {"cpus": 8.0}, [("a", four), ("b", four), ("c", four)])
    thief = WorkerLoad("w2", {"cpus": 4.0}, [("moving", four)])
    assert plan_moves([victim, thief]) == []


def test_a_long_queue_is_split_evenly_not_just_up_to_the_thiefs_free_room() -> None:
    one = {"cpus": 1.0, "time_30": 1.0}
    tasks = [(f"t{i}", one) for i in range(180)]
    first = WorkerLoad("w1", {"cpus": 8.0, "time_30": 1e6}, tasks)
    late = WorkerLoad("w2", {"cpus": 8.0, "time_30": 1e6}, [])
    moves = plan_moves([first, late])
    assert len(moves) == 90
    assert [key for key, _, _ in moves[:2]] == ["t179", "t178"]  # what w1 would run last
    # a second round with the moves applied finds nothing left to even out
    assert plan_moves([WorkerLoad("w1", first.capacity, tasks[:90]),
                       WorkerLoad("w2", late.capacity, tasks[90:])]) == []  # fmt: skip
