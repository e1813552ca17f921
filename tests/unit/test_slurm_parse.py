"""Pure parsers over output recorded on the dev cluster (Slurm 22.05.8)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpcorch.errors import SlurmError
from hpcorch.slurm.parse import (
    decode_wait_status,
    expand_hostlist,
    parse_jobs_json,
    parse_nodes_json,
    parse_partitions_json,
    parse_sacct_json,
    parse_sacct_steps,
    parse_sbatch_parsable,
    parse_scontrol_partitions,
    parse_scontrol_token,
    parse_sdiag_rpcs,
)
from hpcorch.slurm.states import JobState, NodeState

DATA = Path(__file__).parent / "data" / "slurm-22.05"


def load(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def test_expand_hostlist() -> None:
    assert expand_hostlist("cpu[1-2],gpu1") == ("cpu1", "cpu2", "gpu1")
    assert expand_hostlist("nid[001-003,7]") == ("nid001", "nid002", "nid003", "nid7")
    assert expand_hostlist("") == ()
    assert expand_hostlist(None) == ()


def test_decode_wait_status() -> None:
    assert decode_wait_status(768) == (3, None)
    assert decode_wait_status(9) == (None, 9)  # signalled: no exit code (as REST v0.0.40+)
    assert decode_wait_status(0) == (0, None)
    assert decode_wait_status({"return_code": 3, "signal": {"signal_id": 0}}) == (3, None)
    assert decode_wait_status({"return_code": None, "signal": {"signal_id": 13}}) == (None, 13)
    assert decode_wait_status({"return_code": 0, "signal": {"signal_id": 15}}) == (None, 15)


def test_squeue_json() -> None:
    jobs = {j.job_id: j for j in parse_jobs_json(load("squeue.json"), "squeue")}
    ok, failed, held = jobs["1"], jobs["2"], jobs["3"]
    assert ok.state is JobState.RUNNING and ok.exit_code is None and ok.nodes == ("cpu1",)
    assert ok.end is None  # squeue's end_time for a running job is a forecast
    assert failed.state is JobState.FAILED and failed.exit_code == 3
    assert failed.reason == "NonZeroExitCode" and failed.failure is not None
    assert held.state is JobState.PENDING and held.reason == "JobHeldUser" and held.start is None


def test_rest_jobs_have_the_same_shape() -> None:
    rest = parse_jobs_json(load("rest_jobs.json"), "rest")
    cli = parse_jobs_json(load("squeue.json"), "squeue")
    assert [(j.job_id, j.state, j.exit_code) for j in rest] == [
        (j.job_id, j.state, j.exit_code) for j in cli
    ]


def test_sacct_json_keeps_latest_and_decodes_exit() -> None:
    jobs = parse_sacct_json(load("sacct.json"))
    assert len({j.job_id for j in jobs}) == len(jobs)
    assert all(j.source == "sacct" for j in jobs)
    steps = parse_sacct_steps(load("sacct.json"), jobs[0].job_id)
    assert steps and steps[0].nodes


def test_nodes_json() -> None:
    nodes = {n.name: n for n in parse_nodes_json(load("sinfo.json"))}
    gpu1 = nodes["gpu1"]
    assert gpu1.status.state is NodeState.IDLE and gpu1.usable
    assert (gpu1.sockets, gpu1.cores_per_socket, gpu1.cpus) == (2, 4, 8)
    assert gpu1.memory == 8000 * 1024**2
    assert gpu1.gres.startswith("gpu:sim:4")
    assert parse_nodes_json(load("rest_nodes.json"))[0].name == "cpu1"


def test_partitions_cli_and_rest_agree() -> None:
    cli = parse_scontrol_partitions((DATA / "scontrol_partitions.txt").read_text())
    rest = parse_partitions_json(load("rest_partitions.json"))
    assert cli == rest
    assert cli[0].name == "cpu" and cli[0].default and cli[0].nodes == ("cpu1", "cpu2")


def test_sbatch_and_token_output() -> None:
    assert parse_sbatch_parsable("42\n") == "42"
    assert parse_sbatch_parsable("42;dev\n") == "42"
    with pytest.raises(SlurmError):
        parse_sbatch_parsable("sbatch: error: nope")
    assert parse_scontrol_token("SLURM_JWT=abc.def.ghi\n") == "abc.def.ghi"
    with pytest.raises(SlurmError, match="no SLURM_JWT"):
        parse_scontrol_token("")


def test_sdiag_rpcs() -> None:
    rpcs = parse_sdiag_rpcs((DATA / "sdiag.txt").read_text())
    assert rpcs["REQUEST_JOB_INFO"] >= 1
    assert "REQUEST_SUBMIT_BATCH_JOB" in rpcs
