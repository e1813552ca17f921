"""Gantt layout and rendering, and the self-contained HTML page."""

from __future__ import annotations

import itertools
import re

from hpcorch.report import build_report, render_html
from hpcorch.report.gantt import layout, render
from hpcorch.report.load import attempt_logs
from hpcorch.sites.loader import load_site
from tests.unit.test_report_build import dev_decls, dev_status


def _report():  # type: ignore[no-untyped-def]
    return build_report(dev_status(), sites={"dev": load_site("dev")}, decls=dev_decls())


def test_layout_rows_per_node_lane_and_gpu() -> None:
    lay = layout(_report())
    labels = [r.label for r in lay.rows]
    # cpu2 ran four attempts at once (sim, sweep-0, sweep-1, sweep-2): four lanes.
    assert labels == [
        "cpu1",
        "cpu2",
        "",
        "",
        "",
        "gpu1 GPU 0",
        "gpu1 GPU 1",
        "gpu1 GPU 2",
        "gpu2 GPU 0",
    ]
    analyse = [b.row for b in lay.bars if b.attempt.task_id == "analyse"]
    assert analyse == [5, 6]  # one bar on each GPU it held
    keys = {(b.attempt.task_id, b.attempt.n): b.key for b in lay.bars}
    assert keys[("sim", 1)] == "out_of_memory"
    assert keys[("sweep-3", 1)] == "node_failure"
    assert keys[("sim", 2)] == "succeeded"


def test_lanes_never_overlap() -> None:
    lay = layout(_report())
    by_row: dict[int, list[tuple[float, float]]] = {}
    for bar in lay.bars:
        by_row.setdefault(bar.row, []).append((bar.attempt.start, bar.attempt.end))
    for spans in by_row.values():
        spans.sort()
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))


def test_png_and_svg() -> None:
    report = _report()
    png = render(report, "png")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    svg = render(report, "svg").decode()
    assert "<svg" in svg
    assert "seconds since run start" in svg  # text kept as text, not paths
    assert "failed: out_of_memory" in svg


def test_html_is_self_contained_with_inline_gantt() -> None:
    page = render_html(_report())
    assert page.startswith("<!DOCTYPE html>")
    assert re.search(r'<figure id="gantt"[^>]*><svg', page)
    assert "<?xml" not in page
    # Nothing fetched from elsewhere: no external scripts, styles, images or fonts.
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "<script" not in page
    for text in ("prep → sim → analyse", "out_of_memory", "Usage and cost per site", "dev"):
        assert text in page


def test_html_escapes_names() -> None:
    status = dev_status()
    status["run_id"] = "<b>evil</b>"
    page = render_html(build_report(status))
    assert "<b>evil</b>" not in page
    assert "&lt;b&gt;evil&lt;/b&gt;" in page


def test_big_run_embeds_a_png_and_caps_the_attempts_table() -> None:
    t0 = 1.7e9
    tasks = [
        {"id": f"t{i}", "state": "succeeded", "attempts": [
            {"n": 1, "start": t0 + i % 100, "end": t0 + i % 100 + 5 + i % 7, "exit_code": 0,
             "failure_class": None, "job_id": None, "node": f"n{i % 16}", "gpus": None,
             "cores": [0]}]}
        for i in range(2001)
    ]  # fmt: skip
    tasks[5]["state"] = "failed"
    tasks[5]["attempts"][0].update(exit_code=1, failure_class="user_error")
    status = {"run_id": "big", "state": "failed", "counts": {}, "tasks": tasks, "allocations": []}
    page = render_html(build_report(status))
    assert re.search(
        r'<figure id="gantt"[^>]*><img alt="Gantt chart" src="data:image/png;base64,', page
    )
    assert "The 500 failed or longest attempts of 2001" in page
    assert ">t5<" in page  # the failed attempt is always listed


def test_failed_attempts_link_their_logs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    status = dev_status()
    failed = [
        (str(t["id"]), int(a.get("n") or 1))
        for t in status["tasks"]
        for a in t["attempts"]
        if a.get("failure_class") and a.get("start") is not None
    ]
    assert failed
    logs = tmp_path / "logs"
    logs.mkdir()
    for task, n in failed:
        (logs / f"{task}.{n}.out").write_text("out\n")
        (logs / f"{task}.{n}.err").write_text("Traceback ...\n")
    found = attempt_logs(tmp_path)
    report = build_report(status, logs=found)
    linked = {(a.task_id, a.n): a.log for a in report.attempts if a.outcome == "failed"}
    assert linked == {key: str(logs / f"{key[0]}.{key[1]}.err") for key in failed}
    assert all(a.log is None for a in report.attempts if a.outcome != "failed")
    page = render_html(report)
    task, n = failed[0]
    assert f'href="{(logs / f"{task}.{n}.err").as_uri()}"' in page
