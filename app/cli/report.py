"""`memaudit report`: write the audit report of a match batch or classification to a file,
fetched from a running server or built in-process from its database and image store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.cli.database import database_at_head


def report_path(args: argparse.Namespace) -> str:
    if args.match is not None:
        return f"/match/{args.match}/report"
    return f"/classify/{args.classify}/report"


def fetch_report(server: str, path: str, labels: bytes | None) -> str:
    """The page from a running server (GET, or POST with the labels file)."""
    import httpx

    url = server.rstrip("/") + path
    params = {"form": "false"}  # a page saved to disk cannot post back
    try:
        if labels is None:
            response = httpx.get(url, params=params, timeout=300)
        else:
            files = {"labels": ("labels.csv", labels, "text/csv")}
            response = httpx.post(url, params=params, files=files, timeout=300)
    except httpx.HTTPError as exc:
        raise SystemExit(f"memaudit: cannot reach {url}: {exc}") from None
    if response.status_code != 200:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text[:500]
        raise SystemExit(f"memaudit: {url} answered {response.status_code}: {detail}")
    return response.text


def build_report(args: argparse.Namespace, labels: bytes | None) -> str:
    """The page built in-process by the service the routes call, from the database and
    image store the settings name (environment, overridden by --db / --data-dir)."""
    from app.db.session import make_session_factory
    from app.services import audit_report
    from app.services.errors import ServiceError
    from app.services.set_hash_cache import SetHashCache
    from app.storage import ImageStore

    with database_at_head(args, "") as (settings, engine):
        sessions = make_session_factory(engine)
        store = ImageStore(settings.effective_image_store_dir)
        try:
            if args.match is not None:
                return audit_report.match_report(
                    sessions,
                    SetHashCache(),
                    store,
                    args.match,
                    max_pixels=settings.max_image_pixels,
                    labels=labels,
                )
            return audit_report.classification_report(
                sessions, store, args.classify, max_pixels=settings.max_image_pixels, labels=labels
            )
        except ServiceError as exc:
            raise SystemExit(f"memaudit: {exc}") from None


def cmd_report(args: argparse.Namespace) -> int:
    labels = Path(args.labels).read_bytes() if args.labels else None
    if args.server:
        text = fetch_report(args.server, report_path(args), labels)
    else:
        text = build_report(args, labels)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"report written to {out} ({len(text.encode()) // 1024} KiB)", file=sys.stderr)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    report = sub.add_parser(
        "report",
        help="write the HTML audit report of a match batch or classification",
        description="One self-contained HTML page (no script, no external resources): summary, "
        "distance or score distribution with the threshold, evidence gallery, per-real table; "
        "with --labels also Table-1 metrics and the ROC curve. From a running server "
        "(--server) or in-process from the database (--db, or DATABASE_URL / MEMAUDIT_*).",
    )
    which = report.add_mutually_exclusive_group(required=True)
    which.add_argument("--match", type=int, metavar="BATCH_ID", help="a /match batch id")
    which.add_argument("--classify", type=int, metavar="ID", help="a /classify id")
    source = report.add_mutually_exclusive_group()
    source.add_argument("--server", metavar="URL", help="e.g. http://localhost:8000")
    source.add_argument("--db", metavar="URL", help="SQLAlchemy URL of memaudit's database")
    report.add_argument(
        "--data-dir", help="memaudit's data directory (image store at DIR/images), offline only"
    )
    report.add_argument("--labels", metavar="CSV", help="labels.csv with columns real,used")
    report.add_argument("--out", required=True, metavar="FILE", help="where to write the page")
    report.set_defaults(func=cmd_report)
