"""Request counts and latencies for /metrics, by route template (bounded label values)."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import metrics
from app.api.frontdoor import REPLAY_SCOPE_KEY


class RequestMetrics:
    """Pure ASGI middleware: counts each HTTP request by method, route template and status
    class, and observes its duration until the last byte of the answer is handed over."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or REPLAY_SCOPE_KEY in scope:  # a job's replay is no request
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before the answer started is answered 500 upstream

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            # The router puts the matched route in the scope; unmatched paths share one label
            # so a scan of random URLs cannot grow the label set.
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"] if route != "unmatched" else "other"
            metrics.REQUESTS.labels(method, route, f"{status // 100}xx").inc()
            metrics.REQUEST_SECONDS.labels(method, route).observe(time.perf_counter() - started)
