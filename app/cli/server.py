"""`memaudit serve` and `memaudit migrate`: run the API, bring the database schema up to date."""

from __future__ import annotations

import argparse


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    import uvicorn

    from app.config import get_settings

    settings = get_settings()
    host = args.host or settings.host
    # The app (in this process or in each worker) reads the bind address from the environment
    # to warn when it is public without API keys.
    os.environ["MEMAUDIT_HOST"] = host
    get_settings.cache_clear()
    if args.workers > 1:
        # Migrate once here: N workers each migrating a fresh database at once would race.
        cmd_migrate(args)

    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=args.port,
        workers=args.workers,
        log_level="info",
        **front_door_options(settings),
    )
    return 0


def front_door_options(settings) -> dict:
    """uvicorn options that bound what one connection may cost (README "Security"): request
    heads limited by app.api.frontdoor (httptools has no limit of its own), idle keep-alive
    connections closed, connections per process capped (503 beyond)."""
    return {
        "http": "app.api.frontdoor:LimitedHttpToolsProtocol",
        "timeout_keep_alive": settings.keep_alive_timeout_s,
        "limit_concurrency": settings.max_connections,
    }


def cmd_migrate(_args: argparse.Namespace) -> int:
    from app.config import get_settings
    from app.db.migrate import schema_status, upgrade_to_head
    from app.db.session import make_engine

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.effective_database_url)
    upgrade_to_head(engine, settings.migrations_dir)
    current, _head = schema_status(engine, settings.migrations_dir)
    print(f"database at revision {current}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="run the REST API (Swagger UI at /docs)")
    serve.add_argument(
        "--host",
        default=None,
        help="address to listen on (default MEMAUDIT_HOST, else 127.0.0.1: this machine only; "
        "listen publicly only with MEMAUDIT_API_KEYS set)",
    )
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(func=cmd_serve)

    migrate = sub.add_parser("migrate", help="apply database migrations (DATABASE_URL)")
    migrate.set_defaults(func=cmd_migrate)
