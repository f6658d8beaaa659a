"""The TAP 1.1 Starlette application: /sync, /async (UWS 1.1), VOSI endpoints.

Parameters follow DALI: names are case-insensitive, values are not; they come
from the query string and, for POST, an ``application/x-www-form-urlencoded``
body (a ``multipart/form-data`` body, which only UPLOAD needs, is refused).
Every refusal is a DALI error VOTable (``QUERY_STATUS`` ``ERROR``) with HTTP
400, an unreachable database 503; UWS resources that do not exist are 404.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from skyclass.serve.tap import documents
from skyclass.serve.tap.adql import AdqlError
from skyclass.serve.tap.db import QueryError, TapDatabase, UnavailableError
from skyclass.serve.tap.jobs import ACTIVE, PHASES, RETENTION, Job, JobStore
from skyclass.serve.tap.results import FORMATS, VOTABLE_MIME, error_votable, render

LANGUAGES = ("ADQL", "ADQL-2.0", "ADQL-2.1")
FORMAT_ALIASES = {
    "votable": "votable",
    "application/x-votable+xml": "votable",
    "text/xml": "votable",
    "application/xml": "votable",
    "votable/td": "votable",
    "application/x-votable+xml;serialization=tabledata": "votable",
    "csv": "csv",
    "text/csv": "csv",
    "json": "json",
    "application/json": "json",
}
XML = "text/xml; charset=utf-8"
MAX_WAIT_SECONDS = 60.0
MAX_BODY_BYTES = 1_000_000


class ParameterError(ValueError):
    """A bad request parameter: the message says which and why."""


class _Pool:
    """Open the pool on first use: a mounted sub-application gets no lifespan events."""

    def __init__(self, conninfo: str) -> None:
        self.pool = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=8,
            open=False,
            timeout=10.0,
            kwargs={"application_name": "skyclass-tap"},
        )
        self._opened = False
        self._lock = threading.Lock()

    def ensure_open(self) -> None:
        with self._lock:
            if not self._opened:
                self.pool.open(wait=False)
                self._opened = True


def _error(message: str, status: int = 400) -> Response:
    return Response(error_votable(message), status_code=status, media_type=VOTABLE_MIME)


async def _parameters(request: Request) -> dict[str, list[str]]:
    """Request parameters, names upper-cased, from the query string and a urlencoded body."""
    pairs = list(request.query_params.multi_items())
    if request.method == "POST":
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "multipart/form-data":
            raise ParameterError("multipart/form-data (UPLOAD) is not supported by this service")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():  # bounded: never hold more than the limit
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise ParameterError(f"the request body is larger than {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)
        if body:
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                raise ParameterError("the request body is not UTF-8 text") from None
            pairs += parse_qsl(text, keep_blank_values=True)
    params: dict[str, list[str]] = {}
    for name, value in pairs:
        if "\x00" in name or "\x00" in value:
            raise ParameterError(f"parameter {name.upper()!r} contains a NUL character")
        params.setdefault(name.upper(), []).append(value)
    return params


def _one(params: dict[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    return values[-1] if values else None


def _query_spec(params: dict[str, list[str]], max_rows: int) -> tuple[str, str, int]:
    """(QUERY, format, MAXREC) of a TAP query request, or :class:`ParameterError`."""
    request = _one(params, "REQUEST")
    if request is not None and request != "doQuery":
        raise ParameterError(f"REQUEST={request!r} is not supported: use REQUEST=doQuery")
    if "UPLOAD" in params:
        raise ParameterError("UPLOAD is not supported by this service")
    lang = _one(params, "LANG")
    if lang is None:
        raise ParameterError("LANG is missing: use LANG=ADQL")
    if lang.upper() not in LANGUAGES:
        raise ParameterError(f"LANG={lang!r} is not supported: use one of {', '.join(LANGUAGES)}")
    query = _one(params, "QUERY")
    if query is None or not query.strip():
        raise ParameterError("QUERY is missing")
    fmt_text = _one(params, "RESPONSEFORMAT") or _one(params, "FORMAT") or "votable"
    fmt = FORMAT_ALIASES.get(fmt_text.strip().lower().replace(" ", ""))
    if fmt is None:
        raise ParameterError(
            f"RESPONSEFORMAT={fmt_text!r} is not supported: use votable, csv or json"
        )
    maxrec_text = _one(params, "MAXREC")
    maxrec = max_rows
    if maxrec_text is not None and maxrec_text.strip():
        try:
            maxrec = int(maxrec_text)
        except ValueError:
            raise ParameterError(f"MAXREC={maxrec_text!r} is not an integer") from None
        if maxrec < 0:
            raise ParameterError(f"MAXREC={maxrec} is negative")
        maxrec = min(maxrec, max_rows)
    return query, fmt, maxrec


def create_tap_app(
    conninfo_or_pool: str | ConnectionPool,
    *,
    base_url: str,
    max_rows: int = 100_000,
    statement_timeout: float = 60.0,
) -> Starlette:
    """The TAP 1.1 service as a Starlette application, to run alone or mount at ``/tap``.

    ``conninfo_or_pool`` is a libpq connection string (a pool of up to 8
    connections is opened on first use and closed by ``app.state.tap_close()``
    or the app's shutdown) or a psycopg ``ConnectionPool`` that the caller
    opens and closes; its
    role should be a read-only ``skyclass_reader`` member such as
    ``skyclass_portal`` (the job list needs its write grant on
    ``skyclass.tap_job``). ``base_url`` is the public URL of the service root
    (e.g. ``http://host:8080/tap``), used in capabilities and job links;
    ``max_rows`` caps MAXREC; ``statement_timeout`` (seconds) limits every query.
    """
    if max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, not {max_rows}")
    if not statement_timeout > 0:
        raise ValueError(f"statement_timeout must be positive, not {statement_timeout}")
    base = base_url.rstrip("/")
    owned: _Pool | None = None
    if isinstance(conninfo_or_pool, str):
        owned = _Pool(conninfo_or_pool)
        pool = owned.pool
    else:
        pool = conninfo_or_pool
    database = TapDatabase(pool, statement_timeout=statement_timeout)

    def run_query(
        params: dict[str, Any],
        on_backend: Callable[[int], None] | None,
        timeout: float | None = None,
    ) -> Any:
        query, fmt, maxrec = _query_spec(params, max_rows)
        result = database.run(query, maxrec, on_backend=on_backend, timeout=timeout)
        body = render(fmt, result.fields, result.rows, overflow=result.overflow)
        return body, FORMATS[fmt], len(result.rows), result.overflow

    def run_job(job: Job, on_backend: Callable[[int], None]) -> Any:
        params = {k: [v] for k, v in job.parameters.items()}
        return run_query(params, on_backend, float(job.execution_duration))

    jobs = JobStore(database, run_job)

    async def blocking(fn: Callable[..., Any], *args: Any) -> Any:
        if owned is not None:
            owned.ensure_open()
        return await run_in_threadpool(fn, *args)

    async def guarded(request: Request, handler: Callable[..., Any]) -> Response:
        try:
            return await handler(request)  # type: ignore[no-any-return]
        except (ParameterError, AdqlError, QueryError) as exc:
            return _error(str(exc))
        except UnavailableError as exc:
            return _error(str(exc), 503)

    # -- /sync ---------------------------------------------------------------------------
    async def sync(request: Request) -> Response:
        async def handle(request: Request) -> Response:
            params = await _parameters(request)
            _query_spec(params, max_rows)  # refuse bad parameters before touching the database
            body, mime, _, _ = await blocking(run_query, params, None)
            return Response(body, media_type=mime)

        return await guarded(request, handle)

    # -- /async ---------------------------------------------------------------------------
    def job_url(job_id: str) -> str:
        return f"{base}/async/{job_id}"

    async def job_list(request: Request) -> Response:
        async def handle(request: Request) -> Response:
            params = await _parameters(request)
            if request.method == "POST":
                flat = {k: v[-1] for k, v in params.items()}
                phase = flat.pop("PHASE", None)
                run_id = flat.pop("RUNID", None)
                if run_id is not None and len(run_id) > 200:
                    raise ParameterError("RUNID is longer than 200 characters")
                if phase not in (None, "RUN"):
                    raise ParameterError(f"PHASE={phase!r} on job creation: only RUN is allowed")
                if "UPLOAD" in flat:
                    raise ParameterError("UPLOAD is not supported by this service")
                await blocking(jobs.purge)
                job_id = await blocking(jobs.create, flat, run_id)
                if phase == "RUN":
                    await blocking(jobs.run, job_id)
                return RedirectResponse(job_url(job_id), status_code=303)
            phases = [p.upper() for p in params.get("PHASE", [])]
            unknown = [p for p in phases if p not in PHASES]
            if unknown:
                raise ParameterError(f"PHASE={unknown[0]!r} is not a UWS phase")
            after = _timestamp(_one(params, "AFTER"), "AFTER")
            last_text = _one(params, "LAST")
            last = None
            if last_text is not None:
                if not last_text.isdigit() or int(last_text) < 1:
                    raise ParameterError(f"LAST={last_text!r} must be a positive integer")
                last = int(last_text)
            found = await blocking(jobs.list, phases, after, last)
            return Response(documents.jobs_xml(found, f"{base}/async"), media_type=XML)

        return await guarded(request, handle)

    async def load(job_id: str) -> Job | None:
        if not (8 <= len(job_id) <= 64 and job_id.isalnum()):
            return None
        return await blocking(jobs.get, job_id)  # type: ignore[no-any-return]

    def not_found(job_id: str) -> Response:
        return PlainTextResponse(f"no job {job_id!r}", status_code=404)

    async def job(request: Request) -> Response:
        async def handle(request: Request) -> Response:
            job_id = request.path_params["job_id"]
            found = await load(job_id)
            if found is None:
                return not_found(job_id)
            params = await _parameters(request)
            if request.method == "DELETE" or (
                request.method == "POST" and (_one(params, "ACTION") or "").upper() == "DELETE"
            ):
                await blocking(jobs.delete, job_id)
                return RedirectResponse(f"{base}/async", status_code=303)
            if request.method == "POST":
                raise ParameterError("POST to a job needs ACTION=DELETE")
            wait_text = _one(params, "WAIT")
            if wait_text is not None:
                found = await wait_for(found, wait_text, _one(params, "PHASE"))
            return Response(documents.job_xml(found, job_url(job_id)), media_type=XML)

        return await guarded(request, handle)

    async def wait_for(found: Job, wait_text: str, phase: str | None) -> Job:
        try:
            wait = float(wait_text)
        except ValueError:
            raise ParameterError(f"WAIT={wait_text!r} is not a number") from None
        limit = MAX_WAIT_SECONDS if wait < 0 else min(wait, MAX_WAIT_SECONDS)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        current = found
        while (
            current.phase in ACTIVE
            and (phase is None or current.phase == phase.upper())
            and loop.time() < deadline
        ):
            await asyncio.sleep(0.1)
            refreshed = await blocking(jobs.get, current.job_id)
            if refreshed is None:
                break
            current = refreshed
        return current

    async def job_item(request: Request) -> Response:
        async def handle(request: Request) -> Response:
            job_id = request.path_params["job_id"]
            item = request.path_params["item"]
            found = await load(job_id)
            if found is None:
                return not_found(job_id)
            params = await _parameters(request)
            post = request.method == "POST"
            if item == "phase":
                if post:
                    phase = (_one(params, "PHASE") or "").upper()
                    if phase == "RUN":
                        await blocking(jobs.run, job_id)
                    elif phase == "ABORT":
                        await blocking(jobs.abort, job_id)
                    else:
                        raise ParameterError("PHASE must be RUN or ABORT")
                    return RedirectResponse(job_url(job_id), status_code=303)
                return PlainTextResponse(found.phase)
            if item == "executionduration":
                if post:
                    text = _one(params, "EXECUTIONDURATION") or ""
                    if not text.lstrip("-").isdigit():
                        raise ParameterError(f"EXECUTIONDURATION={text!r} is not an integer")
                    await blocking(jobs.set_execution_duration, job_id, int(text))
                    return RedirectResponse(job_url(job_id), status_code=303)
                return PlainTextResponse(str(found.execution_duration))
            if item == "destruction":
                if post:
                    when = _timestamp(_one(params, "DESTRUCTION"), "DESTRUCTION")
                    if when is None:
                        raise ParameterError("DESTRUCTION is missing")
                    await blocking(jobs.set_destruction, job_id, when)
                    return RedirectResponse(job_url(job_id), status_code=303)
                return PlainTextResponse(documents.iso(found.destruction))
            if post and item == "parameters":
                flat = {k: v[-1] for k, v in params.items()}
                if not await blocking(jobs.set_parameters, job_id, flat):
                    raise ParameterError("parameters can only be changed while the job is PENDING")
                return RedirectResponse(job_url(job_id), status_code=303)
            if post:
                raise ParameterError(f"{item} cannot be changed")
            if item == "quote":
                return PlainTextResponse("")
            if item == "owner":
                return PlainTextResponse("")
            if item == "parameters":
                return Response(documents.parameters_xml(found, root=True), media_type=XML)
            if item == "results":
                return Response(
                    documents.results_xml(found, job_url(job_id), root=True), media_type=XML
                )
            if item == "error":
                if found.phase != "ERROR":
                    return PlainTextResponse(f"job {job_id} has no error", status_code=404)
                return Response(error_votable(found.error_message or ""), media_type=VOTABLE_MIME)
            return PlainTextResponse(f"no such job resource {item!r}", status_code=404)

        return await guarded(request, handle)

    async def job_result(request: Request) -> Response:
        async def handle(request: Request) -> Response:
            job_id = request.path_params["job_id"]
            if await load(job_id) is None:
                return not_found(job_id)
            stored = await blocking(jobs.result, job_id)
            if stored is None:
                return PlainTextResponse(f"job {job_id} has no result", status_code=404)
            body, mime = stored
            return Response(body, media_type=mime)

        return await guarded(request, handle)

    # -- VOSI ------------------------------------------------------------------------------
    async def capabilities(request: Request) -> Response:
        text = documents.capabilities(
            base, max_rows, statement_timeout, int(RETENTION.total_seconds())
        )
        return Response(text, media_type=XML)

    async def availability(request: Request) -> Response:
        try:
            await blocking(database.ping)
        except UnavailableError as exc:
            return Response(documents.availability(False, str(exc)), media_type=XML)
        return Response(
            documents.availability(True, "the service is accepting queries"), media_type=XML
        )

    async def tables(request: Request) -> Response:
        async def handle(request: Request) -> Response:
            rows = await blocking(database.tables_metadata)
            return Response(documents.tableset(*rows), media_type=XML)

        return await guarded(request, handle)

    def example_position() -> tuple[str | None, float, float]:
        """A catalog with positions and the position of one of its objects, for the cone."""
        meta = database.metadata()
        for (schema, _), table in sorted(meta.tables.items()):
            if schema != "catalogs":
                continue
            with database.connection() as conn, conn.transaction():
                conn.execute("SET TRANSACTION READ ONLY")
                try:
                    row = conn.execute(
                        sql.SQL("SELECT ra, dec FROM {} WHERE ra IS NOT NULL LIMIT 1").format(
                            sql.Identifier(table.pg_schema, table.pg_name)
                        )
                    ).fetchone()
                except psycopg.errors.UndefinedColumn:
                    conn.rollback()
                    continue
            if row is not None:
                return f"{table.schema}.{table.name}", float(row[0]), float(row[1])
        return None, 0.0, 0.0

    async def examples(request: Request) -> Response:
        async def handle(request: Request) -> Response:
            catalog, ra, dec = await blocking(example_position)
            return Response(
                documents.examples(catalog, ra, dec), media_type="application/xhtml+xml"
            )

        return await guarded(request, handle)

    async def root(request: Request) -> Response:
        return PlainTextResponse(
            "skyclass TAP 1.1 service: sync, async, capabilities, availability, tables "
            "(ADQL 2.0/2.1 with geometry through Q3C)\n"
        )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        close()

    def close() -> None:
        jobs.close()
        if owned is not None:
            owned.pool.close()

    app = Starlette(
        routes=[
            Route("/", root),
            Route("/sync", sync, methods=["GET", "POST"]),
            Route("/async", job_list, methods=["GET", "POST"]),
            Route("/async/{job_id}", job, methods=["GET", "POST", "DELETE"]),
            Route("/async/{job_id}/results/result", job_result, methods=["GET"]),
            Route("/async/{job_id}/{item}", job_item, methods=["GET", "POST"]),
            Route("/capabilities", capabilities),
            Route("/availability", availability),
            Route("/tables", tables),
            Route("/examples", examples),
        ],
        lifespan=lifespan,
    )
    app.state.tap_database = database
    app.state.tap_close = close
    return app


def _timestamp(text: str | None, name: str) -> dt.datetime | None:
    if text is None or not text.strip():
        return None
    try:
        value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ParameterError(f"{name}={text!r} is not an ISO 8601 time") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
