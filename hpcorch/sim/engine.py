"""The discrete-event core: one heap of ``(time, seq, kind, payload)`` tuples.

Components register a handler and get back a small integer ``kind``; the loop
pops events in time order (``seq`` breaks ties in scheduling order, so equal
times are deterministic) and calls ``handlers[kind](payload)``. Events are
tuples, not objects, because a million-task run pushes millions of them.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from typing import Any

__all__ = ["EventLoop"]

Handler = Callable[[Any], None]


class EventLoop:
    """A simulated clock and the events scheduled on it."""

    __slots__ = ("_counter", "_handlers", "_heap", "events", "now")

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.events = 0
        self._heap: list[tuple[float, int, int, Any]] = []
        self._counter = itertools.count()
        self._handlers: list[Handler] = []

    def register(self, handler: Handler) -> int:
        """Add a handler; the returned kind schedules events for it."""
        self._handlers.append(handler)
        return len(self._handlers) - 1

    def at(self, time: float, kind: int, payload: Any = None) -> None:
        """Schedule ``handlers[kind](payload)`` at ``time`` (never before now)."""
        heapq.heappush(self._heap, (max(time, self.now), next(self._counter), kind, payload))

    def after(self, delay: float, kind: int, payload: Any = None) -> None:
        self.at(self.now + delay, kind, payload)

    @property
    def pending(self) -> int:
        return len(self._heap)

    def run(self, until: float = math.inf) -> None:
        """Process events in time order until none are left or the next is after ``until``."""
        heap = self._heap
        handlers = self._handlers
        pop = heapq.heappop
        n = 0
        try:
            while heap and heap[0][0] <= until:
                time, _, kind, payload = pop(heap)
                self.now = time
                n += 1
                handlers[kind](payload)
        finally:
            self.events += n
        if until != math.inf and self.now < until:
            self.now = until
