"""The audit report of a development set, as a person would see it:

    .venv/bin/python bench/report_devset.py [DEVSET] [OUT_DIR]

Registers DEVSET/real (default ../shared/data/devsets/lung-window), matches DEVSET/generated,
classifies with the default method, and writes both reports, evaluated against
DEVSET/labels.csv, to OUT_DIR (default /tmp/memaudit-report-<devset>) with full-page
screenshots from headless Chromium. Prints the figures the pages show.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.config import Settings  # noqa: E402
from app.main import create_app  # noqa: E402
from app.services.audit_report import evaluate, parse_labels  # noqa: E402

CHROMIUM = "/usr/bin/chromium"


def upload(folder: Path) -> list:
    return [("files", (p.name, p.read_bytes(), "image/png")) for p in sorted(folder.glob("*.png"))]


def screenshot(pages: dict[str, Path]) -> None:
    """A full-page PNG beside each HTML file, from headless Chromium with no network."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        for html in pages.values():
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("console", lambda m, errors=errors: m.type == "error" and errors.append(m.text))
            page.goto(html.as_uri(), wait_until="load")
            broken = page.eval_on_selector_all("img", "i => i.filter(x => !x.naturalWidth).length")
            page.screenshot(path=html.with_suffix(".png"), full_page=True)
            print(
                f"  {html.with_suffix('.png')}  (console errors {len(errors)}, "
                f"broken images {broken})"
            )
            page.close()
        browser.close()


def print_evaluation(title: str, names, predicted, scores, labels, score_name: str) -> None:
    e = evaluate(names, predicted, scores, labels, score_name)
    m = e.metrics
    print(
        f"{title}: F1 {m['f1']:.3f} (all-used {e.baselines['all_used']:.3f}, chance "
        f"{e.baselines['chance']:.3f}), accuracy {m['accuracy']:.3f}, precision "
        f"{m['precision']:.3f}, recall {m['recall']:.3f}, specificity {m['specificity']:.3f}, "
        f"kappa {m['kappa']:.3f}, ROC AUC {e.auc:.3f}, TPR@1%FPR {e.tpr_at_fpr['1%']:.3f}, "
        f"TPR@0.1%FPR {e.tpr_at_fpr['0.1%']:.3f}; TP/FP/TN/FN {m['tp']}/{m['fp']}/{m['tn']}/"
        f"{m['fn']} over {e.labelled} labelled"
    )


def main() -> int:
    devset = Path(
        sys.argv[1] if len(sys.argv) > 1 else ROOT.parent / "shared/data/devsets/lung-window"
    )
    out = Path(
        sys.argv[2] if len(sys.argv) > 2 else f"/tmp/memaudit-report-{devset.name}"
    ).resolve()
    out.mkdir(parents=True, exist_ok=True)
    labels_csv = (devset / "labels.csv").read_bytes()
    labels = parse_labels(labels_csv)
    tmp = Path(tempfile.mkdtemp())
    settings = Settings(data_dir=tmp, database_url=f"sqlite:///{tmp / 'report.db'}")
    pages = {"match": out / "match-report.html", "classify": out / "classify-report.html"}
    with TestClient(create_app(settings)) as client:
        t0 = time.perf_counter()
        real_set = (
            client.post(
                "/real-sets",
                data={"name": devset.name, "hash_size": "16"},
                files=upload(devset / "real"),
            )
            .raise_for_status()
            .json()
        )
        batch = (
            client.post(
                "/match",
                data={"real_set_id": str(real_set["id"])},
                files=upload(devset / "generated"),
            )
            .raise_for_status()
            .json()
        )
        t1 = time.perf_counter()
        classification = (
            client.post(
                "/classify",
                data={"real_set_id": str(real_set["id"]), "batch_id": str(batch["batch_id"])},
            )
            .raise_for_status()
            .json()
        )
        t2 = time.perf_counter()
        files = {"labels": ("labels.csv", labels_csv, "text/csv")}
        for kind, path, ident in [
            ("match", pages["match"], batch["batch_id"]),
            ("classify", pages["classify"], classification["classification_id"]),
        ]:
            started = time.perf_counter()
            response = client.post(f"/{kind}/{ident}/report?form=false", files=files)
            path.write_text(response.raise_for_status().text, encoding="utf-8")
            print(
                f"{kind} report: {path} ({len(response.content) // 1024} KiB, "
                f"{time.perf_counter() - started:.2f} s)"
            )
    print(f"register + match {t1 - t0:.1f} s, classify {t2 - t1:.1f} s")

    summary = batch["real_summary"]
    used = sum(r["verdict"] == "used" for r in summary)
    print(
        f"match batch {batch['batch_id']}: {batch['generated_count']} generated, "
        f"{batch['matched_count']} called copies of {used} real images, "
        f"{len(summary) - used} real unused; threshold {batch['threshold']} "
        f"({batch['threshold_source']}): {batch['threshold_reason']}"
    )
    distances = np.array([m["distance"] for m in batch["matches"]])
    print(
        f"  nearest distance of generated images: median {int(np.median(distances))}, "
        f"{int((distances <= batch['threshold']).sum())} at or below the threshold"
    )
    beyond = batch["hash_size"] ** 2 + 1
    print_evaluation(
        "  /match verdicts vs labels",
        [r["filename"] for r in summary],
        np.array([r["verdict"] == "used" for r in summary]),
        np.array(
            [-(r["min_distance"] if r["min_distance"] is not None else beyond) for r in summary]
        ),
        labels,
        "distance",
    )
    results = classification["results"]
    print(
        f"classification {classification['classification_id']} ({classification['method']}): "
        f"{classification['used_count']} of {classification['real_count']} labelled used at "
        f"threshold {classification['threshold']:g}"
    )
    print_evaluation(
        "  /classify labels vs truth",
        [r["filename"] for r in results],
        np.array([r["label"] == "used" for r in results]),
        np.array([r["score"] for r in results]),
        labels,
        "score",
    )
    print("screenshots:")
    screenshot(pages)
    return 0


if __name__ == "__main__":
    sys.exit(main())
