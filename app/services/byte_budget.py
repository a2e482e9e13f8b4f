"""One API process's budget of encoded image bytes held by uploads while they wait to be hashed.

Each upload is bounded on its own (``max_pending_bytes`` waiting, up to twice that in the
hash workers), but N concurrent uploads could still hold N times that. With a shared budget
an upload that finds the process over it first hashes what it holds itself (so it holds
nothing), then waits, reading no more of its body (TCP pushes back on the client), until
others have been hashed. Waiting rather than refusing at once keeps bursts of ordinary
uploads succeeding; the wait is bounded (``upload_budget_wait_s``), after which the upload is
answered 503 with Retry-After. An upload that holds nothing never waits on one that waits,
so waits cannot form a cycle; one file larger than the whole budget is let through alone.
"""

from __future__ import annotations

import asyncio
import threading
import time


class ByteBudget:
    """Bytes taken and given back from any thread; waited on from the event loop."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()
        #: Event-loop waiters, woken (thread-safely) whenever bytes are given back.
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    @property
    def used(self) -> int:
        return self._used

    @property
    def over(self) -> bool:
        return self._used > self.limit

    def take(self, size: int) -> None:
        """Count ``size`` bytes as held (never blocks: the bytes are already in memory)."""
        with self._lock:
            self._used += size

    def give(self, size: int) -> None:
        if size <= 0:
            return
        with self._lock:
            self._used -= size
            waiters = list(self._waiters)
        for loop, event in waiters:
            loop.call_soon_threadsafe(event.set)

    async def wait_for_room(self, timeout_s: float) -> bool:
        """Wait until the process is within its budget; False if it still is not after
        ``timeout_s``. Call it holding nothing (see the module docstring)."""
        if not self.over:
            return True
        event = asyncio.Event()
        waiter = (asyncio.get_running_loop(), event)
        deadline = time.monotonic() + timeout_s
        with self._lock:
            self._waiters.add(waiter)
        try:
            while self.over:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                event.clear()
                try:
                    await asyncio.wait_for(event.wait(), left)
                except TimeoutError:
                    return not self.over
            return True
        finally:
            with self._lock:
                self._waiters.discard(waiter)
