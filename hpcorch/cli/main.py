"""The ``hpcorch`` command line (click). The CLI owns the terminal."""

from __future__ import annotations

import errno
import sqlite3
import sys
from collections.abc import Sequence
from typing import Any

import click

from hpcorch._version import __version__
from hpcorch.cli.completion import completion
from hpcorch.cli.doctor import doctor
from hpcorch.cli.plan import plan
from hpcorch.cli.report import report
from hpcorch.cli.run import cancel, logs, resume, run, status
from hpcorch.cli.simulate import simulate
from hpcorch.cli.sites import sites
from hpcorch.cli.submit import submit
from hpcorch.errors import HpcorchError, InfrastructureError, JournalError


class _Group(click.Group):
    """Errors end the command with their exit code and one line on stderr: hpcorch's
    own, those :func:`classify` sorts, and click's usage errors (exit 2).

    Here rather than only in :func:`main`, so that click's test runner sees the
    same exit codes and lines as the console script.
    """

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            # standalone_mode=False hands back ctx.exit(code) as the return value.
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            ctx = getattr(exc, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            click.echo(f"hpcorch: error: {_one_line(exc.format_message())}{hint}", err=True)
            sys.exit(2)
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            error = classify(exc)
            if error is None:
                raise  # a bug: its traceback is what a report needs
            click.echo(f"hpcorch: error: {_one_line(error)}", err=True)
            ctx.exit(error.exit_code)


# ENOSPC / EDQUOT, and SQLite's own word for them
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what caused it (``raise ... from``, or raised while handling)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 20:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in _DISK_FULL
    if isinstance(exc, sqlite3.OperationalError):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or (
            "disk is full" in str(exc)
        )
    return False


def classify(exc: BaseException) -> HpcorchError | None:
    """The error a command ends with for ``exc``, or None for a bug (left to its traceback).

    The one place where errors are sorted into exit codes: a full disk or quota is an
    infrastructure failure (exit 3, whatever reported it: nothing the user wrote is
    wrong, and resume finishes the run), a damaged journal is bad input (exit 2), and
    hpcorch's own errors keep their codes.
    """
    for cause in _chain(exc):
        if _disk_full(cause):
            return InfrastructureError(
                f"no space left ({cause}); free space or quota, then 'hpcorch resume RUN' "
                "finishes the run"
            )
    if isinstance(exc, HpcorchError):
        return exc
    if isinstance(exc, sqlite3.DatabaseError):
        return JournalError(
            f"the run's journal is damaged or not an hpcorch journal ({exc}); "
            "pass a run directory that 'hpcorch run' wrote"
        )
    return None


def _one_line(exc: BaseException | str) -> str:
    """The message on one line (a site file's several errors, a backend's report)."""
    text = ""
    for part in (p.strip() for p in str(exc).splitlines()):
        if part:
            text += ("" if not text else " " if text.endswith(":") else "; ") + part
    return text


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hpcorch")
def cli() -> None:
    """Run scientific workflows on Slurm clusters.

    \b
    Example:
      hpcorch run workflows/cpu-pipeline.yaml --site local
      hpcorch status RUN_ID

    \b
    Exit codes:
      0  success (every task succeeded)
      1  tasks failed (a summary says which; see 'hpcorch status RUN')
      2  bad input (workflow, site file, options, unknown run id); nothing submitted
      3  infrastructure unavailable (Slurm, slurmrestd, Dask workers, a full disk);
         try again later
    """


cli.add_command(run)
cli.add_command(status)
cli.add_command(resume)
cli.add_command(cancel)
cli.add_command(logs)
cli.add_command(report)
cli.add_command(doctor)
cli.add_command(sites)
cli.add_command(simulate)
cli.add_command(submit)
cli.add_command(plan)
cli.add_command(completion)


def main() -> None:
    """Console-script entry point: exit codes as documented in ``hpcorch --help``."""
    cli.main(prog_name="hpcorch")
