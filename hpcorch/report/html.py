"""The report as one self-contained HTML page: inline CSS, the Gantt as inline SVG.

Nothing is fetched when the page opens (no scripts, fonts or images from
elsewhere), so it can be mailed, archived or opened on an offline login node.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from html import escape
from pathlib import Path

from hpcorch.report import gantt
from hpcorch.report.model import Report
from hpcorch.report.text import SITE_COLUMNS, hours, percent, site_rows

__all__ = ["render_html"]

_SVG_MAX_ATTEMPTS = 2000
_TABLE_MAX_ATTEMPTS = 500

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       margin: 2rem auto; max-width: 1240px; padding: 0 1rem; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; }
h2 { font-size: 1.1rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
.state { display: inline-block; padding: 0 .5em; border-radius: 3px; color: #fff; }
.state-succeeded { background: #009E73; } .state-failed { background: #D55E00; }
.state-running { background: #56B4E9; } .state-cancelled { background: #999; }
table { border-collapse: collapse; margin: .5rem 0; }
th, td { padding: .25rem .8rem; border-bottom: 1px solid #eee; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 0; overflow-x: auto; }
figure svg, figure img { max-width: 100%; height: auto; }
.notes li { color: #8a5300; }
"""


class _Raw(str):
    """A table cell that is already HTML (a link), written as it is."""

    __slots__ = ()


def _log_link(path: str | None) -> str:
    """A link to a failed attempt's log file (the page may be read where the run dir is)."""
    if path is None:
        return "—"
    href, name = escape(Path(path).as_uri()), escape(Path(path).name)
    return _Raw(f'<a class="log" href="{href}">{name}</a>')


def _num(value: float | None, fmt: str = "{:.1f}") -> str:
    return "—" if value is None else fmt.format(value)


def _table(header: Sequence[str], rows: Iterable[Sequence[object]], cls: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{escape(str(c))}</td>'
            if isinstance(c, int | float)
            else f"<td>{c}</td>"
            if isinstance(c, _Raw)
            else f"<td>{escape(str(c))}</td>"
            for c in row
        )
        + "</tr>"
        for row in rows
    )
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _chart(report: Report) -> str:
    """Inline SVG (text stays text), or a PNG data URI when SVG would be many megabytes."""
    if len(report.attempts) > _SVG_MAX_ATTEMPTS:
        data = base64.b64encode(gantt.render(report, "png")).decode()
        return f'<img alt="Gantt chart" src="data:image/png;base64,{data}">'
    text = gantt.render(report, "svg").decode()
    # Inline SVG in HTML takes the <svg> element alone, without the XML prologue.
    return text[text.index("<svg") :]


def render_html(report: Report) -> str:
    """The whole page as a string."""
    r = report
    summary = _table(
        ("figure", "value"),
        [
            ("makespan", f"{r.makespan_s:.1f} s"),
            (
                "critical path",
                "unknown (dependencies not recorded)"
                if r.critical_path is None
                else f"{_num(r.critical_path_s)} s: " + " → ".join(r.critical_path),
            ),
            ("tasks", str(r.tasks)),
            ("retries", f"{r.retries} (in {r.tasks_retried} tasks)"),
            *(("training restart", line) for line in r.training_restarts),
            ("core-hours used / allocated",
             f"{hours(r.core_hours_used)} / {hours(r.core_hours_allocated)}"),
            ("GPU-hours used / allocated",
             f"{hours(r.gpu_hours_used)} / {hours(r.gpu_hours_allocated)}"),
            ("CPU utilization", percent(r.cpu_utilization)),
            ("GPU utilization", percent(r.gpu_utilization)),
            *((("idle GPU share (NVML)",
                "no GPU figures" if r.gpu_idle_share is None else percent(r.gpu_idle_share)),)
              if r.gpu_usage else ()),
            *(("training GPUs", line) for line in r.gpu_usage),
        ],
        "summary",
    )  # fmt: skip
    states = _table(("task state", "tasks"), sorted(r.by_state.items()), "by-state")
    classes = sorted(r.failed_attempts_by_class)
    failures = (
        _table(
            ("failure class", "failed attempts", "tasks that ended failed"),
            [
                (c, r.failed_attempts_by_class[c], r.failed_tasks_by_class.get(c, 0))
                for c in classes
            ],
            "failures",
        )
        if classes
        else "<p>No attempt failed.</p>"
    )
    sites = _table(SITE_COLUMNS, site_rows(r.sites), "sites")
    # Failed attempts first, then the longest; a run of 20,000 tasks keeps a readable page.
    shown = sorted(r.attempts, key=lambda a: (a.outcome != "failed", -a.duration))
    shown = sorted(shown[:_TABLE_MAX_ATTEMPTS], key=lambda a: (a.start, a.task_id))
    attempts = _table(
        ("task", "try", "node", "GPUs", "cores", "start (s)", "end (s)", "outcome", "log"),
        [
            (
                a.task_id,
                a.n,
                a.node,
                ",".join(map(str, a.gpus)) or "—",
                a.cores,
                f"{a.start:.1f}",
                f"{a.end:.1f}",
                a.outcome if a.failure_class is None else f"{a.outcome}: {a.failure_class}",
                _log_link(a.log),
            )
            for a in shown
        ],
        "attempts",
    )
    if len(r.attempts) > len(shown):
        attempts = (
            f"<p>The {len(shown)} failed or longest attempts of {len(r.attempts)}; "
            "<code>hpcorch report RUN --json</code> lists them all.</p>" + attempts
        )
    notes = (
        '<h2>Notes</h2><ul class="notes">'
        + "".join(f"<li>{escape(n)}</li>" for n in r.notes)
        + "</ul>"
        if r.notes
        else ""
    )
    gantt_block = (
        f'<figure id="gantt" aria-label="Gantt chart of attempts per node">{_chart(r)}</figure>'
        if r.attempts
        else '<p id="gantt-empty">No attempt has started yet.</p>'
    )
    title = escape(f"hpcorch report — {r.run_id}")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{_CSS}</style></head><body>"
        f"<h1>Run {escape(r.run_id)}</h1>"
        f'<p><span class="state state-{escape(r.state)}">{escape(r.state)}</span> '
        f"makespan {r.makespan_s:.1f} s · {r.tasks} tasks</p>"
        f"<h2>Summary</h2>{summary}"
        f"<h2>Timeline</h2>{gantt_block}"
        f"<h2>Tasks by state</h2>{states}"
        f"<h2>Failed attempts by class</h2>{failures}"
        f"<h2>Usage and cost per site</h2>{sites}"
        f"{notes}"
        f"<h2>Attempts</h2>{attempts}"
        "</body></html>\n"
    )
