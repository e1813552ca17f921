"""Per-attempt logs of function tasks: routed by thread, capped, 0600, tracebacks kept."""

from __future__ import annotations

import logging
import stat
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpcorch.engine import tasklog
from hpcorch.engine.worker import Payload, execute


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    yield
    tasklog.uninstall()


def _noisy(tag: str, fail: bool = False) -> str:
    print(f"print {tag}")
    print(f"stderr {tag}", file=sys.stderr)
    logging.getLogger("user.code").info("info %s", tag)
    logging.getLogger("user.code").warning("warn %s", tag)
    if fail:
        raise RuntimeError(f"boom {tag}")
    return tag


def test_capture_writes_both_streams_logging_and_traceback(tmp_path: Path) -> None:
    stem = tmp_path / "logs" / "t.1"
    with pytest.raises(RuntimeError), tasklog.capture(stem):
        _noisy("a", fail=True)
    out = (tmp_path / "logs" / "t.1.out").read_text()
    err = (tmp_path / "logs" / "t.1.err").read_text()
    assert out == "print a\n"
    assert "stderr a" in err
    assert "INFO user.code: info a" in err
    assert "WARNING user.code: warn a" in err
    assert "Traceback (most recent call last)" in err
    assert "RuntimeError: boom a" in err
    for name in ("t.1.out", "t.1.err"):
        assert stat.S_IMODE((tmp_path / "logs" / name).stat().st_mode) == 0o600


def test_a_silent_attempt_makes_no_file(tmp_path: Path) -> None:
    with tasklog.capture(tmp_path / "t.1"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_concurrent_attempts_each_get_their_own_output(tmp_path: Path) -> None:
    barrier = threading.Barrier(8)

    def attempt(i: int) -> None:
        with tasklog.capture(tmp_path / f"t{i}.1"):
            barrier.wait()  # all eight capture at once
            for k in range(200):
                print(f"task {i} line {k}")
                logging.getLogger("user").warning("task %d record %d", i, k)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(8):
        out = (tmp_path / f"t{i}.1.out").read_text().splitlines()
        err = (tmp_path / f"t{i}.1.err").read_text().splitlines()
        assert out == [f"task {i} line {k}" for k in range(200)]
        assert len(err) == 200
        assert all(f"task {i} record" in line for line in err)


def test_other_threads_still_write_to_the_process_streams(tmp_path: Path, capsys) -> None:
    tasklog.install()
    inside = threading.Event()
    done = threading.Event()

    def attempt() -> None:
        with tasklog.capture(tmp_path / "t.1"):
            inside.set()
            done.wait(5)
            print("captured")

    t = threading.Thread(target=attempt)
    t.start()
    inside.wait(5)
    print("not captured")
    done.set()
    t.join()
    assert "not captured" in capsys.readouterr().out
    assert (tmp_path / "t.1.out").read_text() == "captured\n"


def test_cap_is_stated_and_the_rest_dropped(tmp_path: Path) -> None:
    with pytest.raises(ValueError), tasklog.capture(tmp_path / "t.1", limit=1000):
        for k in range(100):
            print(f"line {k:04d} " + "x" * 20)
        print("late", file=sys.stderr)
        raise ValueError("after the cap")
    out = (tmp_path / "t.1.out").read_text()
    assert "reached the cap of 1000 bytes" in out
    assert "line 0099" not in out
    assert out.count("\n") < 40
    err = (tmp_path / "t.1.err").read_text()
    assert "late" not in err
    assert "ValueError: after the cap" in err  # the traceback is kept past the cap


def test_install_keeps_existing_root_handlers_at_their_level(tmp_path: Path) -> None:
    root = logging.getLogger()
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Keep()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    try:
        tasklog.install()
        logging.getLogger("other").info("quiet")
        logging.getLogger("other").warning("loud")
        assert seen == ["loud"]
        tasklog.uninstall()
        assert root.level == logging.WARNING and handler.level == logging.NOTSET
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def test_execute_logs_a_failing_function_per_attempt(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    for n in (1, 2):
        p = Payload(
            run_id="r",
            task_id="noisy",
            n=n,
            kind="function",
            target=_noisy,
            args=(f"try{n}", True),
            log_dir=str(logs),
        )
        with pytest.raises(RuntimeError):
            execute(p)
    for n in (1, 2):
        assert (logs / f"noisy.{n}.out").read_text() == f"print try{n}\n"
        err = (logs / f"noisy.{n}.err").read_text()
        assert f"warn try{n}" in err and f"RuntimeError: boom try{n}" in err
