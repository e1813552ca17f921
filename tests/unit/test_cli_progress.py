"""The run view: plain timestamped lines off a terminal, a rich view on one."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.console import Console

from hpcorch.cli.progress import Failure, Progress, Snapshot, plain_line, read_snapshot, render
from hpcorch.journal import Journal
from hpcorch.sites import load_site
from hpcorch.sites.resolve import local_site

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ run r1: \d+/\d+ done, \d+ failed, \d+ running")


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    j = Journal.create(
        tmp_path / "run", run_id="r1", name="demo", source=None, site="dev", time_scale=None
    )
    j.add_tasks([("a", "command", "succeeded", 0), ("b", "command", "running", 0)])
    j.add_tasks([("c", "command", "pending", 0), ("d", "function", "failed", 0)])
    j.record_attempts(
        [
            {"task_id": "b", "n": 1, "start": 1.0},
            {"task_id": "d", "n": 1, "start": 1.0, "end": 2.0, "failure_class": "out_of_memory"},
        ]
    )
    j.record_allocation(job_id="7", site="dev", partition="gpu", nodes=2, state="RUNNING", start=1)
    j.record_allocation(job_id="8", site="dev", partition="cpu", nodes=1, state="PENDING")
    j.record_allocation(job_id="6", site="dev", partition="cpu", nodes=1, state="CLOSED", end=3)
    j.flush()
    return j


def test_plain_line_format() -> None:
    snap = Snapshot(counts={"succeeded": 12, "running": 3, "pending": 185})
    line = plain_line("r1", 200, snap, 1795634401.0)
    assert line == "2026-11-25T19:20:01Z run r1: 12/200 done, 0 failed, 3 running"


def test_plain_line_mentions_allocations_and_gpus() -> None:
    snap = Snapshot(
        counts={"failed": 1, "upstream_failed": 2, "running": 1},
        allocations={("dev", "gpu", "RUNNING"): (1, 2)},
        running=("t",),
    )
    line = plain_line("r1", 5, snap, 0.0, gpus={"t": 2.0})
    assert LINE.match(line)
    assert "3/5 done, 1 failed, 1 running" in line
    assert "1 allocation (2 nodes)" in line and "2 GPUs busy" in line


def test_snapshot_reads_the_journal(journal: Journal) -> None:
    snap = read_snapshot(journal.path.parent)
    assert snap.counts == {"succeeded": 1, "running": 1, "pending": 1, "failed": 1}
    assert snap.allocations == {
        ("dev", "gpu", "RUNNING"): (1, 2),
        ("dev", "cpu", "PENDING"): (1, 1),
    }
    assert snap.running == ("b",)
    assert snap.failures == (Failure("d", 1, "out_of_memory", ""),)
    journal.close()


def test_snapshot_without_journal(tmp_path: Path) -> None:
    assert read_snapshot(tmp_path) == Snapshot()


def test_plain_progress_writes_lines_and_each_failure(journal: Journal) -> None:
    out = io.StringIO()
    progress = Progress(4, gpus={"b": 1.0}, stream=out, live=False, interval_s=3600)
    progress.start("r1", journal.path.parent)
    progress({"succeeded": 1, "running": 1, "pending": 1, "failed": 1})
    progress.tick()
    progress.tick()  # nothing new and not due: no line
    journal.record_attempts([{"task_id": "b", "n": 1, "end": 5.0, "failure_class": "timeout"}])
    journal.set_states([("b", "pending")])  # as the engine does when it stops a task
    journal.flush()
    progress({"succeeded": 1, "pending": 2, "failed": 1})
    progress.close()
    journal.close()
    lines = out.getvalue().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        "run r1: task d attempt 1 failed (out_of_memory)",
        "run r1: 2/4 done, 1 failed, 1 running; 2 allocations (3 nodes), 1 GPUs busy",
        "run r1: task b attempt 1 failed (timeout)",
        "run r1: 2/4 done, 1 failed, 0 running; 2 allocations (3 nodes)",
    ]
    assert all(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ", line) for line in lines)


def test_running_count_is_the_tasks_running_now(journal: Journal) -> None:
    """The engine sends counts when tasks end; tasks that started since are running now.

    A run of 298 WfFormat tasks on two cores said ``0 running`` on every line: each
    count came from the moment a task ended, before the tasks that took its place
    were seen starting.
    """
    out = io.StringIO()
    progress = Progress(6, gpus={"b": 1.0, "e": 2.0}, stream=out, live=True)
    progress.start("r1", journal.path.parent)
    journal.add_tasks([("e", "command", "pending", 0), ("f", "command", "pending", 0)])
    progress({"succeeded": 1, "pending": 4, "failed": 1})  # sent when a ended: 0 running then
    journal.record_attempts([{"task_id": "e", "n": 1, "start": 3.0}])
    journal.set_states([("e", "running")])  # e's worker reported its start
    journal.flush()
    snap = progress._snapshot()
    assert snap.running == ("b", "e")
    assert snap.counts == {"succeeded": 1, "failed": 1, "running": 2, "pending": 2}
    line = plain_line("r1", 6, snap, 0.0, gpus=progress.gpus)
    assert "2/6 done, 1 failed, 2 running" in line and "3 GPUs busy" in line
    progress.close()
    journal.close()
    assert "running" in out.getvalue() and "GPUs busy: 3" in out.getvalue()


def test_engine_counts_stand_while_the_journal_cannot_be_read(tmp_path: Path) -> None:
    progress = Progress(3, stream=io.StringIO(), live=False)
    progress.start("r1", tmp_path)  # no journal there
    progress({"succeeded": 1, "running": 2})
    assert progress._snapshot().counts == {"succeeded": 1, "running": 2}
    progress.close()


def test_refused_run_adds_no_line(tmp_path: Path) -> None:
    out = io.StringIO()
    progress = Progress(3, stream=out, live=False)
    progress.start("r1", tmp_path)
    progress.close()
    assert out.getvalue() == ""


def test_render_shows_states_allocations_and_gpus() -> None:
    snap = Snapshot(
        counts={"succeeded": 3, "running": 2, "pending": 5},
        allocations={("dev", "gpu", "RUNNING"): (1, 2), ("dev", "cpu", "PENDING"): (2, 2)},
        running=("g1", "c1"),
        failures=(Failure("x", 1, "node_failure", "node gpu2 went down"),),
    )
    console = Console(record=True, width=100, file=io.StringIO())
    console.print(render("r1", 10, snap, elapsed_s=12, gpus={"g1": 2.0}, gpus_total=8))
    text = console.export_text()
    assert "run r1" in text and "3/10 done" in text
    assert "running" in text and "pending" in text
    assert "gpu" in text and "cpu" in text
    assert "GPUs busy: 2 of 8" in text
    assert "node_failure" in text


def test_live_view_on_a_terminal(journal: Journal) -> None:
    out = io.StringIO()
    progress = Progress(4, stream=out, live=True, site=load_site("dev"))
    progress.start("r1", journal.path.parent)
    progress({"succeeded": 2, "running": 1, "pending": 1})
    progress.close()
    journal.close()
    text = out.getvalue()
    assert "2/4 done" in text
    assert "GPUs busy: 0 of 8" in text  # the running 2-node gpu allocation, 4 GPUs a node


def test_local_site_gpus_total() -> None:
    progress = Progress(1, site=local_site())
    assert progress._gpus_total(Snapshot()) == (local_site().partitions[0].node.gpus or None)
