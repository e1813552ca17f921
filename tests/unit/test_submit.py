"""The driver job of `hpcorch submit` is a pure rendering: compare it with a stored file."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcorch.errors import SpecError
from hpcorch.sites import load_site
from hpcorch.slurm.script import render_sbatch
from hpcorch.submit import driver_request, requeue_after_s, submit_driver

EXPECTED = Path(__file__).parent / "expected" / "driver-job.sh"


def test_driver_job_script_matches_the_stored_one(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir("/")
    request = driver_request(
        Path("/work/wf.yaml"),
        load_site("dev"),
        Path("/work/runs/demo-1"),
        "demo-1",
        walltime_s=3600,
        partition="gpu",
        hpcorch=("/venv/bin/hpcorch",),
    )
    text = render_sbatch(request)
    assert text == EXPECTED.read_text()
    assert request.requeue is True and request.cpus_per_task == 1


def test_requeue_leaves_a_margin_before_the_walltime() -> None:
    assert requeue_after_s(24 * 3600) == 24 * 3600 - 120
    assert requeue_after_s(60) == 45  # a quarter of short walltimes
    assert requeue_after_s(0.5) >= 1


def _no_submit(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(site: object) -> None:
        raise AssertionError("bad input reached Slurm")

    monkeypatch.setattr("hpcorch.slurm.connect.connect", refuse)


def test_submit_refuses_a_directory_that_holds_a_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_submit(monkeypatch)
    wf = tmp_path / "wf.yaml"
    wf.write_text("tasks:\n  - {id: a, command: ['true']}\n")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "journal.sqlite").write_bytes(b"")
    with pytest.raises(SpecError, match="hpcorch resume"):
        submit_driver(wf, load_site("dev"), run_dir=tmp_path / "run")


def test_submit_from_a_directory_no_directive_can_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--chdir is the submitting shell's directory: spaces are quoted, a newline refused."""
    _no_submit(monkeypatch)
    odd = tmp_path / 'it"s\nhere'
    odd.mkdir()
    wf = tmp_path / "wf.yaml"
    wf.write_text("tasks:\n  - {id: a, command: ['true']}\n")
    monkeypatch.chdir(odd)
    with pytest.raises(SpecError, match="single lines"):
        submit_driver(wf, load_site("dev"), run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    spaced = tmp_path / "with space"
    spaced.mkdir()
    monkeypatch.chdir(spaced)
    request = driver_request(wf, load_site("dev"), tmp_path / "run", "r", walltime_s=60)
    assert f'#SBATCH --chdir="{spaced}"' in render_sbatch(request)
