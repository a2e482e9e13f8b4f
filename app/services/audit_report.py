"""The audit report workflow: a stored match batch or classification, the evidence its page
shows, and, when a labels CSV comes with it, the Table-1 metrics.

Gathers what app.services.report_html renders: the document the JSON answer gives, the
real-vs-real null from the set's hashes (sampled as calibration samples it), small previews
decoded from the image store for the gallery only, thumbnail correlations, and the verdicts
scored against the labels. Nothing is stored.
"""

from __future__ import annotations

import base64
import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

import cv2
import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import GeneratedImage, RealImage, RealSet
from app.evaluation import baseline_f1, binary_metrics, roc_auc, tpr_at_fpr
from app.imaging.decode import ImageDecodeError, decode_grayscale
from app.imaging.features import THUMBNAIL_SIDE, normalise_thumbnails
from app.search.calibration import real_nn_distances
from app.services import batches
from app.services.classification import load_classification
from app.services.errors import InvalidInput
from app.services.report_html import (
    ClassificationReportView,
    Evaluation,
    EvidencePair,
    MatchReportView,
    Picture,
    fmt,
    pct,
    render_classification_report,
    render_match_report,
)
from app.services.set_hash_cache import SetHashCache
from app.storage import ImageStore

#: Largest labels CSV accepted (a million `name,1` lines fit).
MAX_LABELS_BYTES = 32 * 1024 * 1024
#: Longest side of a gallery preview, in pixels.
PREVIEW_SIDE = 128
#: Evidence pairs the gallery shows (each costs two ~10 KB previews in the page).
MAX_PAIRS = 48
#: Generated images just above the threshold shown after the copies, to judge the threshold.
MAX_NEAR_MISSES = 8
#: Largest batch whose thumbnails are correlated with the gallery's real images (10 MB).
MAX_CORRELATED_GENERATED = 10_000
#: Label names listed when they match no real image.
UNKNOWN_LABELS_LISTED = 5
#: Names per SQL IN list (SQLite allows 32,766 variables; kept well under).
NAMES_PER_QUERY = 500

TRUE_WORDS = frozenset({"1", "true", "yes", "used"})
FALSE_WORDS = frozenset({"0", "false", "no", "unused"})


# --- labels -----------------------------------------------------------------------------


def parse_labels(data: bytes) -> dict[str, bool]:
    """A labels CSV with columns ``real`` and ``used`` (1/0) -> used by name; rows with an
    empty name or value are skipped (ImageCLEF's labels.csv leaves unknowns empty)."""
    if len(data) > MAX_LABELS_BYTES:
        raise InvalidInput(f"the labels file is over {MAX_LABELS_BYTES} bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput(
            "the labels file is not UTF-8 text (a CSV with columns real,used)"
        ) from None
    reader = csv.DictReader(io.StringIO(text))
    columns = {(c or "").strip().lower(): c for c in reader.fieldnames or []}
    if "real" not in columns or "used" not in columns:
        found = ",".join(k for k in columns if k) or "nothing"
        raise InvalidInput(
            "the labels CSV needs a header with the columns real,used (as the ImageCLEF "
            f"development sets' labels.csv); its header has {found}"
        )
    labels: dict[str, bool] = {}
    for row in reader:
        name = (row.get(columns["real"]) or "").strip()
        value = (row.get(columns["used"]) or "").strip().lower()
        if not name or not value:
            continue
        if value not in TRUE_WORDS | FALSE_WORDS:
            raise InvalidInput(
                f"labels line {reader.line_num}: 'used' must be 1 or 0, got {value[:20]!r}"
            )
        if name in labels:
            raise InvalidInput(f"labels line {reader.line_num}: {name[:200]!r} is listed twice")
        labels[name] = value in TRUE_WORDS
    if not labels:
        raise InvalidInput("the labels CSV has no row with both a real name and a used value")
    return labels


def align_labels(
    names: Sequence[str], labels: dict[str, bool]
) -> tuple[dict[str, bool], list[str]]:
    """Truth for the report's real images, and the label names that matched none. A name
    matches its label exactly, else by file name without folders, else by stem (ImageCLEF
    ids have no extension) when that stem is unique among the labels."""
    by_base: dict[str, str] = {}
    by_stem: dict[str, str | None] = {}
    for key in labels:
        base = PurePosixPath(key).name
        by_base.setdefault(base, key)
        stem = PurePosixPath(base).stem
        by_stem[stem] = None if stem in by_stem else key
    truth: dict[str, bool] = {}
    used_keys: set[str] = set()
    for name in names:
        base = PurePosixPath(name).name
        key = name if name in labels else by_base.get(base) or by_stem.get(PurePosixPath(base).stem)
        if key is not None:
            truth[name] = labels[key]
            used_keys.add(key)
    return truth, [k for k in labels if k not in used_keys]


def evaluate(
    names: Sequence[str],
    predicted: np.ndarray,
    scores: np.ndarray,
    labels: dict[str, bool],
    score_name: str,
) -> Evaluation:
    """Table-1 metrics and the ROC of ``predicted``/``scores`` (per real image, in ``names``
    order) against the labels that name them."""
    from sklearn.metrics import roc_curve

    truth, unknown = align_labels(names, labels)
    if not truth:
        listed = ", ".join(repr(k[:80]) for k in list(labels)[:3])
        raise InvalidInput(
            f"none of the {len(labels)} labelled names ({listed}, ...) is a real image of "
            "this report"
        )
    keep = np.array([name in truth for name in names], bool)
    y = np.array([truth[name] for name in names if name in truth], bool)
    s = np.asarray(scores, np.float64)[keep]
    p = np.asarray(predicted, bool)[keep]
    both_classes = bool(y.any() and not y.all())
    fpr, tpr = (roc_curve(y, s)[:2]) if both_classes else (np.empty(0), np.empty(0))
    return Evaluation(
        score_name=score_name,
        metrics=binary_metrics(y, p),
        auc=roc_auc(y, s),
        tpr_at_fpr={"1%": tpr_at_fpr(y, s, 0.01), "0.1%": tpr_at_fpr(y, s, 0.001)},
        baselines=baseline_f1(y),
        roc_fpr=fpr,
        roc_tpr=tpr,
        labelled=int(keep.sum()),
        positives=int(y.sum()),
        unlabelled=int((~keep).sum()),
        unknown_labels=[k[:80] for k in unknown[:UNKNOWN_LABELS_LISTED]],
        unknown_label_count=len(unknown),
        truth=truth,
    )


# --- pictures ---------------------------------------------------------------------------


class Previews:
    """Gallery previews: stored image bytes decoded and shrunk to PREVIEW_SIDE as PNG data
    URIs (each image once), or the reason there is none."""

    def __init__(self, store: ImageStore, max_pixels: int) -> None:
        self._store = store
        self._max_pixels = max_pixels
        self._made: dict[str, Picture] = {}

    def of(self, ref: StoredImage | None, missing: str) -> Picture:
        if ref is None:
            return Picture(None, missing)
        if ref.sha256 is None:
            return Picture(None, "registered by hash only: no pixels were uploaded")
        if ref.sha256 not in self._made:
            self._made[ref.sha256] = self._make(ref)
        return self._made[ref.sha256]

    def _make(self, ref: StoredImage) -> Picture:
        try:
            gray = decode_grayscale(self._store.get(ref.sha256), self._max_pixels)
        except KeyError:
            if ref.thumbnail is not None and len(ref.thumbnail) == THUMBNAIL_SIDE**2:
                thumb = np.frombuffer(ref.thumbnail, np.uint8).reshape(THUMBNAIL_SIDE, -1)
                return Picture(png_data_uri(thumb), "32-px thumbnail: bytes not in the store")
            return Picture(None, "image bytes not in the image store")
        except ImageDecodeError as exc:
            return Picture(None, f"cannot decode the stored image: {exc}")
        return Picture(png_data_uri(shrink(gray, PREVIEW_SIDE)))


def shrink(gray: np.ndarray, side: int) -> np.ndarray:
    """At most ``side`` pixels on the longer side (area average; never enlarged)."""
    h, w = gray.shape[:2]
    scale = side / max(h, w)
    if scale >= 1:
        return gray
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA)


def png_data_uri(pixels: np.ndarray) -> str:
    ok, encoded = cv2.imencode(".png", pixels)
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 array
        raise RuntimeError("PNG encoding failed")
    return "data:image/png;base64," + base64.b64encode(encoded.tobytes()).decode("ascii")


@dataclass(frozen=True, slots=True)
class StoredImage:
    """What the report reads of a stored real or generated image."""

    filename: str
    sha256: str | None
    phash: str
    thumbnail: bytes | None


def stored_images(
    session: Session, model, owner_column, owner_id: int, names: Sequence[str | None] | None
) -> dict[str, StoredImage]:
    """The named images (all when ``names`` is None) of one set or batch, by file name."""
    columns = select(model.filename, model.sha256, model.phash, model.thumbnail)
    if names is None:
        chunks = [columns.where(owner_column == owner_id)]
    else:
        wanted = sorted({n for n in names if n is not None})
        chunks = [
            columns.where(
                owner_column == owner_id, model.filename.in_(wanted[lo : lo + NAMES_PER_QUERY])
            )
            for lo in range(0, len(wanted), NAMES_PER_QUERY)
        ]
    found: dict[str, StoredImage] = {}
    for query in chunks:
        found.update(
            (r.filename, StoredImage(r.filename, r.sha256, r.phash, r.thumbnail))
            for r in session.execute(query)
        )
    return found


def thumbnail_ncc(a: StoredImage | None, b: StoredImage | None) -> float | None:
    """Normalised cross-correlation of two stored 32x32 thumbnails (1 = same picture)."""
    side = THUMBNAIL_SIDE * THUMBNAIL_SIDE
    if a is None or b is None or a.thumbnail is None or b.thumbnail is None:
        return None
    if len(a.thumbnail) != side or len(b.thumbnail) != side:
        return None
    rows = normalise_thumbnails(np.frombuffer(a.thumbnail + b.thumbnail, np.uint8).reshape(2, -1))
    return float(rows[0] @ rows[1])


def hamming(a: StoredImage | None, b: StoredImage | None) -> int | None:
    """Bits in which two stored fingerprints differ (None unless both are of one length)."""
    if a is None or b is None or len(a.phash) != len(b.phash):
        return None
    return (int(a.phash, 16) ^ int(b.phash, 16)).bit_count()


def verdict_of(match: dict) -> str:
    """A gallery card's verdict, naming the evidence that decided it."""
    if match.get("copy_of"):
        return "copy: by the copy-detection embedding"
    if match["source"] is not None:
        return "copy: within the pHash threshold"
    return "not a copy: above the threshold"


def copy_figures(match: dict) -> list[tuple[str, str]]:
    """The figures behind a ``copy_of`` (the embedding similarity; inliers or other evidence a
    later detector adds), beyond the names and the pHash distance shown already."""
    extra = match.get("copy_of")
    if not isinstance(extra, dict):
        return []
    shown = {"real", "phash_distance", "decided_by"}
    return [
        (
            "embedding similarity" if k == "similarity" else str(k).replace("_", " "),
            fmt(v) if isinstance(v, (int, float)) else str(v),
        )
        for k, v in extra.items()
        if k not in shown and v is not None and not isinstance(v, (dict, list))
    ]


# --- /match -----------------------------------------------------------------------------


def match_report(
    sessions: sessionmaker[Session],
    cache: SetHashCache,
    store: ImageStore,
    batch_id: int,
    *,
    max_pixels: int,
    labels: bytes | None = None,
    labels_form: bool = False,
) -> str:
    """The HTML report of match batch ``batch_id`` (with metrics when ``labels`` is given)."""
    parsed = parse_labels(labels) if labels is not None else None
    with sessions() as session:
        document = batches.load_batch(session, batch_id, "all")
        real_set = (
            session.get(RealSet, document["real_set_id"]) if document["real_set_id"] else None
        )
        null, null_note = match_null(session, cache, real_set, document)
        shown = pick_pairs(document["matches"])
        generated = stored_images(
            session,
            GeneratedImage,
            GeneratedImage.batch_id,
            batch_id,
            [m["generated"] for m in shown],
        )
        real_names = [name for m in shown if (name := claimed_real(m)) is not None]
        real = (
            stored_images(session, RealImage, RealImage.real_set_id, real_set.id, real_names)
            if real_set is not None
            else {}
        )
    missing_real = (
        "the real set has been deleted since" if real_set is None else "not in the set any more"
    )
    previews = Previews(store, max_pixels)
    pairs = []
    for m in shown:
        nearest = claimed_real(m)
        gen_ref, real_ref = generated.get(m["generated"]), real.get(nearest)
        copy_of = m.get("copy_of")
        distance = copy_of["phash_distance"] if copy_of else m["distance"]
        figures = [("pHash distance" if copy_of else "distance", f"{distance} bits")]
        ncc = thumbnail_ncc(gen_ref, real_ref)
        if ncc is not None:
            figures.append(("thumbnail NCC", fmt(ncc)))
        if null is not None and len(null):
            figures.append(("real-vs-real this close", pct(float((null <= distance).mean()))))
        figures += copy_figures(m)
        pairs.append(
            EvidencePair(
                m["generated"],
                previews.of(gen_ref, "not in the batch"),
                nearest,
                previews.of(real_ref, missing_real),
                verdict_of(m),
                is_copy(m),
                figures,
            )
        )
    evaluation = None
    if parsed is not None:
        rows = document["real_summary"]
        beyond = document["hash_size"] ** 2 + 1  # no generated image at all: farthest
        evaluation = evaluate(
            [r["filename"] for r in rows],
            np.array([r["verdict"] == "used" for r in rows], bool),
            np.array(
                [-(r["min_distance"] if r["min_distance"] is not None else beyond) for r in rows]
            ),
            parsed,
            "the distance to their nearest generated image (closer = more likely used)",
        )
    return render_match_report(
        MatchReportView(
            document,
            null,
            null_note,
            pairs,
            pairs_note(document["matches"], shown),
            evaluation,
            labels_form,
        )
    )


def match_null(
    session: Session, cache: SetHashCache, real_set: RealSet | None, document: dict
) -> tuple[np.ndarray | None, str]:
    """The set's real-vs-real nearest distances now, and a note on what they are."""
    if real_set is None:
        return None, "The real set has been deleted, so there is no real-vs-real null to show."
    hashes = cache.get(session, real_set)
    null = real_nn_distances(hashes.words)
    if not len(null):
        return None, "The set has fewer than 2 real images: no real-vs-real null."
    note = (
        ""
        if len(null) == len(hashes.filenames)
        else (
            f"(The null is a fixed sample of {len(null)} of the set's {len(hashes.filenames)} "
            "images.)"
        )
    )
    if real_set.revision != document["real_set_revision"]:
        note += (
            f" (The set has changed since this batch: revision {real_set.revision} now, "
            f"{document['real_set_revision']} then; the null is today's.)"
        )
    return null, note.strip()


def claimed_real(match: dict) -> str | None:
    """The real image a generated image is shown beside: the one it copies by the strongest
    evidence (``copy_of``, the embedding), else its nearest by pHash."""
    if match.get("copy_of"):
        return match["copy_of"]["real"]
    return match["candidates"][0]["filename"] if match["candidates"] else None


def is_copy(match: dict) -> bool:
    """Called a copy by the embedding (``copy_of``) or by the paper's pHash rule."""
    return match.get("copy_of") is not None or match["source"] is not None


def pick_pairs(matches: list[dict]) -> list[dict]:
    """The gallery: copies (by the embedding, most similar first, then by pHash alone,
    closest first), then the closest generated images that were not called copies (near
    misses: where a reader checks the threshold)."""
    copies = sorted(
        (m for m in matches if is_copy(m)),
        key=lambda m: (
            m.get("copy_of") is None,
            -(m["copy_of"]["similarity"] if m.get("copy_of") else 0.0),
            m["distance"],
        ),
    )
    misses = sorted(
        (m for m in matches if not is_copy(m) and m["distance"] is not None),
        key=lambda m: m["distance"],
    )
    return copies[:MAX_PAIRS] + misses[:MAX_NEAR_MISSES]


def pairs_note(matches: list[dict], shown: list[dict]) -> str:
    copies = sum(1 for m in matches if is_copy(m))
    shown_copies = sum(1 for m in shown if is_copy(m))
    misses = len(shown) - shown_copies
    note = (
        f"{shown_copies} of {copies} copies (by the copy-detection embedding, most similar "
        "first, then by pHash alone, closest first)"
        if copies
        else "No generated image is within the threshold of a real image."
    )
    if copies:
        note += "" if shown_copies == copies else " (the per-real table and CSV list them all)"
        note += "."
    if misses:
        note += (
            f" Then the {misses} closest generated images that were not called copies, to judge "
            "the threshold by eye."
        )
    return note + " Previews are 128 px; the figures are computed on the full images' hashes."


# --- /classify --------------------------------------------------------------------------


def classification_report(
    sessions: sessionmaker[Session],
    store: ImageStore,
    classification_id: int,
    *,
    max_pixels: int,
    labels: bytes | None = None,
    labels_form: bool = False,
) -> str:
    """The HTML report of classification ``classification_id`` (metrics with ``labels``)."""
    parsed = parse_labels(labels) if labels is not None else None
    with sessions() as session:
        document = load_classification(session, classification_id)
        shown = pick_used(document["results"])
        real_set_id = document.get("real_set_id")
        real = (
            stored_images(
                session,
                RealImage,
                RealImage.real_set_id,
                real_set_id,
                [r["filename"] for r in shown],
            )
            if real_set_id
            else {}
        )
        batch, generated, correlate = None, {}, False
        if document.get("batch_id"):
            batch = batches.load_batch(session, document["batch_id"], "all")
            correlate = batch["generated_count"] <= MAX_CORRELATED_GENERATED
            by_phash = {r["filename"]: r["closest_generated"] for r in batch["real_summary"]}
            generated = stored_images(
                session,
                GeneratedImage,
                GeneratedImage.batch_id,
                batch["batch_id"],
                None
                if correlate
                else [by_phash.get(r["filename"]) for r in shown]
                + [e["generated"] for r in shown for e in r.get("evidence") or []],
            )
    closest = closest_generated(shown, real, generated if correlate else {}, batch)
    previews = Previews(store, max_pixels)
    missing_real = (
        "not in the real set any more"
        if real_set_id
        else "uploaded with the request: not kept by name"
    )
    pairs = []
    for r in shown:
        real_ref = real.get(r["filename"])
        gen_name, ncc = closest.get(r["filename"], (None, None))
        strongest = (r.get("evidence") or [None])[0]
        if strongest is not None:  # the generated image the verdict itself names first
            gen_name, ncc = strongest["generated"], strongest.get("ncc")
        gen_ref = generated.get(gen_name) if gen_name is not None else None
        figures = [("score", fmt(r["score"]))]
        figures += [
            (k.replace("_", " "), fmt_figure(k, v)) for k, v in sorted(r["components"].items())
        ]
        if strongest is not None:
            figures += evidence_figures(strongest, len(r["evidence"]))
        if ncc is not None:
            figures.append(("thumbnail NCC", fmt(ncc)))
        distance = hamming(real_ref, gen_ref)
        if distance is not None:
            figures.append(("pHash distance", f"{distance} bits"))
        pairs.append(
            EvidencePair(
                r["filename"],
                previews.of(real_ref, missing_real),
                gen_name,
                previews.of(gen_ref, "no batch linked" if batch is None else "no generated image"),
                r["label"],
                r["label"] == "used",
                figures,
            )
        )
    evaluation = None
    if parsed is not None:
        results = document["results"]
        evaluation = evaluate(
            [r["filename"] for r in results],
            np.array([r["label"] == "used" for r in results], bool),
            np.array([r["score"] for r in results], np.float64),
            parsed,
            f"their {document['method']} score",
        )
    return render_classification_report(
        ClassificationReportView(
            document,
            batch,
            batch_note(document, batch, correlate),
            pairs,
            used_note(document["results"], shown),
            evaluation,
            labels_form,
        )
    )


def evidence_figures(strongest: dict, count: int) -> list[tuple[str, str]]:
    """The figures of the strongest evidence item a result names, for its card."""
    figures = []
    if strongest.get("similarity") is not None:
        figures.append(("embedding similarity", fmt(strongest["similarity"])))
    if strongest.get("inliers"):
        verified = " (verified copy)" if strongest.get("verified_copy") else ""
        figures.append(("SIFT inliers", f"{strongest['inliers']}{verified}"))
    if count > 1:
        figures.append(("evidence", f"{count} generated images, strongest shown"))
    return figures


def closest_generated(
    shown: list[dict],
    real: dict[str, StoredImage],
    generated: dict[str, StoredImage],
    batch: dict | None,
) -> dict[str, tuple[str | None, float | None]]:
    """Each shown real image's most similar generated image of the batch by thumbnail
    correlation (what the reference auditor shortlists by), with that correlation; the
    batch's pHash-nearest where thumbnails are missing."""
    by_phash = {r["filename"]: r for r in batch["real_summary"]} if batch else {}
    side = THUMBNAIL_SIDE * THUMBNAIL_SIDE
    gen = [g for g in generated.values() if g.thumbnail is not None and len(g.thumbnail) == side]
    gen_rows = (
        normalise_thumbnails(
            np.frombuffer(b"".join(g.thumbnail for g in gen), np.uint8).reshape(len(gen), -1)
        )
        if gen
        else None
    )
    found: dict[str, tuple[str | None, float | None]] = {}
    for r in shown:
        ref = real.get(r["filename"])
        if gen_rows is not None and ref is not None and ref.thumbnail is not None:
            row = normalise_thumbnails(np.frombuffer(ref.thumbnail, np.uint8).reshape(1, -1))
            similarity = gen_rows @ row[0]
            best = int(np.argmax(similarity))
            found[r["filename"]] = (gen[best].filename, float(similarity[best]))
        else:
            nearest = (by_phash.get(r["filename"]) or {}).get("closest_generated")
            found[r["filename"]] = (nearest, None)
    return found


def batch_note(document: dict, batch: dict | None, correlated: bool) -> str:
    if batch is None:
        return (
            "No match batch is linked (generated images were uploaded with the request), so "
            "no generated image is shown beside the real ones."
        )
    first = (
        f"Beside each real image: the generated image of match batch {document['batch_id']} "
        "its verdict names as the strongest evidence (a verified copy, else the most similar "
        "by the copy-detection embedding); where a result names none, "
    )
    if not correlated:
        return first + "its pHash-nearest (the batch is too large to correlate thumbnails here)."
    return first + (
        "the most similar by thumbnail correlation (NCC, the similarity the reference auditor "
        "shortlists by). The table lists the pHash-nearest."
    )


def used_note(results: list[dict], shown: list[dict]) -> str:
    used = sum(1 for r in results if r["label"] == "used")
    if not used:
        return f"No real image is labelled used; the {len(shown)} highest-scoring are shown."
    shown_used = sum(1 for r in shown if r["label"] == "used")
    return f"{shown_used} of {used} real images labelled used, highest score first."


def pick_used(results: list[dict]) -> list[dict]:
    """The gallery: used real images by score; the few highest when none is used."""
    ranked = sorted(results, key=lambda r: -r["score"])
    used = [r for r in ranked if r["label"] == "used"]
    return used[:MAX_PAIRS] if used else ranked[:MAX_NEAR_MISSES]


def fmt_figure(name: str, value: float) -> str:
    """A component as the card shows it: counts (inliers) without decimals."""
    return fmt(int(value)) if "inliers" in name and float(value).is_integer() else fmt(value)
