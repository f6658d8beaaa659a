"""The Starlette application: routes, the pool's lifespan and error rendering.

Every handler runs inside :func:`_guard`, which turns what can go wrong into
an answer: a bad parameter is a 400/404/409 with a message naming it (JSON, or
an error VOTable for SCS and ``format=votable``); a full pool, a statement
timeout or a lost connection is a deliberate 503 with ``Retry-After``; only
a bug is a 500.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool, PoolTimeout, TooManyRequests
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from skyclass.serve import api, page, scs
from skyclass.serve.config import ServeConfig, load_serve_config
from skyclass.serve.formats import VOTABLE_TYPE, error_votable, to_json
from skyclass.serve.params import ApiError
from skyclass.serve.pool import check_role, make_pool, portal_url

log = logging.getLogger("skyclass.serve")

Handler = Callable[[Request, psycopg.AsyncConnection[Any]], Awaitable[Response]]


def error_response(error: ApiError, kind: str) -> Response:
    """``error`` as JSON, an error VOTable (``kind`` votable/scs) or an HTML page."""
    headers = {"Retry-After": "1"} if error.status == 503 else None
    if kind in ("votable", "scs"):
        # SCS 1.03 answers errors with HTTP 200 and an INFO name="Error"; overload stays 503.
        status = 200 if kind == "scs" and error.status != 503 else error.status
        return Response(error_votable(error.message), status, headers, VOTABLE_TYPE)
    if kind == "html":
        return HTMLResponse(page.error_page(error.status, error.message), error.status, headers)
    body = {"error": {"status": error.status, "message": error.message}}
    if error.param:
        body["error"]["parameter"] = error.param
    return Response(to_json(body), error.status, headers, "application/json")


def _as_api_error(exc: Exception) -> ApiError | None:
    """What a database or pool failure means for the client, or None for a bug."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, PoolTimeout | TooManyRequests):
        return ApiError(503, "the service is busy: no database connection free; retry shortly")
    if isinstance(exc, pg_errors.QueryCanceled):
        return ApiError(503, "the query took longer than the service allows; narrow it")
    if isinstance(exc, pg_errors.UndefinedTable):
        return ApiError(404, str(exc.diag.message_primary or exc))
    if isinstance(exc, pg_errors.DataError):  # 22xxx: the database refused a value
        return ApiError(400, str(exc.diag.message_primary or exc))
    if isinstance(exc, psycopg.OperationalError):
        return ApiError(503, "the database is not reachable; retry shortly")
    return None


def _guard(handler: Handler, kind: str = "json") -> Callable[[Request], Awaitable[Response]]:
    """Run ``handler`` with a pooled (autocommit, read-only) connection."""

    async def endpoint(request: Request) -> Response:
        error_kind = kind
        try:
            if kind == "json" and request.query_params.get("format", "").lower() in (
                "votable",
                "xml",
                "vot",
            ):
                error_kind = "votable"
            pool: AsyncConnectionPool = request.app.state.pool
            async with pool.connection() as conn:
                return await handler(request, conn)
        except Exception as exc:  # every failure gets an answer; bugs are logged
            error = _as_api_error(exc)
            if error is None:
                log.exception("unexpected error in %s", request.url.path)
                error = ApiError(500, "internal error (logged by the service)")
            return error_response(error, error_kind)

    return endpoint


def routes() -> list[BaseRoute]:
    """Every route of the service (the TAP service is mounted at ``/tap``, see below)."""
    return [
        Route("/", api.index),
        Route("/scs/{catalog}", _guard(scs.cone, "scs")),
        Route("/api/openapi.json", api.openapi),
        Route("/api/catalogs", _guard(api.catalogs)),
        Route("/api/cone", _guard(api.cone)),
        Route("/api/objects/{catalog}/{id}", _guard(api.object_)),
        Route("/api/candidates", _guard(api.candidates)),
        Route("/api/models", _guard(api.models)),
        Route("/api/models/{version}", _guard(api.model_card)),
        Route("/objects/{catalog}/{id}", _guard(page.object_page, "html")),
        Route("/models/{version}", _guard(page.model_page, "html")),
    ]


def tap_mount(pool_url: str, config: ServeConfig) -> list[BaseRoute]:
    """The TAP 1.1 service (:mod:`skyclass.serve.tap`) at ``/tap``, on a pool of its own.

    A mounted application gets no lifespan events: :func:`create_app` closes its
    pool (``tap_close``) when the service stops.
    """
    from skyclass.serve.tap import create_tap_app

    public = (config.public_url or "http://127.0.0.1:8080").rstrip("/")
    tap = create_tap_app(
        pool_url,
        base_url=f"{public}/tap",
        max_rows=config.max_rows,
        statement_timeout=config.statement_timeout_ms / 1000,
    )
    return [Mount("/tap", app=tap)]


def create_app(config: ServeConfig | None = None, *, url: str | None = None) -> Starlette:
    """The portal application; ``url`` (default :func:`portal_url`) is checked at start-up."""
    config = config or load_serve_config()
    target = url or portal_url(config)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        role = check_role(target, config)
        pool = make_pool(target, config)
        await pool.open(wait=True, timeout=30)
        app.state.pool = pool
        log.info("serving as role %s with %d connections", role, config.pool_size)
        try:
            yield
        finally:
            await pool.close(timeout=10)
            for route in app.routes:
                close = getattr(
                    getattr(getattr(route, "app", None), "state", None), "tap_close", None
                )
                if close is not None:
                    close()

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        message = (
            f"no such endpoint: {request.url.path[:200]}; see / and /api/openapi.json"
            if status == 404
            else f"method {request.method} is not allowed here"
        )
        return error_response(ApiError(status, message), "json")

    app = Starlette(
        routes=[*routes(), *tap_mount(target, config)],
        lifespan=lifespan,
        exception_handlers={404: not_found, 405: not_found},
    )
    app.state.config = config
    return app


def app_from_env() -> Starlette:
    """The application with settings from ``SKYCLASS_SERVE_*`` (uvicorn's factory, per worker)."""
    return create_app(load_serve_config())
