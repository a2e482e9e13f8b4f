"""/docs (Swagger UI) and /redoc served with their assets from the installed package.

FastAPI's default pages load Swagger UI and ReDoc from a CDN, so on a host without internet
(hospital networks often are) `/docs` is a blank page. The `fastapi-offline` package ships the
Swagger UI bundle, its CSS, the ReDoc standalone bundle and a favicon; they are served here from
the same origin and FastAPI's own page builders point at them, so the pages make no external
request (ReDoc's Google Fonts are turned off too). One exception is patched out: ReDoc 2's
side menu footer loads Redocly's logo from their CDN, so its bundle is served with that image
replaced by an empty inline SVG.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib.resources import files

from fastapi import FastAPI, Request, params
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.routing import Route

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
ASSETS_URL = "/docs-assets"
# The folder inside the `fastapi_offline` package that holds swagger-ui-bundle.js,
# swagger-ui.css, redoc.standalone.js and favicon.png.
ASSETS_PACKAGE = ("fastapi_offline", "static")
REDOC_BUNDLE = "redoc.standalone.js"
REDOC_LOGO_URL = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
EMPTY_SVG_URL = b"data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg'/%3E"


@cache
def redoc_bundle() -> bytes:
    """ReDoc's standalone bundle with its one off-origin request (the footer logo) removed."""
    package, folder = ASSETS_PACKAGE
    bundle = files(package).joinpath(folder, REDOC_BUNDLE).read_bytes()
    return bundle.replace(REDOC_LOGO_URL, EMPTY_SVG_URL)


async def redoc_js(request: Request) -> Response:
    """Serves the patched bundle in place of the package's file."""
    return Response(redoc_bundle(), media_type="text/javascript")


def add_offline_docs(app: FastAPI, dependencies: Sequence[params.Depends] = ()) -> None:
    """Mount the doc assets and add /docs, its OAuth2 redirect page and /redoc to `app`;
    those pages and /openapi.json run `dependencies` first (the assets, the generic Swagger UI
    and ReDoc bundles, stay open).

    `app` must be created with `docs_url=None, redoc_url=None` so FastAPI's CDN pages are off.
    """
    if app.openapi_url is None:
        return
    openapi_url = app.openapi_url
    redirect_url = app.swagger_ui_oauth2_redirect_url

    def prefixed(request: Request, path: str) -> str:
        """`path` under the root path the app is served at (behind a proxy prefix)."""
        return request.scope.get("root_path", "").rstrip("/") + path

    async def swagger_ui_html(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=prefixed(request, openapi_url),
            title=f"{app.title} - Swagger UI",
            swagger_js_url=prefixed(request, f"{ASSETS_URL}/swagger-ui-bundle.js"),
            swagger_css_url=prefixed(request, f"{ASSETS_URL}/swagger-ui.css"),
            swagger_favicon_url=prefixed(request, f"{ASSETS_URL}/favicon.png"),
            oauth2_redirect_url=prefixed(request, redirect_url) if redirect_url else None,
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    async def swagger_ui_redirect(request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc_html(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=prefixed(request, openapi_url),
            title=f"{app.title} - ReDoc",
            redoc_js_url=prefixed(request, f"{ASSETS_URL}/{REDOC_BUNDLE}"),
            redoc_favicon_url=prefixed(request, f"{ASSETS_URL}/favicon.png"),
            with_google_fonts=False,
        )

    def page(path: str, endpoint) -> None:
        app.add_api_route(path, endpoint, include_in_schema=False, dependencies=dependencies)

    # Before the mount, so this route answers for the bundle instead of the static file.
    app.add_route(f"{ASSETS_URL}/{REDOC_BUNDLE}", redoc_js, include_in_schema=False)
    app.mount(ASSETS_URL, StaticFiles(packages=[ASSETS_PACKAGE]), name="docs-assets")
    page(DOCS_URL, swagger_ui_html)
    if redirect_url:
        page(redirect_url, swagger_ui_redirect)
    page(REDOC_URL, redoc_html)
    _guard_openapi_json(app, dependencies)


def _guard_openapi_json(app: FastAPI, dependencies: Sequence[params.Depends]) -> None:
    """FastAPI serves /openapi.json from a plain route, which takes no dependencies: put its
    endpoint in an API route that does, at the same place in the routing table."""
    routes = app.router.routes
    for index, route in enumerate(routes):
        if isinstance(route, Route) and route.path == app.openapi_url:
            routes[index] = APIRoute(
                route.path,
                route.endpoint,
                methods=["GET"],
                include_in_schema=False,
                dependencies=dependencies,
            )
            return
