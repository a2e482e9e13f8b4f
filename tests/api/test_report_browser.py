"""The audit report pages in a real headless Chromium with no network route: every image
loads, the plots and the gallery are drawn, hostile file names stay text, nothing errors;
the labels form on the page posts a CSV and the metrics come back. Screenshots are written
under the test's tmp dir."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.cli import main as cli_main
from tests.browser import PageLog, chromium, offline_page, require_browser, served_app
from tests.reportdata import COPIES, HOSTILE_GENERATED, HOSTILE_REAL, audit_images

#: Set MEMAUDIT_REPORT_SCREENSHOT to copy the match report's screenshot there too.
SCREENSHOT_COPY_ENV = "MEMAUDIT_REPORT_SCREENSHOT"


@pytest.fixture(scope="module")
def audited_server(tmp_path_factory) -> Iterator[dict]:
    """A uvicorn server in a thread holding one audit: a set, a matched batch, a
    classification; yields their ids, the labels CSV and the server's URL."""
    require_browser()
    with served_app(tmp_path_factory.mktemp("report-server")) as url:
        real, generated, labels = audit_images()
        with httpx.Client(base_url=url, timeout=120) as client:
            real_set = client.post(
                "/real-sets",
                data={"name": "<b>candidates</b>", "hash_size": "16"},
                files=[("files", (n, d, "image/png")) for n, d in real.items()],
            ).raise_for_status()
            set_id = str(real_set.json()["id"])
            batch = client.post(
                "/match",
                data={"real_set_id": set_id},
                files=[("files", (n, d, "image/png")) for n, d in generated.items()],
            ).raise_for_status()
            batch_id = str(batch.json()["batch_id"])
            classification = client.post(
                "/classify", data={"real_set_id": set_id, "batch_id": batch_id}
            ).raise_for_status()
        yield {
            "url": url,
            "batch_id": batch_id,
            "classification_id": str(classification.json()["classification_id"]),
            "labels": labels,
        }


@pytest.fixture
def page_and_log(audited_server):
    """A Chromium page that may reach the server only."""
    with chromium() as browser, offline_page(browser, audited_server["url"]) as (page, log):
        yield page, log


def check_rendered(page, log: PageLog, shot: Path) -> dict:
    """What every report page must be: images loaded, plots drawn, names as text, clean."""
    page.wait_for_load_state("load")
    images = page.eval_on_selector_all(
        "img", "imgs => imgs.map(i => [i.complete, i.naturalWidth, i.src.slice(0, 22)])"
    )
    page.screenshot(path=shot, full_page=True)
    assert images, "no image on the page"
    assert all(complete and width > 0 for complete, width, _src in images), images
    assert {src for _c, _w, src in images} == {"data:image/png;base64,"}
    assert page.locator("svg.histogram line.threshold").count() == 1
    assert page.locator("#gallery figure.pair").count() >= 1
    assert page.locator("script").count() == 0
    assert page.locator("img[src='x']").count() == 0
    assert page.get_by_text(HOSTILE_REAL, exact=True).count() >= 1  # shown as text
    assert log.dialogs == []  # no alert() ran
    log.assert_clean()
    return {"images": len(images), "cards": page.locator("#gallery figure.pair").count()}


def submit_labels(page, labels: str) -> None:
    """Use the page's own form: choose the CSV, submit, wait for the answer page."""
    page.set_input_files(
        "form.labels input[name='labels']",
        files=[{"name": "labels.csv", "mimeType": "text/csv", "buffer": labels.encode()}],
    )
    with page.expect_navigation():
        page.click("form.labels button[type='submit']")


def test_match_report_in_a_browser(page_and_log, audited_server, tmp_path):
    page, log = page_and_log
    page.goto(f"{audited_server['url']}/match/{audited_server['batch_id']}/report")
    seen = check_rendered(page, log, tmp_path / "match-report.png")

    assert seen["cards"] >= COPIES
    assert page.get_by_text(HOSTILE_GENERATED, exact=True).count() >= 1
    batch = httpx.get(f"{audited_server['url']}/match/{audited_server['batch_id']}").json()
    called = sum(1 for m in batch["matches"] if m["source"] is not None or m["copy_of"])
    assert called >= COPIES and page.locator("#gallery figure.positive").count() == called
    assert page.locator("#real-images tbody tr").count() == 17
    assert page.locator("svg.roc").count() == 0

    submit_labels(page, audited_server["labels"])
    check_rendered(page, log, tmp_path / "match-report-labels.png")
    assert page.locator("svg.roc polyline.roc").count() == 1
    assert page.locator("#metrics table tr").count() >= 10
    copy_to = os.environ.get(SCREENSHOT_COPY_ENV)
    if copy_to:
        Path(copy_to).write_bytes((tmp_path / "match-report-labels.png").read_bytes())


def test_classification_report_in_a_browser(page_and_log, audited_server, tmp_path):
    page, log = page_and_log
    cid = audited_server["classification_id"]
    page.goto(f"{audited_server['url']}/classify/{cid}/report")
    seen = check_rendered(page, log, tmp_path / "classify-report.png")

    assert seen["cards"] >= 1 and seen["images"] == 2 * seen["cards"]
    assert page.locator("#gallery figure.positive").count() == seen["cards"]

    # The POST variant fetched by a client and loaded as content: the same checks hold.
    html = httpx.post(
        f"{audited_server['url']}/classify/{cid}/report",
        files={"labels": ("labels.csv", audited_server["labels"].encode(), "text/csv")},
        timeout=60,
    ).raise_for_status()
    page.set_content(html.text, wait_until="load")
    check_rendered(page, log, tmp_path / "classify-report-labels.png")
    assert page.locator("svg.roc polyline.roc").count() == 1
    assert page.get_by_text("truly used (labels) (n=9)").count() == 1


def test_report_cli_fetches_from_the_server(audited_server, tmp_path):
    out = tmp_path / "report.html"
    labels = tmp_path / "labels.csv"
    labels.write_text(audited_server["labels"])
    args = ["report", "--server", audited_server["url"], "--match", audited_server["batch_id"]]

    assert cli_main([*args, "--labels", str(labels), "--out", str(out)]) == 0
    text = out.read_text()
    assert "<form" not in text  # a saved page cannot post back
    assert "class='roc'" in text and HOSTILE_REAL not in text
    with pytest.raises(SystemExit, match="404"):
        cli_main(["report", "--server", audited_server["url"], "--match", "999", "--out", str(out)])
