"""tests.waiting.wait_for: the tests' one bounded poll."""

from __future__ import annotations

import itertools

import pytest

from tests.waiting import wait_for


def test_returns_the_first_truthy_value() -> None:
    answers = iter(["", "", "RUNNING"])
    assert wait_for(lambda: next(answers), 5, "a state", interval=0.01) == "RUNNING"


def test_fails_saying_what_it_waited_for_and_what_it_saw() -> None:
    calls = itertools.count()

    def never() -> list[str]:
        next(calls)
        return []

    with pytest.raises(AssertionError, match=r"waiting for job 7 to end; last seen: \[\]"):
        wait_for(never, 0.05, "job 7 to end", interval=0.01)
    assert next(calls) >= 2  # asked again at the deadline
