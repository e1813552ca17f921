"""Run reports: figures from a ``status --json`` object, a Gantt chart, an HTML page.

    report = build_report(status, sites={"dev": load_site("dev")}, decls=decls)
    png = gantt.render(report, "png")
    page = render_html(report)

:func:`build_report` is pure, so a live run (its journal's status) and the
simulator's output report the same way. matplotlib is imported only when a
chart is drawn (the ``report`` extra).
"""

from __future__ import annotations

from hpcorch.report.build import build_report
from hpcorch.report.html import render_html
from hpcorch.report.model import AttemptSpan, Report, SiteUsage, TaskDecl

__all__ = ["AttemptSpan", "Report", "SiteUsage", "TaskDecl", "build_report", "render_html"]
