"""FastAPI application factory: wires settings, database, migrations and routers."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.api.errors import register_error_handlers
from app.api.routes import classify, health, match, models, real_sets
from app.api.routes.docs import add_offline_docs
from app.api.schemas import keep_example_nulls
from app.config import Settings, get_settings
from app.db.migrate import upgrade_to_head
from app.db.session import make_engine, make_session_factory
from app.scoring.artifacts import ModelArtifacts
from app.services.decode_and_hash import HashPool
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
to train the generator) with `reference` (recommended: compares the real images with the
generated batch), `phash`, or the paper's `cnn` and `sift_knn` models (`GET /models`).

Uploads are `multipart/form-data`; text fields may come before or after the files.
Errors come back as JSON `{"detail": ...}` with a 4xx status; per-file problems are
listed in `rejected` while the good files of the same request are still used.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.effective_database_url)
        if settings.auto_migrate:
            upgrade_to_head(engine, settings.migrations_dir)
        app.state.settings = settings
        app.state.engine = engine
        app.state.sessions = make_session_factory(engine)
        app.state.hash_cache = SetHashCache()
        app.state.image_store = ImageStore(settings.effective_image_store_dir)
        # Features derived from the stored images live beside them (shared the same way).
        app.state.feature_store = FeatureStore(settings.effective_image_store_dir / "features")
        app.state.models = ModelArtifacts(settings.models_dir, settings.use_cuda).load()
        workers = settings.effective_hash_workers
        app.state.hash_pool = HashPool(workers) if workers > 0 else None
        log.info(
            "memaudit ready: database %s",
            engine.url.render_as_string(hide_password=True),
        )
        try:
            yield
        finally:
            if app.state.hash_pool is not None:
                app.state.hash_pool.shutdown()
            engine.dispose()

    app = FastAPI(
        title="memaudit",
        version="0.1.0",
        summary="Audit synthetic medical images for memorized training data.",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served offline by add_offline_docs
        redoc_url=None,
    )
    register_error_handlers(app)
    keep_example_nulls(app)
    add_offline_docs(app)
    app.include_router(health.router)
    app.include_router(real_sets.router)
    app.include_router(match.router)
    app.include_router(classify.router)
    app.include_router(models.router)
    return app
