"""The CLI backend's polling argv and the parsers of their text output (captured on 22.05,
24.11 and 26.05)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from hpcorch.slurm.models import JobInfo
from hpcorch.slurm.parse import parse_sacct_json
from hpcorch.slurm.queries import (
    SEP,
    parse_sinfo_nodes,
    parse_squeue_jobs,
    parse_state_sweep,
    parse_test_only,
    release,
    sacct_jobs_argv,
    sinfo_nodes_argv,
    squeue_jobs_argv,
    state_sweep_argv,
    sweeps_in_slurmctld,
)
from hpcorch.slurm.states import FailureClass, JobState, NodeState

DATA = Path(__file__).parent / "data" / "slurm-22.05"


def test_the_state_sweep_depends_on_the_release() -> None:
    assert release("slurm 22.05.8") == (22, 5) and release("slurm-wlm 24.11.5") == (24, 11)
    assert release("unknown") == (22, 5)
    old = state_sweep_argv(["5", "6_1"], (22, 5))  # no filtered RPC in slurmctld: slurmdbd
    assert old[:3] == ["sacct", "--jobs=5,6_1", "--allocations"]
    new = state_sweep_argv(["5", "6_1"], (24, 11))  # REQUEST_JOB_STATE for these ids
    assert new[:4] == ["squeue", "--only-job-state", "--jobs=5,6_1", "--states=all"]
    assert not sweeps_in_slurmctld((23, 11)) and sweeps_in_slurmctld((24, 5))
    sacct_out = "5|PENDING\n6_1|CANCELLED by 0\n5|RUNNING\n"
    assert parse_state_sweep(sacct_out) == {"5": JobState.RUNNING, "6_1": JobState.CANCELLED}
    squeue_out = f"5{SEP}PENDING{SEP}\n6_1{SEP}COMPLETED{SEP}\n"
    assert parse_state_sweep(squeue_out) == {"5": JobState.PENDING, "6_1": JobState.COMPLETED}


def test_details_are_text_squeue_for_the_listed_jobs() -> None:
    argv = squeue_jobs_argv(["5", "6_1"])
    assert argv[:4] == ["squeue", "--me", "--jobs=5,6_1", "--states=all"]
    assert "--json" not in argv  # 22.05's squeue --json ignores every filter
    assert sacct_jobs_argv(["7", "8"]) == ["sacct", "--json", "--jobs=7,8"]


def test_squeue_text_parses_states_exit_codes_arrays_and_times() -> None:
    jobs = {j.job_id: j for j in parse_squeue_jobs((DATA / "squeue.txt").read_text())}
    assert sorted(jobs) == ["5", "6", "7", "8_0", "8_1"]
    held, running, failed = jobs["5"], jobs["6"], jobs["7"]
    assert held.state is JobState.PENDING and held.reason == "JobHeldUser"
    assert held.start is None and held.nodes == () and held.time_limit_s == 300
    assert running.nodes == ("gpu1", "gpu2") and running.node_count == 2
    assert running.name == "run two" and running.comment == "c1"
    assert running.time_limit_s == 86400 and running.exit_code is None
    assert running.start == datetime(2026, 12, 3, 10, 6, 11).timestamp()
    assert failed.state is JobState.FAILED and (failed.exit_code, failed.signal) == (3, None)
    assert jobs["8_1"].state is JobState.COMPLETED and jobs["8_1"].exit_code == 0


def test_squeue_text_of_24_11_has_code_colon_signal_exit_status() -> None:
    # As squeue 24.11.5 printed it on the 24.11 dev cluster.
    fields = ["4", "FAILED", "3:0", "1", "1", "1:00", "2026-12-03T10:18:24"]
    fields += ["2026-12-03T10:18:25", "2026-12-03T10:18:25", "cpu", "root", "root", "cpu1"]
    fields += ["NonZeroExitCode", "fails", "(null)"]
    (job,) = parse_squeue_jobs(SEP.join(fields) + SEP + "\n")
    assert (job.state, job.exit_code, job.signal) == (JobState.FAILED, 3, None)
    fields[1:3] = ["CANCELLED", "0:9"]
    (job,) = parse_squeue_jobs(SEP.join(fields) + SEP + "\n")
    assert (job.exit_code, job.signal) == (None, 9)  # signalled: no exit code, as REST says


def test_a_separator_inside_the_last_field_stays_in_it() -> None:
    line = SEP.join(["9", "PENDING", "0", "1", "1", "5:00", "N/A", "N/A", "N/A", "cpu", "u", "a"])
    line += SEP + SEP.join(["", "None", "name", "a" + SEP + "b"]) + SEP
    (job,) = parse_squeue_jobs(line + "\nshort line\n")
    assert job.comment == "a" + SEP + "b" and job.reason is None


def test_sinfo_asks_for_the_partitions_in_use_and_merges_a_node_in_two() -> None:
    assert sinfo_nodes_argv(["gpu", "cpu", "gpu"])[3] == "--partition=cpu,gpu"
    assert not any(a.startswith("--partition") for a in sinfo_nodes_argv(None))
    nodes = {n.name: n for n in parse_sinfo_nodes((DATA / "sinfo.txt").read_text())}
    gpu1 = nodes["gpu1"]
    assert gpu1.status.state is NodeState.MIXED and gpu1.partitions == ("gpu",)
    assert (gpu1.cpus, gpu1.sockets, gpu1.cores_per_socket, gpu1.alloc_cpus) == (8, 2, 4, 1)
    assert gpu1.memory == 8000 * 1024**2 and gpu1.gres.startswith("gpu:sim:4")
    assert nodes["cpu1"].partitions == ("cpu",) and nodes["cpu1"].gres == ""
    fields = ["n1", "down*+drain", "a", "8", "2", "4", "1", "8000", "0/0/8/8", "0", "", "", "bad"]
    line = SEP.join(fields) + SEP
    (node,) = parse_sinfo_nodes(f"{line}\n{line.replace(SEP + 'a' + SEP, SEP + 'b*' + SEP)}\n")
    assert node.partitions == ("a", "b") and node.failed and node.reason == "bad"


def test_test_only_start_time() -> None:
    out = "sbatch: Job 10 to start at 2026-12-04T10:06:11 using 16 processors on nodes gpu[1-2]"
    assert parse_test_only(out) == datetime(2026, 12, 4, 10, 6, 11).timestamp()
    assert parse_test_only("sbatch: error: Batch job submission failed") is None


def _recorded(release: str) -> tuple[dict[str, JobInfo], dict[str, JobInfo]]:
    """squeue's (slurmctld) and sacct's (slurmdbd) records of the same jobs, as recorded."""
    data = DATA.parent / f"slurm-{release}"
    ctld = {j.job_id: j for j in parse_squeue_jobs((data / "cli_squeue.txt").read_text())}
    dbd = parse_sacct_json(json.loads((data / "cli_sacct.json").read_text()))
    return ctld, {j.job_id: j for j in dbd}


@pytest.mark.parametrize("release", ["24.11", "26.05"])
def test_recorded_cli_outputs_of_newer_releases(release: str) -> None:
    # Recorded on the dev cluster of that release: a held job, a timed-out one, cancelled
    # ones (by SIGTERM to the batch shell, and caught: exit 143), a failed one (exit 3), a
    # node failure and a running GPU job (scripts/dev-cluster, tests/unit/data/slurm-R/).
    data = DATA.parent / f"slurm-{release}"
    ctld, _ = _recorded(release)
    by_name = {j.name: j for j in ctld.values()}
    held, running = by_name["held"], by_name["run two"]
    assert held.state is JobState.PENDING and held.reason == "JobHeldUser" and held.start is None
    assert held.time_limit_s is None and held.comment is None
    assert running.state is JobState.RUNNING and running.nodes == ("gpu1",)
    assert running.exit_code is None and running.end is None and running.comment == "c1"
    timeout = by_name["contract-cli-timeout"]
    assert (timeout.state, timeout.exit_code, timeout.signal) == (JobState.TIMEOUT, None, 15)
    assert timeout.reason == "TimeLimit" and timeout.time_limit_s == 60
    failed = by_name["contract-cli-fail"]
    assert (failed.exit_code, failed.signal, failed.reason) == (3, None, "NonZeroExitCode")
    node_fail = by_name["contract-cli-nodefail"]
    assert (node_fail.state, node_fail.nodes, node_fail.signal) == (
        JobState.NODE_FAIL,
        ("gpu2",),
        1,
    )
    sweep = parse_state_sweep((data / "cli_state_sweep.txt").read_text())
    assert sweep == {job_id: job.state for job_id, job in ctld.items()}
    nodes = {n.name: n for n in parse_sinfo_nodes((data / "cli_sinfo.txt").read_text())}
    assert sorted(nodes) == ["cpu1", "cpu2", "gpu1", "gpu2"]
    assert nodes["cpu1"].partitions == ("cpu",) and nodes["cpu1"].usable
    assert nodes["gpu1"].alloc_cpus == 1 and nodes["gpu1"].gres.startswith("gpu:sim:4")
    assert (nodes["gpu2"].sockets, nodes["gpu2"].cores_per_socket) == (2, 4)


@pytest.mark.parametrize("release", ["24.11", "26.05"])
def test_slurmdbd_and_slurmctld_give_an_ended_job_the_same_class(release: str) -> None:
    # slurmdbd keeps no signal: it says exit 1 for NODE_FAIL and 0 for TIMEOUT where
    # slurmctld says "signal 1" and "signal 15", and no reason (TimeLimit, NodeDown).
    # A job that left squeue is read from sacct, so both must classify it alike.
    ctld, dbd = _recorded(release)
    assert ctld.keys() == dbd.keys()
    for job_id, job in ctld.items():
        assert dbd[job_id].state is job.state, job_id
        assert dbd[job_id].failure is job.failure, job_id
        assert dbd[job_id].nodes == job.nodes, job_id
    node_fail = next(j for j in dbd.values() if j.state is JobState.NODE_FAIL)
    assert node_fail.failure is FailureClass.NODE_FAILURE
