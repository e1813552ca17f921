"""Cancel a run: signal its live driver, or mark its journal and cancel its Slurm jobs.

Its own module, light to import (no Dask): ``hpcorch cancel`` answers in a second.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from hpcorch.engine.driverlock import LOCK_NAME, DriverLock, Holder, holder_alive, live_driver
from hpcorch.engine.rundir import find_run
from hpcorch.errors import HpcorchError, RunError, RunLocked, SpecError
from hpcorch.journal import Journal, allocation_ended, allocation_rows, read_run
from hpcorch.sites.model import Site
from hpcorch.sites.resolve import resolve_site
from hpcorch.slurm.connect import connect

__all__ = ["cancel_allocations", "cancel_run", "requeued_job"]

logger = logging.getLogger(__name__)


def cancel_run(run: str | os.PathLike[str], wait_s: float = 30.0) -> str:
    """Cancel a run: signal its live driver, else mark the journal; return the state.

    The driver is the process holding the run's lock, and only while its pid still has
    the start time it recorded: a pid alone may have been reused by another process.
    """
    run_dir = find_run(run)
    row = read_run(run_dir)
    if row["state"] != "running":
        return str(row["state"])
    holder, lock = live_driver(run_dir)
    if holder is not None:
        return _stop_driver(run_dir, row, holder, wait_s)
    try:
        requeued = requeued_job(lock, str(row["site"])) if lock is not None else None
        if requeued is not None:  # it would start again and resume the cancelled run
            _cancel_on(requeued[0], [requeued[1]])
        with Journal.open(run_dir) as journal:
            journal.cancel_unfinished()
            journal.set_run_state("cancelled")
            journal.event("cancel", driver_alive=False)
            site = resolve_site(str(row["site"]))
            cancel_allocations(run_dir, site, journal, why="cancel")
    finally:
        if lock is not None:
            lock.release()
    return "cancelled"


def _stop_driver(run_dir: Path, row: dict[str, Any], holder: Holder, wait_s: float) -> str:
    """SIGTERM the driver that holds the lock, then wait for it to mark the run ended."""
    run_id = row["run_id"]
    if not holder.is_this_host():
        job = f", or 'scancel {holder.job_id}' for its driver job" if holder.job_id else ""
        raise RunError(
            f"the driver of run {run_id} runs elsewhere ({holder.describe()}); "
            f"run 'hpcorch cancel {run_id}' on {holder.host}{job}"
        )
    try:
        # A pidfd pins the process: the check and the signal reach the same one.
        pidfd = os.pidfd_open(holder.pid)
    except OSError:
        pidfd = None
    try:
        if pidfd is None or not holder_alive(holder):
            raise RunLocked(
                f"run {run_id} is locked, but pid {holder.pid} is no longer the driver that "
                f"took the lock; nothing was signalled (see 'fuser {run_dir / LOCK_NAME}')"
            )
        signal.pidfd_send_signal(pidfd, signal.SIGTERM)
    except PermissionError:
        raise RunLocked(
            f"the driver of run {run_id} ({holder.describe()}) belongs to another user; "
            "ask them to cancel it"
        ) from None
    finally:
        if pidfd is not None:
            os.close(pidfd)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        state = str(read_run(run_dir)["state"])
        if state != "running":
            _sweep(run_dir, str(row["site"]))
            return state
        time.sleep(0.2)
    raise RunError(
        f"driver {holder.pid} of run {run_id} did not stop within {wait_s:g}s; "
        f"kill it with 'kill -9 {holder.pid}' and run 'hpcorch cancel' again"
    )


def _sweep(run_dir: Path, site_name: str) -> None:
    """After a driver stopped: cancel what its shutdown may have left in Slurm."""
    site = resolve_site(site_name)
    if site.kind != "slurm":
        return
    with Journal.open(run_dir) as journal:
        cancel_allocations(run_dir, site, journal, why="cancel")


def cancel_allocations(run_dir: Path, site: Site, journal: Journal, *, why: str) -> list[str]:
    """Cancel the run's Slurm jobs that the journal does not record as ended; return their ids.

    Per site of the run (its own, and the regions it sent work to): one ``jobs``
    query for that site's jobs, one ``cancel`` for those still queued or running,
    each through that site's Slurm (job ids repeat across clusters). Each is
    recorded ended, with an ``allocations_cancelled`` event.
    """
    if site.kind != "slurm":
        return []
    journal.flush()
    # Never a user's allocation that `hpcorch run` ran in (pool "current",
    # hpcorch.provision.inside): the run did not submit it; nor the job this process runs in.
    own = os.environ.get("SLURM_JOB_ID")
    by_site: dict[str, list[dict[str, Any]]] = {}
    for alloc in allocation_rows(run_dir):
        if (
            str(alloc["job_id"]).isdigit()
            and not allocation_ended(alloc["state"])
            and str(alloc["job_id"]) != own
            and alloc.get("pool") != "current"
        ):
            # '' or None: an older journal's row, written before rows named their site
            by_site.setdefault(alloc.get("site") or site.name, []).append(alloc)
    live: list[str] = []
    checked: list[str] = []
    for name, rows in by_site.items():
        try:
            where = site if name == site.name else resolve_site(name)
        except SpecError as exc:
            logger.warning(
                "cannot cancel the run's jobs on site %s (%s); check squeue there", name, exc
            )
            continue
        ids = [str(a["job_id"]) for a in rows]
        ended = _cancel_on(where, ids)
        live.extend(ended)
        checked.extend(ids)
        now = time.time()
        for alloc in rows:
            journal.record_allocation(
                **{
                    **alloc,
                    "site": alloc.get("site") or name,
                    "state": "CANCELLED" if str(alloc["job_id"]) in ended else "ENDED",
                    "end": alloc["end"] or now,
                }
            )
    if not checked:
        return []
    journal.event("allocations_cancelled", why=why, jobs=live, checked=checked)
    if live:
        logger.info("cancelled %d allocation(s) left by the run: %s", len(live), ", ".join(live))
    return live


def _cancel_on(site: Site, job_ids: list[str]) -> list[str]:
    """Cancel those of ``job_ids`` still queued or running on ``site``; return them."""
    client = connect(site)
    try:
        live = [j.job_id for j in client.jobs(job_ids) if not j.terminal]
        if live:
            client.cancel(live)
    finally:
        client.close()
    return live


def requeued_job(lock: DriverLock, site_name: str) -> tuple[Site, str] | None:
    """The driver job that let go of the run to be requeued, while Slurm may still start it
    again (it would resume the run itself); None when there is none or it has ended."""
    previous = lock.previous
    if previous is None or not previous.job_id or previous.job_id == os.environ.get("SLURM_JOB_ID"):
        return None
    site = resolve_site(site_name)
    if site.kind != "slurm":
        return None
    try:
        client = connect(site)
        try:
            live = [j for j in client.jobs([previous.job_id]) if not j.terminal]
        finally:
            client.close()
    except HpcorchError as exc:
        lock.give_back()
        raise RunLocked(
            f"the run's driver job {previous.job_id} was requeued and Slurm cannot say whether "
            f"it still waits ({exc}); try again, or 'scancel {previous.job_id}' first"
        ) from None
    return (site, previous.job_id) if live else None
