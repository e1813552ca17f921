"""The ``hpcorch`` command line (click). The CLI owns the terminal."""

from __future__ import annotations

import sys

import click

from hpcorch._version import __version__
from hpcorch.cli.completion import completion
from hpcorch.cli.doctor import doctor
from hpcorch.cli.report import report
from hpcorch.cli.run import cancel, logs, resume, run, status
from hpcorch.cli.simulate import simulate
from hpcorch.cli.sites import sites
from hpcorch.cli.submit import submit
from hpcorch.errors import HpcorchError


class _Group(click.Group):
    """Errors of hpcorch end the command with their exit code and one line on stderr.

    Here rather than only in :func:`main`, so that click's test runner sees the
    same exit codes as the console script.
    """

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except HpcorchError as exc:
            click.echo(f"hpcorch: error: {_one_line(exc)}", err=True)
            ctx.exit(exc.exit_code)


def _one_line(exc: BaseException) -> str:
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
      3  infrastructure unavailable (Slurm, slurmrestd, Dask workers); try again later
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
cli.add_command(completion)


def main() -> None:
    """Console-script entry point: map hpcorch errors to documented exit codes."""
    try:
        # standalone_mode=False hands back ctx.exit(code) as the return value.
        code = cli.main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except HpcorchError as exc:
        click.echo(f"hpcorch: error: {_one_line(exc)}", err=True)
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
