"""The audit report pages: what they say, that names stay text, and the metrics with labels.

Through the real app (SQLite and PostgreSQL) and the service functions; the page in a real
browser is tests/test_report_browser.py.
"""

from __future__ import annotations

import csv
import html
import io
import re
from html.parser import HTMLParser

import imagehash
import numpy as np
import pytest
from PIL import Image

from app.cli import main as cli_main
from app.evaluation import binary_metrics, roc_auc
from app.services.audit_report import align_labels, parse_labels
from app.services.errors import InvalidInput
from app.services.report_html import MatchReportView, nice_ticks, render_match_report
from tests.helpers import file_parts, raw_multipart, register
from tests.reportdata import (
    COPIES,
    HOSTILE_GENERATED,
    HOSTILE_REAL,
    NOVEL,
    USED,
    audit_images,
)


class PageScan(HTMLParser):
    """The elements, attributes and text of a page, as a browser's parser sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def count(self, tag: str, **attrs) -> int:
        return sum(
            1
            for t, a in self.tags
            if t == tag and all(a.get(k, "").split().count(v) for k, v in attrs.items())
        )


def scan(page: str) -> PageScan:
    parser = PageScan()
    parser.feed(page)
    return parser


def metric(page: str, name: str) -> str:
    found = re.search(rf"<tr><th>{re.escape(name)}</th><td class='num'>([^<]*)</td>", page)
    assert found, name
    return found.group(1)


@pytest.fixture
def audit(client):
    """A registered set and a matched batch with copies of the used images, and labels."""
    real, generated, labels = audit_images()
    real_set = register(client, real, name="<b>candidates</b>")
    batch = client.post(
        "/match", data={"real_set_id": str(real_set["id"])}, files=file_parts(generated)
    ).json()
    return real_set, batch, labels


def classify(client, real_set: dict, batch: dict) -> dict:
    """The default method on the audit's set and batch."""
    response = client.post(
        "/classify", data={"real_set_id": str(real_set["id"]), "batch_id": str(batch["batch_id"])}
    )
    assert response.status_code == 200, response.text
    return response.json()


def assert_names_are_text(page: str) -> None:
    """The hostile names arrive as text only: no element or attribute they could create."""
    parsed = scan(page)
    assert HOSTILE_REAL in "".join(parsed.text)
    assert parsed.count("script") == 0
    assert parsed.count("img", src="x") == 0
    assert not any("onerror" in attrs or "onload" in attrs for _tag, attrs in parsed.tags)
    assert "<img src=x" not in page and "<svg onload" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;.png" in page


def test_match_report_page(client, audit):
    _real_set, batch, _labels = audit
    response = client.get(f"/match/{batch['batch_id']}/report")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "script-src" not in response.headers["content-security-policy"]  # none allowed
    assert "default-src 'none'" in response.headers["content-security-policy"]
    page = response.text
    parsed = scan(page)
    assert_names_are_text(page)
    assert "&lt;b&gt;candidates&lt;/b&gt;" in page
    # Summary first: counts, and the threshold with the batch's own reason in words.
    assert page.index("id='summary'") < page.index("id='distribution'") < page.index("id='gallery'")
    assert f"{COPIES} generated images are within {batch['threshold']} bits" in page
    assert batch["threshold_reason"].replace("'", "&#x27;") in page
    assert "among the real images themselves" in page
    # The histogram of nearest distances against the null, with the threshold marked.
    assert parsed.count("svg", **{"class": "histogram"}) == 1
    assert parsed.count("line", **{"class": "threshold"}) == 1
    assert "real → nearest other real (null) (n=17)" in page
    # The gallery: every copy and the near misses, generated | real, all as data URIs.
    # Copies by pHash, and those the copy-detection embedding adds (copy_of).
    called = sum(1 for m in batch["matches"] if m["source"] is not None or m["copy_of"])
    assert called >= COPIES and parsed.count("figure", **{"class": "positive"}) == called
    assert parsed.count("figure", **{"class": "pair"}) == COPIES + NOVEL
    images = [attrs for tag, attrs in parsed.tags if tag == "img"]
    assert len(images) == 2 * (COPIES + NOVEL)
    assert all(a["src"].startswith("data:image/png;base64,") for a in images)
    assert html.escape(HOSTILE_GENERATED) in page
    assert page.count("thumbnail NCC") == COPIES + NOVEL
    # The per-real table lists every real image; a page to save has no form to post.
    assert page.count("<tr class='used") == USED
    assert parsed.count("form") == 1
    assert scan(client.get(f"/match/{batch['batch_id']}/report?form=false").text).count("form") == 0
    assert client.get("/match/999/report").status_code == 404


def test_match_report_with_labels(client, audit):
    _real_set, batch, labels = audit
    labels += "ghost.png,1,\n"
    response = client.post(
        f"/match/{batch['batch_id']}/report",
        files={"labels": ("labels.csv", labels.encode(), "text/csv")},
    )

    assert response.status_code == 200, response.text
    page = response.text
    assert_names_are_text(page)
    # The verdicts of real_summary are the predictions; min_distance ranks the ROC.
    summary = client.get(f"/match/{batch['batch_id']}").json()["real_summary"]
    truth = np.array([r["filename"].startswith(("used", "<img")) for r in summary])
    predicted = np.array([r["verdict"] == "used" for r in summary])
    expected = binary_metrics(truth, predicted)
    auc = roc_auc(truth, -np.array([r["min_distance"] for r in summary], float))
    assert metric(page, "F1") == f"{expected['f1']:.3f}"
    assert metric(page, "ROC AUC") == f"{auc:.3f}"
    assert metric(page, "F1 if every image is called used") == f"{2 * 9 / 17 / (1 + 9 / 17):.3f}"
    assert metric(page, "F1 of random guesses at this prevalence") == f"{9 / 17:.3f}"
    assert "1 label names no real image of this report and was ignored: ghost.png" in page
    parsed = scan(page)
    assert parsed.count("svg", **{"class": "roc"}) == 1
    assert parsed.count("polyline", **{"class": "roc"}) == 1
    assert ">false-positive rate (unused called used)<" in page


def test_report_labels_errors(client, audit):
    _real_set, batch, _labels = audit
    url = f"/match/{batch['batch_id']}/report"

    def post(text: bytes, field: str = "labels"):
        return client.post(url, files={field: ("labels.csv", text, "text/csv")})

    assert post(b"name,label\na.png,1\n").status_code == 422
    assert "real,used" in post(b"name,label\na.png,1\n").json()["detail"]
    assert "line 3" in post(b"real,used\nused_000.png,1\nused_001.png,maybe\n").json()["detail"]
    assert "none of the 1 labelled" in post(b"real,used\nother.png,1\n").json()["detail"]
    assert post(b"real,used\n\xff\xfe,1\n").status_code == 422
    assert post(b"real,used\nx,1\n", field="files").status_code == 422
    assert client.post(url, files={"other": ("o.txt", b"", "text/plain")}).status_code == 422
    body, end, headers = raw_multipart([("note", None, b"no file here")])
    no_labels = client.post(url, content=body + end, headers=headers)
    assert no_labels.status_code == 422 and "no labels" in no_labels.json()["detail"]
    assert client.post(url, data={"labels": "real,used"}).status_code == 415
    gone = client.post(
        "/classify/999/report",
        files={"labels": ("l.csv", b"real,used\na,1\n", "text/csv")},
    )
    assert gone.status_code == 404


def test_classification_report(client, audit):
    real_set, batch, labels = audit
    classification = classify(client, real_set, batch)
    cid = classification["classification_id"]
    page = client.get(f"/classify/{cid}/report").text
    parsed = scan(page)

    assert_names_are_text(page)
    assert f"Method <strong>{classification['method']}</strong>" in page
    assert classification["threshold_reason"].replace("'", "&#x27;") in page
    assert parsed.count("svg", **{"class": "histogram"}) == 1
    assert parsed.count("line", **{"class": "threshold"}) == 1
    used = classification["used_count"]
    assert used >= USED - 1  # the reference auditor finds the copies
    # Each used real image beside its most similar generated image of the linked batch.
    assert parsed.count("figure", **{"class": "positive"}) == used
    images = [a for t, a in parsed.tags if t == "img"]
    assert len(images) == 2 * used
    assert all(a["src"].startswith("data:image/png;base64,") for a in images)
    assert page.count("copy evidence") >= used  # the components as evidence
    assert f"match batch {batch['batch_id']}" in page
    # Each card shows the generated image the verdict names first, with its figures.
    named = [r for r in classification["results"] if r["label"] == "used" and r["evidence"]]
    assert named
    for result in named:
        pair = (
            f"<span class='name'>{html.escape(result['filename'])}</span> → "
            f"<span class='name'>{html.escape(result['evidence'][0]['generated'])}</span>"
        )
        assert pair in page, pair
    assert page.count("<dt>embedding similarity</dt>") >= len(named)

    with_labels = client.post(
        f"/classify/{cid}/report", files={"labels": ("labels.csv", labels, "text/csv")}
    ).text
    results = classification["results"]
    truth = np.array([r["filename"].startswith(("used", "<img")) for r in results])
    scores = np.array([r["score"] for r in results])
    expected = binary_metrics(truth, np.array([r["label"] == "used" for r in results]))
    assert metric(with_labels, "F1") == f"{expected['f1']:.3f}"
    assert metric(with_labels, "ROC AUC") == f"{roc_auc(truth, scores):.3f}"
    assert "truly used (labels) (n=9)" in with_labels
    assert scan(with_labels).count("svg", **{"class": "roc"}) == 1


def test_hash_only_set_shows_why_there_are_no_pixels(client):
    real, generated, _labels = audit_images()
    # What a pipeline would send: imagehash's own hex, computed outside the service.
    lines = "".join(
        f"{name},{imagehash.phash(Image.open(io.BytesIO(data)), 16)}\n"
        for name, data in real.items()
        if "," not in name
    )
    created = client.post(
        "/real-sets",
        data={"name": "hashes", "hash_size": "16"},
        files=[("hashes", ("h.csv", lines.encode(), "text/csv"))],
    )
    assert created.status_code == 201, created.text
    batch = client.post(
        "/match", data={"real_set_id": str(created.json()["id"])}, files=file_parts(generated)
    ).json()
    page = client.get(f"/match/{batch['batch_id']}/report").text
    parsed = scan(page)

    # The real side of every card says why it is empty; the generated side has its pixels.
    images = [a for t, a in parsed.tags if t == "img"]
    assert len(images) == parsed.count("figure", **{"class": "pair"}) == COPIES + NOVEL
    assert parsed.count("div", **{"class": "placeholder"}) == len(images)
    assert page.count(">registered by hash only: no pixels were uploaded<") == len(images)
    # The null comes from the hashes alone.
    assert "real → nearest other real (null) (n=17)" in page


def test_report_cli_writes_the_served_page_offline(client, audit, settings, tmp_path):
    real_set, batch, labels = audit
    classification = classify(client, real_set, batch)
    labels_file = tmp_path / "labels.csv"
    labels_file.write_text(labels)
    data = ["--db", settings.effective_database_url, "--data-dir", str(settings.data_dir)]
    out = tmp_path / "match.html"

    assert cli_main(["report", "--match", str(batch["batch_id"]), *data, "--out", str(out)]) == 0
    served = client.get(f"/match/{batch['batch_id']}/report", params={"form": "false"}).text
    assert out.read_text() == served

    out = tmp_path / "classify.html"
    cid = str(classification["classification_id"])
    args = ["report", "--classify", cid, *data, "--labels", str(labels_file), "--out", str(out)]
    assert cli_main(args) == 0
    served = client.post(
        f"/classify/{cid}/report",
        params={"form": "false"},
        files={"labels": ("labels.csv", labels, "text/csv")},
    ).text
    assert out.read_text() == served
    with pytest.raises(SystemExit, match="does not exist"):
        cli_main(["report", "--match", "999", *data, "--out", str(tmp_path / "x.html")])


def test_parse_and_align_labels():
    text = "\ufeffreal,used,memorized\nreal_0000.png,1,1\nreal_0001.png,0,\nreal_0002.png,,\n"
    assert parse_labels(text.encode()) == {"real_0000.png": True, "real_0001.png": False}
    assert parse_labels(b"Real , USED\n a.png , yes \n") == {"a.png": True}
    for bad, words in [
        (b"", "header"),
        (b"real\na.png\n", "header"),
        (b"real,used\na.png,2\n", "line 2"),
        (b"real,used\na.png,1\na.png,0\n", "twice"),
        (b"real,used\n", "no row"),
    ]:
        with pytest.raises(InvalidInput, match=words):
            parse_labels(bad)

    labels = {"real_0000": True, "folder/real_0001.png": False, "x.png": True}
    truth, unknown = align_labels(["real_0000.png", "real_0001.png", "real_0002.png"], labels)
    assert truth == {"real_0000.png": True, "real_0001.png": False}
    assert unknown == ["x.png"]
    # A stem two labels share is ambiguous and matches neither.
    truth, _ = align_labels(["a.png"], {"a.jpg": True, "a.tif": False})
    assert truth == {}


def test_render_escapes_every_name_and_draws_the_plots():
    evil = "</script><img src=x onerror=alert(1)>.png"
    document = {
        "batch_id": 7,
        "real_set_id": 1,
        "real_set_name": "<script>alert('set')</script>",
        "real_set_revision": 1,
        "hash_kind": "phash",
        "hash_size": 16,
        "threshold": 40,
        "threshold_source": "request",
        "threshold_reason": "threshold given in the request <b>",
        "top_k": 1,
        "generated_count": 1,
        "matched_count": 1,
        "used_count": 1,
        "created_at": None,
        "matches": [
            {
                "generated": evil,
                "phash": "00",
                "source": evil,
                "distance": 3,
                "candidates": [{"filename": evil, "distance": 3}],
                "copy_of": {"inliers": 57, "embedding_similarity": 0.91},
            }
        ],
        "real_summary_scope": "all",
        "real_summary": [
            {
                "filename": evil,
                "matched_count": 1,
                "min_distance": 3,
                "closest_generated": evil,
                "verdict": "used",
            }
        ],
        "duplicates": [],
        "rejected": [],
    }
    from app.services.audit_report import copy_figures
    from app.services.report_html import EvidencePair, Picture

    pair = EvidencePair(
        evil,
        Picture(None, evil),
        evil,
        Picture(None, "registered by hash only"),
        "copy",
        True,
        [("distance", "3 bits"), *copy_figures(document["matches"][0])],
    )
    page = render_match_report(
        MatchReportView(document, np.array([60, 70, 80]), "", [pair], evil, None, True)
    )
    parsed = scan(page)

    assert parsed.count("script") == 0 and parsed.count("img") == 0
    assert "</script>" not in page and "<b>" not in page
    assert page.count("&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;.png") >= 6
    assert "&lt;script&gt;alert(&#x27;set&#x27;)&lt;/script&gt;" in page
    assert parsed.count("svg", **{"class": "histogram"}) == 1
    assert "<dt>inliers</dt><dd>57</dd>" in page
    assert "<dt>embedding similarity</dt><dd>0.910</dd>" in page


def test_ticks_are_round_and_cover_the_range():
    assert nice_ticks(0, 1, 6) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(0, 256, 8) == [0, 50, 100, 150, 200, 250]
    assert nice_ticks(3, 3) == [3]


def test_labels_csv_of_the_helpers_is_read_back():
    """The fixture's CSV quotes the hostile name; the parser must get it back whole."""
    _real, _generated, labels = audit_images()
    parsed = parse_labels(labels.encode())
    assert parsed[HOSTILE_REAL] is True and len(parsed) == USED + 8
    assert next(csv.reader(io.StringIO(labels))) == ["real", "used", "memorized"]


def test_copy_summary_names_the_rule_that_decided():
    """A verified batch is summarised by its keypoints, an embedding-decided one by its bar."""
    from app.services.report_html import copies_html

    def doc(decided_by: str) -> dict:
        copy = {"decided_by": decided_by, "verified_inliers": None}
        matches = [
            {"copy_of": {**copy, "real": "a.png", "verified_inliers": 25}},
            {"copy_of": {**copy, "real": "b.png", "verified_inliers": 19}},
            {"copy_of": None},
        ]
        if decided_by == "embedding":
            for m in matches[:2]:
                m["copy_of"]["verified_inliers"] = None
        return {"copy_rule": "the rule", "copy_threshold": 0.9, "matches": matches}

    verified = copies_html(doc("verified"))
    assert "2 generated images copy 2 real images" in verified
    assert "at least 19 SIFT keypoints agree" in verified and "0.900 or more" not in verified
    embedded = copies_html(doc("embedding"))
    assert "descriptor similarity 0.900 or more" in embedded and "SIFT" not in embedded
