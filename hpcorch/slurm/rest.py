"""The REST backend: slurmrestd ``openapi/v0.0.38`` (Slurm 22.05) over httpx, with a JWT.

Requests carry ``X-SLURM-USER-NAME`` and ``X-SLURM-USER-TOKEN``; the token
comes from a :class:`~hpcorch.slurm.token.TokenProvider`, is renewed before it
expires and on a 401, and never appears in a log line or an error message.
slurmrestd ignores ``#SBATCH`` lines, so submissions send the job description
as JSON next to the script. v0.0.38 has no accounting endpoints: jobs that
have left slurmctld's memory and job steps come from ``history`` (the CLI).
v0.0.38 also ignores ``"requeue": false`` (on submit and on update, checked
on 22.05.8): such jobs are submitted held, set ``Requeue=0`` with scontrol,
then released.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from hpcorch.errors import SlurmError, SubmissionRefused
from hpcorch.sites.model import Prologue
from hpcorch.slurm.cli import CliClient
from hpcorch.slurm.client import BackendDown
from hpcorch.slurm.models import (
    JobInfo,
    NodeInfo,
    PartitionInfo,
    StepInfo,
    in_partitions,
    pending_in,
)
from hpcorch.slurm.parse import (
    job_id_order,
    parse_jobs_json,
    parse_nodes_json,
    parse_partitions_json,
    slurm_errors,
)
from hpcorch.slurm.script import JobRequest, render_sbatch, request_from_script
from hpcorch.slurm.token import TokenProvider, scrub

__all__ = ["RestClient", "job_description"]

logger = logging.getLogger(__name__)

_MIB = 1024**2
# Slurm answers these with a job id: informational, not failures.
_INFO_CODES = {2042}  # ESLURM_JOB_HELD: "Job is in held state, pending scheduler release"
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSW|JWT|API_KEY|CREDENTIAL", re.IGNORECASE)
_BEGIN = re.compile(r"now\+(\d+)(seconds|minutes|hours|days)?", re.IGNORECASE)
_UNIT_S = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400}


def _job_environment(req: JobRequest, env: Mapping[str, str]) -> dict[str, str]:
    # sbatch exports the caller's environment; do the same, minus anything secret.
    out = {k: v for k, v in env.items() if not _SECRET_NAME.search(k)}
    out.update(req.env)
    return out


def _begin_time(text: str, now: float) -> int:
    match = _BEGIN.fullmatch(text.strip())
    if match:
        return int(now) + int(match.group(1)) * _UNIT_S[(match.group(2) or "seconds").lower()]
    if text.strip().isdigit():
        return int(text)
    raise SubmissionRefused(
        f"begin={text!r}: the REST backend understands 'now+N[seconds|minutes|hours|days]' "
        "or Unix seconds; use the cli backend for other forms"
    )


def job_description(
    req: JobRequest, env: Mapping[str, str], cwd: str, now: float | None = None
) -> dict[str, Any]:
    """The v0.0.38 ``job`` object for a request (pure; ``now`` only for ``begin``)."""
    desc: dict[str, Any] = {
        "name": req.name,
        "environment": _job_environment(req, env),
        "current_working_directory": req.chdir or cwd,
    }

    def put(key: str, value: Any) -> None:
        if value is not None and value != ():
            desc[key] = value

    put("partition", req.partition)
    put("account", req.account)
    put("qos", req.qos)
    put("nodes", [req.nodes, req.nodes] if req.nodes else None)
    put("tasks", req.ntasks)
    put("tasks_per_node", req.ntasks_per_node)
    put("cpus_per_task", req.cpus_per_task)
    put("memory_per_node", math.ceil(req.mem / _MIB) if req.mem is not None else None)
    put("memory_per_cpu", math.ceil(req.mem_per_cpu / _MIB) if req.mem_per_cpu else None)
    put("gres", req.gres)
    put("time_limit", math.ceil(req.time_s / 60) if req.time_s else None)
    put("standard_output", req.output)
    put("standard_error", req.error)
    # Undocumented in the v0.0.38 spec but accepted by its parser (checked on 22.05.8).
    put("nodelist", ",".join(req.nodelist) or None)
    put("exclude_nodes", ",".join(req.exclude) or None)
    put("constraints", req.constraint)
    if req.exclusive:
        desc["exclusive"] = "true"
    put("requeue", req.requeue)
    put("signal", req.signal)
    put("comment", req.comment)
    if req.hold:
        desc["hold"] = True
    if req.begin:
        desc["begin_time"] = _begin_time(req.begin, time.time() if now is None else now)
    put("array", req.array)
    if req.extra:
        raise SubmissionRefused(
            f"the REST backend cannot pass sbatch options {list(req.extra)}; use the cli backend"
        )
    return desc


class RestClient:
    """Slurm through slurmrestd."""

    name = "rest"

    def __init__(
        self,
        url: str,
        *,
        tokens: TokenProvider,
        user: str | None = None,
        api_version: str = "v0.0.38",
        timeout_s: float = 10.0,
        prologue: Prologue | None = None,
        history: CliClient | None = None,
        transport: httpx.BaseTransport | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._tokens = tokens
        self._user = user or _login_name()
        self._base = f"/slurm/{api_version}"
        self._prologue = prologue
        self._history = history
        self._env = os.environ if env is None else env
        self._timeout = timeout_s
        self._transport = transport
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s, transport=transport)
        self._version: str | None = None
        self.calls = 0

    # ------------------------------------------------------------------ plumbing

    def _request(
        self, method: str, path: str, *, fresh: bool = False, **kwargs: Any
    ) -> Mapping[str, Any]:
        """One call; ``fresh`` uses a new connection, so that a slurmrestd that went
        away shows as "unreachable" (nothing sent) rather than a reused connection
        dropped mid-request (maybe delivered): submissions need that certainty."""
        for attempt in (1, 2):
            token = self._tokens.token()
            headers = {"X-SLURM-USER-NAME": self._user, "X-SLURM-USER-TOKEN": token}
            self.calls += 1
            failure: SlurmError | None = None
            try:
                if fresh and self._transport is None:
                    with httpx.Client(base_url=self.url, timeout=self._timeout) as once:
                        response = once.request(
                            method, self._base + path, headers=headers, **kwargs
                        )
                else:
                    response = self._http.request(
                        method, self._base + path, headers=headers, **kwargs
                    )
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                failure = BackendDown(
                    f"slurmrestd at {self.url} unreachable ({type(exc).__name__}); "
                    "is slurmrestd running?"
                )
            except httpx.HTTPError as exc:
                message = scrub(str(exc), token)
                failure = SlurmError(f"slurmrestd {method} {path}: {type(exc).__name__}: {message}")
            if failure is not None:
                # Raised outside the handler so the httpx error (which may quote the
                # request) is not kept as __context__.
                raise failure
            if response.status_code == 401 and attempt == 1:
                logger.info("slurmrestd answered 401; getting a new token")
                self._tokens.invalidate()
                continue
            return self._decode(method, path, response, token)
        raise SlurmError(
            f"slurmrestd at {self.url} rejected a fresh token (401): check that the token "
            f"belongs to user {self._user!r} and that AuthAltTypes=auth/jwt is set"
        )

    def _decode(
        self, method: str, path: str, response: httpx.Response, token: str
    ) -> Mapping[str, Any]:
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            body = scrub(response.text[:200], token)
            if response.status_code >= 500:
                raise SlurmError(f"slurmrestd {method} {path}: HTTP {response.status_code}: {body}")
            raise SlurmError(
                f"slurmrestd {method} {path}: HTTP {response.status_code}, not JSON: {body!r}"
            )
        errors = [
            e
            for e in data.get("errors") or []
            if not (isinstance(e, dict) and e.get("error_code") in _INFO_CODES)
        ]
        if response.status_code >= 400 or errors:
            text = scrub("; ".join(slurm_errors({"errors": errors})), token)
            if response.status_code >= 500:
                raise SlurmError(f"slurmrestd {method} {path}: HTTP {response.status_code}: {text}")
            return {"_failed": text or f"HTTP {response.status_code}", **data}
        return data

    def _get(self, path: str) -> Mapping[str, Any]:
        data = self._request("GET", path)
        if "_failed" in data:
            raise SlurmError(f"slurmrestd GET {path}: {data['_failed']}")
        return data

    # ------------------------------------------------------------------ protocol

    @property
    def version(self) -> str:
        if self._version is None:
            data = self._get("/ping")
            release = ((data.get("meta") or {}).get("Slurm") or {}).get("release")
            self._version = str(release or "unknown")
        return self._version

    def submit(self, job: JobRequest | str) -> str:
        if isinstance(job, JobRequest):
            req, script = job, render_sbatch(job, self._prologue)
        else:
            try:
                req, script = request_from_script(job), job
            except ValueError as exc:
                raise SubmissionRefused(str(exc)) from None
        desc = job_description(req, self._env, os.getcwd())
        no_requeue = req.requeue is False
        if no_requeue:
            if self._history is None:
                raise SubmissionRefused(
                    "slurmrestd v0.0.38 ignores requeue=false; configure the cli backend too"
                )
            desc["hold"] = True
        data = self._request(
            "POST", "/job/submit", fresh=True, json={"script": script, "job": desc}
        )
        if "_failed" in data or not data.get("job_id"):
            raise SubmissionRefused(
                f"slurmrestd refused the job: {data.get('_failed') or 'no job id returned'}"
            )
        job_id = str(data["job_id"])
        if no_requeue and self._history is not None:
            self._history.update_job(job_id, Requeue="0")
            if not req.hold:
                self._history.release([job_id])
        return job_id

    def cancel(self, job_ids: Iterable[str]) -> None:
        for job_id in job_ids:
            data = self._request("DELETE", f"/job/{job_id}")
            failed = str(data.get("_failed") or "")
            if failed and "Job/step already completing or completed" not in failed:
                if "Invalid job id" in failed:
                    continue
                raise SlurmError(f"slurmrestd could not cancel job {job_id}: {failed}")

    def jobs(self, job_ids: Iterable[str]) -> list[JobInfo]:
        wanted = {str(j) for j in job_ids}
        if not wanted:
            return []
        found = {j.job_id: j for j in parse_jobs_json(self._get("/jobs"), "rest")}
        result = [found[j] for j in wanted if j in found]
        missing = wanted - found.keys()
        if missing and self._history is not None:
            result += self._history.jobs(missing)
        return sorted(result, key=lambda j: job_id_order(j.job_id))

    def nodes(self, partitions: Iterable[str] | None = None) -> list[NodeInfo]:
        return in_partitions(parse_nodes_json(self._get("/nodes")), partitions)

    def pending_jobs(self, partition: str) -> list[JobInfo]:
        return pending_in(parse_jobs_json(self._get("/jobs"), "rest"), partition)

    def start_estimate(self, partition: str, nodes: int, walltime_s: float) -> float | None:
        # slurmrestd has no --test-only; the cli backend (history) has.
        if self._history is None:
            return None
        return self._history.start_estimate(partition, nodes, walltime_s)

    def partitions(self) -> list[PartitionInfo]:
        return parse_partitions_json(self._get("/partitions"))

    def steps(self, job_id: str) -> list[StepInfo]:
        if self._history is None:
            raise SlurmError(
                "slurmrestd v0.0.38 has no job steps endpoint; configure the cli backend too"
            )
        return self._history.steps(job_id)

    def close(self) -> None:
        self._http.close()


def _login_name() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return os.environ.get("USER", "root")
