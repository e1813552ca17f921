"""build_report on a hand-written `status --json` object that follows DESIGN.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hpcorch.report import TaskDecl, build_report
from hpcorch.report.gantt import layout
from hpcorch.sites.loader import load_site, parse_site

DATA = Path(__file__).parent / "report_data"
T0 = 1764090000.0


def dev_status() -> dict[str, Any]:
    """A failed run on site dev: an OOM retry, a node failure, a task that kept failing."""
    return json.loads((DATA / "status-dev.json").read_text())  # type: ignore[no-any-return]


def dev_decls() -> dict[str, TaskDecl]:
    sweeps = {f"sweep-{i}": TaskDecl(after=("prep",), gpus=i // 3) for i in range(4)}
    return {
        "prep": TaskDecl(cpus=2),
        "sim": TaskDecl(after=("prep",), cpus=8),
        "analyse": TaskDecl(after=("sim",), gpus=2),
        **sweeps,
        "summary": TaskDecl(after=tuple(sweeps)),
    }


@pytest.fixture
def report():  # type: ignore[no-untyped-def]
    return build_report(dev_status(), sites={"dev": load_site("dev")}, decls=dev_decls())


def test_outcomes_failures_and_retries(report) -> None:  # type: ignore[no-untyped-def]
    assert report.run_id == "demo-20251125-184700-ab12"
    assert report.state == "failed"
    assert report.tasks == 8
    assert report.by_state == {"succeeded": 6, "failed": 1, "upstream_failed": 1}
    assert report.failed_attempts_by_class == {
        "node_failure": 1,
        "out_of_memory": 1,
        "user_error": 2,
    }
    assert report.failed_tasks_by_class == {"user_error": 1}  # sweep-2 kept failing
    assert report.retries == 3  # sim, sweep-2 and sweep-3 each ran twice
    assert report.tasks_retried == 3
    assert len(report.attempts) == 10  # summary never started


def test_makespan_from_first_allocation_to_last_attempt(report) -> None:  # type: ignore[no-untyped-def]
    assert report.t0 == T0
    assert report.makespan_s == pytest.approx(230.0)


def test_critical_path_follows_dependencies(report) -> None:  # type: ignore[no-untyped-def]
    assert report.critical_path == ("prep", "sim", "analyse")
    # prep 12..40, sim first try 41 .. second try end 180, analyse 185..230
    assert report.critical_path_s == pytest.approx(28 + 139 + 45)


def test_no_dependencies_no_critical_path() -> None:
    report = build_report(dev_status(), sites={"dev": load_site("dev")})
    assert report.critical_path is None
    assert any("dependencies unknown" in n for n in report.notes)


def test_hours_used_and_allocated(report) -> None:  # type: ignore[no-untyped-def]
    cores_x_s = (
        2 * 28  # prep
        + 4 * 49  # sim try 1 on 4 cores
        + 8 * 85  # sim try 2 on 8 cores
        + 2 * 45  # analyse
        + 29
        + 34  # sweep-0, sweep-1
        + 5
        + 3  # sweep-2 twice
        + 40
        + 40  # sweep-3 twice
    )
    assert report.core_hours_used == pytest.approx(cores_x_s / 3600)
    assert report.gpu_hours_used == pytest.approx((2 * 45 + 40 + 40) / 3600)
    # dev partitions: 8 cores per node, gpu nodes 4 GPUs; one node per allocation
    cpu_node_s = 235 + 115
    gpu_node_s = 210 + 50
    assert report.core_hours_allocated == pytest.approx(8 * (cpu_node_s + gpu_node_s) / 3600)
    assert report.gpu_hours_allocated == pytest.approx(4 * gpu_node_s / 3600)
    assert report.cpu_utilization == pytest.approx(cores_x_s / (8 * (cpu_node_s + gpu_node_s)))
    assert report.gpu_utilization == pytest.approx(170 / (4 * gpu_node_s))


def test_cost_per_site_uses_partition_rates_instead_of_site_rates() -> None:
    site = parse_site(
        """
name: priced
kind: slurm
slurm: {backends: [cli]}
charge: {su_per_node_hour: 2, price_per_su: 0.5, currency: USD}
partitions:
  - {name: cpu, nodes: 2, node: {sockets: 1, cores_per_socket: 4, memory: 4G}}
  - name: gpu
    nodes: 1
    gres: gpu
    node: {cores_per_socket: 4, memory: 4G, gpus: 2}
    charge: {su_per_gpu_hour: 10, price_per_su: 0.5, currency: USD}
"""
    )
    status = {
        "run_id": "r",
        "state": "succeeded",
        "counts": {"succeeded": 0},
        "tasks": [],
        "allocations": [
            {"job_id": "1", "site": "priced", "partition": "cpu", "nodes": 2,
             "state": "COMPLETED", "start": T0, "end": T0 + 3600},
            {"job_id": "2", "site": "priced", "partition": "gpu", "nodes": 1,
             "state": "COMPLETED", "start": T0, "end": T0 + 1800},
            {"job_id": "3", "site": "elsewhere", "partition": "x", "nodes": 1,
             "state": "COMPLETED", "start": T0, "end": T0 + 3600},
        ],
    }  # fmt: skip
    report = build_report(status, sites={"priced": site})
    usage = {u.site: u for u in report.sites}
    priced = usage["priced"]
    assert priced.allocations == 2
    assert priced.node_hours == pytest.approx(2.5)
    assert priced.core_hours == pytest.approx(4 * 2.5)
    assert priced.gpu_hours == pytest.approx(1.0)
    # cpu: 2 node-hours x 2 SU (site rates); gpu: 1 GPU-hour x 10 SU (its own rates only)
    assert priced.su == pytest.approx(4 + 10)
    assert priced.cost == pytest.approx(7.0)
    assert priced.currency == "USD"
    assert usage["elsewhere"].core_hours is None
    assert any("'elsewhere'" in n for n in report.notes)


def test_local_run_counts_its_machine_when_no_allocation_is_recorded() -> None:
    status = {
        "run_id": "local-run",
        "state": "succeeded",
        "counts": {"succeeded": 2},
        "tasks": [
            {"id": "a", "state": "succeeded", "attempts": [
                {"n": 1, "start": T0, "end": T0 + 10, "exit_code": 0, "failure_class": None,
                 "job_id": None, "node": "host", "gpus": None, "cores": None}]},
            {"id": "b", "state": "succeeded", "attempts": [
                {"n": 1, "start": T0 + 10, "end": T0 + 20, "exit_code": 0, "failure_class": None,
                 "job_id": None, "node": "host", "gpus": None, "cores": None}]},
        ],
        "allocations": [],
    }  # fmt: skip
    local = load_site("local")
    report = build_report(
        status, sites={"local": local}, run_site="local", decls={"b": TaskDecl(after=("a",))}
    )
    cores = local.partition().node.cores
    assert report.core_hours_used == pytest.approx(20 / 3600)  # one core each (no record)
    assert report.core_hours_allocated == pytest.approx(cores * 20 / 3600)
    assert report.cpu_utilization == pytest.approx(1 / cores)
    assert report.critical_path == ("a", "b")
    assert report.critical_path_s == pytest.approx(20)


def test_running_attempt_is_drawn_until_now() -> None:
    status = dev_status()
    status["state"] = "running"
    status["tasks"][0]["attempts"][0]["end"] = None
    report = build_report(status, now=T0 + 300)
    prep = next(a for a in report.attempts if a.task_id == "prep")
    assert prep.outcome == "running"
    assert prep.end == pytest.approx(300 - 0)


def test_attempt_that_failed_before_starting_is_counted_not_drawn() -> None:
    status = dev_status()
    status["tasks"][-1]["attempts"] = [
        {"n": 1, "start": None, "end": None, "exit_code": None, "failure_class": "infrastructure",
         "job_id": None, "node": None, "gpus": None, "cores": None}
    ]  # fmt: skip
    report = build_report(status)
    assert report.failed_attempts_by_class["infrastructure"] == 1
    assert all(a.task_id != "summary" for a in report.attempts)


def test_gpus_seen_but_not_asked_for_are_not_used() -> None:
    # A worker's whole CUDA_VISIBLE_DEVICES lands in every attempt it runs.
    status = dev_status()
    for task in status["tasks"]:
        for a in task["attempts"]:
            if a["node"].startswith("gpu"):
                a["gpus"] = [0, 1, 2, 3]
    decls = {**dev_decls(), "sweep-3": TaskDecl(after=("prep",))}
    report = build_report(status, sites={"dev": load_site("dev")}, decls=decls)
    assert report.gpu_hours_used == pytest.approx(2 * 45 / 3600)  # analyse asked for 2
    sweep3 = [a for a in report.attempts if a.task_id == "sweep-3"]
    assert all(a.gpus == () for a in sweep3)  # drawn as a CPU attempt
    assert any("more GPUs than their task asked for" in n for n in report.notes)


@pytest.mark.parametrize("seen_start", [T0 + 200.0, None])
def test_an_allocation_started_no_later_than_its_first_attempt(seen_start: float | None) -> None:
    # The engine may see a short-lived job start late (a loaded driver), or never: the GPU
    # attempt that ran in it still counts whole, from the allocation's real start at the latest.
    status = dev_status()
    gpu_job = next(a for a in status["allocations"] if a["job_id"] == "103")
    gpu_job["start"] = seen_start
    report = build_report(status, sites={"dev": load_site("dev")}, decls=dev_decls())
    assert report.gpu_hours_used == pytest.approx((2 * 45 + 40 + 40) / 3600)  # as when seen


def test_empty_run() -> None:
    report = build_report(
        {"run_id": "x", "state": "running", "counts": {}, "tasks": [], "allocations": []}
    )
    assert report.makespan_s == 0
    assert report.attempts == ()
    assert report.cpu_utilization is None
    assert layout(report).rows == ()


def test_to_dict_is_json_ready(report) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(json.dumps(report.to_dict()))
    assert data["critical_path"] == ["prep", "sim", "analyse"]
    assert data["sites"][0]["site"] == "dev"


def _two_sites() -> dict[str, Any]:
    text = """
name: {name}
kind: slurm
slurm: {{backends: [cli]}}
charge: {{su_per_node_hour: {su}}}
partitions:
  - {{name: cpu, nodes: 2, node: {{sockets: 1, cores_per_socket: {cores}, memory: 4G}}}}
"""
    return {
        "east": parse_site(text.format(name="east", su=1, cores=4)),
        "west": parse_site(text.format(name="west", su=3, cores=8)),
    }


def _attempt(task: str, start: float, end: float, site: str | None) -> dict[str, Any]:
    return {"id": task, "state": "succeeded", "attempts": [
        {"n": 1, "start": start, "end": end, "exit_code": 0, "failure_class": None,
         "job_id": "685", "site": site, "node": "n1", "gpus": None, "cores": [0, 1]}]}  # fmt: skip


def _collision(east: str | None, west: str | None) -> dict[str, Any]:
    # Job 685 on east and job 685 on west: job ids are per Slurm cluster.
    return {
        "run_id": "r",
        "state": "succeeded",
        "counts": {"succeeded": 2},
        "tasks": [_attempt("a", T0, T0 + 3600, east), _attempt("b", T0, T0 + 1800, west)],
        "allocations": [
            {"job_id": "685", "site": "east", "partition": "cpu", "nodes": 1,
             "state": "COMPLETED", "start": T0, "end": T0 + 3600},
            {"job_id": "685", "site": "west", "partition": "cpu", "nodes": 1,
             "state": "COMPLETED", "start": T0, "end": T0 + 3600},
        ],
    }  # fmt: skip


def test_same_job_id_on_two_sites_is_accounted_to_each_site() -> None:
    report = build_report(_collision("east", "west"), sites=_two_sites(), run_site="east")
    usage = {u.site: u for u in report.sites}
    assert usage["east"].allocations == 1 and usage["west"].allocations == 1
    assert usage["east"].core_hours == pytest.approx(4.0)
    assert usage["west"].core_hours == pytest.approx(8.0)
    assert usage["east"].core_hours_used == pytest.approx(2.0)  # a: 2 cores, 1 h
    assert usage["west"].core_hours_used == pytest.approx(1.0)  # b: 2 cores, 0.5 h
    assert usage["east"].su == pytest.approx(1.0) and usage["west"].su == pytest.approx(3.0)


def test_attempt_without_a_site_falls_back_to_its_job_id() -> None:
    # Older journals record no site for attempts: the run's own site has the job id.
    report = build_report(_collision(None, None), sites=_two_sites(), run_site="east")
    usage = {u.site: u for u in report.sites}
    assert usage["east"].core_hours_used == pytest.approx(3.0)
    assert usage["west"].core_hours_used == pytest.approx(0.0)
