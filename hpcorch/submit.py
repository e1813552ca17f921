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

import re
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
from hpcorch.sites.rules import (
    JobSettings,
    WalltimeLimit,
    check_job,
    job_settings,
    site_with,
    walltime_limit,
)
from hpcorch.slurm.script import JobRequest

__all__ = [
    "DriverJob",
    "DriverPlan",
    "driver_plan",
    "driver_request",
    "mail_directives",
    "submit_driver",
]

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


DEFAULT_DRIVER_WALLTIME_S = 24 * 3600.0
_MAIL_TYPES = frozenset(
    {
        "NONE", "BEGIN", "END", "FAIL", "REQUEUE", "ALL", "INVALID_DEPEND", "STAGE_OUT",
        "TIME_LIMIT", "TIME_LIMIT_90", "TIME_LIMIT_80", "TIME_LIMIT_50", "ARRAY_TASKS",
    }
)  # fmt: skip
_MAIL_USER = re.compile(r"[A-Za-z0-9_.+-]+(@[A-Za-z0-9.-]+)?")


def mail_directives(mail_type: str | None, mail_user: str | None) -> list[str]:
    """``--mail-type``/``--mail-user`` for the driver job, checked (SpecError if not)."""
    out = []
    if mail_type:
        kinds = [k.strip().upper() for k in mail_type.split(",") if k.strip()]
        bad = [k for k in kinds if k not in _MAIL_TYPES]
        if bad or not kinds:
            raise SpecError(
                f"--mail-type {mail_type!r:.60}: not a Slurm mail type; use a comma-separated "
                f"list of {', '.join(sorted(_MAIL_TYPES))}"
            )
        out.append(f"--mail-type={','.join(kinds)}")
    if mail_user:
        if not _MAIL_USER.fullmatch(mail_user):
            raise SpecError(f"--mail-user {mail_user!r:.60}: not a user name or mail address")
        out.append(f"--mail-user={mail_user}")
    return out


@dataclass(frozen=True, slots=True)
class DriverPlan:
    """Where the driver job runs, and why: its settings and the limit it was checked
    against (:func:`hpcorch.sites.rules.check_job`)."""

    settings: JobSettings
    walltime_s: float
    limit: WalltimeLimit
    select_by_name: bool


def driver_plan(
    site: Site,
    *,
    walltime_s: float | None = None,
    partition: str | None = None,
    qos: str | None = None,
) -> DriverPlan:
    """The driver's partition, QOS, account and walltime from the site's ``submit:``
    section, checked against the site's rules (:class:`SiteRuleError` if refused).

    ``qos``: the run's ``--qos``, for the driver only where the site names none for it."""
    try:
        part = site.partition(partition or site.submit.partition)
    except KeyError as exc:
        raise SpecError(str(exc.args[0])) from None
    knobs = {"qos": site.submit.qos or qos, "constraint": site.submit.constraint}
    settings = job_settings(site, part, {k: v for k, v in knobs.items() if v})
    if walltime_s is None:
        walltime_s = site.submit.walltime_s or DEFAULT_DRIVER_WALLTIME_S
        known = walltime_limit(site, part, settings.qos, 1).seconds
        if known is not None and site.submit.walltime_s is None:
            walltime_s = min(walltime_s, known)
    limit = check_job(site, part, settings, nodes=1, walltime_s=walltime_s, what="the driver job")
    return DriverPlan(settings, walltime_s, limit, part.select_by_name)


def driver_request(
    workflow: Path,
    site: Site,
    run_dir: Path,
    run_id: str,
    *,
    walltime_s: float | None = None,
    partition: str | None = None,
    time_scale: float | None = None,
    hpcorch: tuple[str, ...] | None = None,
    options: RunOptions | None = None,
    mail_type: str | None = None,
    mail_user: str | None = None,
) -> JobRequest:
    """The driver job: a core or two, little memory, requeueable, requeued before its
    walltime; where it runs comes from the site's ``submit:`` section (:func:`driver_plan`).

    ``options`` reach the driver (and its resumes) as ``HPCORCH_*`` variables."""
    options = options or RunOptions()
    site = site_with(site, account=options.account)
    plan = driver_plan(site, walltime_s=walltime_s, partition=partition, qos=options.qos)
    settings = plan.settings
    return JobRequest(
        name=f"hpcorch-driver-{run_id}"[:100],
        command=driver_script(
            workflow.resolve(),
            site.name,
            run_dir.resolve(),
            run_id,
            walltime_s=plan.walltime_s,
            time_scale=time_scale,
            hpcorch=hpcorch,
            secrets=site_secrets(site),
        ),
        partition=settings.partition if plan.select_by_name else None,
        account=settings.account,
        qos=settings.qos,
        constraint=settings.constraint,
        nodes=1,
        ntasks=1,
        cpus_per_task=site.submit.cpus,
        mem=site.submit.memory,
        time_s=plan.walltime_s,
        output="/dev/null",
        chdir=str(Path.cwd()),
        requeue=True,
        comment=f"hpcorch driver {run_id}",
        env=options_env(options),
        extra=tuple(
            [
                *([f"--reservation={settings.reservation}"] if settings.reservation else []),
                *mail_directives(mail_type, mail_user),
            ]
        ),
    )


def submit_driver(
    workflow: Path,
    site: Site,
    *,
    run_dir: Path | None = None,
    walltime_s: float | None = None,
    partition: str | None = None,
    time_scale: float | None = None,
    options: RunOptions | None = None,
    mail_type: str | None = None,
    mail_user: str | None = None,
) -> DriverJob:
    """Validate the workflow here (bad input fails now, not in the queue), then submit."""
    from hpcorch.engine.rundir import new_run_dir  # noqa: PLC0415  # loads distributed: only when submitting
    from hpcorch.engine.session import validate_run  # noqa: PLC0415  # loads distributed: only when submitting
    from hpcorch.slurm.connect import connect  # noqa: PLC0415  # loads distributed: only when submitting

    spec = load_workflow(workflow, time_scale=time_scale)
    validate_run(spec, site.name, options)
    mail_directives(mail_type, mail_user)
    driver_plan(
        site_with(site, account=(options or RunOptions()).account),
        walltime_s=walltime_s,
        partition=partition,
        qos=(options or RunOptions()).qos,
    )  # a driver the site would refuse: exit 2 before the run directory exists
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
            mail_type=mail_type,
            mail_user=mail_user,
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
