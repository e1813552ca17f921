"""torch.distributed trainings: the spec, ranks per node, ports, checkpoints, the rank shim."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hpcorch import environment
from hpcorch.api import Workflow
from hpcorch.engine import worker
from hpcorch.errors import ResourceError, WorkflowError
from hpcorch.loaders.wfformat import load_wfformat
from hpcorch.mpi import build_srun_step_argv
from hpcorch.placement.placing import placing_for
from hpcorch.sites import load_site
from hpcorch.spec import TaskSpec, parse_workflow
from hpcorch.torch_run import rank_env, tasks_on_node
from hpcorch.training import (
    PORT_BASE,
    PORT_SPAN,
    TorchStep,
    newest_checkpoint,
    pick_port,
    resolve_ranks,
    step_of,
    summary,
    torch_env,
)

TRAIN = {
    "id": "train",
    "command": ["python", "train.py"],
    "distributed": {"nodes": 2, "ranks_per_node": 2, "checkpoint_dir": "ckpt"},
}


def _task(data: dict[str, Any]) -> TaskSpec:
    return parse_workflow({"tasks": [data]}).tasks[0]


def test_a_training_runs_as_an_mpi_step_of_nodes_times_ranks() -> None:
    task = _task(TRAIN)
    assert task.distributed is not None and task.distributed.backend == "gloo"
    assert task.mpi is not None
    assert (task.mpi.ranks, task.mpi.ranks_per_node, task.nodes) == (4, 2, 2)


def test_backend_follows_gpus_and_nccl_needs_them() -> None:
    gpu = _task({**TRAIN, "distributed": {"nodes": 2, "gpus_per_rank": 1}})
    assert gpu.distributed is not None and gpu.distributed.backend == "nccl"
    with pytest.raises(WorkflowError, match="nccl needs GPUs"):
        _task({**TRAIN, "distributed": {"backend": "nccl"}})
    with pytest.raises(WorkflowError, match="unknown key 'gpus'"):
        _task({**TRAIN, "distributed": {"gpus": 1}})
    with pytest.raises(WorkflowError, match="distributed or mpi"):
        _task({**TRAIN, "mpi": {"ranks": 3}})
    with pytest.raises(WorkflowError, match="command and function"):
        _task({"id": "e", "duration": 1, "distributed": {}})


def test_gpu_ranks_default_to_one_per_gpu_of_the_site() -> None:
    spec = parse_workflow({"tasks": [{**TRAIN, "distributed": {"nodes": 2, "gpus_per_rank": 1}}]})
    resolved = resolve_ranks(spec, load_site("dev")).tasks[0]
    assert resolved.mpi is not None
    assert (resolved.mpi.ranks, resolved.mpi.ranks_per_node) == (8, 4)  # dev: 4 GPUs a node
    assert resolved.gpus == 4
    with pytest.raises(ResourceError, match="has none"):
        resolve_ranks(spec, load_site("local").model_copy(update={"partitions": ()}))


def test_the_python_api_and_wfformat_take_distributed(tmp_path: Path) -> None:
    wf = Workflow("w")
    wf.add(["python", "t.py"], id="t", distributed={"nodes": 2, "ranks_per_node": 2})
    task = wf.spec().tasks[0]
    assert task.mpi is not None and task.mpi.ranks == 4
    doc = {
        "name": "w",
        "schemaVersion": "1.5",
        "workflow": {
            "specification": {"tasks": [{"name": "t", "id": "t", "parents": [], "children": []}]},
            "execution": {
                "makespanInSeconds": 1,
                "executedAt": "2024-01-01T00:00:00Z",
                "tasks": [
                    {
                        "id": "t",
                        "runtimeInSeconds": 1,
                        "coreCount": 1,
                        "command": {"program": "python", "arguments": ["t.py"]},
                        "hpcorch": {"distributed": {"nodes": 2}},
                    }
                ],
            },
        },
    }
    path = tmp_path / "w.json"
    path.write_text(json.dumps(doc))
    try:
        loaded = load_wfformat(path, None).tasks[0]
    except WorkflowError as exc:  # a schema that refuses the extension field
        pytest.fail(str(exc))
    assert loaded.distributed is not None and loaded.nodes == 2


def test_placing_gives_the_step_its_training_launch(tmp_path: Path) -> None:
    site = load_site("dev")
    step = placing_for(_task(TRAIN), site, tmp_path).mpi
    ckpt = str(tmp_path / "ckpt")  # in the run directory
    assert step is not None and step.torch == TorchStep(backend="gloo", checkpoint_dir=ckpt)
    argv = build_srun_step_argv(
        step, ["python", "-m", "hpcorch.torch_run", "--", "x"], job_id=7, nodes=2
    )
    assert "--ntasks=4" in argv and "--ntasks-per-node=2" in argv and "--nodes=2" in argv


def test_ports_are_spread_by_key_and_skip_busy_and_taken_ones() -> None:
    a = pick_port("run/a/1", free=lambda p: True)
    b = pick_port("run/b/1", free=lambda p: True)
    assert PORT_BASE <= a < PORT_BASE + PORT_SPAN and a != b
    assert pick_port("run/a/1", free=lambda p: p != a) != a
    assert pick_port("run/a/1", free=lambda p: True, taken=frozenset({a})) != a
    with pytest.raises(ResourceError, match="no free port"):
        pick_port("k", free=lambda p: False)


def test_the_worker_gives_concurrent_trainings_different_ports(tmp_path: Path) -> None:
    site = load_site("dev")
    step = placing_for(_task(TRAIN), site, tmp_path).mpi
    assert step is not None
    ports = set()
    for task_id in ("a", "a", "b"):  # the same key twice: the second must not reuse it
        p = worker.Payload(
            run_id="r", task_id=task_id, n=1, kind="command", target=("x",), cwd=str(tmp_path)
        )
        record: dict[str, Any] = {}
        env = worker._training_env(p, step, "localhost", record)
        ports.add(env["MASTER_PORT"])
        assert record["training"].endswith(env["MASTER_PORT"])
        assert env["HPCORCH_CHECKPOINT_DIR"] == str(tmp_path / "ckpt")
    assert len(ports) == 3


def test_newest_complete_checkpoint_and_the_journal_line(tmp_path: Path) -> None:
    assert newest_checkpoint(tmp_path / "none") is None
    for name in ("ckpt-000000004.pt", "ckpt-000000012.pt", "ckpt-000000020.pt.99.tmp", "x"):
        (tmp_path / name).write_text("")
    newest = newest_checkpoint(tmp_path)
    assert newest is not None and newest.name == "ckpt-000000012.pt"
    assert step_of(summary("10.0.0.1", 29600, newest)) == 12
    assert step_of(summary("10.0.0.1", 29600, None)) is None


def test_torch_env_names_the_rendezvous_interface_and_checkpoint(tmp_path: Path) -> None:
    env = torch_env(
        TorchStep(backend="nccl", interface="hsn0", checkpoint_dir=str(tmp_path)),
        master_addr="10.0.0.1",
        port=29511,
        checkpoint=tmp_path / "ckpt-000000001.pt",
    )
    assert env["MASTER_ADDR"] == "10.0.0.1" and env["MASTER_PORT"] == "29511"
    assert env["NCCL_SOCKET_IFNAME"] == env["GLOO_SOCKET_IFNAME"] == "hsn0"
    assert environment.torch_backend(env) == "nccl"
    assert environment.checkpoint(env) == tmp_path / "ckpt-000000001.pt"
    assert environment.checkpoint_dir(env) == tmp_path
    assert "NCCL_SOCKET_IFNAME" not in torch_env(
        TorchStep(backend="gloo"), master_addr="a", port=1, checkpoint=None
    )


def test_rank_shim_reads_the_slurm_step() -> None:
    assert tasks_on_node("2(x2),1", 2) == 1 and tasks_on_node("3", 0) == 3
    env = rank_env(
        {
            "SLURM_PROCID": "3",
            "SLURM_LOCALID": "1",
            "SLURM_NODEID": "1",
            "SLURM_STEP_NUM_TASKS": "4",
            "SLURM_STEP_TASKS_PER_NODE": "2(x2)",
        }
    )
    assert env == {
        "RANK": "3",
        "WORLD_SIZE": "4",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "2",
        "GROUP_RANK": "1",
    }
    assert rank_env({})["WORLD_SIZE"] == "1"


def test_the_report_shows_a_training_restart() -> None:
    from hpcorch.report.build import _restarts  # noqa: PLC0415

    tasks = [
        {
            "id": "train",
            "attempts": [
                {"n": 1, "failure_class": "node_failure", "training": "10.0.0.1:29600"},
                {"n": 2, "training": "10.0.0.1:29611 resume=ckpt-000000020.pt"},
            ],
        },
        {"id": "other", "attempts": [{"n": 1}]},
    ]
    assert _restarts(tasks) == ("train: attempt 2 resumed from step 20 (attempt 1: node_failure)",)


def test_each_rank_runs_as_many_threads_as_it_has_cores(tmp_path: Path) -> None:
    """Not the worker's inherited OMP_NUM_THREADS, nor PyTorch's one per core of the node
    in every rank (ranks sharing a node then contend): the rank's cores, as torchrun's 1."""
    site = load_site("dev")
    task = _task({**TRAIN, "distributed": {**TRAIN["distributed"], "cpus_per_rank": 3}})
    step = placing_for(task, site, tmp_path).mpi
    assert step is not None and step.cpus_per_rank == 3
    p = worker.Payload(run_id="r", task_id="t", n=1, kind="command", target=("x",))
    assert worker._training_env(p, step, "localhost", {})["OMP_NUM_THREADS"] == "3"
    own = worker.dataclasses.replace(p, env={"OMP_NUM_THREADS": "8"})
    assert "OMP_NUM_THREADS" not in worker._training_env(own, step, "localhost", {})
    assert "OMP_NUM_THREADS" not in torch_env(
        TorchStep(backend="gloo"), master_addr="a", port=1, checkpoint=None
    )
