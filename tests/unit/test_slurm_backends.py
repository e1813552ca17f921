"""CLI and REST backends with their transports replaced; the JWT never leaks."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from hpcorch.errors import BackendUnavailable, SlurmError, SubmissionRefused
from hpcorch.sites.model import TokenSource
from hpcorch.slurm.cli import CliClient, Completed
from hpcorch.slurm.client import BackendDown, SlurmClient
from hpcorch.slurm.pyslurm_ import check_versions, load_pyslurm
from hpcorch.slurm.rest import RestClient
from hpcorch.slurm.rest_dialects import job_description
from hpcorch.slurm.rest_versions import DIALECTS
from hpcorch.slurm.script import JobRequest, request_from_script
from hpcorch.slurm.states import JobState
from hpcorch.slurm.token import TokenProvider, jwt_expiry, scrub

DATA = Path(__file__).parent / "data" / "slurm-22.05"


def make_jwt(exp: float) -> str:
    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256'})}.{part({'exp': int(exp), 'sun': 'root'})}.c2lnbmF0dXJl"


class FakeRunner:
    def __init__(self, outputs: Mapping[str, Completed]) -> None:
        self.outputs = dict(outputs)
        self.calls: list[tuple[list[str], str | None, dict[str, str]]] = []

    def __call__(
        self, argv: Sequence[str], stdin: str | None, env: Mapping[str, str], timeout: float
    ) -> Completed:
        self.calls.append((list(argv), stdin, dict(env)))
        key = " ".join(argv[:2])
        return self.outputs.get(key) or self.outputs.get(argv[0]) or Completed(0, "", "")


def ok(text: str) -> Completed:
    return Completed(0, text, "")


# ---------------------------------------------------------------- CLI


def test_cli_jobs_22_05_sweeps_states_in_slurmdbd_and_asks_squeue_for_changes_only() -> None:
    sweep = {"5": "PENDING", "6": "RUNNING", "7": "FAILED"}
    runner = FakeRunner(
        {
            "sinfo --version": ok("slurm 22.05.8\n"),
            "sacct --jobs=5,6,7": ok("".join(f"{k}|{v}\n" for k, v in sweep.items())),
            "squeue --me": ok((DATA / "squeue.txt").read_text()),
            "sacct --json": ok((DATA / "sacct.json").read_text()),
        }
    )
    cli = CliClient(
        runner=runner, env={"PATH": "/bin", "SLURM_JWT": "secret"}, conf="/x/slurm.conf"
    )
    jobs = cli.jobs(["5", "6", "7"])
    assert [c[0][:2] for c in runner.calls] == [
        ["sinfo", "--version"], ["sacct", "--jobs=5,6,7"], ["squeue", "--me"]
    ]  # fmt: skip
    assert [j.state for j in jobs] == [JobState.PENDING, JobState.RUNNING, JobState.FAILED]
    assert jobs[2].exit_code == 3  # squeue's record wins while it has one
    assert jobs[1].nodes == ("gpu1", "gpu2")
    env = runner.calls[1][2]
    assert env["SLURM_CONF"] == "/x/slurm.conf" and "SLURM_JWT" not in env
    runner.calls.clear()
    assert cli.jobs(["5", "6", "7"]) == jobs  # nothing changed: the sweep alone
    assert [c[0][0] for c in runner.calls] == ["sacct"]
    runner.calls.clear()
    cli.jobs(["5", "999"])  # 999: in no sweep, no squeue: sacct's record, if any
    assert [c[0][0] for c in runner.calls] == ["sacct", "squeue", "sacct"]
    assert runner.calls[-1][0] == ["sacct", "--json", "--jobs=999"]


def test_cli_jobs_24_11_sweeps_states_in_slurmctld_with_only_job_state() -> None:
    sep = "\x1f"
    runner = FakeRunner(
        {
            "sinfo --version": ok("slurm-wlm 24.11.5\n"),
            "squeue --only-job-state": ok(f"5{sep}PENDING{sep}\n6{sep}RUNNING{sep}\n"),
            "squeue --me": ok((DATA / "squeue.txt").read_text()),
            "sacct --json": ok('{"jobs": []}'),
        }
    )
    cli = CliClient(runner=runner, env={})
    assert [j.job_id for j in cli.jobs(["5", "6", "999"])] == ["5", "6"]
    sweep, details, gone = (c[0] for c in runner.calls[1:])
    assert sweep[:3] == ["squeue", "--only-job-state", "--jobs=5,6,999"]
    assert details[:3] == ["squeue", "--me", "--jobs=5,6"]  # 999 left slurmctld: sacct only
    assert gone == ["sacct", "--json", "--jobs=999"]


def test_cli_jobs_of_one_purged_id_asks_sacct() -> None:
    gone = Completed(1, "", "slurm_load_jobs error: Invalid job id specified\n")
    runner = FakeRunner(
        {
            "sinfo --version": ok("slurm-wlm 24.11.5\n"),
            "squeue --only-job-state": gone,
            "sacct --json": ok('{"jobs": []}'),
        }
    )
    assert CliClient(runner=runner, env={}).jobs(["999"]) == []
    assert [c[0][0] for c in runner.calls[1:]] == ["squeue", "sacct"]
    down = FakeRunner({"sacct": Completed(1, "", "Unable to contact slurm controller")})
    with pytest.raises(BackendDown):
        CliClient(runner=down, env={}).jobs(["1", "2"])


def test_cli_nodes_of_partitions_and_queue_probes() -> None:
    runner = FakeRunner(
        {
            "sinfo --Node": ok((DATA / "sinfo.txt").read_text()),
            "squeue --partition=cpu": ok((DATA / "squeue.txt").read_text()),
            "sbatch --test-only": Completed(
                0, "", "sbatch: Job 10 to start at 2026-12-04T10:06:11 using 16 processors"
            ),
        }
    )
    cli = CliClient(runner=runner, env={})
    nodes = cli.nodes(["gpu", "cpu"])
    assert runner.calls[0][0][:4] == ["sinfo", "--Node", "--noheader", "--partition=cpu,gpu"]
    assert [n.name for n in nodes] == ["cpu1", "cpu2", "gpu1", "gpu2"]
    assert "5" in {j.job_id for j in cli.pending_jobs("cpu")}
    assert runner.calls[-1][0][:3] == ["squeue", "--partition=cpu", "--states=PENDING"]
    start = cli.start_estimate("gpu", 2, 600)
    assert start == datetime(2026, 12, 4, 10, 6, 11).timestamp()
    assert runner.calls[-1][0][:5] == [
        "sbatch", "--test-only", "--partition=gpu", "--nodes=2", "--exclusive"
    ]  # fmt: skip


def test_cli_submit_passes_script_on_stdin() -> None:
    runner = FakeRunner({"sbatch --parsable": ok("17\n")})
    cli = CliClient(runner=runner, env={})
    assert cli.submit(JobRequest(name="x", command="true")) == "17"
    argv, stdin, _ = runner.calls[0]
    assert (
        argv == ["sbatch", "--parsable"] and stdin is not None and "#SBATCH --job-name=x" in stdin
    )


def test_cli_submit_refused_vs_unreachable() -> None:
    refused = FakeRunner(
        {
            "sbatch --parsable": Completed(
                1,
                "",
                "sbatch: error: Batch job submission failed: Invalid partition name specified",
            )
        }
    )
    with pytest.raises(SubmissionRefused, match="Invalid partition"):
        CliClient(runner=refused, env={}).submit("#!/bin/bash\ntrue\n")
    down = FakeRunner(
        {"sbatch --parsable": Completed(1, "", "sbatch: error: Unable to contact slurm controller")}
    )
    with pytest.raises(BackendDown):
        CliClient(runner=down, env={}).submit("#!/bin/bash\ntrue\n")


def test_cli_cancel_ignores_finished_jobs() -> None:
    runner = FakeRunner(
        {
            "scancel": Completed(
                1,
                "",
                "scancel: error: Kill job error on job id 5: "
                "Job/step already completing or completed\n",
            )
        }
    )
    CliClient(runner=runner, env={}).cancel(["5"])
    bad = FakeRunner({"scancel": Completed(1, "", "scancel: error: Access/permission denied\n")})
    with pytest.raises(SlurmError, match="permission"):
        CliClient(runner=bad, env={}).cancel(["5"])


def test_cli_bad_json_is_a_slurm_error() -> None:
    runner = FakeRunner({"sacct --json": ok("{not json")})
    with pytest.raises(SlurmError, match="invalid JSON"):
        CliClient(runner=runner, env={}).steps("5")


# ---------------------------------------------------------------- token


def test_jwt_expiry_and_scrub() -> None:
    token = make_jwt(2_000_000_000)
    assert jwt_expiry(token) == 2_000_000_000
    assert jwt_expiry("opaque") is None
    assert scrub(f"bad token {token}!", token) == "bad token <redacted>!"


def test_token_from_env_then_renewed_before_expiry() -> None:
    now = [1_000_000.0]
    fresh = make_jwt(now[0] + 3600)
    runner = FakeRunner({"scontrol token": ok(f"SLURM_JWT={fresh}\n")})
    env = {"SLURM_JWT": make_jwt(now[0] + 600)}
    tokens = TokenProvider(
        TokenSource(), env=env, runner=runner, clock=lambda: now[0], margin_s=120
    )
    assert tokens.token() == env["SLURM_JWT"]
    assert runner.calls == []
    now[0] += 500  # 100 s left: inside the margin
    assert tokens.token() == fresh
    argv, _, run_env = runner.calls[0]
    assert argv == ["scontrol", "token", "lifespan=1800"] and "SLURM_JWT" not in run_env
    assert tokens.renewals == 1


def test_token_expired_without_command_says_what_to_do() -> None:
    tokens = TokenProvider(TokenSource(command=()), env={}, runner=FakeRunner({}))
    with pytest.raises(SlurmError, match="scontrol token"):
        tokens.token()


# ---------------------------------------------------------------- REST

JOBS = json.loads((DATA / "rest_jobs.json").read_text())


def rest_client(handler, token: str, **kw: object) -> RestClient:
    tokens = TokenProvider(TokenSource(command=()), env={"SLURM_JWT": token})
    kw.setdefault("api_version", "v0.0.38")
    return RestClient(
        "http://slurm.invalid:6820",
        tokens=tokens,
        user="alice",
        transport=httpx.MockTransport(handler),
        env={"PATH": "/bin", "SLURM_JWT": token, "MY_API_TOKEN": "x", "HOME": "/h"},
        **kw,  # type: ignore[arg-type]
    )


def test_rest_sends_jwt_headers_and_one_call_for_jobs() -> None:
    token = make_jwt(4_000_000_000)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=JOBS)

    client = rest_client(handler, token)
    jobs = client.jobs(["1", "2", "3"])
    assert len(seen) == 1 and seen[0].url.path == "/slurm/v0.0.38/jobs/"
    assert seen[0].headers["X-SLURM-USER-NAME"] == "alice"
    assert seen[0].headers["X-SLURM-USER-TOKEN"] == token
    assert [j.state for j in jobs] == [JobState.RUNNING, JobState.FAILED, JobState.PENDING]


def test_rest_submit_sends_description_without_secrets() -> None:
    token = make_jwt(4_000_000_000)
    bodies: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={"job_id": 12, "errors": []})

    client = rest_client(handler, token)
    req = JobRequest(name="n", command="true", time_s=90, mem="1G", nodelist=("gpu1",), hold=True)
    assert client.submit(req) == "12"
    job = bodies[0]["job"]
    assert job["name"] == "n" and job["time_limit"] == 2 and job["memory_per_node"] == 1024
    assert job["nodelist"] == "gpu1" and job["hold"] is True
    assert "SLURM_JWT" not in job["environment"] and "MY_API_TOKEN" not in job["environment"]
    assert token not in json.dumps(bodies[0])
    assert bodies[0]["script"].startswith("#!/bin/bash\n#SBATCH --job-name=n")


def test_rest_submit_of_script_reads_directives() -> None:
    desc = job_description(
        request_from_script(
            "#!/bin/bash\n#SBATCH -J a\n#SBATCH --time=1\n#SBATCH -w gpu2\nsleep 1\n"
        ),
        DIALECTS["v0.0.38"],
        {},
        "/tmp",
    )
    assert (desc["name"], desc["time_limit"], desc["nodelist"]) == ("a", 1, "gpu2")


def test_rest_errors_are_slurm_errors_and_never_carry_the_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = make_jwt(4_000_000_000)

    def refusing(request: httpx.Request) -> httpx.Response:
        # A hostile server echoing the token back must not get it into our messages.
        return httpx.Response(
            400,
            json={"errors": [{"error": f"Invalid partition (token {token})", "error_code": 2015}]},
        )

    def broken(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text=f"bad gateway {token}")

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"connection refused {token}", request=request)

    caplog.set_level(logging.DEBUG)
    messages = []
    for handler, kind in (
        (refusing, SubmissionRefused),
        (broken, SlurmError),
        (unreachable, BackendDown),
    ):
        with pytest.raises(kind) as info:
            rest_client(handler, token).submit(JobRequest(command="true"))
        messages.append(str(info.value))
        chain = info.value.__cause__ or info.value.__context__
        assert chain is None or token not in str(chain)
    assert all(token not in m for m in messages), messages
    assert "Invalid partition" in messages[0] and "<redacted>" in messages[0]
    assert token not in caplog.text


def test_rest_renews_token_once_on_401() -> None:
    old, new = make_jwt(4_000_000_000), make_jwt(4_000_000_001)
    runner = FakeRunner({"scontrol token": ok(f"SLURM_JWT={new}\n")})
    tokens = TokenProvider(TokenSource(), env={"SLURM_JWT": old}, runner=runner)
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers["X-SLURM-USER-TOKEN"])
        if request.headers["X-SLURM-USER-TOKEN"] == old:
            return httpx.Response(401, text="Authentication failure")
        return httpx.Response(200, json={"nodes": []})

    client = RestClient(
        "http://x",
        tokens=tokens,
        user="u",
        api_version="v0.0.38",
        transport=httpx.MockTransport(handler),
    )
    assert client.nodes() == []
    assert sent == [old, new]


def test_backends_satisfy_the_protocol() -> None:
    # mypy checks these assignments against the Protocol.
    token = make_jwt(4_000_000_000)
    clients: list[SlurmClient] = [
        CliClient(env={}),
        rest_client(lambda r: httpx.Response(200, json={}), token),
    ]
    assert [c.name for c in clients] == ["cli", "rest"]


# ---------------------------------------------------------------- pyslurm


def test_pyslurm_version_gate_names_both_versions() -> None:
    check_versions("22.5.1", "22.05.8")
    with pytest.raises(
        BackendUnavailable, match=r"pyslurm 23\.2\.2 .*Slurm 23\.2.*Slurm 22\.05\.8"
    ):
        check_versions("23.2.2", "22.05.8")


def test_pyslurm_missing_is_backend_unavailable() -> None:
    try:
        import pyslurm  # noqa: F401, PLC0415  # optional dependency
    except ImportError:
        with pytest.raises(BackendUnavailable, match=r"not installed.*22\.05"):
            load_pyslurm("22.05.8")
    else:
        pytest.skip("pyslurm is installed here")


def test_rest_no_requeue_is_submitted_held_then_fixed_with_scontrol() -> None:
    token = make_jwt(4_000_000_000)
    bodies: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={"job_id": 7, "errors": [{"error_code": 2042}]})

    runner = FakeRunner({})
    cli = CliClient(runner=runner, env={})
    client = rest_client(handler, token, history=cli)
    assert client.submit(JobRequest(command="true", requeue=False)) == "7"
    assert bodies[0]["job"]["hold"] is True
    assert [c[0] for c in runner.calls] == [
        ["scontrol", "update", "JobId=7", "Requeue=0"],
        ["scontrol", "release", "7"],
    ]
