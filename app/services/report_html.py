"""The audit report as one self-contained HTML page: pure rendering, no database, no HTTP.

Everything the page shows arrives in a view (:class:`MatchReportView`,
:class:`ClassificationReportView`) that app.services.audit_report gathers. The page has inline
CSS, images as PNG data URIs, plots as inline SVG written here, and no script at all, so it
opens offline, can be mailed, and can be served under a Content-Security-Policy that forbids
scripts. Every name that came from a user (set names, file names) goes through ``esc``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

#: Rows of a per-real-image table shown on the page (the JSON and CSV answers have them all).
MAX_TABLE_ROWS = 2000
#: Bars of a score histogram.
SCORE_BINS = 30
#: Bars a distance histogram has at most (wider bins beyond).
MAX_DISTANCE_BINS = 64

#: How the page names a fingerprint kind (app.imaging.hashers names them in lower case).
KIND_NAMES = {"phash": "pHash", "dhash": "dHash", "whash": "wHash", "pdq": "PDQ"}
SOURCE_WORDS = {
    "request": "given in the request",
    "calibrated": "calibrated on the real set",
    "paper_default": "the seed paper's default",
}

COLOURS = {"generated": "#c0392b", "null": "#2c3e50", "used": "#c0392b", "unused": "#2471a3"}


def esc(value: object) -> str:
    """Text for HTML and SVG, quotes included (names are user input)."""
    return html.escape(str(value), quote=True)


def fmt(value: float | int | None, digits: int = 3) -> str:
    """A figure as the page prints it: integers plain, floats to ``digits`` decimals."""
    if value is None:
        return "—"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if math.isnan(value):
        return "n/a"
    return f"{value:.{digits}f}"


def pct(share: float) -> str:
    if math.isnan(share):
        return "n/a"
    return f"{100 * share:.1f}%" if share >= 0.001 or share == 0 else f"{100 * share:.2f}%"


def plural(count: int, word: str, many: str | None = None) -> str:
    return f"{count} {word if count == 1 else (many or word + 's')}"


# --- views ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Picture:
    """An image as the page shows it: a PNG data URI, or why there is none."""

    data_uri: str | None
    note: str = ""


@dataclass(frozen=True)
class EvidencePair:
    """One gallery card: two images side by side (generated | real on a match report, real
    | generated on a classification report) and the figures that link them."""

    left: str | None
    left_picture: Picture
    right: str | None
    right_picture: Picture
    verdict: str
    #: True when the verdict calls it a copy / used (styles the card).
    positive: bool
    #: (label, formatted value) lines under the images.
    figures: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Evaluation:
    """Table-1 metrics of the report's verdicts against uploaded labels, and its ROC."""

    #: What the ROC ranks by, in words.
    score_name: str
    metrics: dict
    auc: float
    tpr_at_fpr: dict[str, float]
    baselines: dict[str, float]
    roc_fpr: np.ndarray
    roc_tpr: np.ndarray
    labelled: int
    positives: int
    unlabelled: int
    #: Label names that match no real image of the report (the first few).
    unknown_labels: list[str]
    unknown_label_count: int
    #: Truth by real filename (labelled images only).
    truth: dict[str, bool]


@dataclass(frozen=True)
class MatchReportView:
    document: dict
    #: Real-vs-real nearest distances (None: the set is gone or too small).
    null_distances: np.ndarray | None
    null_note: str
    pairs: list[EvidencePair]
    pairs_note: str
    evaluation: Evaluation | None = None
    labels_form: bool = False


@dataclass(frozen=True)
class ClassificationReportView:
    document: dict
    #: The linked batch's document (real_summary included), None when none is linked.
    batch: dict | None
    batch_note: str
    pairs: list[EvidencePair]
    pairs_note: str
    evaluation: Evaluation | None = None
    labels_form: bool = False


# --- page -------------------------------------------------------------------------------

CSS = """
:root { --ink: #1b2631; --muted: #5d6d7e; --line: #d5dbdb; --copy: #c0392b; --ok: #1e8449;
        --bg: #fbfcfc; font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
body { margin: 0; background: var(--bg); color: var(--ink); line-height: 1.45; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 1.55rem; margin: 0 0 4px; }
h2 { font-size: 1.2rem; margin: 32px 0 8px; border-bottom: 1px solid var(--line);
     padding-bottom: 4px; }
p { margin: 6px 0; max-width: 80ch; }
.meta, .note { color: var(--muted); font-size: 0.9rem; }
.figures { display: flex; flex-wrap: wrap; gap: 10px; margin: 14px 0; padding: 0; }
.figures div { background: #fff; border: 1px solid var(--line); border-radius: 6px;
               padding: 8px 14px; min-width: 120px; }
.figures dt { color: var(--muted); font-size: 0.8rem; }
.figures dd { margin: 0; font-size: 1.45rem; font-weight: 600; }
.figures .alert dd { color: var(--copy); }
.reason { background: #fff; border-left: 4px solid var(--muted); padding: 6px 12px; }
svg { background: #fff; border: 1px solid var(--line); border-radius: 6px; max-width: 100%;
      height: auto; font-family: inherit; }
.plots { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(290px, 1fr));
           gap: 12px; }
figure.pair { margin: 0; background: #fff; border: 1px solid var(--line); border-radius: 6px;
              padding: 8px; border-top: 4px solid var(--muted); }
figure.pair.positive { border-top-color: var(--copy); }
.pair .images { display: flex; gap: 14px; justify-content: center; }
.pair .side { width: 132px; text-align: center; font-size: 0.75rem; color: var(--muted); }
.pair img { width: 128px; height: 128px; object-fit: contain; background: #000;
            image-rendering: auto; display: block; margin: 0 auto 2px; }
.pair img.coarse { image-rendering: pixelated; }
.placeholder { width: 128px; height: 128px; margin: 0 auto 2px; display: flex;
               align-items: center; justify-content: center; text-align: center;
               background: repeating-linear-gradient(45deg, #eee, #eee 6px, #f8f8f8 6px,
               #f8f8f8 12px); color: var(--muted); font-size: 0.72rem; padding: 4px;
               box-sizing: border-box; }
figcaption { font-size: 0.8rem; margin-top: 6px; overflow-wrap: anywhere; }
figcaption .verdict { font-weight: 600; }
.positive .verdict { color: var(--copy); }
figcaption dl { display: grid; grid-template-columns: auto 1fr; gap: 0 8px; margin: 4px 0 0; }
figcaption dt { color: var(--muted); }
figcaption dd { margin: 0; }
table.data { border-collapse: collapse; font-size: 0.85rem; background: #fff; }
table.data th, table.data td { border: 1px solid var(--line); padding: 3px 8px;
                                text-align: left; overflow-wrap: anywhere; }
table.data th { background: #eef2f3; position: sticky; top: 0; }
table.data td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.data tr.used td.verdict { color: var(--copy); font-weight: 600; }
table.data tr.wrong td { background: #fdecea; }
.scroll { max-height: 560px; overflow: auto; border: 1px solid var(--line); }
form.labels { background: #fff; border: 1px dashed var(--line); padding: 10px 14px;
              border-radius: 6px; }
footer { margin-top: 40px; color: var(--muted); font-size: 0.8rem; }
@media print { .scroll { max-height: none; overflow: visible; } form.labels { display: none; } }
"""


def page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>\n"
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n"
        f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


def key_figures(items: Sequence[tuple[str, object, bool]]) -> str:
    """The summary's boxes: (label, value, highlighted)."""
    boxes = "".join(
        f"<div{' class=alert' if alert else ''}><dt>{esc(label)}</dt><dd>{esc(value)}</dd></div>"
        for label, value, alert in items
    )
    return f"<dl class='figures'>{boxes}</dl>"


def labels_form_html(enabled: bool) -> str:
    if not enabled:
        return ""
    return (
        "<form class='labels' method='post' enctype='multipart/form-data'>"
        "<p><strong>Have ground truth?</strong> Upload a labels CSV with the columns "
        "<code>real,used</code> (1 = used to train the generator, 0 = not), as the ImageCLEF "
        "development sets' <code>labels.csv</code>, to add Table-1 metrics and an ROC curve "
        "to this page. Nothing is stored.</p>"
        "<input type='file' name='labels' accept='.csv,text/csv' required> "
        "<button type='submit'>Evaluate against labels</button></form>"
    )


# --- plots ------------------------------------------------------------------------------


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) covering [lo, hi]."""
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    value = first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def covering_ticks(hi: float, count: int = 5) -> list[float]:
    """Ticks from 0 whose last one is at or above ``hi`` (the top of a share axis)."""
    ticks = nice_ticks(0.0, hi, count)
    if ticks[-1] < hi:
        ticks.append(round(2 * ticks[-1] - ticks[-2], 10) if len(ticks) > 1 else hi)
    return ticks


def tick_label(value: float, as_percent: bool = False) -> str:
    if as_percent:
        return f"{100 * value:g}%"
    return f"{value:g}" if abs(value) < 1e5 else f"{value:.2g}"


@dataclass(frozen=True)
class Series:
    label: str
    values: np.ndarray
    colour: str
    #: Filled bars; otherwise a stepped outline (reads through the bars drawn before it).
    filled: bool = True


@dataclass(frozen=True)
class Frame:
    """A plot area inside an SVG: data coordinates -> pixels."""

    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int
    x_lo: float
    x_hi: float
    y_lo: float
    y_hi: float

    def x(self, value: float) -> float:
        span = self.width - self.left - self.right
        return self.left + (value - self.x_lo) / (self.x_hi - self.x_lo) * span

    def y(self, value: float) -> float:
        span = self.height - self.top - self.bottom
        return self.height - self.bottom - (value - self.y_lo) / (self.y_hi - self.y_lo) * span

    def axes(
        self,
        x_ticks: Sequence[float],
        y_ticks: Sequence[float],
        x_label: str,
        y_label: str,
        y_percent: bool = False,
    ) -> str:
        """Grid lines, ticks with labels, both axis titles."""
        parts = []
        x0, x1 = self.left, self.width - self.right
        y0, y1 = self.height - self.bottom, self.top
        for t in y_ticks:
            y = self.y(t)
            parts.append(
                f"<line x1='{x0}' y1='{y:.1f}' x2='{x1}' y2='{y:.1f}' stroke='#eaeded'/>"
                f"<line x1='{x0 - 4}' y1='{y:.1f}' x2='{x0}' y2='{y:.1f}' stroke='#566573'/>"
                f"<text x='{x0 - 7}' y='{y + 4:.1f}' text-anchor='end' font-size='11' "
                f"fill='#566573'>{esc(tick_label(t, y_percent))}</text>"
            )
        for t in x_ticks:
            x = self.x(t)
            parts.append(
                f"<line x1='{x:.1f}' y1='{y0}' x2='{x:.1f}' y2='{y0 + 4}' stroke='#566573'/>"
                f"<text x='{x:.1f}' y='{y0 + 17}' text-anchor='middle' font-size='11' "
                f"fill='#566573'>{esc(tick_label(t))}</text>"
            )
        parts.append(
            f"<line x1='{x0}' y1='{y0}' x2='{x1}' y2='{y0}' stroke='#566573'/>"
            f"<line x1='{x0}' y1='{y0}' x2='{x0}' y2='{y1}' stroke='#566573'/>"
            f"<text x='{(x0 + x1) / 2:.1f}' y='{self.height - 8}' text-anchor='middle' "
            f"font-size='12'>{esc(x_label)}</text>"
            f"<text transform='translate(14 {(y0 + y1) / 2:.1f}) rotate(-90)' "
            f"text-anchor='middle' font-size='12'>{esc(y_label)}</text>"
        )
        return "".join(parts)


def svg(width: int, height: int, title: str, body: str, css_class: str) -> str:
    return (
        f"<svg class='{css_class}' xmlns='http://www.w3.org/2000/svg' width='{width}' "
        f"height='{height}' viewBox='0 0 {width} {height}' role='img'>"
        f"<title>{esc(title)}</title>"
        f"<text x='{width / 2:.0f}' y='18' text-anchor='middle' font-size='13' "
        f"font-weight='600'>{esc(title)}</text>{body}</svg>"
    )


def histogram_svg(
    title: str,
    series: Sequence[Series],
    edges: np.ndarray,
    x_label: str,
    threshold: float | None,
    threshold_label: str,
) -> str:
    """Overlaid histograms as shares of each series (series of different sizes compare),
    with axes, ticks, a legend and the threshold as a dashed vertical line."""
    shares = [
        np.histogram(s.values, edges)[0] / max(len(s.values), 1) if len(s.values) else None
        for s in series
    ]
    top = max((float(h.max()) for h in shares if h is not None), default=0.0)
    y_ticks = covering_ticks(max(top, 0.01) * 1.05)
    frame = Frame(680, 320, 62, 20, 56, 46, float(edges[0]), float(edges[-1]), 0.0, y_ticks[-1])
    parts = [frame.axes(nice_ticks(frame.x_lo, frame.x_hi, 8), y_ticks, x_label, "share", True)]
    for s, hist in zip(series, shares, strict=True):
        if hist is None:
            continue
        if s.filled:
            for lo, hi, h in zip(edges[:-1], edges[1:], hist, strict=True):
                if h <= 0:
                    continue
                x, w = frame.x(lo), frame.x(hi) - frame.x(lo)
                parts.append(
                    f"<rect x='{x:.1f}' y='{frame.y(h):.1f}' width='{max(w - 0.6, 0.8):.1f}' "
                    f"height='{frame.y(0) - frame.y(h):.1f}' fill='{s.colour}' "
                    "fill-opacity='0.55'/>"
                )
        else:
            points = [f"{frame.x(edges[0]):.1f},{frame.y(0):.1f}"]
            for lo, hi, h in zip(edges[:-1], edges[1:], hist, strict=True):
                points.append(f"{frame.x(lo):.1f},{frame.y(h):.1f}")
                points.append(f"{frame.x(hi):.1f},{frame.y(h):.1f}")
            points.append(f"{frame.x(edges[-1]):.1f},{frame.y(0):.1f}")
            parts.append(
                f"<polyline points='{' '.join(points)}' fill='none' stroke='{s.colour}' "
                "stroke-width='2'/>"
            )
    if threshold is not None and frame.x_lo <= threshold <= frame.x_hi:
        x = frame.x(threshold)
        parts.append(
            f"<line class='threshold' x1='{x:.1f}' y1='{frame.top}' x2='{x:.1f}' "
            f"y2='{frame.y(0):.1f}' stroke='#7d3c98' stroke-width='2' stroke-dasharray='6 4'/>"
            f"<text x='{x + 5:.1f}' y='{frame.top + 12}' font-size='11' fill='#7d3c98'>"
            f"{esc(threshold_label)}</text>"
        )
    legend_x, legend_y = float(frame.left), 38
    for s in series:
        swatch = (
            f"<rect x='{legend_x:.0f}' y='{legend_y - 9}' width='12' height='10' "
            f"fill='{s.colour}' fill-opacity='0.55'/>"
            if s.filled
            else f"<line x1='{legend_x:.0f}' y1='{legend_y - 4}' x2='{legend_x + 12:.0f}' "
            f"y2='{legend_y - 4}' stroke='{s.colour}' stroke-width='2'/>"
        )
        text = f"{s.label} (n={len(s.values)})"
        parts.append(
            f"{swatch}<text x='{legend_x + 17:.0f}' y='{legend_y}' font-size='11'>"
            f"{esc(text)}</text>"
        )
        legend_x += 17 + 6.2 * len(text) + 18
    return svg(frame.width, frame.height, title, "".join(parts), "histogram")


def roc_svg(evaluation: Evaluation) -> str:
    """The ROC curve on linear axes with ticks, the chance diagonal and the operating point
    of the report's verdicts."""
    frame = Frame(420, 420, 62, 20, 34, 50, 0.0, 1.0, 0.0, 1.0)
    ticks = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    parts = [
        frame.axes(ticks, ticks, "false-positive rate (unused called used)", "true-positive rate")
    ]
    parts.append(
        f"<line x1='{frame.x(0):.1f}' y1='{frame.y(0):.1f}' x2='{frame.x(1):.1f}' "
        f"y2='{frame.y(1):.1f}' stroke='#aab7b8' stroke-dasharray='4 4'/>"
        f"<text x='{frame.x(0.62):.1f}' y='{frame.y(0.55):.1f}' font-size='11' fill='#7f8c8d' "
        f"transform='rotate(-45 {frame.x(0.62):.1f} {frame.y(0.55):.1f})'>chance</text>"
    )
    if len(evaluation.roc_fpr):
        points = " ".join(
            f"{frame.x(f):.1f},{frame.y(t):.1f}"
            for f, t in zip(evaluation.roc_fpr, evaluation.roc_tpr, strict=True)
        )
        parts.append(
            f"<polyline class='roc' points='{points}' fill='none' stroke='#c0392b' "
            "stroke-width='2.5'/>"
        )
    fpr, tpr = evaluation.metrics["fpr"], evaluation.metrics["recall"]
    below = 14 if tpr > 0.15 else -10  # near the axis the label goes above the point
    parts.append(
        f"<circle cx='{frame.x(fpr):.1f}' cy='{frame.y(tpr):.1f}' r='5' fill='#1b2631'/>"
        f"<text x='{frame.x(fpr) + 8:.1f}' y='{frame.y(tpr) + below:.1f}' font-size='11'>"
        f"verdicts: FPR {fpr:.2f}, TPR {tpr:.2f}</text>"
    )
    return svg(frame.width, frame.height, f"ROC, AUC {fmt(evaluation.auc)}", "".join(parts), "roc")


def distance_edges(values: Sequence[np.ndarray], bits: int) -> np.ndarray:
    """Bins for Hamming distances: centred on integers, up to a little past the largest."""
    observed = [int(v.max()) for v in values if len(v)]
    hi = min(bits, max(observed, default=bits) + 2)
    width = max(1, math.ceil((hi + 1) / MAX_DISTANCE_BINS))
    return np.arange(-0.5, hi + width + 0.5, width, dtype=np.float64)


def score_edges(scores: np.ndarray, threshold: float) -> tuple[np.ndarray, float | None]:
    """Bins for scores, and the value above which scores were counted in the last bar (a
    few very large scores would otherwise squeeze everything else into one bar)."""
    finite = scores[np.isfinite(scores)]
    lo = min(float(finite.min()) if len(finite) else 0.0, threshold, 0.0)
    top = float(finite.max()) if len(finite) else threshold
    hi = max(float(np.percentile(finite, 98)) if len(finite) else top, threshold * 1.5)
    clipped = hi if top > hi * 1.05 else None
    hi = top if clipped is None else hi
    if not hi > lo:
        hi = lo + 1.0
    return np.linspace(lo, hi + (hi - lo) * 1e-6, SCORE_BINS + 1), clipped


# --- shared sections --------------------------------------------------------------------


def picture_html(picture: Picture, role: str, name: str | None) -> str:
    label = f"{role}: {name}" if name else role
    if picture.data_uri is None:
        return (
            f"<div class='placeholder' role='img' aria-label='{esc(label)}'>"
            f"{esc(picture.note or 'no image')}</div>"
        )
    coarse = " class='coarse'" if picture.note else ""
    note = f" title='{esc(picture.note)}'" if picture.note else ""
    return f"<img{coarse}{note} src='{picture.data_uri}' alt='{esc(label)}'>"


def gallery_html(pairs: Sequence[EvidencePair], left: str, right: str) -> str:
    """Cards of evidence pairs; ``left`` and ``right`` say what each side shows."""
    cards = []
    for p in pairs:
        figures = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in p.figures)
        cards.append(
            f"<figure class='pair{' positive' if p.positive else ''}'>"
            "<div class='images'>"
            f"<div class='side'>{picture_html(p.left_picture, left, p.left)}{esc(left)}</div>"
            f"<div class='side'>{picture_html(p.right_picture, right, p.right)}{esc(right)}"
            "</div></div><figcaption>"
            f"<div><span class='name'>{esc(p.left or '—')}</span> → "
            f"<span class='name'>{esc(p.right or 'none')}</span></div>"
            f"<div class='verdict'>{esc(p.verdict)}</div><dl>{figures}</dl>"
            "</figcaption></figure>"
        )
    if not cards:
        return "<p class='note'>Nothing to show.</p>"
    return f"<div class='gallery'>{''.join(cards)}</div>"


def table_html(
    headers: Sequence[str],
    rows: Sequence[tuple[Sequence[tuple[str, str]], str]],
    total: int,
    more: str,
) -> str:
    """A table of (cells, row class) rows; a cell is (text, css class)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(
        f"<tr class='{row_class}'>"
        + "".join(f"<td class='{cls}'>{esc(text)}</td>" for text, cls in cells)
        + "</tr>"
        for cells, row_class in rows
    )
    note = ""
    if total > len(rows):
        note = f"<p class='note'>First {len(rows)} of {total} rows shown; {esc(more)}</p>"
    return (
        f"{note}<div class='scroll'><table class='data'><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table></div>"
    )


def evaluation_html(evaluation: Evaluation, what: str) -> str:
    """Table-1 metrics with their baselines and the ROC curve."""
    m = evaluation.metrics
    rows = [
        ("accuracy", fmt(m["accuracy"])),
        ("precision", fmt(m["precision"])),
        ("recall (TPR)", fmt(m["recall"])),
        ("specificity", fmt(m["specificity"])),
        ("F1", fmt(m["f1"])),
        ("Cohen's kappa", fmt(m["kappa"])),
        ("ROC AUC", fmt(evaluation.auc)),
        *((f"TPR at {k} FPR", fmt(v)) for k, v in evaluation.tpr_at_fpr.items()),
        ("TP / FP / TN / FN", f"{m['tp']} / {m['fp']} / {m['tn']} / {m['fn']}"),
        ("F1 if every image is called used", fmt(evaluation.baselines["all_used"])),
        ("F1 of random guesses at this prevalence", fmt(evaluation.baselines["chance"])),
    ]
    table = "".join(f"<tr><th>{esc(k)}</th><td class='num'>{esc(v)}</td></tr>" for k, v in rows)
    unknown = ""
    if evaluation.unknown_label_count:
        listed = ", ".join(evaluation.unknown_labels)
        more = "…" if evaluation.unknown_label_count > len(evaluation.unknown_labels) else ""
        one = evaluation.unknown_label_count == 1
        unknown = (
            f" {plural(evaluation.unknown_label_count, 'label')} "
            f"{'names' if one else 'name'} no real image of this report and "
            f"{'was' if one else 'were'} ignored: {esc(listed)}{more}."
        )
    prevalence = evaluation.positives / max(evaluation.labelled, 1)
    return (
        "<section id='metrics'><h2>Against the uploaded labels</h2>"
        f"<p>{plural(evaluation.labelled, 'real image')} labelled "
        f"({evaluation.positives} used, prevalence {pct(prevalence)})"
        + (
            f"; {plural(evaluation.unlabelled, 'real image')} without a label "
            f"{'is' if evaluation.unlabelled == 1 else 'are'} left out."
            if evaluation.unlabelled
            else "."
        )
        + f"{unknown} "
        f"Predictions: {esc(what)}. ROC: real images ranked by {esc(evaluation.score_name)}. "
        "Read F1 against its baselines, and TPR at a low FPR before accuracy.</p>"
        f"<div class='plots'><table class='data metrics'>{table}</table>"
        f"{roc_svg(evaluation)}</div></section>"
    )


def truth_cell(evaluation: Evaluation | None, name: str) -> list[tuple[str, str]]:
    if evaluation is None:
        return []
    truth = evaluation.truth.get(name)
    return [("—" if truth is None else "used" if truth else "unused", "truth")]


def row_class(predicted_used: bool, evaluation: Evaluation | None, name: str) -> str:
    classes = ["used" if predicted_used else "unused"]
    truth = evaluation.truth.get(name) if evaluation is not None else None
    if truth is not None and truth != predicted_used:
        classes.append("wrong")
    return " ".join(classes)


def footer_html(document: dict) -> str:
    created = document.get("created_at")
    stamp = created
    if isinstance(created, datetime):
        aware = created.astimezone(UTC) if created.tzinfo else created  # naive: stored as UTC
        stamp = aware.strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        f"<footer>memaudit audit report · stored {esc(stamp or '—')} · "
        "self-contained page: no script, no external resources</footer>"
    )


# --- the /match report ------------------------------------------------------------------


def render_match_report(view: MatchReportView) -> str:
    doc = view.document
    bits = doc["hash_size"] ** 2
    threshold = doc["threshold"]
    real_rows = doc["real_summary"]
    used = sum(1 for r in real_rows if r["verdict"] == "used")
    title = f"Audit report: match batch {doc['batch_id']}"
    set_words = f"set “{doc['real_set_name']}” (id {doc['real_set_id'] or 'deleted'})"
    summary = (
        f"<p>{plural(doc['generated_count'], 'generated image')} were compared with the "
        f"{plural(len(real_rows), 'real image')} of {esc(set_words)} by their "
        f"{esc(KIND_NAMES.get(doc['hash_kind'], doc['hash_kind']))} fingerprints ({bits} bits). "
        f"<strong>{doc['matched_count']} generated images are within {threshold} bits of a "
        f"real image and are called copies</strong>; they copy {plural(used, 'real image')} "
        f"(verdict <em>used</em>). {len(real_rows) - used} real images have no copy in this "
        "batch (verdict <em>unused</em>).</p>"
    )
    skipped = len(doc.get("rejected") or []) + len(doc.get("duplicates") or [])
    if skipped:
        summary += (
            f"<p class='note'>{len(doc.get('rejected') or [])} uploaded files were rejected and "
            f"{len(doc.get('duplicates') or [])} were duplicates of others; they are not "
            "counted.</p>"
        )
    copied = doc.get("copied_count") or 0
    figures = key_figures(
        [
            ("generated images", doc["generated_count"], False),
            ("copies by the embedding", copied, copied > 0),
            ("called copies by pHash", doc["matched_count"], doc["matched_count"] > 0),
            ("real images used", used, used > 0),
            ("real images unused", len(real_rows) - used, False),
            ("threshold (bits)", threshold, False),
        ]
    )
    reason = (
        f"<p class='reason'><strong>Threshold {threshold} of {bits} bits, "
        f"{esc(SOURCE_WORDS.get(doc['threshold_source'], doc['threshold_source']))}:</strong> "
        f"{esc(doc['threshold_reason'])}.</p>"
    )
    body = [
        f"<h1>{esc(title)}</h1>",
        f"<p class='meta'>Source matching · real {esc(set_words)}, revision "
        f"{doc['real_set_revision']} · top {doc['top_k']} candidates kept</p>",
        f"<section id='summary'><h2>Summary</h2>{figures}{copies_html(doc)}{summary}{reason}"
        f"{how_sure_html(view)}</section>",
        distribution_html(view),
    ]
    return report_page(
        title,
        body,
        evaluation_html(view.evaluation, "each real image's verdict (used/unused)")
        if view.evaluation is not None
        else "",
        "generated image | the real image it copies (or its nearest)",
        view.pairs_note,
        gallery_html(view.pairs, "generated", "real"),
        match_table_html(view),
        view.labels_form,
        doc,
    )


def report_page(
    title: str,
    head: list[str],
    evaluation: str,
    gallery_title: str,
    gallery_note: str,
    gallery: str,
    table: str,
    labels_form: bool,
    doc: dict,
) -> str:
    """Both reports after their summary and distribution: the metrics (with labels), the
    evidence gallery, the per-real table, the labels form and the footer."""
    body = [
        *head,
        evaluation,
        f"<section id='gallery'><h2>Evidence: {esc(gallery_title)}</h2>"
        f"<p class='note'>{esc(gallery_note)}</p>{gallery}</section>",
        table,
        labels_form_html(labels_form),
        footer_html(doc),
    ]
    return page(title, "\n".join(part for part in body if part))


def copies_html(doc: dict) -> str:
    """The copy-detection embedding's verdicts in words: how many copies, of how many real
    images, at which similarity and why that bar (or why none was decided)."""
    rule = doc.get("copy_rule")
    if not rule:
        return ""
    if doc.get("copy_threshold") is None:
        return f"<p class='note'><strong>Copies by the embedding:</strong> {esc(rule)}.</p>"
    copied = [m for m in doc["matches"] if m.get("copy_of")]
    sources = len({m["copy_of"]["real"] for m in copied})
    verified = [m for m in copied if m["copy_of"].get("decided_by") == "verified"]
    if verified:
        fewest = min(m["copy_of"]["verified_inliers"] for m in verified)
        how = (
            f"each verified geometrically: at least {fewest} SIFT keypoints agree with the "
            "real image under one rotation, scale and shift, more than any real image of the "
            "set shares with its own nearest other"
        )
        heading = "Copies verified geometrically, bar calibrated on the real set:"
    else:
        how = f"descriptor similarity {fmt(doc['copy_threshold'])} or more"
        heading = f"Copy bar {fmt(doc['copy_threshold'])}, calibrated on the real set:"
    return (
        f"<p><strong>{plural(len(copied), 'generated image')} copy "
        f"{plural(sources, 'real image')} by the copy-detection embedding</strong> ({how}; "
        "edited copies the pHash rule below misses are found here).</p>"
        f"<p class='reason'><strong>{heading}</strong> {esc(rule)}.</p>"
    )


def how_sure_html(view: MatchReportView) -> str:
    """The null in words: how often two different real images fall under the threshold."""
    null = view.null_distances
    if null is None or not len(null):
        return f"<p class='note'>{esc(view.null_note)}</p>"
    threshold = view.document["threshold"]
    close = int((null <= threshold).sum())
    distances = np.array([m["distance"] for m in view.document["matches"]], np.int64)
    median_generated = int(np.median(distances)) if len(distances) else None
    return (
        f"<p><strong>How sure:</strong> among the real images themselves, {close} of "
        f"{len(null)} ({pct(close / len(null))}) have another real image within {threshold} "
        "bits: that is how often two <em>different</em> images (neighbouring slices of one "
        "scan, say) fall under the threshold by chance. The median real image's nearest "
        f"other real image is {int(np.median(null))} bits away; the median generated image's "
        f"nearest real image is {fmt(median_generated)} bits away. {esc(view.null_note)}</p>"
    )


def distribution_html(view: MatchReportView) -> str:
    doc = view.document
    distances = np.array([m["distance"] for m in doc["matches"]], np.int64)
    series = [Series("generated → nearest real", distances, COLOURS["generated"])]
    if view.null_distances is not None and len(view.null_distances):
        series.append(
            Series("real → nearest other real (null)", view.null_distances, COLOURS["null"], False)
        )
    bits = doc["hash_size"] ** 2
    edges = distance_edges([s.values for s in series], bits)
    plot = histogram_svg(
        "Nearest distances: generated images vs the real-vs-real null",
        series,
        edges,
        f"Hamming distance ({bits}-bit {KIND_NAMES.get(doc['hash_kind'], doc['hash_kind'])})",
        doc["threshold"] + 0.5,
        f"threshold {doc['threshold']}: copy at or below",
    )
    return (
        "<section id='distribution'><h2>Distances against the null</h2>"
        "<p>Each generated image's distance to its nearest real image (bars), beside each real "
        "image's distance to its nearest <em>other</em> real image (line): the distances "
        "different images have. Copies are the bars left of the dashed threshold, where "
        "different real images rarely are.</p>"
        f"{plot}</section>"
    )


def match_table_html(view: MatchReportView) -> str:
    doc, evaluation = view.document, view.evaluation
    rows = sorted(
        doc["real_summary"],
        key=lambda r: (
            r["verdict"] != "used",
            r["min_distance"] if r["min_distance"] is not None else 1 << 30,
        ),
    )
    headers = ["real image", "verdict", "copies", "nearest generated", "distance"]
    if evaluation is not None:
        headers.append("label")
    table_rows = [
        (
            [
                (r["filename"], "name"),
                (r["verdict"], "verdict"),
                (str(r["matched_count"]), "num"),
                (r["closest_generated"] or "—", "name"),
                (fmt(r["min_distance"]), "num"),
                *truth_cell(evaluation, r["filename"]),
            ],
            row_class(r["verdict"] == "used", evaluation, r["filename"]),
        )
        for r in rows[:MAX_TABLE_ROWS]
    ]
    scope = doc.get("real_summary_scope", "all")
    intro = (
        "<p>Every real image: how many generated images it is the source of, its nearest "
        "generated image and their distance; used first, then by distance."
        + (" Rows whose verdict disagrees with the label are shaded." if evaluation else "")
        + "</p>"
    )
    if scope != "all":
        intro += f"<p class='note'>Only the real images of scope {esc(scope)} are listed.</p>"
    table = table_html(
        headers,
        table_rows,
        len(rows),
        f"GET /match/{doc['batch_id']} lists them all in real_summary.",
    )
    return f"<section id='real-images'><h2>Per real image</h2>{intro}{table}</section>"


# --- the /classify report ---------------------------------------------------------------


def render_classification_report(view: ClassificationReportView) -> str:
    doc = view.document
    threshold = doc["threshold"]
    title = f"Audit report: classification {doc['classification_id']}"
    against = (
        f"the {plural(doc['generated_count'], 'generated image')} of match batch {doc['batch_id']}"
        if doc.get("batch_id")
        else f"{plural(doc['generated_count'], 'generated image')} uploaded with the request"
    )
    real_words = (
        f"real set {doc['real_set_id']}" if doc.get("real_set_id") else "uploaded real images"
    )
    used = doc["used_count"]
    summary = (
        f"<p>Method <strong>{esc(doc['method'])}</strong> scored "
        f"{plural(doc['real_count'], 'real image')} ({esc(real_words)}) against "
        f"{esc(against)}. <strong>{used} are labelled used</strong> (score at or above "
        f"{fmt(threshold)}), {doc['real_count'] - used} unused. Higher scores mean more "
        "likely used to train the generator.</p>"
    )
    models = ", ".join(
        f"{m.get('name')} {m.get('version')}"
        + (f" (sha256 {str(m.get('sha256'))[:12]})" if m.get("sha256") else "")
        for m in doc.get("models") or []
    )
    figures = key_figures(
        [
            ("real images", doc["real_count"], False),
            ("labelled used", used, used > 0),
            ("labelled unused", doc["real_count"] - used, False),
            ("generated images", doc["generated_count"], False),
            ("threshold", fmt(threshold), False),
        ]
    )
    reason = (
        f"<p class='reason'><strong>Threshold {fmt(threshold)}:</strong> "
        f"{esc(doc['threshold_reason'])}.</p>"
    )
    body = [
        f"<h1>{esc(title)}</h1>",
        f"<p class='meta'>Membership inference · {esc(doc['method'])}"
        + (f" · models: {esc(models)}" if models else "")
        + "</p>",
        f"<section id='summary'><h2>Summary</h2>{figures}{summary}{reason}</section>",
        score_distribution_html(view),
    ]
    return report_page(
        title,
        body,
        evaluation_html(view.evaluation, "each real image's label (used/unused)")
        if view.evaluation is not None
        else "",
        "real image | the generated image behind its verdict",
        f"{view.batch_note} {view.pairs_note}",
        gallery_html(view.pairs, "real", "generated"),
        classification_table_html(view),
        view.labels_form,
        doc,
    )


def score_distribution_html(view: ClassificationReportView) -> str:
    doc, evaluation = view.document, view.evaluation
    results = doc["results"]
    scores = np.array([r["score"] for r in results], np.float64)
    if evaluation is not None:
        truth = [evaluation.truth.get(r["filename"]) for r in results]
        groups = [("truly used (labels)", True, "used"), ("truly unused (labels)", False, "unused")]
        series = [
            Series(label, scores[[t is want for t in truth]], COLOURS[colour])
            for label, want, colour in groups
        ]
        words = "by the uploaded labels"
    else:
        labels = np.array([r["label"] == "used" for r in results], bool)
        series = [
            Series("labelled used", scores[labels], COLOURS["used"]),
            Series("labelled unused", scores[~labels], COLOURS["unused"]),
        ]
        words = "by the method's labels (upload labels to split by the truth)"
    edges, clipped = score_edges(scores, float(doc["threshold"]))
    if clipped is not None:
        series = [
            Series(s.label, np.minimum(s.values, edges[-1] - 1e-9), s.colour, s.filled)
            for s in series
        ]
    plot = histogram_svg(
        "Membership scores",
        series,
        edges,
        f"score ({doc['method']}; higher = more likely used)",
        float(doc["threshold"]),
        f"threshold {fmt(doc['threshold'])}: used at or above",
    )
    note = (
        f" Scores above {fmt(clipped)} are counted in the last bar." if clipped is not None else ""
    )
    return (
        "<section id='distribution'><h2>Score distribution</h2>"
        f"<p>The real images' scores, split {esc(words)}.{esc(note)}</p>{plot}</section>"
    )


def classification_table_html(view: ClassificationReportView) -> str:
    doc, evaluation = view.document, view.evaluation
    results = sorted(doc["results"], key=lambda r: -r["score"])
    keys = sorted({k for r in results for k in r["components"]})
    closest = {}
    if view.batch is not None:
        closest = {r["filename"]: r for r in view.batch["real_summary"]}
    headers = ["real image", "score", "label", *keys]
    if closest:
        headers += ["closest generated (pHash)", "distance"]
    if evaluation is not None:
        headers.append("truth")
    table_rows = []
    for r in results[:MAX_TABLE_ROWS]:
        cells = [
            (r["filename"], "name"),
            (fmt(r["score"]), "num"),
            (r["label"], "verdict"),
            *((fmt(r["components"].get(k)), "num") for k in keys),
        ]
        if closest:
            near = closest.get(r["filename"]) or {}
            cells += [
                (near.get("closest_generated") or "—", "name"),
                (fmt(near.get("min_distance")), "num"),
            ]
        cells += truth_cell(evaluation, r["filename"])
        table_rows.append((cells, row_class(r["label"] == "used", evaluation, r["filename"])))
    intro = (
        "<p>Every real image by score, highest first"
        + (", with its evidence components" if keys else "")
        + (". Rows whose label disagrees with the truth are shaded." if evaluation else ".")
        + "</p>"
    )
    table = table_html(
        headers,
        table_rows,
        len(results),
        f"GET /classify/{doc['classification_id']}?format=csv lists them all.",
    )
    return f"<section id='real-images'><h2>Per real image</h2>{intro}{table}</section>"
