"""The web catalog as a read-only FastAPI app.

Safe by default: GET and HEAD only (anything else is 405), no file from disk is served
but the package's own CSS and script, every page is autoescaped and sent with a strict
Content-Security-Policy (no inline script can run), the Host header must name the address
served (no DNS rebinding), and every failure is a page (or JSON for the API) with a
message: 404 for an unknown page or name, 400 for a bad query, 422 for a malformed
parameter, 409 for a project that cannot be read as it is; never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from tally.catalog.errors import LookupFailedError, TallyError, UsageError
from tally.catalog.web.render import ASSET_TYPES, ASSETS, Renderer, asset
from tally.catalog.web.site import Site

LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; form-action 'self'; "
                               "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_READ_METHODS = ("GET", "HEAD")

Facet = Annotated[list[str], Query(max_length=200)]


def _status_of(exc: TallyError) -> int:
    if isinstance(exc, LookupFailedError):
        return 404
    return 400 if isinstance(exc, UsageError) else 409


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("query", "path"))
        parts.append(f"{where or 'request'}: {error.get('msg', 'invalid')}")
    return "bad query parameters: " + "; ".join(parts)


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def create_app(root: Path | str, allowed_hosts: list[str] | None = None) -> FastAPI:
    """The app serving the catalog of the project at `root`. `allowed_hosts` are the Host
    header values accepted (default: the loopback names). Loads the project first, so
    invalid definitions raise DefinitionError here rather than on the first page."""
    site = Site(root)
    site.loaded()
    renderer = Renderer(site, "server")
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts or LOOPBACK_HOSTS)
    _add_guards(app, renderer)
    _add_pages(app, renderer)
    return app


def _error(renderer: Renderer, request: Request, status: int, message: str) -> Response:
    if _wants_json(request):
        return JSONResponse({"error": message}, status_code=status, headers=SECURITY_HEADERS)
    heading = {404: "Not found", 405: "Method not allowed", 400: "Bad request",
               422: "Bad request", 409: "The project cannot be read as it is"}.get(
        status, "Something went wrong")
    try:
        body = renderer.error(status, heading, message)
    except Exception:  # noqa: BLE001 - a page about an error must not fail in turn
        return PlainTextResponse(f"{heading}: {message}", status_code=status,
                                 headers=SECURITY_HEADERS)
    return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)


def _add_guards(app: FastAPI, renderer: Renderer) -> None:
    @app.middleware("http")
    async def read_only(request: Request, call_next: Any) -> Response:
        if request.method not in _READ_METHODS:
            return PlainTextResponse("the catalog is read only: GET and HEAD only",
                                     status_code=405, headers={"Allow": "GET, HEAD",
                                                               **SECURITY_HEADERS})
        response: Response = await call_next(request)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    @app.exception_handler(TallyError)
    async def tally_error(request: Request, exc: TallyError) -> Response:
        return _error(renderer, request, _status_of(exc), str(exc))

    @app.exception_handler(RequestValidationError)
    async def bad_params(request: Request, exc: RequestValidationError) -> Response:
        return _error(renderer, request, 422, _validation_message(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        message = ("no such page; search the catalog for what you are looking for"
                   if exc.status_code == 404 else str(exc.detail))
        return _error(renderer, request, exc.status_code, message)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        return _error(renderer, request, 500, f"internal error ({type(exc).__name__}); "
                      "the server log has the details")


def _filters(owner: list[str], tag: list[str], kind: list[str], status: list[str],
             contract: list[str]) -> dict[str, list[str]]:
    given = {"owner": owner, "tag": tag, "kind": kind, "status": status, "contract": contract}
    return {key: [v for v in values if v] for key, values in given.items()}


def _add_pages(app: FastAPI, renderer: Renderer) -> None:
    site = renderer.site

    @app.get("/", response_class=HTMLResponse)
    @app.get("/index.html", response_class=HTMLResponse)
    def search_page(q: Annotated[str, Query(max_length=500)] = "", owner: Facet = [],  # noqa: B006
                    tag: Facet = [], kind: Facet = [], status: Facet = [],  # noqa: B006
                    contract: Facet = []) -> str:  # noqa: B006
        return renderer.search(q, _filters(owner, tag, kind, status, contract))

    @app.get("/api/search")
    def search_api(q: Annotated[str, Query(max_length=500)] = "", owner: Facet = [],  # noqa: B006
                   tag: Facet = [], kind: Facet = [], status: Facet = [],  # noqa: B006
                   contract: Facet = [],  # noqa: B006
                   limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
        context = site.search_context(q, _filters(owner, tag, kind, status, contract), limit)
        return {"query": q, "total": context["total"], "hits": context["hits"]}

    @app.get("/reuse.html", response_class=HTMLResponse)
    def reuse_page() -> str:
        return renderer.reuse()

    @app.get("/portfolio.html", response_class=HTMLResponse)
    def portfolio_page() -> str:
        return renderer.portfolio()

    @app.get("/static/{name}")
    def static_file(name: str) -> Response:
        if name not in ASSETS:
            raise HTTPException(404)
        return Response(asset(name), media_type=ASSET_TYPES[name])

    @app.get("/score/{name}/explain")
    def pick_entity(name: str, entity: Annotated[str, Query(min_length=1, max_length=200)]
                    ) -> Response:
        target = f"/score/{quote(name, safe='')}/explain/{quote(entity.strip(), safe='')}.html"
        return RedirectResponse(target, status_code=303)

    @app.get("/score/{name}/explain/{key}.html", response_class=HTMLResponse)
    def explain_page(name: str, key: str,
                     at: Annotated[str | None, Query(max_length=40)] = None) -> str:
        return renderer.explain(name, key, at)

    @app.get("/{kind}/{name}.html", response_class=HTMLResponse)
    def entry_page(kind: str, name: str) -> str:
        return renderer.entry(kind, name)
