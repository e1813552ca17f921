"""``hpcorch report RUN``: the run's figures on the terminal, as JSON, PNG or HTML."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from hpcorch.report import gantt, render_html
from hpcorch.report.model import Report
from hpcorch.report.text import SITE_COLUMNS, hours, percent, site_rows

__all__ = ["report"]


def _print_summary(r: Report) -> None:

    console = Console()
    figures = Table(title=f"run {r.run_id} — {r.state}", show_header=False, title_justify="left")
    figures.add_column("figure", style="bold")
    figures.add_column("value")
    figures.add_row("makespan", f"{r.makespan_s:.1f} s")
    if r.critical_path is None:
        figures.add_row("critical path", "unknown (workflow file not readable)")
    else:
        figures.add_row(
            "critical path", f"{r.critical_path_s or 0:.1f} s: " + " → ".join(r.critical_path)
        )
    states = ", ".join(f"{n} {s}" for s, n in r.by_state.items())
    figures.add_row("tasks", f"{r.tasks} ({states})" if states else str(r.tasks))
    figures.add_row("retries", f"{r.retries} (in {r.tasks_retried} tasks)")
    for line in r.training_restarts:
        figures.add_row("training restart", line)
    if r.failed_attempts_by_class:
        failed = ", ".join(f"{n} {c}" for c, n in r.failed_attempts_by_class.items())
        figures.add_row("failed attempts", failed)
    if r.failed_tasks_by_class:
        failed = ", ".join(f"{n} {c}" for c, n in r.failed_tasks_by_class.items())
        figures.add_row("failed tasks", failed)
    figures.add_row(
        "core-hours used / allocated",
        f"{hours(r.core_hours_used)} / {hours(r.core_hours_allocated)}",
    )
    figures.add_row(
        "GPU-hours used / allocated", f"{hours(r.gpu_hours_used)} / {hours(r.gpu_hours_allocated)}"
    )
    figures.add_row(
        "utilization CPU / GPU", f"{percent(r.cpu_utilization)} / {percent(r.gpu_utilization)}"
    )
    if r.gpu_usage:  # trainings: NVML's figures, or that there was no GPU
        figures.add_row("idle GPU share (NVML)", _idle(r.gpu_idle_share))
        for line in r.gpu_usage:
            figures.add_row("training GPUs", line)
    console.print(figures)
    if r.sites:
        sites = Table(title="usage per site", title_justify="left")
        for col in SITE_COLUMNS:
            sites.add_column(col, justify="left" if col == "site" else "right")
        for row in site_rows(r.sites):
            sites.add_row(*row)
        console.print(sites)
    _print_failed(console, r)
    for note in r.notes:
        console.print(f"[yellow]note:[/] {note}")


_FAILED_SHOWN = 20


def _print_failed(console: Console, r: Report) -> None:
    """The failed attempts (the last few) and the log of each."""
    failed = sorted((a for a in r.attempts if a.outcome == "failed"), key=lambda a: a.start)
    if not failed:
        return
    logs = {str(Path(a.log).parent) for a in failed if a.log}
    table = Table(
        title="failed attempts",
        title_justify="left",
        caption=f"logs in {', '.join(sorted(logs))}" if logs else None,
        caption_justify="left",
    )
    for col in ("task", "try", "class"):
        table.add_column(col)
    table.add_column("log", overflow="fold")
    for a in failed[-_FAILED_SHOWN:]:
        table.add_row(
            a.task_id,
            str(a.n),
            a.failure_class or "—",
            Path(a.log).name if a.log else "none written",
        )
    console.print(table)
    if len(failed) > _FAILED_SHOWN:
        console.print(f"the last {_FAILED_SHOWN} of {len(failed)} failed attempts (--json: all)")


def _write(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc.strerror}") from None


@click.command()
@click.argument("run_ref", metavar="RUN")
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a self-contained HTML page (figures, tables, Gantt chart).",
)
@click.option(
    "--png",
    "png_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the Gantt chart (attempts per node and GPU over time) as PNG.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (stdout only).")
def report(run_ref: str, html_path: Path | None, png_path: Path | None, as_json: bool) -> None:
    """Report on RUN (a run id or a run directory): makespan, critical path,
    outcomes and failure classes, retries, core- and GPU-hours, cost per site.

    \b
    Example:
      hpcorch report cpu-pipeline-20251125-190000-ab12 --html report.html --png gantt.png
    """
    from hpcorch.engine.rundir import find_run  # noqa: PLC0415  # CLI fast path: --help does not load it
    from hpcorch.report.load import load_report  # noqa: PLC0415  # CLI fast path: --help does not load it

    r = load_report(find_run(run_ref))
    if png_path is not None:
        _write(png_path, gantt.render(r, "png"))
    if html_path is not None:
        _write(html_path, render_html(r).encode())
    if as_json:
        click.echo(json.dumps(r.to_dict()))
        return
    _print_summary(r)
    for kind, path in (("Gantt chart", png_path), ("HTML report", html_path)):
        if path is not None:
            click.echo(f"{kind}: {path}", err=True)


def _idle(share: float | None) -> str:
    return "no GPU figures" if share is None else percent(share)
