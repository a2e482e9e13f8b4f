"""FastAPI dependencies: the one place that reads ``request.app.state``.

Routes take these as ``Annotated`` aliases (``SettingsDep``, ``SessionDep`` …), so tests can
replace any of them with ``app.dependency_overrides``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Annotated

import anyio
from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from app.config import Settings
from app.scoring.artifacts import ModelArtifacts
from app.services.byte_budget import ByteBudget
from app.services.copy_verification import VerifyConfig
from app.services.decode_and_hash import EmbeddingSpec, HashPool
from app.services.intake import ImageIntake, ingest_limits
from app.services.jobs import current_job
from app.services.retention import ImageRetention
from app.services.set_hash_cache import SetHashCache
from app.storage import FeatureStore, ImageStore

if TYPE_CHECKING:  # app.api.security and app.api.jobs build on these dependencies
    from app.api.jobs import JobRunner
    from app.api.security import ApiKeys


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


def get_sessions(request: Request) -> sessionmaker[Session]:
    return request.app.state.sessions


def get_hash_cache(request: Request) -> SetHashCache:
    return request.app.state.hash_cache


def get_image_store(request: Request) -> ImageStore:
    return request.app.state.image_store


def get_feature_store(request: Request) -> FeatureStore:
    return request.app.state.feature_store


def get_retention(request: Request) -> ImageRetention:
    return request.app.state.retention


def get_hash_pool(request: Request) -> HashPool | None:
    return request.app.state.hash_pool


def get_upload_budget(request: Request) -> ByteBudget | None:
    """The process's budget of image bytes waiting to be hashed (None outside the app)."""
    return request.app.state.upload_budget


def get_models(request: Request) -> ModelArtifacts:
    return request.app.state.models


def get_job_runner(request: Request) -> JobRunner:
    return request.app.state.jobs


def get_api_keys(request: Request) -> ApiKeys:
    """The keys loaded at start (empty: access control off)."""
    return request.app.state.api_keys


SessionsDep = Annotated[sessionmaker[Session], Depends(get_sessions)]


def get_session(sessions: SessionsDep) -> Iterator[Session]:
    """A read-mostly session for one request (writes run in the services' transactions)."""
    with sessions() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
SessionDep = Annotated[Session, Depends(get_session)]
HashCacheDep = Annotated[SetHashCache, Depends(get_hash_cache)]
ImageStoreDep = Annotated[ImageStore, Depends(get_image_store)]
FeatureStoreDep = Annotated[FeatureStore, Depends(get_feature_store)]
RetentionDep = Annotated[ImageRetention, Depends(get_retention)]
HashPoolDep = Annotated[HashPool | None, Depends(get_hash_pool)]
ModelsDep = Annotated[ModelArtifacts, Depends(get_models)]
ApiKeysDep = Annotated["ApiKeys", Depends(get_api_keys)]
JobRunnerDep = Annotated["JobRunner", Depends(get_job_runner)]


async def get_intake(
    request: Request,
    settings: SettingsDep,
    retention: RetentionDep,
    pool: HashPoolDep,
    models: ModelsDep,
) -> AsyncIterator[ImageIntake]:
    """Uploads are hashed, thumbnailed and (with a verified embedding) embedded; what the
    request stores is held until the route returns or fails, then whatever no row took is
    removed (a failed request, a disconnect, /classify's scored uploads leave no bytes)."""
    path = models.embedding_file()
    spec = (
        EmbeddingSpec(str(path), settings.use_cuda, models.embedding().info.sha256)
        if path is not None
        else None
    )
    held = retention.hold()
    job = current_job.get()  # a job counts the files of its upload in its progress
    limits = ingest_limits(settings)
    if job is not None:  # jobs run a few at a time: they may carry more images
        limits = replace(limits, max_files=settings.job_max_files)
    try:
        yield ImageIntake(
            limits,
            retention.store,
            pool,
            spec,
            held=held,
            budget=get_upload_budget(request),
            on_ingest=job.watch if job is not None else None,
        )
    finally:
        with anyio.CancelScope(shield=True):  # also when the request is cancelled
            await run_in_threadpool(held.release)


#: Ends with the route function ("function" scope), before the answer is sent: a client that
#: got its answer finds the store already cleaned.
IntakeDep = Annotated[ImageIntake, Depends(get_intake, scope="function")]


def get_copy_verify(
    settings: SettingsDep, images: ImageStoreDep, features: FeatureStoreDep
) -> VerifyConfig:
    """Where /match's copy verification finds pixels and cached keypoints, and its budget."""
    return VerifyConfig.of(settings, images, features)


CopyVerifyDep = Annotated[VerifyConfig, Depends(get_copy_verify)]
