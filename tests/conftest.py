"""Fixtures: a throwaway PostgreSQL cluster, per-test databases, and an app client per backend."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.training.synthetic import simulated_generator
from tests.imagegen import phantom
from tests.pgcluster import pg_bindir, pg_cluster

PG_SKIP_REASON = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's `postgresql` "
    "package (or put initdb on PATH) to run the PostgreSQL tests; .ci/run installs it"
)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """Start a PostgreSQL cluster on a free loopback port; yields the admin URL base."""
    bindir = pg_bindir()
    if bindir is None:
        if os.environ.get("MEMAUDIT_REQUIRE_POSTGRES"):
            pytest.fail(PG_SKIP_REASON)  # CI must run them
        pytest.skip(PG_SKIP_REASON)
    with pg_cluster(bindir) as address:
        yield address


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database for one test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = f"postgresql://memaudit@{postgres_server}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://memaudit@{postgres_server}/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'memaudit.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def settings(database_url, tmp_path) -> Settings:
    # In-process hashing keeps these small tests fast; tests/services/test_decode_and_hash.py
    # covers the workers.
    return Settings(
        data_dir=tmp_path / "data", database_url=database_url, hash_batch_size=64, hash_workers=0
    )


@pytest.fixture
def client(settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def devset():
    """A small synthetic development set: 12 used, 12 unused, 40 generated."""
    used = [phantom(i, 128) for i in range(12)]
    unused = [phantom(500 + i, 128) for i in range(12)]
    generated = simulated_generator(used, 40, seed=3, copy_share=0.8)
    return used, unused, generated
