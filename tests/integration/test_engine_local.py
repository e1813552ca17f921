"""The engine on site ``local`` through the CLI: WfFormat replays, SIGKILL and resume.

No Slurm here: the local site is a Dask LocalCluster on this machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from wfcommons import WorkflowGenerator
from wfcommons.wfchef import recipes

from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
HPCORCH = Path(sys.executable).with_name("hpcorch")


def _hpcorch(*argv: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(HPCORCH), *argv], check=False, cwd=cwd, capture_output=True, text=True, timeout=300
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"hpcorch {' '.join(argv)} -> {proc.returncode}\n{proc.stderr}")
    return proc


def _status(run_dir: Path, cwd: Path) -> dict[str, Any]:
    out = _hpcorch("status", str(run_dir), "--json", cwd=cwd).stdout
    data: dict[str, Any] = json.loads(out)
    return data


def _wfcommons(recipe: str, tasks: int, path: Path) -> float:
    """Write a wfcommons instance; return a time scale that makes it a few seconds of work."""

    cls = getattr(recipes, recipe)
    WorkflowGenerator(cls.from_num_tasks(tasks)).build_workflow().write_json(path)
    doc = json.loads(path.read_text())
    total = sum(t["runtimeInSeconds"] for t in doc["workflow"]["execution"]["tasks"])
    return 3.0 / total


@pytest.mark.slow
@pytest.mark.parametrize(
    ("recipe", "tasks"),
    [("BlastRecipe", 120), ("SeismologyRecipe", 110), ("EpigenomicsRecipe", 100)],
)
def test_wfcommons_instance_respects_every_dependency(
    recipe: str, tasks: int, tmp_path: Path
) -> None:
    instance = tmp_path / f"{recipe}.json"
    scale = _wfcommons(recipe, tasks, instance)
    run_dir = tmp_path / "run"
    proc = _hpcorch(
        "run",
        str(instance),
        "--site",
        "local",
        "--run-dir",
        str(run_dir),
        "--time-scale",
        f"{scale:.3e}",
        cwd=tmp_path,
    )
    assert "succeeded" in proc.stdout

    data = _status(run_dir, tmp_path)
    doc = json.loads(instance.read_text())
    parents = {t["id"]: t["parents"] for t in doc["workflow"]["specification"]["tasks"]}
    assert data["state"] == "succeeded"
    assert data["counts"]["succeeded"] == len(parents) >= tasks - 5
    attempts = {t["id"]: t["attempts"] for t in data["tasks"]}
    for task_id, ps in parents.items():
        (attempt,) = attempts[task_id]
        assert attempt["exit_code"] == 0 and attempt["end"] >= attempt["start"]
        for p in ps:
            parent_end = attempts[p][-1]["end"]
            assert attempt["start"] >= parent_end, f"{task_id} started before {p} ended"


PIPELINE = """
name: killme
tasks:
{tasks}
"""
STEP = (
    "  - id: {id}\n"
    "    after: [{after}]\n"
    '    command: [{python}, -c, "import os, pathlib, time; '
    "d = pathlib.Path(os.environ['HPCORCH_RUN_DIR'], 'ran'); d.mkdir(exist_ok=True); "
    "f = d / os.environ['HPCORCH_TASK_ID']; f.write_text(f.read_text() + 'x' "
    "if f.exists() else 'x'); time.sleep(0.5)\"]\n"
)


@pytest.mark.slow
def test_sigkill_driver_then_resume_runs_only_unfinished_tasks(tmp_path: Path) -> None:
    steps = []
    for stage in range(5):
        for k in range(4):
            after = ", ".join(f"s{stage - 1}-{j}" for j in range(4)) if stage else ""
            steps.append(STEP.format(id=f"s{stage}-{k}", after=after, python=sys.executable))
    workflow = tmp_path / "killme.yaml"
    workflow.write_text(PIPELINE.format(tasks="".join(steps)))
    run_dir = tmp_path / "run"
    driver = subprocess.Popen(
        [str(HPCORCH), "run", str(workflow), "--run-dir", str(run_dir)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (run_dir / "journal.sqlite").exists():
            counts = _status(run_dir, tmp_path)["counts"]
            if counts["succeeded"] >= 6:
                break
        time.sleep(0.2)
    else:
        driver.kill()
        raise AssertionError("the run did not make progress")
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    time.sleep(1.0)  # let orphaned workers notice their parent is gone

    before = _status(run_dir, tmp_path)
    assert before["state"] == "running"
    done_before = {t["id"] for t in before["tasks"] if t["state"] == "succeeded"}
    assert 6 <= len(done_before) < 20

    _hpcorch("resume", str(run_dir), cwd=tmp_path)
    after = _status(run_dir, tmp_path)
    assert after["state"] == "succeeded" and after["counts"]["succeeded"] == 20
    ran = run_dir / "ran"
    for task_id in done_before:
        assert (ran / task_id).read_text() == "x", f"{task_id} ran again after resume"
    for t in after["tasks"]:
        if t["id"] in done_before:
            assert len(t["attempts"]) == 1


@pytest.mark.slow
def test_cpu_pipeline_example_and_logs(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    _hpcorch(
        "run",
        str(REPO / "workflows" / "cpu-pipeline.yaml"),
        "--run-dir",
        str(run_dir),
        cwd=tmp_path,
    )
    assert (run_dir / "data" / "total.txt").read_text() == "13900854"
    logs = _hpcorch("logs", str(run_dir), "report", cwd=tmp_path).stdout
    assert "13900854" in logs


@pytest.mark.slow
def test_failed_task_exit_1_with_summary_and_upstream_failed(tmp_path: Path) -> None:
    workflow = tmp_path / "fail.yaml"
    workflow.write_text(
        "tasks:\n"
        "  - {id: ok, command: ['true']}\n"
        "  - {id: bad, command: ['false'], retries: 1, after: [ok]}\n"
        "  - {id: child, command: ['true'], after: [bad]}\n"
        "  - {id: other, command: ['true'], after: [ok]}\n"
    )
    run_dir = tmp_path / "run"
    proc = _hpcorch("run", str(workflow), "--run-dir", str(run_dir), cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert (
        "bad: user_error: exited with code 1; gave up after 2 user-error attempt(s)" in proc.stdout
    )
    assert "bad.2.err" in proc.stdout
    data = _status(run_dir, tmp_path)
    states = {t["id"]: t["state"] for t in data["tasks"]}
    assert states == {
        "ok": "succeeded",
        "bad": "failed",
        "child": "upstream_failed",
        "other": "succeeded",
    }
    bad = next(t for t in data["tasks"] if t["id"] == "bad")
    assert [a["exit_code"] for a in bad["attempts"]] == [1, 1]
    assert [a["failure_class"] for a in bad["attempts"]] == ["user_error", "user_error"]


@pytest.mark.slow
def test_cancel_stops_a_live_run(tmp_path: Path) -> None:
    workflow = tmp_path / "long.yaml"
    workflow.write_text(
        "tasks:\n"
        + "".join(f"  - {{id: nap-{i}, command: [sleep, '30']}}\n" for i in range(4))
        + "  - {id: after, command: ['true'], after: [nap-0, nap-1, nap-2, nap-3]}\n"
    )
    run_dir = tmp_path / "run"
    driver = subprocess.Popen(
        [str(HPCORCH), "run", str(workflow), "--run-dir", str(run_dir)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (run_dir / "journal.sqlite").exists() and _status(run_dir, tmp_path)["counts"][
            "running"
        ]:
            break
        time.sleep(0.2)
    started = time.monotonic()
    proc = _hpcorch("cancel", str(run_dir), cwd=tmp_path)
    assert "cancelled" in proc.stdout
    out, _ = driver.communicate(timeout=60)
    assert time.monotonic() - started < 25, "cancel waited for the tasks to finish"
    assert driver.returncode == 1 and "cancelled" in out
    data = _status(run_dir, tmp_path)
    assert data["state"] == "cancelled"
    assert {t["state"] for t in data["tasks"]} == {"cancelled"}


# Touches $0, then holds its core until $1 exists (a minute at most).
HOLD = 'touch "$0"; i=0; while [ ! -e "$1" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done'


@pytest.mark.slow
def test_progress_lines_count_the_tasks_running_now(tmp_path: Path) -> None:
    """The running count of the plain progress lines is the tasks running at that moment.

    ``first`` ends, then ``b`` and ``c`` start and hold their cores: no task ends while
    they run, so a count sent when ``first`` ended said ``0 running`` all along.
    """
    release = tmp_path / "release"
    started = {t: tmp_path / f"started-{t}" for t in ("b", "c")}
    workflow = tmp_path / "hold.yaml"
    workflow.write_text(
        "name: hold\ntasks:\n  - {id: first, command: ['true']}\n"
        + "".join(
            f"  - {{id: {t}, after: [first], resources: {{cpus: 1}}, "
            f"command: [sh, -c, {json.dumps(HOLD)}, {json.dumps(str(marker))}, "
            f"{json.dumps(str(release))}]}}\n"
            for t, marker in started.items()
        )
    )
    log = tmp_path / "stderr.log"
    with log.open("w") as stderr:  # not a terminal: the plain lines
        driver = subprocess.Popen(
            [str(HPCORCH), "run", str(workflow), "--run-dir", str(tmp_path / "run")],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        wait_for(lambda: all(m.exists() for m in started.values()), 120, "b and c to start")
        # A line is written at most every 5 s, when something changed.
        wait_for(
            lambda: "1/3 done, 0 failed, 2 running" in log.read_text(),
            30,
            "a progress line saying b and c run",
        )
        assert all(m.exists() for m in started.values()) and not release.exists()
    finally:
        release.touch()
        code = driver.wait(timeout=120)
    assert code == 0, log.read_text()
    assert "3/3 done, 0 failed, 0 running" in log.read_text()
