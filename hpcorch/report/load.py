"""Gather what :func:`~hpcorch.report.build.build_report` needs for a run directory.

The thin runner around the pure builder: the journal's status object, the
workflow's declarations (read again from the run's source file, when it is
still there) and the site models of the run and of its allocations. Missing
pieces make the report say so in its notes rather than fail.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hpcorch import journal
from hpcorch.errors import HpcorchError
from hpcorch.loaders import load_workflow
from hpcorch.report.build import build_report
from hpcorch.report.large import LARGE_RUN_TASKS, large_report
from hpcorch.report.model import Report, TaskDecl
from hpcorch.sites.model import Site
from hpcorch.sites.resolve import resolve_site

__all__ = ["attempt_logs", "load_report", "workflow_decls"]

logger = logging.getLogger(__name__)


def workflow_decls(source: str | None, time_scale: float | None = None) -> dict[str, TaskDecl]:
    """Each task's dependencies, cores and GPUs from the workflow file ({} if unreadable)."""
    if not source or not Path(source).is_file():
        return {}

    try:
        spec = load_workflow(source, time_scale)
    except HpcorchError as exc:
        logger.warning("cannot read the workflow %s again for the report: %s", source, exc)
        return {}
    return {t.id: TaskDecl(after=tuple(t.after), cpus=t.cpus, gpus=t.gpus) for t in spec.tasks}


def _sites(names: set[str]) -> dict[str, Site]:
    # The engine's resolver, so a local run is measured against this machine's shape.

    sites = {}
    for name in sorted(names):
        try:
            sites[name] = resolve_site(name)
        except HpcorchError as exc:
            # The report's notes say what this leaves out; the details are for -v.
            logger.info("site %r not found for the report: %s", name, exc)
    return sites


def attempt_logs(run_dir: Path) -> dict[tuple[str, int], str]:
    """``(task id, attempt)`` → the attempt's log in ``run_dir/logs``: its ``.err``
    when that has anything (a traceback, a command's errors), else its ``.out``."""
    found: dict[tuple[str, int], str] = {}
    try:
        entries = sorted((run_dir / "logs").iterdir())
    except OSError:
        return found
    for path in entries:
        stem, dot, stream = path.name.rpartition(".")
        task, _, n = stem.rpartition(".")
        if not dot or stream not in ("out", "err") or not task or not n.isdigit():
            continue
        key = (task, int(n))
        if key not in found or (stream == "err" and path.stat().st_size > 0):
            found[key] = str(path)
    return found


def load_report(run_dir: Path, status: dict[str, Any] | None = None) -> Report:
    """The report of the run in ``run_dir`` (``status``: the journal's, unless given)."""
    run = journal.read_run(run_dir)
    if status is None and journal.status_summary(run_dir)["tasks"] > LARGE_RUN_TASKS:
        # no object per task: aggregate queries and one streamed pass (hpcorch.report.large)
        names = {str(a["site"]) for a in journal.allocation_rows(run_dir) if a.get("site")}
        if run.get("site"):
            names.add(str(run["site"]))
        return large_report(run_dir, sites=_sites(names), run_site=run.get("site"))
    status = status if status is not None else journal.status(run_dir)
    names = {str(a["site"]) for a in status.get("allocations", ()) if a.get("site")}
    if run.get("site"):
        names.add(str(run["site"]))
    return build_report(
        status,
        sites=_sites(names),
        run_site=run.get("site"),
        decls=workflow_decls(run.get("source"), run.get("time_scale")),
        logs=attempt_logs(run_dir),
    )
