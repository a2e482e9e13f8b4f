"""FastAPI dependencies: settings, database sessions, the per-process hash cache."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import Request
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.services.decode_and_hash import HashPool
from app.services.real_sets import SetHashCache
from app.storage import FeatureStore, ImageStore


def settings_of(request: Request) -> Settings:
    return request.app.state.settings


def sessions_of(request: Request) -> sessionmaker[Session]:
    return request.app.state.sessions


def hash_cache_of(request: Request) -> SetHashCache:
    return request.app.state.hash_cache


def image_store_of(request: Request) -> ImageStore:
    return request.app.state.image_store


def feature_store_of(request: Request) -> FeatureStore:
    return request.app.state.feature_store


def hash_pool_of(request: Request) -> HashPool | None:
    return request.app.state.hash_pool


def db_session(request: Request) -> Iterator[Session]:
    """A read-mostly session for one request (writes use explicit transactions)."""
    with sessions_of(request)() as session:
        yield session
