"""The CLI sorts errors into exit codes in one place (:func:`hpcorch.cli.main.classify`)."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from hpcorch.cli.main import classify, cli
from hpcorch.errors import JournalError, RunError, WorkflowError


def _raised(exc: BaseException, cause: BaseException | None = None) -> BaseException:
    try:
        try:
            if cause is not None:
                raise cause
        except BaseException as inner:
            raise exc from inner
        raise exc
    except BaseException as caught:
        return caught


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EDQUOT, "Disk quota exceeded"),
        sqlite3.OperationalError("database or disk is full"),
        _raised(JournalError("journal writer failed"), sqlite3.OperationalError("disk is full")),
        _raised(RunError("run failed"), OSError(errno.ENOSPC, "No space left on device")),
    ],
)
def test_a_full_disk_is_infrastructure(exc: BaseException) -> None:
    error = classify(exc)
    assert error is not None and error.exit_code == 3 and "resume" in str(error)


def test_damaged_journal_is_bad_input_and_bugs_keep_their_traceback() -> None:
    error = classify(sqlite3.OperationalError("no such table: tasks"))
    assert error is not None and error.exit_code == 2
    assert classify(sqlite3.DatabaseError("file is not a database")).exit_code == 2  # type: ignore[union-attr]
    assert classify(WorkflowError("x")).exit_code == 2  # type: ignore[union-attr]
    assert classify(RuntimeError("a bug")) is None
    assert classify(RecursionError()) is None


def test_full_disk_after_tasks_ran_exits_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the journal writer reports when the disk fills mid-run (reproduced on a
    2 MiB tmpfs) reaches the user as exit 3, one line, not as bad input."""
    monkeypatch.setenv("HPCORCH_HOME", str(tmp_path / "home"))
    wf = tmp_path / "wf.yaml"
    wf.write_text("tasks:\n  - {id: a, command: ['true']}\n")

    def full(*args: object, **kwargs: object) -> None:
        cause = sqlite3.OperationalError("database or disk is full")
        raise JournalError("journal.sqlite: journal writer failed: disk is full") from cause

    monkeypatch.setattr("hpcorch.engine.run_workflow", full)
    result = CliRunner().invoke(cli, ["run", str(wf), "--site", "local"])
    assert result.exit_code == 3, result.output
    assert result.stderr.count("\n") == 1 and "no space left" in result.stderr


def test_usage_errors_are_one_line() -> None:
    result = CliRunner().invoke(cli, ["logs", "r1"])
    assert result.exit_code == 2
    assert result.stderr == ("hpcorch: error: Missing argument 'TASK'. (see 'cli logs --help')\n")
