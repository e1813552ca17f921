"""Completed Dask futures, delivered to the driver in batches.

``distributed.as_completed`` schedules one cross-thread callback per future
(a self-pipe write each, about 0.1 ms here), which at 20,000 tasks costs the
scheduler's event loop seconds. This tracker hands the loop one callback per
submitted batch and waits on each future's state there, as
``distributed.wait`` does; the driver thread takes whatever has finished.
Results are never fetched.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Iterable
from typing import Any

__all__ = ["Completions"]


class Completions:
    """Futures in flight; :meth:`next_batch` returns those that ended (done, erred, cancelled)."""

    def __init__(self, loop: Any) -> None:
        self._loop = loop
        self._done: collections.deque[Any] = collections.deque()
        self._cond = threading.Condition()
        self._pending = 0

    def add(self, futures: Iterable[Any]) -> None:
        batch = list(futures)
        if not batch:
            return
        with self._cond:
            self._pending += len(batch)
        self._loop.add_callback(self._track, batch)

    async def _track(self, futures: list[Any]) -> None:
        await asyncio.gather(*(self._one(f) for f in futures))

    async def _one(self, future: Any) -> None:
        # The same wait distributed.wait uses; it ends on finish, error or cancel.
        await future._state.wait()
        with self._cond:
            self._done.append(future)
            self._cond.notify()

    def count(self) -> int:
        """Futures not yet returned by :meth:`next_batch`."""
        with self._cond:
            return self._pending

    def next_batch(self, timeout: float | None = None) -> list[Any]:
        """Wait for at least one completion (unless none is pending) and return all there are."""
        with self._cond:
            if not self._done and self._pending:
                self._cond.wait_for(lambda: bool(self._done), timeout)
            batch = list(self._done)
            self._done.clear()
            self._pending -= len(batch)
            return batch

    def wake(self) -> None:
        """Make a waiting :meth:`next_batch` return (possibly empty), e.g. to notice a cancel."""
        with self._cond:
            self._cond.notify_all()
