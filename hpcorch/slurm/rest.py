"""The REST backend: slurmrestd over httpx with a JWT, in the API version the server speaks.

On first use the client reads ``GET /openapi/v3`` (or, failing that, probes
``/slurm/<v>/ping``) and speaks the newest ``data_parser`` version it shares
with the server; :mod:`hpcorch.slurm.rest_dialects` holds the table of those
versions and how each wants a job described. A site may pin one instead
(``api_version: v0.0.42``).

Requests carry ``X-SLURM-USER-NAME`` and ``X-SLURM-USER-TOKEN``; the token
comes from a :class:`~hpcorch.slurm.token.TokenProvider`, is renewed before it
expires and on a 401, and never appears in a log line or an error message.
slurmrestd ignores ``#SBATCH`` lines, so submissions send the job description
as JSON next to the script. Jobs slurmctld has forgotten come from slurmdbd's
``/slurmdb/<v>/jobs`` where the server has it, else from ``history`` (the CLI).
v0.0.38 (22.05) only: it has no accounting endpoints without slurmdbd, and it
ignores ``"requeue": false`` (on submit and on update, checked on 22.05.8), so
such jobs are submitted held, set ``Requeue=0`` with scontrol, then released.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import httpx

from hpcorch.errors import SiteConfigError, SlurmError, SubmissionRefused
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
    parse_sacct_json,
    parse_sacct_steps,
    slurm_errors,
)
from hpcorch.slurm.rest_dialects import job_description
from hpcorch.slurm.rest_versions import (
    AUTO,
    DIALECTS,
    Dialect,
    choose,
    newest_first,
    served_versions,
    valid_api_version,
    version_order,
)
from hpcorch.slurm.script import JobRequest, render_sbatch, request_from_script
from hpcorch.slurm.token import TokenProvider, scrub

__all__ = ["RestClient"]

logger = logging.getLogger(__name__)

# Query parameters; a list repeats the name (``step=1&step=2``), as slurmrestd wants.
Params = Mapping[str, str | list[str]]
# Slurm answers these with a job id: informational, not failures.
_INFO_CODES = {2042}  # ESLURM_JOB_HELD: "Job is in held state, pending scheduler release"
# Cancelling a job that already ended, or that Slurm no longer knows, is done.
_GONE = re.compile(r"already completing or completed|Invalid job id", re.IGNORECASE)


class RestClient:
    """Slurm through slurmrestd."""

    name = "rest"

    def __init__(
        self,
        url: str,
        *,
        tokens: TokenProvider,
        user: str | None = None,
        api_version: str = AUTO,
        timeout_s: float = 10.0,
        prologue: Prologue | None = None,
        history: CliClient | None = None,
        transport: httpx.BaseTransport | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        try:
            valid_api_version(api_version)
        except ValueError as exc:
            raise SiteConfigError(str(exc)) from None
        self.url = url.rstrip("/")
        self._tokens = tokens
        self._user = user or _login_name()
        self._pinned = None if api_version == AUTO else DIALECTS[api_version]
        self._dialect: Dialect | None = self._pinned
        # None: not known yet (tried on first need); False: the server has none.
        self._accounting: bool | None = None
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
        self,
        method: str,
        path: str,
        *,
        fresh: bool = False,
        params: Params | None = None,
        json: Any = None,
    ) -> tuple[int, Mapping[str, Any]]:
        """One call: (HTTP status, decoded body). ``fresh`` uses a new connection, so
        that a slurmrestd that went away shows as "unreachable" (nothing sent) rather
        than a reused connection dropped mid-request (maybe delivered): submissions
        need that certainty."""
        for attempt in (1, 2):
            token = self._tokens.token()
            headers = {"X-SLURM-USER-NAME": self._user, "X-SLURM-USER-TOKEN": token}
            self.calls += 1
            failure: SlurmError | None = None
            try:
                if fresh and self._transport is None:
                    with httpx.Client(base_url=self.url, timeout=self._timeout) as once:
                        response = once.request(
                            method, path, headers=headers, params=params, json=json
                        )
                else:
                    response = self._http.request(
                        method, path, headers=headers, params=params, json=json
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
            return response.status_code, self._decode(method, path, response, token)
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
            if response.status_code == 404:
                return {"_failed": f"HTTP 404: {body}"}
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

    def _get(self, path: str, params: Params | None = None) -> Mapping[str, Any]:
        _, data = self._request("GET", path, params=params)
        if "_failed" in data:
            raise SlurmError(f"slurmrestd GET {path}: {data['_failed']}")
        return data

    # ------------------------------------------------------------------ version

    @property
    def dialect(self) -> Dialect:
        """The API version spoken: pinned, or the newest the server and hpcorch share."""
        if self._dialect is None:
            self._dialect = self._negotiate()
        return self._dialect

    def _negotiate(self) -> Dialect:
        status, spec = self._request("GET", "/openapi/v3")
        ctld, dbd = served_versions(spec) if "_failed" not in spec else (set(), set())
        chosen = choose(ctld)
        if chosen is not None:
            self._accounting = chosen.version in dbd
            how = f"serves {', '.join(sorted(ctld, key=version_order))}"
        else:
            # No usable OpenAPI document (HTTP {status}): ask each version's ping.
            for dialect in newest_first():
                code, data = self._request("GET", f"{dialect.base}/ping/")
                if code < 400 and "_failed" not in data:
                    chosen = dialect
                    break
            how = f"answered /openapi/v3 with HTTP {status}; pinged"
        if chosen is None:
            raise SlurmError(
                f"slurmrestd at {self.url} serves none of the API versions hpcorch speaks "
                f"({', '.join(DIALECTS)}; it serves {', '.join(sorted(ctld)) or 'none'}): "
                "upgrade hpcorch, or use the cli backend"
            )
        logger.info("slurmrestd at %s %s: speaking %s", self.url, how, chosen.version)
        return chosen

    @property
    def version(self) -> str:
        if self._version is None:
            meta = self._get(f"{self.dialect.base}/ping/").get("meta") or {}
            # v0.0.38 says meta.Slurm, later versions meta.slurm.
            slurm = meta.get("slurm") or meta.get("Slurm") or {}
            self._version = str(slurm.get("release") or "unknown")
        return self._version

    # ------------------------------------------------------------------ protocol

    def submit(self, job: JobRequest | str) -> str:
        if isinstance(job, JobRequest):
            req, script = job, render_sbatch(job, self._prologue)
        else:
            try:
                req, script = request_from_script(job), job
            except ValueError as exc:
                raise SubmissionRefused(str(exc)) from None
        dialect = self.dialect
        desc = job_description(req, dialect, self._env, os.getcwd())
        no_requeue = req.requeue is False and not dialect.honours_no_requeue
        if no_requeue:
            if self._history is None:
                raise SubmissionRefused(
                    f"slurmrestd {dialect.version} ignores requeue=false; "
                    "configure the cli backend too"
                )
            desc["hold"] = True
        _, data = self._request(
            "POST",
            f"{dialect.base}/job/submit",
            fresh=True,
            json=dialect.submit_body(desc, script),
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
            _, data = self._request("DELETE", f"{self.dialect.base}/job/{job_id}")
            failed = str(data.get("_failed") or "")
            if failed and not _GONE.search(failed):
                raise SlurmError(f"slurmrestd could not cancel job {job_id}: {failed}")

    def jobs(self, job_ids: Iterable[str]) -> list[JobInfo]:
        wanted = {str(j) for j in job_ids}
        if not wanted:
            return []
        found = {
            j.job_id: j for j in parse_jobs_json(self._get(f"{self.dialect.base}/jobs/"), "rest")
        }
        result = [found[j] for j in wanted if j in found]
        missing = wanted - found.keys()
        if missing:
            ended = self._accounted(missing)
            result += ended
            missing -= {j.job_id for j in ended}
        if missing and self._history is not None:
            result += self._history.jobs(missing)
        return sorted(result, key=lambda j: job_id_order(j.job_id))

    def _accounted(self, job_ids: set[str]) -> list[JobInfo]:
        """Jobs slurmctld has forgotten, from slurmdbd by id (one call); [] without one."""
        # One ``step=`` per id: slurmrestd 24.11 refuses "1,2" and "1%2C2" (HTTP 400/422).
        try:
            data = self._slurmdb("/jobs/", {"step": sorted(job_ids, key=job_id_order)})
        except SlurmError as exc:
            if self._history is None:
                raise
            # slurmdbd down or refusing: the CLI (sacct) may still answer.
            logger.warning("%s; asking the cli backend instead", exc)
            return []
        if data is None:
            return []
        return [j for j in parse_sacct_json(data, source="rest") if j.job_id in job_ids]

    def _slurmdb(self, path: str, params: Params | None = None) -> Any:
        """A slurmdbd endpoint's answer, or None when this server has none."""
        dialect = self.dialect
        if self._accounting is False or not dialect.structured:
            return None
        status, data = self._request("GET", f"{dialect.accounting_base}{path}", params=params)
        if "_failed" in data:
            if status == 404 and self._accounting is None:
                logger.info("slurmrestd at %s has no accounting endpoints", self.url)
                self._accounting = False
                return None
            raise SlurmError(f"slurmrestd GET {dialect.accounting_base}{path}: {data['_failed']}")
        self._accounting = True
        return data

    def nodes(self, partitions: Iterable[str] | None = None) -> list[NodeInfo]:
        nodes = parse_nodes_json(self._get(f"{self.dialect.base}/nodes/"))
        return in_partitions(nodes, partitions)

    def pending_jobs(self, partition: str) -> list[JobInfo]:
        jobs = parse_jobs_json(self._get(f"{self.dialect.base}/jobs/"), "rest")
        return pending_in(jobs, partition)

    def start_estimate(self, partition: str, nodes: int, walltime_s: float) -> float | None:
        # slurmrestd has no --test-only; the cli backend (history) has.
        if self._history is None:
            return None
        return self._history.start_estimate(partition, nodes, walltime_s)

    def partitions(self) -> list[PartitionInfo]:
        parts = parse_partitions_json(self._get(f"{self.dialect.base}/partitions/"))
        if not self.dialect.partition_flags and self._history is not None:
            # v0.0.39 to v0.0.44 do not flag the default partition; scontrol does.
            defaults = {p.name for p in self._history.partitions() if p.default}
            parts = [replace(p, default=p.name in defaults) for p in parts]
        return parts

    def steps(self, job_id: str) -> list[StepInfo]:
        data = self._slurmdb(f"/job/{job_id}")
        if data is not None:
            return parse_sacct_steps(data, job_id)
        if self._history is None:
            raise SlurmError(
                f"slurmrestd {self.dialect.version} here has no job steps endpoint "
                "(no slurmdbd); configure the cli backend too"
            )
        return self._history.steps(job_id)

    def close(self) -> None:
        self._http.close()


def _login_name() -> str:
    try:
        import pwd  # noqa: PLC0415  # optional dependency, guarded

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return os.environ.get("USER", "root")
