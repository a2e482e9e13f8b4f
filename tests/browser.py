"""Headless Chromium for the tests of what a person looks at (/docs, the reports): the app
served by a real uvicorn in a thread, pages that may reach that server only."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from app.config import Settings
from tests.serving import served_in_thread

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
BROWSER_SKIP_REASON = (
    f"headless browser test needs Debian's `chromium` at {CHROMIUM} and the `playwright` "
    "package (dev extra): `apt-get install chromium`; .ci/run installs it"
)


def require_browser() -> None:
    """Skip without Chromium or Playwright, but fail where CI says the browser must be there."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = True
    else:
        missing = not CHROMIUM.exists()
    if missing:
        if os.environ.get("MEMAUDIT_REQUIRE_BROWSER"):
            pytest.fail(BROWSER_SKIP_REASON)
        pytest.skip(BROWSER_SKIP_REASON)


@contextmanager
def served_app(data_dir: Path, **overrides) -> Iterator[str]:
    """A real uvicorn server for a fresh app (SQLite under ``data_dir``; ``overrides``: other
    settings) on a free loopback port, in a thread; yields its URL."""
    settings = Settings(
        data_dir=data_dir,
        database_url=f"sqlite:///{data_dir / 'memaudit.db'}",
        hash_workers=0,
        **overrides,
    )
    with served_in_thread(settings) as (host, port):
        yield f"http://{host}:{port}"


@contextmanager
def chromium() -> Iterator:
    """Debian's Chromium, headless, through Playwright."""
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class PageLog:
    """What a page did that the tests forbid: off-origin requests, errors, failed loads;
    and the dialogs it opened (a script injected through a file name would)."""

    external_requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    failed_responses: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        assert self.external_requests == [], "requests outside the server's origin"
        assert self.console_errors == [], "console errors"
        assert self.failed_responses == [], "same-origin requests that failed"
        assert self.dialogs == [], "dialogs opened"


@contextmanager
def offline_page(browser, server_url: str) -> Iterator[tuple[object, PageLog]]:
    """A page whose requests to any origin but the server's (data: URIs need no network)
    are aborted and logged, as on a machine with no route out."""
    origin = urlsplit(server_url)[:2]
    log = PageLog()
    context = browser.new_context(viewport={"width": 1280, "height": 900}, service_workers="block")

    def only_same_origin(route) -> None:
        url = route.request.url
        if urlsplit(url)[:2] == origin or url.startswith("data:"):
            route.continue_()
        else:
            log.external_requests.append(url)
            route.abort("internetdisconnected")

    context.route("**/*", only_same_origin)
    page = context.new_page()
    page.on("console", lambda msg: msg.type == "error" and log.console_errors.append(msg.text))
    page.on("pageerror", lambda error: log.console_errors.append(str(error)))
    page.on(
        "response",
        lambda response: (
            response.status >= 400
            and log.failed_responses.append(f"{response.status} {response.url}")
        ),
    )
    page.on("requestfailed", lambda request: log.failed_responses.append(request.url))
    page.on("dialog", lambda dialog: (log.dialogs.append(dialog.message), dialog.dismiss()))
    try:
        yield page, log
    finally:
        context.close()
