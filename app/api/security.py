"""Who may call what: optional API keys (read-only or admin) and refusal of cross-site writes.

Without keys configured every route is open (the service then binds to loopback by default,
see README "Security"). With keys, every API route needs one: a ``read`` key may GET and run
/match and /classify; registering or appending to a set and every DELETE need an ``admin`` key.
A browser may be made to POST a form to any address it can reach without a preflight, so a
POST or DELETE whose ``Origin`` is neither this server's nor allowed (MEMAUDIT_CORS_ORIGINS)
is refused whether or not keys are set.

The checks are FastAPI dependencies: ``PROTECTED`` on every router but health's, ``ADMIN`` on
the routes that change or delete sets; :func:`document_access` then adds their 401/403 answers
to the OpenAPI description.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from hmac import compare_digest
from typing import Annotated
from urllib.parse import urlsplit

import fastapi.routing
from fastapi import Depends, FastAPI, HTTPException, Request, Security
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app.api.deps import ApiKeysDep, SettingsDep
from app.config import Settings
from app.services.jobs import current_job

#: Shortest key accepted: 16 random characters are out of reach of guessing over HTTP.
MIN_KEY_LENGTH = 16
KEY_HINT = "e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DEFAULT_PORTS = {"http": "80", "https": "443"}


class Role(StrEnum):
    """What a key may do: ``admin`` everything, ``read`` what only reads or audits."""

    READ = "read"
    ADMIN = "admin"


@dataclass(frozen=True)
class ApiKeys:
    """The configured keys, held as SHA-256 digests so every comparison is of equal length."""

    digests: tuple[tuple[bytes, Role], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.digests)

    def __len__(self) -> int:
        return len(self.digests)

    def role_of(self, presented: str) -> Role | None:
        """The role of ``presented``, or None: compared with every key in constant time,
        with no early exit, so timing tells neither a key's bytes nor its position."""
        digest = _digest(presented)
        granted = None
        for known, role in self.digests:
            if compare_digest(digest, known):
                granted = role
        return granted


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", errors="surrogateescape")).digest()


def parse_api_keys(entries: Iterable[str], source: str) -> list[tuple[str, Role]]:
    """``key`` or ``key:role`` entries (blank ones skipped) to (key, role); a ValueError names
    the entry by its position, never by the key itself."""
    parsed = []
    for number, raw in enumerate(entries, start=1):
        entry = raw.strip()
        if not entry:
            continue
        key, role_name = entry.rsplit(":", 1) if ":" in entry else (entry, Role.ADMIN.value)
        key = key.strip()
        try:
            role = Role(role_name.strip())
        except ValueError:
            raise ValueError(f"{source} entry {number}: role must be read or admin") from None
        if len(key) < MIN_KEY_LENGTH or any(c.isspace() for c in key):
            raise ValueError(
                f"{source} entry {number}: a key needs at least {MIN_KEY_LENGTH} characters "
                f"and no spaces ({KEY_HINT})"
            )
        parsed.append((key, role))
    return parsed


def load_api_keys(settings: Settings) -> ApiKeys:
    """MEMAUDIT_API_KEYS plus the lines of MEMAUDIT_API_KEYS_FILE (``#`` starts a comment)."""
    entries: list[tuple[str, Role]] = []
    if settings.api_keys is not None:
        inline = settings.api_keys.get_secret_value().split(",")
        entries += parse_api_keys(inline, "MEMAUDIT_API_KEYS")
    if settings.api_keys_file is not None:
        lines = settings.api_keys_file.read_text().splitlines()
        entries += parse_api_keys(
            (line.split("#", 1)[0] for line in lines), str(settings.api_keys_file)
        )
    roles: dict[str, Role] = {}
    for key, role in entries:
        if roles.setdefault(key, role) is not role:
            raise ValueError("one API key is configured with two roles")
    return ApiKeys(tuple((_digest(key), role) for key, role in roles.items()))


def is_loopback(host: str) -> bool:
    """Only this machine can reach a server bound to ``host``."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _authority(netloc: str, scheme: str) -> str:
    """``host[:port]`` in lower case, without the scheme's default port."""
    netloc = netloc.lower()
    default = DEFAULT_PORTS.get(scheme)
    if default and netloc.endswith(f":{default}"):
        return netloc[: -len(default) - 1]
    return netloc


def origin_allowed(origin: str, host_header: str, scheme: str, allowed: tuple[str, ...]) -> bool:
    """Whether a browser on ``origin`` may write here: this server's own origin (same host
    and port as the request's Host; the scheme is not compared, a TLS proxy may sit between)
    or one of ``allowed`` (``*``: any)."""
    if "*" in allowed or origin.rstrip("/") in allowed:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in DEFAULT_PORTS or not parts.netloc:
        return False  # "null" (sandboxed frames, file: pages) and anything odd
    return _authority(parts.netloc, parts.scheme) == _authority(host_header, scheme)


# --- FastAPI dependencies --------------------------------------------------------------------

KEYS_ONLY_WHEN = "Only needed when the server is started with MEMAUDIT_API_KEYS (or a keys file)."
bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description=f"`Authorization: Bearer <key>`. {KEYS_ONLY_WHEN}",
)
api_key_scheme = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    scheme_name="apiKey",
    description=f"`X-API-Key: <key>` (the same keys as Bearer). {KEYS_ONLY_WHEN}",
)


def presented_key(
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
    header: Annotated[str | None, Security(api_key_scheme)],
) -> str | None:
    """The key the client sent: X-API-Key, else the Bearer token."""
    if header:
        return header
    return bearer.credentials if bearer is not None else None


PresentedKeyDep = Annotated[str | None, Depends(presented_key)]


def _authorize(needed: Role, keys: ApiKeys, presented: str | None) -> None:
    if not keys or current_job.get() is not None:
        return  # no keys; or a job's replay, whose request passed these checks when stored
    if not presented:
        raise HTTPException(
            401,
            detail="an API key is needed: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    granted = keys.role_of(presented)
    if granted is None:
        raise HTTPException(401, detail="unknown API key", headers={"WWW-Authenticate": "Bearer"})
    if needed is Role.ADMIN and granted is not Role.ADMIN:
        raise HTTPException(403, detail="this API key is read-only; this needs an admin key")


def require_read(keys: ApiKeysDep, presented: PresentedKeyDep) -> None:
    """Any configured key (when keys are configured)."""
    _authorize(Role.READ, keys, presented)


def require_admin(keys: ApiKeysDep, presented: PresentedKeyDep) -> None:
    """An admin key (when keys are configured)."""
    _authorize(Role.ADMIN, keys, presented)


def refuse_foreign_origin(request: Request, settings: SettingsDep) -> None:
    """403 for a POST/DELETE a browser sent from another site (a form post needs no
    preflight); requests without ``Origin`` (curl, scripts) are not browsers' and pass."""
    origin = request.headers.get("origin")  # (a job's replay has none)
    if origin is None or request.method not in UNSAFE_METHODS:
        return
    host = request.headers.get("host", "")
    if not origin_allowed(origin, host, request.url.scheme, settings.cors_origin_list):
        raise HTTPException(
            403,
            detail=f"cross-site request refused: Origin {origin[:100]!r} is not this server "
            "and not in MEMAUDIT_CORS_ORIGINS",
        )


def docs_access(settings: SettingsDep, keys: ApiKeysDep, presented: PresentedKeyDep) -> None:
    """/docs, /redoc, /openapi.json: open unless MEMAUDIT_DOCS_PUBLIC=false (then any key)."""
    if not settings.docs_public:
        _authorize(Role.READ, keys, presented)


#: Router-level dependencies of every API router except health's.
PROTECTED = [Depends(refuse_foreign_origin), Depends(require_read)]
#: Route-level dependency of the routes that register, append to or delete sets.
ADMIN = [Depends(require_admin)]
DOCS = [Depends(docs_access)]

_ERROR_SCHEMA = {
    "type": "object",
    "required": ["detail"],
    "properties": {"detail": {"type": "string"}},
}
UNAUTHORIZED = {
    "description": "API keys are configured and none, or an unknown one, was sent.",
    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}, "example": "Bearer"}},
    "content": {
        "application/json": {"schema": _ERROR_SCHEMA, "example": {"detail": "unknown API key"}}
    },
}
FORBIDDEN_ADMIN = {
    "description": "The key is read-only and this needs an admin key, or a browser sent the "
    "request from another site (Origin not allowed).",
    "content": {"application/json": {"schema": _ERROR_SCHEMA}},
}
FORBIDDEN_ORIGIN = {
    "description": "A browser sent the request from another site (Origin not this server's "
    "and not in MEMAUDIT_CORS_ORIGINS).",
    "content": {"application/json": {"schema": _ERROR_SCHEMA}},
}


def api_routes(app: FastAPI) -> Iterator[APIRoute]:
    """Every API route of ``app`` as served, with the dependencies of the routers it was
    included through (FastAPI >= 0.165 keeps included routers nested: walk their contexts)."""
    iterate = getattr(fastapi.routing, "iter_route_contexts", None)
    if iterate is None:
        yield from (r for r in app.routes if isinstance(r, APIRoute))
        return
    for context in iterate(app.routes):
        if isinstance(context.original_route, APIRoute):
            yield context  # an APIRoute-like view: path_format, methods, dependencies


def needs(route: APIRoute, dependency: Callable) -> bool:
    """Whether ``dependency`` is among the route's own, router and include-time dependencies."""
    return any(d.dependency is dependency for d in route.dependencies)


def document_access(app: FastAPI) -> None:
    """Have the OpenAPI description list 401 and 403 on each operation the checks above
    guard (computed from the served routes when the schema is first built)."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for route in api_routes(app):
            item = schema.get("paths", {}).get(route.path_format, {})
            for method in route.methods:
                operation = item.get(method.lower())
                if operation is not None:
                    _add_access_responses(operation["responses"], route, method)
                    operation["responses"] = dict(sorted(operation["responses"].items()))
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _add_access_responses(responses: dict, route: APIRoute, method: str) -> None:
    if needs(route, require_read) or needs(route, require_admin):
        responses.setdefault("401", UNAUTHORIZED)
    if needs(route, require_admin):
        responses.setdefault("403", FORBIDDEN_ADMIN)
    elif needs(route, refuse_foreign_origin) and method in UNSAFE_METHODS:
        responses.setdefault("403", FORBIDDEN_ORIGIN)
