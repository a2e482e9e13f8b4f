"""Front-door limits: what a client may cost before a route runs, and while it uploads.

uvicorn's default parser (httptools) has no limit on the request head: one 96 MiB header took
14 s of the event loop (the parser joins header pieces by concatenation, so the cost grows
with the square of the size) and stalled /health for 12.8 s. h11 caps the head at 16 KiB but
parses slower and still waits forever for a head that trickles in. So:

- :class:`LimitedHttpToolsProtocol` (httptools, what uvicorn picks by default) answers 431
  to a head over ``max_header_bytes`` or ``max_header_count`` headers, counted as the bytes
  arrive (never more than one network read past the limit is parsed), and 408 to a head not
  complete within ``header_timeout_s`` (a slowloris, or a connection that sends nothing).
- :class:`BodyTimeoutMiddleware` (ASGI) cuts off a request body that stalls for
  ``body_idle_timeout_s`` or, after that long, arrives slower than ``min_body_rate`` bytes/s
  on average: 408 with ``Connection: close``; the route unwinds as for a client that went
  away (its temporary files are removed, nothing is stored).

``memaudit serve`` (and the container, which runs it) uses both; the limits are settings
(app.config) documented in the README "Security" section.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.config import Settings, get_settings

log = logging.getLogger("memaudit.frontdoor")

#: Set in the scope of a job's replayed request (app.api.jobs): its body is a stored file,
#: not a client's, so it is not timed here nor counted as a request (app.api.metrics).
REPLAY_SCOPE_KEY = "memaudit.job"


@dataclass(frozen=True)
class HeadLimits:
    """Bounds on one request head (request line plus headers)."""

    max_bytes: int
    max_count: int
    timeout_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> HeadLimits:
        return cls(settings.max_header_bytes, settings.max_header_count, settings.header_timeout_s)


def _plain_response(status: int, reason: str, message: str) -> bytes:
    """A complete HTTP/1.1 answer that closes the connection (JSON like every other error)."""
    body = json.dumps({"detail": message}).encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounded request heads (size, count, time).

    Limits are read from the settings (the environment) when a connection is made, so the
    class can be named by import string and still work in every ``--workers`` process.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._head_limits = HeadLimits.from_settings(get_settings())
        #: Bytes received since the current request head began (while it is incomplete).
        self._head_bytes = 0
        self._head_count = 0
        self._in_head = True
        self._refused = False
        self._head_timer: asyncio.TimerHandle | None = None

    # --- head timer --------------------------------------------------------------------
    def _start_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(
                self._head_limits.timeout_s, self._head_timed_out
            )

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self._refuse(
                408,
                "Request Timeout",
                f"request head not received within {self._head_limits.timeout_s:g} s",
            )

    def _refuse(self, status: int, reason: str, message: str) -> None:
        """Answer (when no response of this connection is under way) and close."""
        self._refused = True
        self._stop_head_timer()
        log.info("refused a request head from %s: %s %s", self.client, status, message)
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(_plain_response(status, reason, message))
        self.transport.close()

    # --- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_timer()  # a connection that never sends a byte is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            self._start_head_timer()
        super().data_received(data)
        if self._in_head and not self._refused:
            # Still inside a head after this read: every byte of it belongs to the head.
            self._head_bytes += len(data)
            if self._head_bytes > self._head_limits.max_bytes:
                self._refuse(
                    431,
                    "Request Header Fields Too Large",
                    f"request head over {self._head_limits.max_bytes} bytes",
                )

    # --- parser callbacks ----------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._in_head = True
        self._head_count = 0
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_count += 1
        if self._head_count <= self._head_limits.max_count:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._stop_head_timer()
        if self._refused:
            return
        if self._head_count > self._head_limits.max_count:
            self._refuse(
                431,
                "Request Header Fields Too Large",
                f"{self._head_count} request headers, over the limit of "
                f"{self._head_limits.max_count}",
            )
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._in_head = True  # the next request's head starts with the next byte


@dataclass(frozen=True)
class BodyLimits:
    """How slowly a request body may arrive."""

    idle_timeout_s: float
    min_rate: float

    @classmethod
    def from_settings(cls, settings: Settings) -> BodyLimits:
        return cls(settings.body_idle_timeout_s, settings.min_body_rate)


class BodyTimeoutMiddleware:
    """Cut off request bodies that stall or trickle (uvicorn waits for them forever).

    Each ``receive()`` of a body that is not complete yet may wait at most
    ``idle_timeout_s``; once the request has waited that long for its body in all, the body's
    average rate over those waits must be at least ``min_rate`` bytes/s (time the app spends
    working between reads is not the client's, and is not counted). Either failure hands the
    app an ``http.disconnect`` (so it unwinds as for a client that went away) and answers 408
    with ``Connection: close`` in place of whatever the app answers then. Bodies that have
    ended, and waits for a disconnect after the body, are not timed.
    """

    def __init__(self, app: ASGIApp, limits: BodyLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or REPLAY_SCOPE_KEY in scope:  # a job reads a stored body
            await self.app(scope, receive, send)
            return
        limits = self.limits
        waited = 0.0  # seconds spent waiting for body bytes
        received = 0
        #: (seconds waited, bytes received) after each body message, back to the window's
        #: start: the rate is judged over the last window, not since the request began (a
        #: client that sent 64 MiB fast could otherwise trickle for hours).
        samples: deque[tuple[float, int]] = deque([(0.0, 0)])
        body_done = False
        timed_out: str | None = None
        response_started = False

        async def timed_receive() -> Message:
            nonlocal received, body_done, timed_out, waited
            if timed_out is not None:
                return {"type": "http.disconnect"}
            if body_done:
                return await receive()
            began = time.monotonic()
            try:
                message = await asyncio.wait_for(receive(), limits.idle_timeout_s)
            except TimeoutError:
                timed_out = f"no body bytes for {limits.idle_timeout_s:g} s"
                return _cut_off(timed_out)
            waited += time.monotonic() - began
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                samples.append((waited, received))
                window = limits.idle_timeout_s
                while len(samples) > 1 and samples[1][0] <= waited - window:
                    samples.popleft()  # samples[0] stays the last one at or before the start
                since, base = samples[0]
                if not body_done and waited >= window and since <= waited - window:
                    rate = (received - base) / (waited - since)
                    if rate < limits.min_rate:
                        timed_out = (
                            f"body arriving at {rate:.0f} bytes/s over the last "
                            f"{waited - since:.0f} s, under the minimum of {limits.min_rate:g}"
                        )
                        return _cut_off(timed_out)
            return message

        def _cut_off(reason: str) -> Message:
            log.info(
                "request body of %s %s cut off after %d bytes: %s (408)",
                scope.get("method"),
                scope.get("path"),
                received,
                reason,
            )
            return {"type": "http.disconnect"}

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if timed_out is not None and not response_started:
                return  # the 408 below answers instead
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        await self.app(scope, timed_receive, guarded_send)
        if timed_out is not None and not response_started:
            body = json.dumps(
                {"detail": f"request body too slow: {timed_out}; nothing was stored"}
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 408,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
