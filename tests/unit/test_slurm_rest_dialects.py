"""slurmrestd API versions: the table, negotiation, and each family's job description."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from hpcorch.errors import SiteConfigError, SlurmError, SubmissionRefused
from hpcorch.sites.model import TokenSource
from hpcorch.slurm.models import PartitionInfo
from hpcorch.slurm.parse import (
    parse_jobs_json,
    parse_nodes_json,
    parse_partitions_json,
    parse_sacct_json,
    parse_sacct_steps,
)
from hpcorch.slurm.rest import RestClient
from hpcorch.slurm.rest_dialects import job_description
from hpcorch.slurm.rest_versions import DIALECTS, choose, served_versions, valid_api_version
from hpcorch.slurm.script import JobRequest
from hpcorch.slurm.states import JobState
from hpcorch.slurm.token import TokenProvider

TOKEN = "header.payload.signature"


def spec(*versions: str, accounting: bool = True) -> dict:
    paths = {}
    for v in versions:
        paths[f"/slurm/{v}/jobs/"] = {}
        paths[f"/slurm/{v}/ping/"] = {}
        if accounting:
            paths[f"/slurmdb/{v}/jobs/"] = {}
    return {"openapi": "3.0.2", "paths": paths}


def client(handler, **kw: object) -> RestClient:
    return RestClient(
        "http://slurm.invalid:6820",
        tokens=TokenProvider(TokenSource(command=()), env={"SLURM_JWT": TOKEN}),
        user="alice",
        transport=httpx.MockTransport(handler),
        env={"PATH": "/bin", "HOME": "/h", "SLURM_JWT": TOKEN},
        **kw,  # type: ignore[arg-type]
    )


def test_the_table_spans_22_05_to_26_05() -> None:
    assert next(iter(DIALECTS)) == "v0.0.38" and DIALECTS["v0.0.38"].since == "22.05"
    assert DIALECTS["v0.0.42"].since == "24.11" and list(DIALECTS)[-1] == "v0.0.45"
    assert not DIALECTS["v0.0.38"].honours_no_requeue
    assert all(d.structured and d.honours_no_requeue for v, d in DIALECTS.items() if v > "v0.0.38")


def test_pinned_versions_are_checked_against_the_table() -> None:
    assert valid_api_version("auto") == "auto"
    assert valid_api_version("v0.0.42") == "v0.0.42"
    with pytest.raises(ValueError, match=r"'v0\.0\.37'.*auto, v0\.0\.38, .*v0\.0\.45"):
        valid_api_version("v0.0.37")
    with pytest.raises(SiteConfigError, match="use one of"):
        client(lambda r: httpx.Response(200, json={}), api_version="0.0.42")


def test_choose_the_newest_both_sides_speak() -> None:
    ctld, dbd = served_versions(spec("v0.0.40", "v0.0.41", "v0.0.42"))
    assert ctld == dbd == {"v0.0.40", "v0.0.41", "v0.0.42"}
    chosen = choose(ctld)
    assert chosen is not None and chosen.version == "v0.0.42"
    # A server newer than hpcorch: the newest it still shares.
    chosen = choose({"v0.0.44", "v0.0.45", "v0.0.46"})
    assert chosen is not None and chosen.version == "v0.0.45"
    assert choose({"v0.0.99"}) is None and choose(set()) is None


def test_auto_reads_openapi_once_and_speaks_the_newest() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path == "/openapi/v3":
            return httpx.Response(200, json=spec("v0.0.40", "v0.0.41", "v0.0.42"))
        return httpx.Response(200, json={"jobs": [], "nodes": []})

    rest = client(handler)
    rest.jobs(["1"])
    rest.nodes()
    assert seen[0] == "/openapi/v3" and seen.count("/openapi/v3") == 1
    assert "/slurm/v0.0.42/jobs/" in seen and "/slurm/v0.0.42/nodes/" in seen
    # Job 1 is not in slurmctld's answer: slurmdbd is asked for it, by id.
    assert "/slurmdb/v0.0.42/jobs/" in seen
    assert rest.dialect.version == "v0.0.42"


def test_without_openapi_the_client_probes_pings_newest_first() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path in ("/openapi/v3", "/slurm/v0.0.45/ping/", "/slurm/v0.0.44/ping/"):
            return httpx.Response(404, text="Unable find requested URL.")
        return httpx.Response(200, json={"meta": {"slurm": {"release": "25.05.1"}}})

    rest = client(handler)
    assert rest.version == "25.05.1"
    assert seen[:4] == [
        "/openapi/v3",
        "/slurm/v0.0.45/ping/",
        "/slurm/v0.0.44/ping/",
        "/slurm/v0.0.43/ping/",
    ]


def test_a_server_with_no_common_version_is_named() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/openapi/v3":
            return httpx.Response(200, json=spec("v0.0.36", "v0.0.37"))
        return httpx.Response(404, text="Unable find requested URL.")

    with pytest.raises(SlurmError, match=r"serves none.*it serves v0\.0\.36, v0\.0\.37"):
        client(handler).nodes()


def test_v0_0_38_describes_a_job_flat_and_v0_0_42_structured() -> None:
    req = JobRequest(
        name="n",
        command="true",
        partition="gpu",
        nodes=2,
        mem="1G",
        time_s=90,
        gres="gpu:sim:2",
        nodelist=("gpu1", "gpu2"),
        exclusive=True,
        requeue=False,
        signal="B:USR1@60",
        begin="now+60",
        env={"X": "1"},
    )
    env = {"PATH": "/bin", "SLURM_JWT": TOKEN, "MY_API_TOKEN": "s"}
    old = job_description(req, DIALECTS["v0.0.38"], env, "/w", now=1000)
    assert old["environment"] == {"PATH": "/bin", "X": "1"}
    assert (old["time_limit"], old["memory_per_node"], old["nodes"]) == (2, 1024, [2, 2])
    assert (old["nodelist"], old["gres"], old["exclusive"]) == ("gpu[1-2]", "gpu:sim:2", "true")
    assert (old["signal"], old["begin_time"]) == ("B:USR1@60", 1060)

    new = job_description(req, DIALECTS["v0.0.42"], env, "/w", now=1000)
    assert new["environment"] == ["PATH=/bin", "X=1"]
    assert new["time_limit"] == {"set": True, "infinite": False, "number": 2}
    assert new["memory_per_node"]["number"] == 1024
    assert (new["minimum_nodes"], new["maximum_nodes"]) == (2, 2)
    assert new["required_nodes"] == ["gpu1", "gpu2"] and new["tres_per_node"] == "gres/gpu:sim:2"
    assert new["shared"] == ["none"] and "exclusive" not in new
    assert new["requeue"] is False
    assert (new["kill_warning_signal"], new["kill_warning_flags"]) == ("USR1", ["BATCH_JOB"])
    assert new["kill_warning_delay"]["number"] == 60 and new["begin_time"]["number"] == 1060
    assert TOKEN not in json.dumps([old, new])
    assert job_description(req, DIALECTS["v0.0.41"], env, "/w")["exclusive"] == ["true"]


def test_structured_submissions_put_the_script_in_the_job_and_keep_no_requeue() -> None:
    bodies: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            bodies.append(json.loads(request.content))
            return httpx.Response(200, json={"job_id": 9, "errors": []})
        return httpx.Response(200, json=spec("v0.0.42"))

    assert client(handler).submit(JobRequest(command="true", requeue=False)) == "9"
    body = bodies[0]
    assert "script" not in body and body["job"]["script"].startswith("#!/bin/bash")
    assert body["job"]["requeue"] is False and "hold" not in body["job"]


def test_a_bad_signal_is_refused_before_anything_is_sent() -> None:
    with pytest.raises(SubmissionRefused, match="B:USR1@60"):
        job_description(
            JobRequest(command="true", signal="USR1 at 60"), DIALECTS["v0.0.42"], {}, "/w"
        )


# ---------------------------------------------------------------- recorded servers

DATA = Path(__file__).parent / "data"


def recorded(release: str, name: str) -> dict:
    return json.loads((DATA / f"slurm-{release}" / name).read_text())


# Recorded from real servers: the dialect spoken, and the ids of the jobs that
# completed, failed (exit 3), were held and ran.
RECORDED = {
    "24.11": ("v0.0.42", ("6", "7", "8", "9")),
    "26.05": ("v0.0.45", ("1", "2", "3", "4")),
}


@pytest.mark.parametrize(
    ("release", "version"), [("22.05", "v0.0.38"), ("24.11", "v0.0.42"), ("26.05", "v0.0.45")]
)
def test_each_recorded_server_gets_its_newest_version(release: str, version: str) -> None:
    ctld, _ = served_versions(recorded(release, "openapi.json"))
    chosen = choose(ctld)
    assert chosen is not None and chosen.version == version


def test_what_each_release_serves() -> None:
    ctld, dbd = served_versions(recorded("24.11", "openapi.json"))
    assert ctld == dbd == {"v0.0.40", "v0.0.41", "v0.0.42"}
    ctld, dbd = served_versions(recorded("26.05", "openapi.json"))
    assert ctld == dbd == {"v0.0.42", "v0.0.43", "v0.0.44", "v0.0.45"}
    assert not served_versions(recorded("22.05", "openapi.json"))[1]


@pytest.mark.parametrize("release", RECORDED)
def test_recorded_jobs_parse(release: str) -> None:
    jobs = {j.job_id: j for j in parse_jobs_json(recorded(release, "rest_jobs.json"), "rest")}
    ok, failed, held, running = (jobs[i] for i in RECORDED[release][1])
    assert ok.state is JobState.COMPLETED and ok.exit_code == 0 and ok.nodes == ("cpu1",)
    assert ok.end is not None and ok.time_limit_s == 300 and ok.comment == "hpcorch contract test"
    assert failed.state is JobState.FAILED and failed.exit_code == 3
    assert failed.reason == "NonZeroExitCode" and failed.signal is None
    assert held.state is JobState.PENDING and held.reason == "JobHeldUser"
    assert held.start is None and held.nodes == () and held.exit_code is None
    assert running.state is JobState.RUNNING and running.end is None
    assert running.exit_code is None and running.partition == "cpu"


@pytest.mark.parametrize("release", RECORDED)
def test_recorded_nodes_and_partitions_parse(release: str) -> None:
    nodes = {n.name: n for n in parse_nodes_json(recorded(release, "rest_nodes.json"))}
    assert nodes.keys() == {"cpu1", "cpu2", "gpu1"}
    cpu1 = nodes["cpu1"]
    assert (cpu1.cpus, cpu1.sockets, cpu1.cores_per_socket) == (8, 2, 4)
    assert cpu1.memory == 8000 * 1024**2 and cpu1.usable and cpu1.partitions == ("cpu",)
    parts = {p.name: p for p in parse_partitions_json(recorded(release, "rest_partitions.json"))}
    assert parts["cpu"].nodes == ("cpu1", "cpu2") and parts["cpu"].max_time_s is None
    assert parts["gpu"].max_time_s == 3600 and parts["cpu"].total_cpus == 16
    # Only v0.0.45 (26.05) says which partition is the default again.
    dialect = DIALECTS[RECORDED[release][0]]
    assert parts["cpu"].default is dialect.partition_flags is (release == "26.05")
    assert not parts["gpu"].default


@pytest.mark.parametrize("release", RECORDED)
def test_recorded_slurmdb_jobs_and_steps_parse(release: str) -> None:
    ok_id, failed_id = RECORDED[release][1][:2]
    jobs = {j.job_id: j for j in parse_sacct_json(recorded(release, "rest_slurmdb_jobs.json"))}
    assert jobs[ok_id].state is JobState.COMPLETED and jobs[ok_id].exit_code == 0
    assert jobs[failed_id].state is JobState.FAILED and jobs[failed_id].exit_code == 3
    assert jobs[failed_id].nodes == ("cpu1",) and jobs[failed_id].time_limit_s == 300
    (step,) = parse_sacct_steps(recorded(release, "rest_slurmdb_job.json"), ok_id)
    assert (step.step_id, step.state, step.exit_code, step.nodes) == (
        "batch",
        JobState.COMPLETED,
        0,
        ("cpu1",),
    )


def test_24_11_client_end_to_end_over_recorded_answers() -> None:
    """The client against a replay of the 24.11 server: the ids it asks slurmdbd for
    go one ``step=`` each, and the default partition comes from history."""
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        asked.append(str(request.url))
        files = {
            "/openapi/v3": "openapi.json",
            "/slurm/v0.0.42/jobs/": "rest_jobs.json",
            "/slurm/v0.0.42/partitions/": "rest_partitions.json",
            "/slurmdb/v0.0.42/jobs/": "rest_slurmdb_jobs.json",
        }
        return httpx.Response(200, json=recorded("24.11", files[path]))

    class History:
        def partitions(self) -> list[PartitionInfo]:
            return [PartitionInfo(name="cpu", nodes=("cpu1", "cpu2"), default=True)]

        def jobs(self, ids: object) -> list[object]:
            return []

    rest = client(handler, history=History())
    jobs = rest.jobs(["6", "7", "9", "1000"])
    assert [j.job_id for j in jobs] == ["6", "7", "9"]
    assert any(u.endswith("/slurmdb/v0.0.42/jobs/?step=1000") for u in asked)
    parts = {p.name: p.default for p in rest.partitions()}
    assert parts == {"cpu": True, "gpu": False}


def test_a_failing_slurmdbd_leaves_forgotten_jobs_to_history() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/openapi/v3":
            return httpx.Response(200, json=spec("v0.0.42"))
        if request.url.path.startswith("/slurmdb/"):
            return httpx.Response(500, json={"errors": [{"description": "slurmdbd down"}]})
        return httpx.Response(200, json={"jobs": []})

    class History:
        asked: list[set[str]] = []

        def jobs(self, ids: set[str]) -> list[object]:
            self.asked.append(set(ids))
            return []

    history = History()
    assert client(handler, history=history).jobs(["5"]) == []
    assert history.asked == [{"5"}]
    with pytest.raises(SlurmError, match="slurmdbd down"):
        client(handler).jobs(["5"])
