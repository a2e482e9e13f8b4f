"""Access control and error hygiene over real HTTP (ASGI): API keys on every route, read vs
admin, cross-site writes refused, a database outage answered with a JSON 503, no host, port or
path in any answer, NUL characters refused with a 422."""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from app.api import security
from app.api.security import (
    ApiKeys,
    Role,
    api_routes,
    load_api_keys,
    needs,
    origin_allowed,
    parse_api_keys,
    require_admin,
    require_read,
)
from app.config import Settings
from app.main import create_app
from app.services import jobs
from tests.helpers import file_parts, real_images, register

ADMIN_KEY = "admin-key-0123456789abcdef"
READ_KEY = "read-key-0123456789abcdef"
OTHER_ADMIN_KEY = "second-admin-key-0123456789"
PUBLIC_PATHS = {"/health", "/ready", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
DOCS_PATHS = PUBLIC_PATHS - {"/health", "/ready"}
FOREIGN = {"Origin": "http://evil.example"}


def sqlite_settings(tmp_path: Path, **overrides) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'memaudit.db'}",
        hash_workers=0,
        **overrides,
    )


@pytest.fixture
def keyed_client(tmp_path) -> Iterator[TestClient]:
    """An app with one admin key, one read-only key and a second admin key."""
    keys = f"{ADMIN_KEY},{READ_KEY}:read,{OTHER_ADMIN_KEY}:admin"
    with TestClient(create_app(sqlite_settings(tmp_path, api_keys=keys))) as client:
        yield client


@pytest.fixture
def open_client(tmp_path) -> Iterator[TestClient]:
    """No keys configured: only the Origin check applies."""
    with TestClient(create_app(sqlite_settings(tmp_path))) as client:
        yield client


def operations(app) -> list[tuple[str, str, object]]:
    """(method, path with every parameter set to 1, route) for each served API route."""
    found = []
    for route in api_routes(app):
        path = re.sub(r"\{[^}]+\}", "1", route.path_format)
        found.extend((method, path, route) for method in sorted(route.methods))
    return found


def admin_expected(method: str, path: str) -> bool:
    """The rule: every DELETE, and every POST that registers or appends to a set; a job is
    cancelled with the key its request needed (test_cancelling_a_job_needs_what_it_needed)."""
    if path.startswith("/jobs/"):
        return False
    return method == "DELETE" or (method == "POST" and path.startswith("/real-sets"))


def test_cancelling_a_job_needs_what_its_request_needed(keyed_client):
    sessions = keyed_client.app.state.sessions
    read, admin = {"X-API-Key": READ_KEY}, {"X-API-Key": ADMIN_KEY}
    for kind, needs_admin in (("match", False), ("real_set", True)):
        job = jobs.create_job(
            sessions,
            jobs.new_job_id(),
            kind=kind,
            path="/x",
            query="",
            content_type="multipart/form-data",
            body_file="x.body",
            body_bytes=1,
            needs_admin=needs_admin,
            owner="another process",
        )
        by_read = keyed_client.delete(f"/jobs/{job.id}", headers=read)
        if needs_admin:
            assert by_read.status_code == 403 and "admin" in by_read.json()["detail"]
            by_read = keyed_client.delete(f"/jobs/{job.id}", headers=admin)
        assert by_read.status_code == 202 and by_read.json()["state"] == "canceled"
        assert keyed_client.get(f"/jobs/{job.id}", headers=read).json()["state"] == "canceled"


def test_every_route_but_probes_and_docs_needs_a_key(keyed_client):
    served = operations(keyed_client.app)
    assert {(m, p) for m, p, _ in served} >= {
        ("POST", "/real-sets"),
        ("GET", "/real-sets/1"),
        ("DELETE", "/real-sets/1"),
        ("POST", "/match"),
        ("POST", "/classify"),
        ("GET", "/models"),
    }
    for method, path, route in served:
        if path in PUBLIC_PATHS:
            assert not needs(route, require_read) and not needs(route, require_admin), path
            continue
        assert needs(route, require_read), f"{method} {path} is not protected"
        assert needs(route, require_admin) == admin_expected(method, path), f"{method} {path}"

        bare = keyed_client.request(method, path)
        assert bare.status_code == 401, (method, path, bare.text)
        assert bare.headers["www-authenticate"] == "Bearer"
        assert bare.headers["content-type"] == "application/json"
        unknown = keyed_client.request(method, path, headers={"X-API-Key": "x" * 30})
        assert unknown.status_code == 401 and unknown.json()["detail"] == "unknown API key"

        read = keyed_client.request(method, path, headers={"X-API-Key": READ_KEY})
        if admin_expected(method, path):
            assert read.status_code == 403, (method, path, read.text)
            assert "admin" in read.json()["detail"]
        else:
            assert read.status_code not in (401, 403), (method, path, read.text)
        for header in ({"Authorization": f"Bearer {ADMIN_KEY}"}, {"X-API-Key": OTHER_ADMIN_KEY}):
            admin = keyed_client.request(method, path, headers=header)
            assert admin.status_code not in (401, 403), (method, path, admin.text)


def test_probes_and_docs_stay_open_with_keys(keyed_client):
    for path in PUBLIC_PATHS:
        assert keyed_client.get(path).status_code == 200, path
    assert keyed_client.get("/docs-assets/swagger-ui.css").status_code == 200


def test_docs_can_need_a_key_too(tmp_path):
    settings = sqlite_settings(tmp_path, api_keys=READ_KEY + ":read", docs_public=False)
    with TestClient(create_app(settings)) as client:
        for path in DOCS_PATHS:
            assert client.get(path).status_code == 401, path
            assert client.get(path, headers={"X-API-Key": READ_KEY}).status_code == 200, path
        assert client.get("/health").status_code == 200
        assert client.get("/ready").status_code == 200


def test_read_key_runs_match_and_admin_key_registers(keyed_client):
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    read = {"Authorization": f"bearer {READ_KEY}"}  # the scheme is case-insensitive
    entries = real_images(4)
    refused = keyed_client.post(
        "/real-sets", data={"name": "s"}, files=file_parts(entries), headers=read
    )
    assert refused.status_code == 403
    assert keyed_client.get("/real-sets", headers=read).json() == []  # nothing stored
    created = keyed_client.post(
        "/real-sets", data={"name": "s"}, files=file_parts(entries), headers=admin
    )
    assert created.status_code == 201, created.text
    set_id = created.json()["id"]
    batch = keyed_client.post(
        "/match", data={"real_set_id": str(set_id)}, files=file_parts(entries), headers=read
    )
    assert batch.status_code == 200, batch.text
    assert keyed_client.get(f"/match/{batch.json()['batch_id']}", headers=read).status_code == 200
    basic = {"Authorization": "Basic " + ADMIN_KEY}  # only Bearer carries a key
    assert keyed_client.delete(f"/real-sets/{set_id}", headers=basic).status_code == 401
    assert keyed_client.delete(f"/real-sets/{set_id}", headers=read).status_code == 403
    assert keyed_client.delete(f"/real-sets/{set_id}", headers=admin).status_code == 204


def test_openapi_documents_keys_401_and_403(keyed_client):
    schema = keyed_client.get("/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["bearer"] == {"type": "http", "scheme": "bearer", **_desc(schemes["bearer"])}
    assert schemes["apiKey"]["in"] == "header" and schemes["apiKey"]["name"] == "X-API-Key"
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if path in PUBLIC_PATHS:
                assert "security" not in operation and "401" not in operation["responses"]
                continue
            assert operation["security"] == [{"bearer": []}, {"apiKey": []}], (method, path)
            assert "401" in operation["responses"], (method, path)
            assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]
            writes = method in ("post", "delete")
            assert ("403" in operation["responses"]) == writes, (method, path)
            if admin_expected(method.upper(), path):
                assert "read-only" in operation["responses"]["403"]["description"]


def _desc(scheme: dict) -> dict:
    return {"description": scheme["description"]}


def test_keys_parse_with_roles_and_refuse_weak_or_ambiguous_ones(tmp_path):
    assert parse_api_keys([f" {ADMIN_KEY} ", f"{READ_KEY}:read", "", "k" * 16 + ":admin"], "x") == [
        (ADMIN_KEY, Role.ADMIN),
        (READ_KEY, Role.READ),
        ("k" * 16, Role.ADMIN),
    ]
    for bad, message in (
        ("short", "at least 16"),
        (ADMIN_KEY + ":reader", "role must be read or admin"),
        ("has a space in the key", "at least 16"),
    ):
        with pytest.raises(ValueError, match=message) as raised:
            parse_api_keys([bad], "MEMAUDIT_API_KEYS")
        assert bad.split(":")[0] not in str(raised.value)  # never echo a key
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# operators\n{READ_KEY}:read  # Alice\n\n{OTHER_ADMIN_KEY}\n")
    keys = load_api_keys(Settings(data_dir=tmp_path, api_keys=ADMIN_KEY, api_keys_file=keys_file))
    assert len(keys) == 3
    assert keys.role_of(ADMIN_KEY) is Role.ADMIN
    assert keys.role_of(READ_KEY) is Role.READ
    assert keys.role_of(OTHER_ADMIN_KEY) is Role.ADMIN
    assert keys.role_of(ADMIN_KEY[:-1]) is None and keys.role_of("") is None
    with pytest.raises(ValueError, match="two roles"):
        load_api_keys(Settings(data_dir=tmp_path, api_keys=f"{ADMIN_KEY},{ADMIN_KEY}:read"))
    with pytest.raises(ValueError, match="role"):
        create_app(sqlite_settings(tmp_path, api_keys=ADMIN_KEY + ":root"))
    # Compose passes unset variables as empty strings: no keys, not a key file named "".
    empty = Settings(data_dir=tmp_path, api_keys="", api_keys_file="")
    assert not load_api_keys(empty)
    assert "admin-key" not in repr(Settings(data_dir=tmp_path, api_keys=ADMIN_KEY))


def test_every_key_is_compared_in_constant_time(keyed_client, monkeypatch):
    """hmac.compare_digest against every configured key, whichever matches (or none)."""
    calls: list[tuple[bytes, bytes]] = []
    real_compare = security.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real_compare(a, b)

    monkeypatch.setattr(security, "compare_digest", counting)
    keys = ApiKeys(
        tuple((security._digest(k), Role.ADMIN) for k in (ADMIN_KEY, READ_KEY, OTHER_ADMIN_KEY))
    )
    for presented in (ADMIN_KEY, OTHER_ADMIN_KEY, "no-such-key-at-all-000"):
        calls.clear()
        keys.role_of(presented)
        assert len(calls) == 3, presented
        assert {len(a) for a, _ in calls} == {32}  # digests: equal length whatever the key
    calls.clear()
    assert keyed_client.get("/real-sets", headers={"X-API-Key": ADMIN_KEY}).status_code == 200
    assert len(calls) == 3


def test_cross_site_writes_are_refused(open_client):
    entries = real_images(3)
    r = open_client.post(
        "/real-sets", data={"name": "csrf"}, files=file_parts(entries), headers=FOREIGN
    )
    assert r.status_code == 403 and "cross-site" in r.json()["detail"]
    assert open_client.get("/real-sets", headers=FOREIGN).json() == []  # GET: no effect, allowed
    form = open_client.post(
        "/classify",
        content=b"method=reference&real_set_id=1",
        headers={**FOREIGN, "content-type": "application/x-www-form-urlencoded"},
    )
    assert form.status_code == 403
    null_origin = open_client.post(
        "/match", data={"real_set_id": "1"}, files=file_parts(entries), headers={"Origin": "null"}
    )
    assert null_origin.status_code == 403

    own = open_client.post(
        "/real-sets",
        data={"name": "mine"},
        files=file_parts(entries),
        headers={"Origin": "http://testserver"},
    )
    assert own.status_code == 201, own.text
    set_id = own.json()["id"]
    assert open_client.delete(f"/real-sets/{set_id}", headers=FOREIGN).status_code == 403
    assert open_client.delete(f"/real-sets/{set_id}").status_code == 204  # curl: no Origin
    # CORS is off: no Access-Control-Allow-Origin for anyone, preflights are not answered.
    assert "access-control-allow-origin" not in open_client.get("/models", headers=FOREIGN).headers
    preflight = open_client.options(
        "/match", headers={**FOREIGN, "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_allowed_origins_get_cors_and_may_write(tmp_path):
    viewer = "https://viewer.example.org"
    settings = sqlite_settings(tmp_path, cors_origins=f"{viewer}/, https://other.example")
    with TestClient(create_app(settings)) as client:
        preflight = client.options(
            "/real-sets",
            headers={
                "Origin": viewer,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "x-api-key",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == viewer
        created = client.post(
            "/real-sets",
            data={"name": "from the viewer"},
            files=file_parts(real_images(3)),
            headers={"Origin": viewer},
        )
        assert created.status_code == 201, created.text
        assert created.headers["access-control-allow-origin"] == viewer
        r = client.delete(f"/real-sets/{created.json()['id']}", headers=FOREIGN)
        assert r.status_code == 403


def test_origin_comparison():
    own = ("memaudit.lan:8000", "http")
    assert origin_allowed("http://memaudit.lan:8000", *own, ())
    assert origin_allowed("HTTP://MEMAUDIT.LAN:8000", *own, ())
    assert not origin_allowed("http://memaudit.lan:8001", *own, ())
    assert not origin_allowed("http://evil.lan:8000", *own, ())
    assert not origin_allowed("null", *own, ())
    # Behind a TLS proxy the app may see http while the browser is on https, same host.
    assert origin_allowed("https://memaudit.example.org", "memaudit.example.org", "http", ())
    assert origin_allowed("http://h.example", "h.example:80", "http", ())
    assert not origin_allowed("https://h.example", "h.example:8443", "https", ())
    assert origin_allowed("https://a.example", *own, ("https://a.example",))
    assert origin_allowed("https://anything.example", *own, ("*",))


@pytest.mark.parametrize(
    ("host", "keys", "warned"),
    [("0.0.0.0", None, True), ("0.0.0.0", ADMIN_KEY, False), ("127.0.0.1", None, False)],
)
def test_public_bind_without_keys_is_warned_about(tmp_path, caplog, host, keys, warned):
    settings = sqlite_settings(tmp_path, host=host, api_keys=keys)
    with caplog.at_level(logging.WARNING, logger="memaudit"), TestClient(create_app(settings)):
        pass
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("without API keys" in m for m in messages) == warned, messages


def test_loopback_detection():
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        assert security.is_loopback(host), host
    for host in ("0.0.0.0", "::", "192.168.1.10", "memaudit.lan"):
        assert not security.is_loopback(host), host


# --- errors --------------------------------------------------------------------------------


def assert_unavailable(response, *secrets: str) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"detail": "database unavailable; retry in a few seconds"}
    assert int(response.headers["retry-after"]) > 0
    for secret in secrets:
        assert secret not in response.text


def test_database_on_a_closed_port_gives_json_503(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: connections are refused
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"postgresql+psycopg://memaudit:pw@127.0.0.1:{port}/nowhere",
        auto_migrate=False,
        hash_workers=0,
    )
    secrets = (str(port), "127.0.0.1", "nowhere", "memaudit:pw")
    with TestClient(create_app(settings)) as client:
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["detail"] == "database unreachable"
        for secret in secrets:
            assert secret not in ready.text
        assert_unavailable(client.get("/real-sets"), *secrets)
        assert_unavailable(client.get("/classify/1"), *secrets)
        assert_unavailable(client.delete("/real-sets/1"), *secrets)


def test_database_dropped_under_a_running_app_gives_json_503(postgres_url, tmp_path):
    settings = Settings(data_dir=tmp_path / "data", database_url=postgres_url, hash_workers=0)
    url = make_url(postgres_url)
    secrets = (str(url.port), url.host, url.database)
    with TestClient(create_app(settings)) as client:
        entries = real_images(4)
        real_set = register(client, entries)
        batch = client.post(
            "/match", data={"real_set_id": str(real_set["id"])}, files=file_parts(entries)
        ).json()
        admin = url.set(drivername="postgresql", database="postgres")
        with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as c:
            c.execute(f'DROP DATABASE "{url.database}" WITH (FORCE)')

        assert_unavailable(client.get("/real-sets"), *secrets)
        assert_unavailable(client.get(f"/real-sets/{real_set['id']}"), *secrets)
        assert_unavailable(client.get(f"/match/{batch['batch_id']}?format=text"), *secrets)
        assert_unavailable(
            client.post(
                "/match", data={"real_set_id": str(real_set["id"])}, files=file_parts(entries)
            ),
            *secrets,
        )
        assert_unavailable(client.post("/real-sets", data={"name": "x"}, files=file_parts(entries)))
        assert_unavailable(client.delete(f"/real-sets/{real_set['id']}"), *secrets)
        ready = client.get("/ready")
        assert ready.status_code == 503 and ready.json()["detail"] == "database unreachable"
        for secret in secrets:
            assert secret not in ready.text


def test_nul_in_a_text_field_is_a_422_naming_it(client):
    """PostgreSQL refuses NUL in text (it was a 500); SQLite would store it silently."""
    entries = real_images(3)
    r = client.post("/real-sets", data={"name": "tri\x00al"}, files=file_parts(entries))
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == "form field 'name' contains a NUL character"
    r = client.post(
        "/classify",
        content=b"method=reference&real_set_id=1%00",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 422 and "'real_set_id'" in r.json()["detail"]
    assert client.get("/real-sets").json() == []
    assert register(client, entries, name="trial")["name"] == "trial"


def test_missing_image_bytes_conflict_does_not_show_the_store_path(tmp_path):
    settings = sqlite_settings(tmp_path)
    with TestClient(create_app(settings)) as client:
        entries = real_images(6)
        real_set = register(client, entries)
        batch = client.post(
            "/match", data={"real_set_id": str(real_set["id"])}, files=file_parts(entries)
        ).json()
        store = settings.effective_image_store_dir
        sha = real_set["images"][0]["sha256"]
        (store / sha[:2] / sha[2:]).unlink()
        r = client.post(
            "/classify",
            data={
                "method": "reference",
                "real_set_id": str(real_set["id"]),
                "batch_id": str(batch["batch_id"]),
            },
        )
        assert r.status_code == 409, r.text
        assert "not in the image store" in r.json()["detail"]
        assert str(tmp_path) not in r.text and "/images" not in r.text


def test_unexpected_errors_are_json_500(tmp_path):
    app = create_app(sqlite_settings(tmp_path))

    def broken() -> None:
        raise RuntimeError("/secret/path/in/a/message")

    app.add_api_route("/broken", broken)
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/broken")
    assert r.status_code == 500
    assert r.json() == {"detail": "internal server error"}
    assert "secret" not in r.text
