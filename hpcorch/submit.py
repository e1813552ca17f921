"""Sbatch-wrapped runs: the driver itself runs as a small Slurm job.

``hpcorch submit`` renders a driver job (a pure function of the request) and
submits it. The job runs ``hpcorch run`` the first time and ``hpcorch resume``
on every later start, so a driver that is requeued — by Slurm on preemption,
or by itself shortly before its walltime — picks the run up from the journal:
completed tasks never run again. The walltime timer lives in the script, not in
``--signal=B:...``: slurmrestd 22.05 refuses the ``B:`` form, and Slurm does not
requeue a job that hit its time limit.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from hpcorch.childenv import SECRET_ENV, site_secrets
from hpcorch.environment import options_env
from hpcorch.errors import SpecError
from hpcorch.journal import JOURNAL_NAME
from hpcorch.loaders import load_workflow
from hpcorch.options import RunOptions
from hpcorch.sites.model import Site
from hpcorch.slurm.script import JobRequest

__all__ = ["DriverJob", "driver_request", "submit_driver"]

# Seconds before the driver's walltime at which it requeues itself: enough for the
# engine to stop cleanly and flush the journal (a quarter of short walltimes).
REQUEUE_MARGIN_S = 120


def requeue_after_s(walltime_s: float) -> int:
    """When the driver asks to be requeued, counted from its start."""
    return max(1, int(walltime_s - min(REQUEUE_MARGIN_S, walltime_s / 4)))


@dataclass(frozen=True, slots=True)
class DriverJob:
    run_id: str
    run_dir: Path
    job_id: str


def driver_script(
    workflow: Path,
    site: str,
    run_dir: Path,
    run_id: str,
    *,
    walltime_s: float,
    time_scale: float | None = None,
    hpcorch: tuple[str, ...] | None = None,
    secrets: tuple[str, ...] = SECRET_ENV,
) -> str:
    """The body of the driver job (bash): start or resume, and requeue before the walltime.

    ``secrets``: the site's token variables; the submission leaves them out already."""
    exe = hpcorch or (sys.executable, "-m", "hpcorch")
    run_argv = [*exe, "run", str(workflow), "--site", site, "--run-dir", str(run_dir)]
    run_argv += ["--run-id", run_id]
    if time_scale is not None:
        run_argv += ["--time-scale", repr(time_scale)]
    resume_argv = [*exe, "resume", str(run_dir)]
    journal = run_dir / JOURNAL_NAME
    log = run_dir / "driver.log"
    return "\n".join(
        [
            # Append, so a requeued driver's log follows the first one's (Slurm would truncate).
            f"exec >>{shlex.quote(str(log))} 2>&1",
            "# Slurm 22.05's slurmd rejects JWT-authenticated srun; the driver gets its own token.",
            f"unset {shlex.join(secrets)}",
            "requeue() {",
            '  echo "hpcorch driver: walltime near, requeueing job $SLURM_JOB_ID" >&2',
            # USR1: the engine stops and leaves the run to `hpcorch resume`.
            '  kill -USR1 "$driver" 2>/dev/null; wait "$driver"',
            '  scontrol requeue "$SLURM_JOB_ID"',
            "  exit 0",
            "}",
            "trap requeue USR1",
            # The timer must not outlive the job: Slurm loses track of orphaned processes.
            f"(sleep {requeue_after_s(walltime_s)} && kill -USR1 $$) &",
            "timer=$!",
            'stop_timer() { pkill -P "$timer" 2>/dev/null; kill "$timer" 2>/dev/null; }',
            "trap stop_timer EXIT",
            "trap 'stop_timer; exit 143' TERM",
            f"if [ -f {shlex.quote(str(journal))} ]; then",
            f"  {shlex.join(resume_argv)} &",
            "else",
            f"  {shlex.join(run_argv)} &",
            "fi",
            "driver=$!",
            # `wait` returns early when a trapped signal arrives; loop until the driver ends.
            'while kill -0 "$driver" 2>/dev/null; do wait "$driver"; rc=$?; done',
            'exit "${rc:-0}"',
        ]
    )


def driver_request(
    workflow: Path,
    site: Site,
    run_dir: Path,
    run_id: str,
    *,
    walltime_s: float,
    partition: str | None = None,
    time_scale: float | None = None,
    hpcorch: tuple[str, ...] | None = None,
    options: RunOptions | None = None,
) -> JobRequest:
    """The driver job: one core, little memory, requeueable, requeued before its walltime.

    ``options`` reach the driver (and its resumes) as ``HPCORCH_*`` variables."""
    default = next((p.name for p in site.partitions if p.default), None)
    return JobRequest(
        name=f"hpcorch-driver-{run_id}"[:100],
        command=driver_script(
            workflow.resolve(),
            site.name,
            run_dir.resolve(),
            run_id,
            walltime_s=walltime_s,
            time_scale=time_scale,
            hpcorch=hpcorch,
            secrets=site_secrets(site),
        ),
        partition=partition or default,
        account=site.account,
        nodes=1,
        ntasks=1,
        cpus_per_task=1,
        mem=1024**3,
        time_s=walltime_s,
        output="/dev/null",
        chdir=str(Path.cwd()),
        requeue=True,
        comment=f"hpcorch driver {run_id}",
        env=options_env(options or RunOptions()),
    )


def submit_driver(
    workflow: Path,
    site: Site,
    *,
    run_dir: Path | None = None,
    walltime_s: float = 24 * 3600,
    partition: str | None = None,
    time_scale: float | None = None,
    options: RunOptions | None = None,
) -> DriverJob:
    """Validate the workflow here (bad input fails now, not in the queue), then submit."""
    from hpcorch.engine.rundir import new_run_dir  # noqa: PLC0415  # loads distributed: only when submitting
    from hpcorch.engine.session import validate_run  # noqa: PLC0415  # loads distributed: only when submitting
    from hpcorch.slurm.connect import connect  # noqa: PLC0415  # loads distributed: only when submitting

    spec = load_workflow(workflow, time_scale=time_scale)
    validate_run(spec, site.name, options)
    run_id, path = new_run_dir(spec.name, site, run_dir=run_dir)
    path = path.resolve()
    try:
        request = driver_request(
            workflow,
            site,
            path,
            run_id,
            walltime_s=walltime_s,
            partition=partition,
            time_scale=time_scale,
            options=options,
        )
    except ValueError as exc:  # a value no #SBATCH line can hold (the working directory)
        raise SpecError(f"cannot write the driver job: {_first_error(exc)}") from None
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    job_id = connect(site).submit(request)
    return DriverJob(run_id=run_id, run_dir=path, job_id=job_id)


def _first_error(exc: ValueError) -> str:
    """pydantic's several-line report as its first error's message."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        return str(errors(include_url=False)[0]["msg"]).removeprefix("Value error, ")
    return str(exc)
