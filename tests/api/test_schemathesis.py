"""The API keeps its own contract: schemathesis generates requests from /openapi.json (fields,
query parameters, multipart bodies with generated file bytes) and sends them to the app
in-process; every answer must be documented (status code, content type, body schema) and
none may be a 5xx. Bounded and deterministic: a few examples per operation, fixed seed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from app.config import Settings
from app.main import create_app
from tests.helpers import file_parts, real_images, register

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in the dev extra")
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def contract_app(tmp_path) -> Iterator:
    """The app on SQLite in a temporary directory, with a real set (id 1), a match batch
    (id 1) and a classification (id 1), so the documented example ids reach real answers;
    one per operation, so DELETE /real-sets/1 does not take the set from the others."""
    tmp = tmp_path
    app = create_app(
        Settings(
            data_dir=tmp / "data",
            database_url=f"sqlite:///{tmp / 'memaudit.db'}",
            hash_workers=0,
            hash_batch_size=64,
        )
    )
    with TestClient(app) as client:
        reals = real_images(12, size=64)
        real_set = register(client, reals)
        generated = file_parts(dict(list(reals.items())[:3]))
        batch = client.post("/match", data={"real_set_id": str(real_set["id"])}, files=generated)
        assert batch.status_code == 200, batch.text
        scored = client.post(
            "/classify", data={"method": "phash", "real_set_id": "1", "batch_id": "1"}
        )
        assert scored.status_code == 200, scored.text
    yield app
    from schemathesis.python import asgi

    asgi.shutdown_lifespans()  # the app's engine and workers, started by schemathesis


# The contract as the app publishes it (building it needs no database). Loaded here, not from a
# fixture: schemathesis's lazy fixture loader does not run under pytest 9.
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())


@schema.parametrize()
@settings(
    max_examples=20,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_answer_is_documented(case, contract_app) -> None:
    case.call_and_validate(app=contract_app, checks=CHECKS)
