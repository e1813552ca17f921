"""The CLI backend: ``squeue/sinfo --json``, ``sbatch --parsable``, ``scancel``, ``sacct --json``.

Every command is an argv list run by a :class:`Runner` (a thin wrapper over
``subprocess.run``; tests pass their own); every output goes through a pure
parser in :mod:`hpcorch.slurm.parse`. ``jobs(ids)`` costs one ``squeue``
call, plus one ``sacct`` call only when some ids have already left squeue.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hpcorch.childenv import child_env
from hpcorch.errors import SlurmError, SubmissionRefused
from hpcorch.sites.model import Prologue
from hpcorch.slurm.client import BackendDown
from hpcorch.slurm.models import JobInfo, NodeInfo, PartitionInfo, StepInfo
from hpcorch.slurm.parse import (
    job_id_order,
    parse_jobs_json,
    parse_nodes_json,
    parse_sacct_json,
    parse_sacct_steps,
    parse_sbatch_parsable,
    parse_scontrol_partitions,
)
from hpcorch.slurm.script import JobRequest, render_sbatch

__all__ = ["CliClient", "Completed", "Runner", "run_command"]

logger = logging.getLogger(__name__)

# Never handed to Slurm commands: sbatch would copy them into the job's environment.

# sbatch/scancel messages that mean "slurmctld is not there", not "your job is wrong".
_UNREACHABLE = (
    "Unable to contact slurm controller",
    "Socket timed out",
    "Connection refused",
    "Communication connection failure",
    "Zero Bytes were transmitted",
)
# scancel messages for jobs that are already gone: cancelling them again is a no-op.
_ALREADY_GONE = ("Invalid job id specified", "Job/step already completing or completed")


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


Runner = Callable[[Sequence[str], str | None, Mapping[str, str], float], Completed]


def run_command(
    argv: Sequence[str], stdin: str | None, env: Mapping[str, str], timeout: float
) -> Completed:
    """Run one Slurm command; OSError and timeouts become SlurmError here."""
    try:
        done = subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            text=True,
            env=dict(env),
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise BackendDown(
            f"{argv[0]} not found: install the Slurm client commands or use the rest backend"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise SlurmError(f"{argv[0]} took more than {timeout:.0f}s; slurmctld may be busy") from exc
    except OSError as exc:
        raise BackendDown(f"cannot run {argv[0]}: {exc.strerror}") from exc
    return Completed(done.returncode, done.stdout, done.stderr)


class CliClient:
    """Slurm through its command-line tools."""

    name = "cli"

    def __init__(
        self,
        *,
        conf: str | None = None,
        env: Mapping[str, str] | None = None,
        prologue: Prologue | None = None,
        timeout_s: float = 30.0,
        runner: Runner = run_command,
    ) -> None:
        base = child_env(os.environ if env is None else env)
        if conf:
            base["SLURM_CONF"] = conf
        self._env = base
        self._prologue = prologue
        self._timeout = timeout_s
        self._run = runner
        self._version: str | None = None
        self.calls = 0

    # ------------------------------------------------------------------ plumbing

    def _call(self, argv: Sequence[str], stdin: str | None = None) -> Completed:
        self.calls += 1
        logger.debug("slurm cli: %s", " ".join(argv))
        return self._run(argv, stdin, self._env, self._timeout)

    def _checked(self, argv: Sequence[str], stdin: str | None = None) -> str:
        done = self._call(argv, stdin)
        if done.returncode != 0:
            message = done.stderr.strip() or done.stdout.strip() or f"exit {done.returncode}"
            if any(text in message for text in _UNREACHABLE):
                raise BackendDown(f"{argv[0]}: slurmctld unreachable: {message}")
            raise SlurmError(f"{' '.join(argv[:2])} failed: {message}")
        return done.stdout

    def _json(self, argv: Sequence[str]) -> Mapping[str, Any]:
        out = self._checked(argv)
        try:
            data = json.loads(out)
        except json.JSONDecodeError as exc:
            raise SlurmError(f"{argv[0]} --json printed invalid JSON: {exc.msg}") from exc
        if not isinstance(data, dict):
            raise SlurmError(f"{argv[0]} --json printed {type(data).__name__}, not an object")
        return data

    # ------------------------------------------------------------------ protocol

    @property
    def version(self) -> str:
        if self._version is None:
            out = self._checked(["sinfo", "--version"])
            self._version = out.split()[-1] if out.split() else "unknown"
        return self._version

    def submit(self, job: JobRequest | str) -> str:
        script = render_sbatch(job, self._prologue) if isinstance(job, JobRequest) else job
        done = self._call(["sbatch", "--parsable"], script)
        if done.returncode != 0:
            message = done.stderr.strip() or f"exit {done.returncode}"
            if any(text in message for text in _UNREACHABLE):
                raise BackendDown(f"sbatch: slurmctld unreachable: {message}")
            raise SubmissionRefused(f"sbatch refused the job: {message}")
        return parse_sbatch_parsable(done.stdout)

    def cancel(self, job_ids: Iterable[str]) -> None:
        ids = [str(j) for j in job_ids]
        if not ids:
            return
        done = self._call(["scancel", *ids])
        if done.returncode != 0:
            lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
            real = [ln for ln in lines if not any(t in ln for t in _ALREADY_GONE)]
            if real:
                raise SlurmError(f"scancel failed: {'; '.join(real)}")

    def update_job(self, job_id: str, **fields: str) -> None:
        """``scontrol update JobId=ID Key=Value...`` (e.g. ``Requeue="0"``)."""
        pairs = [f"{key}={value}" for key, value in fields.items()]
        self._checked(["scontrol", "update", f"JobId={job_id}", *pairs])

    def release(self, job_ids: Iterable[str]) -> None:
        """Release held jobs (``scontrol release``)."""
        ids = [str(j) for j in job_ids]
        if ids:
            self._checked(["scontrol", "release", ",".join(ids)])

    def jobs(self, job_ids: Iterable[str]) -> list[JobInfo]:
        wanted = {str(j) for j in job_ids}
        if not wanted:
            return []
        # squeue 22.05 ignores -j with --json: ask once for all and filter here.
        found = {j.job_id: j for j in parse_jobs_json(self._json(["squeue", "--json"]), "squeue")}
        result = [found[j] for j in sorted(wanted, key=job_id_order) if j in found]
        missing = wanted - found.keys()
        if missing:
            ids = ",".join(sorted(missing, key=job_id_order))
            history = parse_sacct_json(self._json(["sacct", "--json", "-j", ids]))
            result += [j for j in history if j.job_id in missing]
        return sorted(result, key=lambda j: job_id_order(j.job_id))

    def nodes(self) -> list[NodeInfo]:
        return parse_nodes_json(self._json(["sinfo", "--json"]))

    def partitions(self) -> list[PartitionInfo]:
        return parse_scontrol_partitions(self._checked(["scontrol", "show", "partition", "-o"]))

    def steps(self, job_id: str) -> list[StepInfo]:
        return parse_sacct_steps(self._json(["sacct", "--json", "-j", str(job_id)]), str(job_id))

    def close(self) -> None:
        return None
