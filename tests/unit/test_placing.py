"""The engine's placement: slot requests and MPI steps per attempt, multi-node pools,
refusal before submission, and the worker running an attempt in its slot or step."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from hpcorch.engine import worker
from hpcorch.engine.monitor import whoami
from hpcorch.errors import ResourceError
from hpcorch.journal import Journal, status
from hpcorch.placement import Request, SlotAllocator
from hpcorch.placement.fit import check_placeable
from hpcorch.placement.placing import (
    MpiStep,
    Placing,
    placing_for,
    pool_topologies,
    rank_nodes,
    span_resource,
)
from hpcorch.policies.scale import Submit
from hpcorch.policies.state import Resources
from hpcorch.provision.inside import CurrentAllocation, worker_argv
from hpcorch.provision.pools import task_resources
from hpcorch.provision.scaler import Load
from hpcorch.provision.slurm_pool import _SpanRouter, job_options, plan_pools
from hpcorch.sites import load_site
from hpcorch.spec import TaskSpec, parse_workflow
from hpcorch.topology import NodeTopology

HPCORCH = Path(sys.executable).with_name("hpcorch")

MPI_TASK = {"id": "sim", "command": ["ring"], "mpi": {"ranks": 8, "ranks_per_node": 4}}


def _task(data: dict[str, Any]) -> TaskSpec:
    return parse_workflow({"tasks": [data]}).tasks[0]


def test_placing_of_a_plain_task_is_its_slot_request(tmp_path: Path) -> None:
    site = load_site("dev")
    task = _task({"id": "g", "command": ["x"], "resources": {"gpus": 2, "cpus": 3}})
    placing = placing_for(task, site, tmp_path)
    assert placing.mpi is None
    assert placing.request == Request(cpus=3, gpus=2, id="g")
    raised = placing_for(task, site, tmp_path, cpus=3, memory=2**30)
    assert raised.request is not None and raised.request.memory == 2**30


def test_placing_of_an_mpi_task_is_a_step_with_the_site_launcher(tmp_path: Path) -> None:
    site = load_site("dev")
    step = placing_for(_task(MPI_TASK), site, tmp_path).mpi
    assert step is not None
    assert step.launcher == ("srun", "--mpi=pmix") and step.nodes == 2
    assert step.env["OMPI_MCA_btl"] == "self,tcp"
    assert step.fallback == ("mpirun",) and step.bind == "none"
    # no memory asked: half of a node's memory, as 4 of its 8 cores
    assert step.memory == 4000 * 1024**2
    assert step.workdir == str(tmp_path / "mpi")
    assert rank_nodes(step, ["cpu1", "cpu2"]) == ["cpu1"] * 4 + ["cpu2"] * 4
    with pytest.raises(ResourceError, match="allocation of 1 node"):
        rank_nodes(step, ["cpu1"])


def test_tasks_spanning_nodes_get_a_pool_of_multi_node_jobs(tmp_path: Path) -> None:
    site = load_site("dev")
    spec = parse_workflow({"tasks": [{"id": "one", "command": ["x"]}, MPI_TASK]})
    plans = {p.name: p for p in plan_pools(spec, site)}
    assert set(plans) == {"cpu", "cpu-2nodes"}
    assert plans["cpu"].nodes == 1 and plans["cpu-2nodes"].nodes == 2
    assert plans["cpu-2nodes"].jobs == 1  # the partition has 2 nodes
    opts = job_options(plans["cpu-2nodes"], site, tmp_path)
    assert {"--nodes=2", "--ntasks-per-node=1"} <= set(opts["job_extra_directives"])
    assert opts["job_directives_skip"] == ["#SBATCH -n 1"]
    assert opts["worker_extra_args"][1].endswith(f",{span_resource(2)}=8")
    assert job_options(plans["cpu"], site, tmp_path)["job_directives_skip"] == []
    # the task asks for that resource: its cores on each node
    assert task_resources(spec.task("sim"))[span_resource(2)] == 4.0
    assert span_resource(2) not in task_resources(spec.task("one"))


class _Router:
    message = None

    def route(self, load: Any, now: float) -> str:
        return "cpu"

    def hold(self, lives: Any, now: float) -> None:
        return None

    def affordable(self, submit: Any, lives: Any, now: float) -> int:
        assert submit.pool == "cpu"
        return 1


def test_span_router_sends_multi_node_loads_to_their_pool() -> None:

    knobs = (("qos", "debug"),)
    router = _SpanRouter(
        _Router(),
        {("cpu", 2, ()): "cpu-2nodes", ("cpu", 1, knobs): "cpu-kabc"},
        {"k": knobs},
    )
    assert router.route(Load("a", Resources(nodes=1), None), 0) == "cpu"
    assert router.route(Load("k", Resources(nodes=1), None), 0) == "cpu-kabc"  # its knobs' pool
    assert router.route(Load("b", Resources(nodes=2), None), 0) == "cpu-2nodes"
    assert router.route(Load("c", Resources(nodes=3), None), 0) == "cpu"  # no such pool
    submit = Submit(pool="cpu-2nodes", count=1, nodes=2, walltime_s=60, reason="")
    assert router.affordable(submit, [], 0) == 1


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ({"id": "g", "command": ["x"], "resources": {"gpus": 5}}, "5 gpus"),
        (
            {"id": "m", "command": ["x"], "mpi": {"ranks": 32, "ranks_per_node": 16}},
            "16 cpus",
        ),
        (
            {"id": "s", "command": ["x"], "resources": {"gpus": 1.5, "gpu_sharing": True}},
            "mixes whole and shared GPUs",
        ),
    ],
)
def test_impossible_requests_fail_before_submission(
    task: dict[str, Any], message: str, tmp_path: Path
) -> None:

    workflow = tmp_path / "wf.yaml"
    workflow.write_text(yaml.safe_dump({"name": "bad", "tasks": [task]}))
    run_dir = tmp_path / "run"
    done = subprocess.run(
        [str(HPCORCH), "run", str(workflow), "--site", "dev", "--run-dir", str(run_dir)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and f"task {task['id']!r}" in done.stderr
    assert not run_dir.exists()  # nothing was submitted, not even a journal


def test_check_placeable_names_the_node_limit() -> None:
    spec = parse_workflow({"tasks": [{"id": "g", "command": ["x"], "resources": {"gpus": 8}}]})
    with pytest.raises(ResourceError, match="8 GPU\\(s\\) per node, nodes have 4") as info:
        check_placeable(spec, load_site("dev"))
    assert info.value.exit_code == 2


def test_pool_topologies_from_the_site_config() -> None:
    topologies = pool_topologies([load_site("dev")])
    gpu = topologies["gpu"]
    assert gpu.gpu_count == 4 and gpu.linked(0, 1) and gpu.linked(2, 3) and not gpu.linked(1, 2)
    assert topologies["cpu"].gpu_count == 0


# ---------------------------------------------------------------- the worker side


class _Plugin:
    def __init__(self, topology: NodeTopology) -> None:
        self.allocator = SlotAllocator("gpu1", topology, require_links=True)
        self.gpu_names = tuple(str(i) for i in range(topology.gpu_count))


def _gpu_node() -> NodeTopology:
    return NodeTopology.from_shape(load_site("dev").partition("gpu").node)


def _payload(tmp_path: Path, argv: list[str], placing: Placing, **kw: Any) -> worker.Payload:
    return worker.Payload(
        run_id="r",
        task_id=kw.pop("task_id", "t"),
        n=1,
        kind="command",
        target=tuple(argv),
        log_dir=str(tmp_path / "logs"),
        placing=placing,
        **kw,
    )


def test_command_runs_in_its_slot_and_records_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin = _Plugin(_gpu_node())
    monkeypatch.setattr(worker, "_slot_plugin", lambda: plugin)
    show = "import os; print(os.environ['CUDA_VISIBLE_DEVICES'], os.environ['OMP_NUM_THREADS'])"
    held = plugin.allocator.allocate(Request(gpus=1))  # GPU 0 is taken by another task
    p = _payload(tmp_path, [sys.executable, "-c", show], Placing(Request(cpus=2, gpus=2)))
    worker.execute(p)
    plugin.allocator.release(held)
    (record,) = worker.drain("r")
    assert record["gpus"] == "2,3"  # the free NVLink pair, not 1 and 2
    assert record["node"] == "gpu1" and record["cores"] == "4,5"  # socket 1, near its GPUs
    assert record["exit_code"] == 0 and record["start"] <= record["end"]
    assert (tmp_path / "logs" / "t.1.out").read_text().split() == ["2,3", "2"]
    assert plugin.allocator.state.free_cores == frozenset(range(8))  # given back


def test_without_a_slot_plugin_tasks_run_unplaced(tmp_path: Path) -> None:
    p = _payload(tmp_path, [sys.executable, "-c", "pass"], Placing(Request(gpus=1)))
    worker.execute(p)
    (record,) = worker.drain("r")
    assert record["exit_code"] == 0 and "gpus" not in record and "cores" not in record


def test_attempt_records_name_the_site_of_the_workers_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Job ids are per Slurm cluster: the job's prologue exports its site (provision.slurm_pool).
    monkeypatch.setattr(worker, "_IDENTITY", {})
    monkeypatch.setenv("SLURM_JOB_ID", "685")
    monkeypatch.setenv("HPCORCH_SITE", "dev2")
    worker.execute(_payload(tmp_path, [sys.executable, "-c", "pass"], Placing()))
    (record,) = worker.drain("r")
    assert record["job_id"] == "685" and record["site"] == "dev2"
    assert whoami()["site"] == "dev2"  # what the monitor learns of a new worker
    monkeypatch.setattr(worker, "_IDENTITY", {})
    monkeypatch.delenv("HPCORCH_SITE")
    worker.execute(_payload(tmp_path, [sys.executable, "-c", "pass"], Placing()))
    assert worker.drain("r")[0]["site"] is None  # not in a job hpcorch submitted


def test_mpi_command_is_an_srun_step_in_the_worker_allocation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "bin" / "srun"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\n"
        'echo "$@"\n'
        'echo "btl=$OMPI_MCA_btl per_node=${SLURM_NTASKS_PER_NODE:-unset} run=$HPCORCH_RUN_ID"\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:/usr/bin:/bin")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "cpu[1-2]")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "1")  # the worker's own job: not the step's
    step = MpiStep(
        ranks=8,
        ranks_per_node=4,
        cpus_per_rank=1,
        gpus_per_rank=0,
        nodes=2,
        launcher=("srun", "--mpi=pmix"),
        memory=2**30,
        env={"OMPI_MCA_btl": "self,tcp"},
    )
    worker.execute(_payload(tmp_path, ["ring", "-n", "3"], Placing(mpi=step), task_id="sim"))
    (record,) = worker.drain("r")
    assert record["exit_code"] == 0
    assert record["ranks"] == ",".join(["cpu1"] * 4 + ["cpu2"] * 4) and record["node"] == "cpu1"
    argv, env = (tmp_path / "logs" / "sim.1.out").read_text().splitlines()
    assert argv.split() == [
        "--mpi=pmix",
        "--jobid=42",
        "--job-name=hpcorch-sim",
        "--nodes=2",
        "--ntasks=8",
        "--ntasks-per-node=4",
        "--cpus-per-task=1",
        "--mem=1024M",
        "--nodelist=cpu1,cpu2",
        "--distribution=block:block",
        "--cpu-bind=cores",
        "--exact",
        "--kill-on-bad-exit=1",
        "ring",
        "-n",
        "3",
    ]
    assert env == "btl=self,tcp per_node=unset run=r"


def test_status_shows_the_ranks_of_mpi_attempts(tmp_path: Path) -> None:
    with Journal.create(
        tmp_path, run_id="r", name="w", source=None, site="dev", time_scale=None
    ) as journal:
        journal.add_tasks([("sim", "command", "succeeded", 0), ("one", "command", "succeeded", 0)])
        journal.record_attempts(
            [
                {"task_id": "sim", "n": 1, "node": "cpu1", "ranks": "cpu1,cpu1,cpu2,cpu2"},
                {"task_id": "one", "n": 1, "node": "gpu1", "gpus": "2,3", "cores": "4,5"},
            ]
        )
    tasks = {t["id"]: t["attempts"][0] for t in status(tmp_path)["tasks"]}
    assert tasks["sim"]["ranks"] == ["cpu1", "cpu1", "cpu2", "cpu2"]
    assert "ranks" not in tasks["one"] and tasks["one"]["gpus"] == [2, 3]


def test_journal_written_before_ranks_gains_the_column(tmp_path: Path) -> None:
    with Journal.create(
        tmp_path, run_id="r", name="w", source=None, site="dev", time_scale=None
    ) as journal:
        journal.add_tasks([("a", "command", "succeeded", 0)])
        journal.record_attempts([{"task_id": "a", "n": 1, "node": "cpu1"}])
    conn = sqlite3.connect(tmp_path / "journal.sqlite")
    conn.execute("ALTER TABLE attempts DROP COLUMN ranks")
    conn.commit()
    conn.close()
    assert "ranks" not in status(tmp_path)["tasks"][0]["attempts"][0]  # old journal reads
    with Journal.open(tmp_path) as journal:
        journal.record_attempts([{"task_id": "a", "n": 2, "node": "cpu1", "ranks": "cpu1"}])
    assert status(tmp_path)["tasks"][0]["attempts"][1]["ranks"] == ["cpu1"]


def test_workers_inside_a_users_allocation_take_tasks_spanning_its_nodes() -> None:

    allocation = CurrentAllocation("376", ("cpu1", "cpu2"), (8, 8), 8000 * 1024**2, 0, "cpu")
    argv = worker_argv(allocation, allocation.nodes, 8, "tls://10.0.0.1:8786")
    resources = argv[argv.index("--resources") + 1].split(",")
    assert f"{span_resource(2)}=8" in resources
    assert not any(r.startswith("cpus_3nodes") for r in resources)
