"""One API process's budget of encoded image bytes held by uploads while they wait to be hashed.

Each upload is bounded on its own (``max_pending_bytes`` waiting, up to twice that in the
hash workers), but N concurrent uploads could still hold N times that. With a shared budget
an upload that finds the process over it first hashes what it holds itself (so it holds
nothing), then waits, reading no more of its body (TCP pushes back on the client), until
others have been hashed. Waiting rather than refusing at once keeps bursts of ordinary
uploads succeeding; the wait is bounded (``upload_budget_wait_s``), after which the upload is
answered 503 with Retry-After. An upload that holds nothing never waits on one that waits,
so waits cannot form a cycle; one file larger than the whole budget is let through alone.
A zip member is counted from its declared size *before* it is inflated (``take_if_fits``
checks and takes at once): counted only once read, six concurrent zips of 49 MB members each
inflated one while the process was within its budget (bench/bench_upload_memory.py).

Waiters are served first come, first served: while any upload waits, others join the line
when they next check (holding nothing), so a busy process cannot starve a waiting upload; an
upload let through goes on until the process is over its budget again.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable


class ByteBudget:
    """Bytes taken and given back from any thread; waited on from the event loop."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()
        #: Waiting uploads in arrival order, woken (thread-safely) whenever bytes are given
        #: back or the line moves.
        self._line: deque[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = deque()

    @property
    def used(self) -> int:
        return self._used

    @property
    def over(self) -> bool:
        return self._used > self.limit

    @property
    def has_line(self) -> bool:
        """Some upload is waiting for room (a newcomer should queue behind it)."""
        return bool(self._line)

    def fits(self, size: int) -> bool:
        """``size`` more bytes keep the process within its budget, or it holds nothing (one
        file larger than the whole budget goes through alone). ``fits(0)`` = not over."""
        used = self._used
        return used <= 0 or used + size <= self.limit

    def take_if_fits(self, size: int) -> bool:
        """Take ``size`` bytes if they :meth:`fit` (checked and taken at once, so two
        threads cannot both take the last room)."""
        with self._lock:
            return self._take_if_fits_locked(size)

    def _take_if_fits_locked(self, size: int) -> bool:
        if not self.fits(size):
            return False
        self._used += size
        return True

    def take(self, size: int) -> None:
        """Count ``size`` bytes as held (never blocks: the bytes are already in memory)."""
        with self._lock:
            self._used += size

    def give(self, size: int) -> None:
        if size <= 0:
            return
        with self._lock:
            self._used -= size
        self._wake_all()

    def _wake_all(self) -> None:
        with self._lock:
            waiters = list(self._line)
        for loop, event in waiters:
            loop.call_soon_threadsafe(event.set)

    def _admit(self, waiter: object | None, need: int) -> bool:
        """At the head of the line (``waiter`` None: no line at all) with room for ``need``
        more bytes: take them, checked and taken at once (the next in line, woken at the
        same moment, must not see the same room)."""
        with self._lock:
            first = self._line[0] is waiter if waiter is not None else not self._line
            return first and self._take_if_fits_locked(need)

    async def wait_for_room(
        self, timeout_s: float, give_up: Callable[[], bool] | None = None, need: int = 0
    ) -> bool:
        """Wait in line until the process has room for ``need`` more bytes (:meth:`fits`),
        then **take them** (the caller holds them and gives them back); False if this
        upload's turn has not come after ``timeout_s``, or (checked every second, keeping
        its place in line) once ``give_up()`` says so. Call it holding nothing (module
        docstring)."""
        if self._admit(None, need):
            return True
        event = asyncio.Event()
        waiter = (asyncio.get_running_loop(), event)
        deadline = time.monotonic() + timeout_s
        with self._lock:
            self._line.append(waiter)
        try:
            while not self._admit(waiter, need):
                left = deadline - time.monotonic()
                if left <= 0 or (give_up is not None and give_up()):
                    return False
                event.clear()
                try:
                    await asyncio.wait_for(event.wait(), left if give_up is None else min(left, 1))
                except TimeoutError:
                    if give_up is None:
                        return self._admit(waiter, need)
            return True
        finally:
            with self._lock:
                self._line.remove(waiter)
            self._wake_all()  # the next in line may go now
