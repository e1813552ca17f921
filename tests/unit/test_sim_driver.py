"""The simulated workflow driver: placement, the live policies' decisions, journal output."""

from __future__ import annotations

from pathlib import Path

from hpcorch.failures import FailureClass
from hpcorch.journal import status
from hpcorch.policies.walltime import WalltimeConfig, padded
from hpcorch.sim.driver import WorkflowSim
from hpcorch.sim.engine import EventLoop
from hpcorch.sim.output import summary, write_journal
from hpcorch.sim.replay import ReplayJob
from hpcorch.sim.runs import simulate_workflow
from hpcorch.sim.slurm import SimSlurm
from hpcorch.sim.state import FAILURE_CODES, SUCCEEDED, UPSTREAM_FAILED, DriverConfig, Region
from hpcorch.sim.workload import SimWorkload, from_spec, from_wftasks, synthetic
from hpcorch.spec import parse_workflow
from hpcorch.traces import WfTask

GIB = 1024**3


def _diamond() -> SimWorkload:
    return from_wftasks(
        [
            WfTask("a", (), 4, 0, 100.0),
            WfTask("b", ("a",), 8, 0, 200.0),
            WfTask("c", ("a",), 8, 0, 300.0),
            WfTask("d", ("b", "c"), 1, 0, 50.0),
        ],
        name="diamond",
    )


def _failures(sim: WorkflowSim) -> list[FailureClass | None]:
    return [FAILURE_CODES[code] for code in sim.a_fail]


def test_a_dag_runs_near_its_critical_path_when_nodes_are_plenty() -> None:
    sim = simulate_workflow(_diamond(), nodes=4, cores_per_node=32)
    figures = summary(sim)
    # a -> c -> d is 450 s. The scaler sizes the first allocation for `a` alone (5 min);
    # b and c do not fit its time left, so at the next poll it is retired and a fresh
    # one asked for: one poll interval (30 s) at most is lost.
    assert 450.0 <= figures["makespan_s"] <= 480.0
    assert figures["allocations"] == 2
    assert figures["counts"]["succeeded"] == 4
    assert figures["mean_wait_s"] == 0.0
    assert [sim.w.task_id(t) for t in sim.a_task] == ["a", "b", "c", "d"]


def test_independent_tasks_pack_the_allocation() -> None:
    tasks = [WfTask(f"t{i}", (), 1, 0, 100.0) for i in range(64)]
    sim = simulate_workflow(
        from_wftasks(tasks), nodes=2, cores_per_node=32, config=DriverConfig(nodes_per_allocation=2)
    )
    figures = summary(sim)
    assert figures["makespan_s"] == 100.0
    assert figures["allocations"] == 1
    assert abs(figures["utilization"] - 1.0) < 1e-9


def test_no_task_starts_on_a_worker_without_time_for_it() -> None:
    config = WalltimeConfig()
    tasks = [WfTask(f"t{i}", (), 32, 0, 200.0 + 10 * (i % 5)) for i in range(40)]
    sim = simulate_workflow(from_wftasks(tasks), nodes=2, cores_per_node=32, max_walltime_s=900.0)
    assert sim.succeeded == 40
    assert all(f is None for f in _failures(sim))  # nothing ran into a walltime
    for i in range(len(sim.a_task)):
        alloc = sim.allocs[sim.a_alloc[i]]
        left = alloc.started + alloc.walltime - sim.a_start[i]
        assert left - config.wind_down_s >= padded(sim.w.estimate[sim.a_task[i]], config)
    assert len(sim.allocs) > 2  # the 15-minute cap forced fresh allocations


def test_out_of_memory_is_retried_with_more_memory() -> None:
    tasks = [WfTask(f"t{i}", (), 2, 1 * GIB, 60.0) for i in range(5)]
    sim = simulate_workflow(
        from_wftasks(tasks),
        nodes=1,
        cores_per_node=32,
        memory_per_node=64 * GIB,
        config=DriverConfig(oom_rate=1.0),
    )
    assert sim.succeeded == 5
    assert _failures(sim).count(FailureClass.OUT_OF_MEMORY) == 5
    assert all(res.memory > 1 * GIB for res in sim.t_res.values())
    assert sim.retries == 5


def test_user_errors_use_the_retries_then_fail_the_descendants(tmp_path: Path) -> None:
    spec = parse_workflow(
        {
            "name": "fails",
            "tasks": [
                {"id": "a", "duration": 10, "retries": 1},
                {"id": "b", "duration": 10, "after": ["a"]},
            ],
        }
    )
    sim = simulate_workflow(from_spec(spec), nodes=1, config=DriverConfig(user_error_rate=1.0))
    assert sim.t_state[0] != SUCCEEDED and sim.t_state[1] == UPSTREAM_FAILED
    assert _failures(sim) == [FailureClass.USER_ERROR, FailureClass.USER_ERROR]
    assert "retries: 1" in sim.t_reason[0]
    run_id = write_journal(sim, tmp_path / "run", epoch=1_700_000_000.0)
    doc = status(tmp_path / "run")
    assert doc["run_id"] == run_id and doc["state"] == "failed"
    assert doc["counts"]["failed"] == 1 and doc["counts"]["upstream_failed"] == 1
    (a, b) = doc["tasks"]
    assert [x["failure_class"] for x in a["attempts"]] == ["user_error", "user_error"]
    assert a["attempts"][0]["start"] >= 1_700_000_000.0 and b["attempts"] == []
    assert doc["allocations"] and doc["allocations"][0]["site"] == "sim"


def test_a_lost_node_requeues_its_tasks_elsewhere() -> None:
    loop = EventLoop()
    cluster = SimSlurm(loop, 4, repair_s=10_000)
    tasks = [WfTask(f"t{i}", (), 32, 0, 600.0) for i in range(4)]
    sim = WorkflowSim(
        loop,
        from_wftasks(tasks),
        [Region(cluster, 32)],
        DriverConfig(nodes_per_allocation=1),
    )
    sim.start()
    loop.run(until=100.0)
    lost = sim.t_node[0]
    cluster.fail_node(lost)
    loop.run()
    assert sim.succeeded == 4
    assert _failures(sim).count(FailureClass.NODE_FAILURE) == 1
    retried = [sim.a_node[i] for i in range(len(sim.a_task)) if sim.a_task[i] == 0]
    assert retried[0] == lost and retried[1] != lost
    assert sim.t_exclude[0] == {lost}


def test_allocations_wait_behind_other_users_jobs() -> None:
    background = [ReplayJob(0.0, 4, 1000.0, 1000.0, -1.0, False)]
    sim = simulate_workflow(_diamond(), nodes=4, background=background)
    figures = summary(sim)
    assert sim.allocs[0].started - sim.allocs[0].submitted == 1000.0
    assert 1450.0 <= figures["makespan_s"] <= 1480.0


def test_synthetic_workload_shape() -> None:
    w = synthetic(1000, width=200, seed=3)
    assert len(w) == 1000
    assert sum(1 for t in range(1000) if w.n_parents[t] == 0) == 200
    assert all(w.n_parents[t] == 2 for t in range(200, 1000))
    assert max(w.critical_path()) >= max(w.estimate)
    sim = simulate_workflow(w, nodes=20, config=DriverConfig(nodes_per_allocation=5))
    assert sim.succeeded == 1000
    assert sim.makespan_s >= max(w.critical_path()) * 0.8  # estimates are +-20 %


def test_the_region_policy_sends_allocations_where_nodes_are_idle() -> None:
    loop = EventLoop()
    busy = SimSlurm(loop, 4, name="busy")
    idle = SimSlurm(loop, 4, name="idle")
    busy.submit(4, 5000.0, 5000.0)  # another user holds every node of "busy"
    sim = WorkflowSim(loop, _diamond(), [Region(busy, 32), Region(idle, 32)])
    sim.run()
    assert sim.succeeded == 4
    assert {sim.regions[a.region].name for a in sim.allocs} == {"idle"}
    assert sim.makespan_s < 600


def test_preempted_allocations_requeue_their_tasks() -> None:
    loop = EventLoop()
    cluster = SimSlurm(loop, 2)
    tasks = [WfTask(f"t{i}", (), 32, 0, 300.0) for i in range(2)]
    sim = WorkflowSim(
        loop,
        from_wftasks(tasks),
        [Region(cluster, 32)],
        DriverConfig(nodes_per_allocation=2, preemptible=True),
    )
    sim.start()
    loop.run(until=100.0)
    urgent = cluster.submit(2, 200.0, 200.0, tier=1)  # a higher-priority job arrives
    loop.run()
    assert cluster.j_start[urgent] == 100.0
    assert sim.succeeded == 2
    assert _failures(sim).count(FailureClass.PREEMPTED) == 2
    assert all(sim.a_start[i] >= 300.0 for i in range(len(sim.a_task)) if sim.a_fail[i] == 0)


def test_topology_placement_gives_each_task_its_own_cores_and_gpus(tmp_path: Path) -> None:
    spec = parse_workflow(
        {
            "name": "gpus",
            "tasks": [
                {"id": f"g{i}", "duration": 100, "resources": {"cpus": 2, "gpus": 1 + i % 2}}
                for i in range(8)
            ],
        }
    )
    sim = simulate_workflow(
        from_spec(spec),
        nodes=2,
        cores_per_node=8,
        gpus_per_node=4,
        config=DriverConfig(nodes_per_allocation=2, placement="packing"),
    )
    assert sim.succeeded == 8
    write_journal(sim, tmp_path / "run")
    attempts = [a for t in status(tmp_path / "run")["tasks"] for a in t["attempts"]]
    assert all(a["cores"] and a["gpus"] for a in attempts)
    for a in attempts:
        for b in attempts:
            overlap = a is not b and a["node"] == b["node"] and a["start"] < b["end"]
            if overlap and b["start"] < a["end"]:
                assert not set(a["gpus"]) & set(b["gpus"])
                assert not set(a["cores"]) & set(b["cores"])


def test_a_fan_out_gets_its_nodes_asked_for_with_its_parent() -> None:
    # a 10 s split, then 64 one-core tasks: the first poll already counts the fan-out
    # (policies.scale.about_ready) and asks for every node, not one for the split alone
    tasks = [WfTask("split", (), 1, 0, 10.0)]
    tasks += [WfTask(f"part{i}", ("split",), 1, 0, 20.0) for i in range(64)]
    sim = simulate_workflow(from_wftasks(tasks), nodes=4, cores_per_node=8)
    assert [a.submitted for a in sim.allocs] == [0.0] * 4
    assert sim.succeeded == 65
    assert summary(sim)["makespan_s"] == 10.0 + 2 * 20.0
