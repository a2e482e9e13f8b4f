"""FastAPI application factory: wires settings, database, migrations and routers."""

from __future__ import annotations

import asyncio
import logging
import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app.api.errors import register_error_handlers
from app.api.frontdoor import BodyLimits, BodyTimeoutMiddleware
from app.api.jobs import JobRunner
from app.api.metrics import RequestMetrics
from app.api.responses import document_errors
from app.api.routes import (
    classify,
    filter,
    health,
    jobs,
    match,
    metrics,
    models,
    real_sets,
    reports,
)
from app.api.routes.docs import add_offline_docs
from app.api.schemas import keep_example_nulls
from app.api.security import DOCS, PROTECTED, ApiKeys, document_access, is_loopback, load_api_keys
from app.config import Settings, get_settings
from app.db.migrate import upgrade_to_head
from app.db.session import make_engine, make_session_factory
from app.scoring.artifacts import ModelArtifacts
from app.scoring.methods import all_methods
from app.services.byte_budget import ByteBudget
from app.services.decode_and_hash import HashPool
from app.services.retention import ImageRetention, sweep_periodically
from app.services.search_indices import SearchIndices
from app.services.set_hash_cache import SetHashCache
from app.storage import FeatureStore, ImageStore

log = logging.getLogger("memaudit")

DESCRIPTION = """
memaudit audits synthetic (generated) medical images for leaked training data.

**Source matching** (the pHash method of ImageCLEFmedical GANs 2023, team DMK-SSN):

1. `POST /real-sets` — register the real training-candidate images (files or zips).
2. `POST /match` — upload a generated batch; each generated image gets its nearest real image
   by pHash Hamming distance, or `null` above the threshold, and each real image a verdict.
3. `GET /match/{batch_id}?format=text` — the paper's lines,
   e.g. `The source image for generated_0478.png is used_0029.png with 52`.

**Membership inference**: `POST /classify` scores every real image (higher = more likely used
to train the generator) with one of these methods (`GET /models` shows which are available):

{methods}

Uploads are `multipart/form-data`; text fields may come before or after the files.
Long uploads and audits run as **jobs** when sent with `Prefer: respond-async` (or over
1 GiB): 202 with `Location: /jobs/{id}`, where their progress and result link are.
Errors come back as JSON `{"detail": ...}` with a 4xx status; per-file problems are
listed in `rejected` while the good files of the same request are still used.
While the database cannot be reached every endpoint answers 503 with `Retry-After`.

**Access**: when the server has API keys (`MEMAUDIT_API_KEYS`), send one as
`Authorization: Bearer <key>` or `X-API-Key: <key>` (the Authorize button). A `read` key may
GET and run /match and /classify; registering or appending to a set and every DELETE need an
`admin` key (cancelling a job needs the key its request needed). 401: no key or an unknown
one; 403: a read-only key where admin is needed, or a POST/DELETE from a browser on another
site. `/health` and `/ready` never need a key.
"""

#: Methods the browser may use cross-site when MEMAUDIT_CORS_ORIGINS allows an origin.
CORS_METHODS = ["GET", "POST", "DELETE"]
CORS_HEADERS = ["Authorization", "X-API-Key", "Content-Type"]


def describe_methods() -> str:
    """The scoring-method table as a Markdown list for the API description."""
    return "\n".join(f"- `{m.name}`: {m.description}" for m in all_methods())


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    api_keys = load_api_keys(settings)  # a bad key or file fails here, before serving

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        warn_if_exposed(settings, api_keys)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.effective_database_url)
        if settings.auto_migrate:
            upgrade_to_head(engine, settings.migrations_dir)
        app.state.settings = settings
        app.state.api_keys = api_keys
        app.state.engine = engine
        app.state.sessions = make_session_factory(engine)
        app.state.hash_cache = SetHashCache(
            indices=SearchIndices(settings.effective_index_dir, settings.index_min_images)
        )
        app.state.image_store = ImageStore(settings.effective_image_store_dir)
        app.state.feature_store = FeatureStore(settings.effective_feature_store_dir)
        app.state.retention = ImageRetention(
            app.state.image_store, app.state.feature_store, app.state.sessions
        )
        app.state.models = ModelArtifacts(settings.models_dir, settings.use_cuda).load()
        app.state.models.publish_metrics()
        workers = settings.effective_hash_workers
        app.state.hash_pool = HashPool(workers) if workers > 0 else None
        app.state.upload_budget = ByteBudget(settings.max_process_pending_bytes)
        app.state.jobs = JobRunner(app, settings, app.state.sessions)
        await app.state.jobs.start()
        log.info(
            "memaudit ready: database %s",
            engine.url.render_as_string(hide_password=True),
        )
        # What a crash left in the image store goes now, off the event loop, while serving.
        stop_sweeps = threading.Event()
        sweeps = asyncio.create_task(
            sweep_periodically(
                app.state.retention,
                settings.gc_min_age_seconds,
                settings.gc_interval_seconds,
                stop_sweeps,
            )
        )
        try:
            yield
        finally:
            await app.state.jobs.stop()  # running jobs are taken over after the restart
            stop_sweeps.set()  # a sweep running ends after its current shard folder
            sweeps.cancel()
            await asyncio.gather(sweeps, return_exceptions=True)
            if app.state.hash_pool is not None:
                app.state.hash_pool.shutdown()
            engine.dispose()

    app = FastAPI(
        title="memaudit",
        version="0.1.0",
        summary="Audit synthetic medical images for memorized training data.",
        description=DESCRIPTION.replace("{methods}", describe_methods()),
        lifespan=lifespan,
        docs_url=None,  # served offline by add_offline_docs
        redoc_url=None,
    )
    register_error_handlers(app)
    keep_example_nulls(app)
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origin_list),
            allow_methods=CORS_METHODS,
            allow_headers=CORS_HEADERS,
            expose_headers=["Content-Disposition", "Retry-After"],
        )
    # A stalled body is cut off whatever route reads it.
    app.add_middleware(BodyTimeoutMiddleware, limits=BodyLimits.from_settings(settings))
    # Outside it: counts the status the client gets (a cut-off body's 408 included).
    app.add_middleware(RequestMetrics)
    add_offline_docs(app, dependencies=DOCS)
    app.include_router(health.router)  # probes: never a key
    for router in (
        metrics.router,
        real_sets.router,
        match.router,
        filter.router,
        classify.router,
        jobs.router,
        models.router,
        reports.match_router,
        reports.classify_router,
    ):
        app.include_router(router, dependencies=PROTECTED)
    document_access(app)
    document_errors(app)
    return app


def warn_if_exposed(settings: Settings, api_keys: ApiKeys) -> None:
    """Say so at start when anyone who can reach the address may use the API."""
    if api_keys:
        log.info(
            "API keys: %d configured; every route but /health and /ready needs one", len(api_keys)
        )
    elif not is_loopback(settings.host):
        log.warning(
            "listening on %s without API keys: anyone who can reach this port can read, "
            'change and delete every set; set MEMAUDIT_API_KEYS (README "Security"; docker '
            "compose publishes the port on the host's 127.0.0.1 unless MEMAUDIT_PUBLISH_ADDRESS "
            "is set)",
            settings.host,
        )
    if "*" in settings.cors_origin_list:
        log.warning("MEMAUDIT_CORS_ORIGINS=*: pages on any site may call this API")
