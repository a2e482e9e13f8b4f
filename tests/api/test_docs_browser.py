"""/docs and /redoc render every operation in a real headless Chromium with no network route.

Hospital hosts are often offline; FastAPI's default pages then stay blank because their assets
come from a CDN. Here every request to another origin is aborted and fails the test.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.browser import chromium, offline_page, served_app

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture(scope="module")
def server_url(tmp_path_factory) -> Iterator[str]:
    with served_app(tmp_path_factory.mktemp("docs-server")) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


@pytest.fixture
def offline(browser, server_url):
    """A page whose requests to any origin other than the server's are aborted and logged."""
    with offline_page(browser, server_url) as page_and_log:
        yield page_and_log


def documented_operations(server_url: str) -> list[dict]:
    """Every path + method of the live /openapi.json, with its operationId."""
    schema = httpx.get(f"{server_url}/openapi.json", timeout=10).raise_for_status().json()
    operations = [
        {"method": method, "path": path, "operation_id": operation["operationId"]}
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]
    assert len(operations) >= 10  # the app's routers are all there
    return operations


def test_swagger_ui_renders_every_operation_offline(offline, server_url, tmp_path):
    page, log = offline
    expected = {(op["method"], op["path"]) for op in documented_operations(server_url)}

    page.goto(f"{server_url}/docs", wait_until="networkidle")
    assert log.external_requests == []  # before waiting: a CDN page would just stay blank
    page.wait_for_selector(".opblock", timeout=15_000)
    rendered = page.eval_on_selector_all(
        ".opblock",
        """blocks => blocks.map(block => [
            block.querySelector('.opblock-summary-method').textContent.trim().toLowerCase(),
            block.querySelector('.opblock-summary-path').getAttribute('data-path'),
        ])""",
    )
    page.screenshot(path=tmp_path / "docs.png", full_page=True)

    assert {tuple(pair) for pair in rendered} == expected
    assert page.locator(".swagger-ui .errors-wrapper").count() == 0  # no spec errors shown
    assert page.title() == "memaudit - Swagger UI"
    log.assert_clean()


def test_redoc_renders_every_operation_offline(offline, server_url, tmp_path):
    page, log = offline
    expected = {op["operation_id"] for op in documented_operations(server_url)}

    page.goto(f"{server_url}/redoc", wait_until="networkidle")
    assert log.external_requests == []  # before waiting: a CDN page would just stay blank
    page.wait_for_selector("[data-section-id*='operation/']", timeout=15_000)
    section_ids = page.eval_on_selector_all(
        "[data-section-id*='operation/']",
        "sections => sections.map(section => section.getAttribute('data-section-id'))",
    )
    menu_labels = page.locator("[role='menuitem'] .operation-type").count()
    page.screenshot(path=tmp_path / "redoc.png")

    assert {section_id.rsplit("operation/", 1)[1] for section_id in section_ids} == expected
    assert menu_labels >= len(expected)  # each operation listed in the side menu too
    assert page.title() == "memaudit - ReDoc"
    log.assert_clean()


@pytest.mark.parametrize("page_path", ["/docs", "/redoc"])
def test_pages_link_only_served_same_origin_assets(server_url, page_path):
    """Without a browser too: every asset a page links is a local path that the server serves."""
    html = httpx.get(f"{server_url}{page_path}", timeout=10).raise_for_status().text
    linked = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert len(linked) >= 2  # the bundle and the favicon at least
    for url in linked:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = httpx.get(f"{server_url}{url}", timeout=10)
        assert asset.status_code == 200 and asset.content, url
        assert b"cdn.redoc.ly" not in asset.content, url


def test_oauth2_redirect_page_is_served(server_url):
    response = httpx.get(f"{server_url}/docs/oauth2-redirect", timeout=10)
    assert response.status_code == 200
    assert "oauth2" in response.text.lower()
