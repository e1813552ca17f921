"""End to end on site local: `hpcorch run` an example, then `hpcorch report` on the run.

As a new user would: the console script in a fresh directory, the run id it
printed, then the report's PNG, HTML (opened in headless Chromium) and JSON.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.integration.test_report_browser import check_page_in_browser

REPO = Path(__file__).resolve().parents[2]
HPCORCH = Path(sys.executable).parent / "hpcorch"

FLAKY = """
name: flaky
tasks:
  - id: fine
    command: [python3, -c, "import time; time.sleep(0.3)"]
  - id: broken
    command: [python3, -c, "import sys; sys.exit(3)"]
    retries: 1
  - id: after-fine
    after: [fine]
    command: [python3, -c, "print('ok')"]
  - id: after-broken
    after: [broken]
    command: [python3, -c, "print('never')"]
"""


def hpcorch(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HPCORCH_HOME": str(cwd / ".hpcorch")}
    proc = subprocess.run(
        [str(HPCORCH), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def run_id_of(proc: subprocess.CompletedProcess[str]) -> str:
    match = re.search(r"run (\S+): \d+ tasks", proc.stderr)
    assert match, proc.stderr[-3000:]
    return match.group(1)


def test_example_pipeline_then_report(tmp_path: Path) -> None:
    run = hpcorch(tmp_path, "run", str(REPO / "workflows" / "cpu-pipeline.yaml"), "--site", "local")
    run_id = run_id_of(run)
    png, html = tmp_path / "gantt.png", tmp_path / "report.html"
    shown = hpcorch(tmp_path, "report", run_id, "--png", str(png), "--html", str(html))
    assert "critical path" in shown.stdout
    assert png.read_bytes().startswith(b"\x89PNG")

    data = json.loads(hpcorch(tmp_path, "report", run_id, "--json").stdout)
    assert data["state"] == "succeeded"
    assert data["by_state"] == {"succeeded": 7}
    assert data["critical_path"][0] == "generate"
    assert data["critical_path"][-1] == "report"
    assert data["makespan_s"] > 0
    assert 0 < data["cpu_utilization"] <= 1
    assert data["sites"][0]["site"] == "local"

    check_page_in_browser(html, tmp_path, "report-cpu-pipeline.png")


def test_failed_run_reports_its_failures(tmp_path: Path) -> None:
    workflow = tmp_path / "flaky.yaml"
    workflow.write_text(FLAKY)
    run = hpcorch(tmp_path, "run", str(workflow), "--site", "local", check=False)
    assert run.returncode == 1, run.stderr[-3000:]
    run_id = run_id_of(run)

    run_dir = tmp_path / ".hpcorch" / "runs" / run_id
    html = tmp_path / "report.html"
    shown = hpcorch(tmp_path, "report", str(run_dir), "--json", "--html", str(html))
    data = json.loads(shown.stdout)
    assert data["state"] == "failed"
    assert data["by_state"] == {"succeeded": 2, "failed": 1, "upstream_failed": 1}
    assert data["failed_attempts_by_class"] == {"user_error": 2}
    assert data["failed_tasks_by_class"] == {"user_error": 1}
    assert data["retries"] == 1
    failed = [a for a in data["attempts"] if a["outcome"] == "failed"]
    assert [(a["task_id"], a["n"]) for a in failed] == [("broken", 1), ("broken", 2)]
    assert "failed: user_error" in html.read_text()
