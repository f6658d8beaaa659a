"""The JSON API for portals, described by ``/api/openapi.json``.

Lists (cone, candidates, models) are tables written as JSON, CSV or VOTable,
chosen by ``format=`` or the Accept header, and paged by keyset: a page holds
at most ``limit`` rows and its ``next`` link (JSON field; ``Link`` header for
CSV and VOTable) carries an opaque ``after`` cursor, the sort key of its last
row, so a page costs the same however deep it is. Documents (an object, a
model card) are JSON.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import psycopg
from starlette.requests import Request
from starlette.responses import Response

from skyclass.serve import params, queries
from skyclass.serve.config import ServeConfig
from skyclass.serve.formats import (
    VOTABLE_TYPE,
    Table,
    table_csv,
    table_json,
    table_votable,
    to_json,
)
from skyclass.serve.params import ApiError


def json_response(document: Any, status: int = 200) -> Response:
    """``document`` as JSON."""
    return Response(to_json(document), status, media_type="application/json")


def _next_url(request: Request, cursor: list[Any]) -> str:
    query = dict(request.query_params)
    query["after"] = params.encode_cursor(cursor)
    return f"{request.url.path}?{urlencode(query)}"


def respond(request: Request, table: Table, fmt: str) -> Response:
    """``table`` in ``fmt``; the next page's link in the body (JSON) or a Link header."""
    headers = {"Link": f'<{table.next_url}>; rel="next"'} if table.next_url else None
    if fmt == "csv":
        return Response(table_csv(table), headers=headers, media_type="text/csv")
    if fmt == "votable":
        table.infos.insert(0, ("QUERY_STATUS", "OK"))
        return Response(table_votable(table), headers=headers, media_type=VOTABLE_TYPE)
    return json_response(table_json(table))


def _limit(request: Request) -> int:
    config: ServeConfig = request.app.state.config
    found = params.integer(
        request.query_params.get("limit"), "limit", low=1, high=config.max_page_size
    )
    return found or config.page_size


async def index(request: Request) -> Response:
    """What the service offers, with links."""
    return json_response(
        {
            "service": "skyclass portal",
            "endpoints": {
                "scs": "/scs/{catalog}?RA=&DEC=&SR=[&VERB=]",
                "catalogs": "/api/catalogs",
                "cone": "/api/cone?catalog=&ra=&dec=&radius=",
                "object": "/api/objects/{catalog}/{id}",
                "candidates": (
                    "/api/candidates?catalog=&deployment=&class=&min_probability=&purity="
                ),
                "models": "/api/models",
                "model_card": "/api/models/{MODEL:VERSION or id}",
                "object_page": "/objects/{catalog}/{id}",
                "model_page": "/models/{MODEL:VERSION or id}",
                "openapi": "/api/openapi.json",
            },
        }
    )


async def catalogs(request: Request, conn: psycopg.AsyncConnection[Any]) -> Response:
    """The published catalogs, their deployments and SCS links."""
    params.check_known(request.query_params, ())
    rows = await (
        await conn.execute(
            "SELECT name, description, ra_column IS NOT NULL FROM skyclass.catalog ORDER BY name"
        )
    ).fetchall()
    out = []
    for name, description, positions in rows:
        cat = await queries.catalog(conn, name, positions=False)
        deps = await queries.deployments(conn, cat)
        out.append(
            {
                "name": name,
                "description": description,
                "positions": positions,
                "scs": f"/scs/{name}" if positions else None,
                "deployments": [
                    {
                        "name": d.name,
                        "model_version": d.label,
                        "task": d.task,
                        "classes": list(d.classes),
                    }
                    for d in deps
                ],
            }
        )
    return json_response({"catalogs": out})


async def cone(request: Request, conn: psycopg.AsyncConnection[Any]) -> Response:
    """Objects within ``radius`` degrees of (ra, dec) with their current classifications."""
    config: ServeConfig = request.app.state.config
    q = request.query_params
    params.check_known(q, ("catalog", "ra", "dec", "radius", "limit", "after", "format"))
    fmt = params.choose_format(q, request.headers.get("accept"))
    name = params.name(q.get("catalog"), "catalog", required=True)
    ra = params.number(q.get("ra"), "ra", low=0, high=360, required=True)
    dec = params.number(q.get("dec"), "dec", low=-90, high=90, required=True)
    radius = params.number(
        q.get("radius"), "radius", low=0, high=config.max_radius_deg, required=True
    )
    limit = _limit(request)
    after = params.decode_cursor(q.get("after"), (float, int))
    assert name is not None and ra is not None and dec is not None and radius is not None
    cat = await queries.catalog(conn, name, positions=True)
    deps = await queries.deployments(conn, cat)
    table, more = await queries.cone(
        conn, cat, deps, ra % 360.0, dec, radius, limit=limit, after=after
    )
    if more and table.rows:
        names = [c.name for c in table.columns]
        last = table.rows[-1]
        table.next_url = _next_url(
            request,
            [float(last[names.index("distance_arcsec")]), int(last[names.index("object_id")])],
        )
    return respond(request, table, fmt)


async def object_(request: Request, conn: psycopg.AsyncConnection[Any]) -> Response:
    """One object: catalog row, current classification per deployment, PDF, history, domain."""
    params.check_known(request.query_params, ())
    name = params.name(request.path_params["catalog"], "catalog", required=True)
    object_id = params.object_id(request.path_params["id"])
    assert name is not None
    cat = await queries.catalog(conn, name, positions=False)
    document = await queries.object_document(conn, cat, object_id)
    document["links"] = {
        "page": f"/objects/{name}/{object_id}",
        "model_cards": {
            str(h["model_version"]): f"/api/models/{h['model_version_id']}"
            for h in document["history"]
        },
    }
    return json_response(document)


async def candidates(request: Request, conn: psycopg.AsyncConnection[Any]) -> Response:
    """Objects of a class above a probability, or above the threshold of a purity target."""
    q = request.query_params
    params.check_known(
        q,
        ("catalog", "deployment", "class", "min_probability", "purity", "limit", "after", "format"),
    )
    fmt = params.choose_format(q, request.headers.get("accept"))
    name = params.name(q.get("catalog"), "catalog", required=True)
    deployment = params.name(q.get("deployment"), "deployment")
    cls = params.text(q.get("class"), "class", required=True)
    min_p = params.number(q.get("min_probability"), "min_probability", low=0, high=1)
    purity = params.number(q.get("purity"), "purity", low=0, high=1, low_open=True)
    if min_p is None and purity is None:
        raise ApiError(
            400, "give min_probability (0..1) or purity (0 < purity <= 1)", param="min_probability"
        )
    limit = _limit(request)
    after = params.decode_cursor(q.get("after"), (float, int))
    assert name is not None and cls is not None
    cat = await queries.catalog(conn, name, positions=False)
    d = await queries.resolve_deployment(conn, cat, deployment, task="classification")
    if cls not in d.classes:
        raise ApiError(
            400,
            f"class {cls!r} is not a class of {d.label}: " + ", ".join(d.classes),
            param="class",
        )
    threshold = min_p or 0.0
    infos: list[tuple[str, str]] = [("deployment", d.name), ("model_version", d.label)]
    if purity is not None:
        found = await queries.purity_threshold(conn, d, cls, purity)
        threshold = max(threshold, float(found["threshold"]))
        infos += [
            ("purity_threshold", repr(float(found["threshold"]))),
            ("calibration_purity", repr(found["achieved_purity"])),
            ("calibration_completeness", repr(found["completeness"])),
        ]
    infos.append(("threshold", repr(threshold)))
    table, more = await queries.candidates(
        conn, cat, d, d.classes.index(cls) + 1, threshold, limit=limit, after=after
    )
    table.infos = infos
    if more and table.rows:
        last = table.rows[-1]
        names = [c.name for c in table.columns]
        table.next_url = _next_url(request, [float(last[names.index("probability")]), int(last[0])])
    if fmt == "json":
        document = table_json(table)
        document["selection"] = dict(infos)
        return json_response(document)
    return respond(request, table, fmt)


async def models(request: Request, conn: psycopg.AsyncConnection[Any]) -> Response:
    """The published model versions, with links to their cards."""
    q = request.query_params
    params.check_known(q, ("limit", "after", "format"))
    fmt = params.choose_format(q, request.headers.get("accept"))
    after = params.decode_cursor(q.get("after"), (int,))
    table, more = await queries.models(conn, limit=_limit(request), after=after)
    if more and table.rows:
        table.next_url = _next_url(request, [int(table.rows[-1][0])])
    return respond(request, table, fmt)


async def model_card(request: Request, conn: psycopg.AsyncConnection[Any]) -> Response:
    """A model card: provenance, metrics with K-fold errors beside baselines, calibration."""
    params.check_known(request.query_params, ())
    version = await queries.resolve_version(conn, request.path_params["version"])
    card = await queries.model_card(conn, version)
    card["links"] = {"page": f"/models/{version}"}
    return json_response(card)


def _param(
    name: str, where: str, kind: str, description: str, required: bool = False, **extra: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "description": description,
        "schema": {"type": kind, **extra},
    }


_FORMAT = _param(
    "format",
    "query",
    "string",
    "json, csv or votable (else the Accept header)",
    enum=["json", "csv", "votable"],
)
_PAGE = [
    _param("limit", "query", "integer", "rows per page (default page_size)", minimum=1),
    _param("after", "query", "string", "keyset cursor from the previous page's next link"),
]
_CATALOG_Q = _param("catalog", "query", "string", "catalog name", required=True)
_ERRORS = {
    "400": {"description": "a parameter is invalid (the message names it)"},
    "404": {"description": "unknown catalog, object, deployment or model version"},
    "503": {"description": "overloaded or timed out; retry (Retry-After)"},
}


def _op(
    summary: str, parameters: list[dict[str, Any]], media: tuple[str, ...] = ("application/json",)
) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": parameters,
            "responses": {
                "200": {"description": "OK", "content": {m: {} for m in media}},
                **_ERRORS,
            },
        }
    }


TABLE_MEDIA = ("application/json", "text/csv", VOTABLE_TYPE)
OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "skyclass portal API",
        "version": "1",
        "description": "Read-only access to catalogs and their classifications.",
    },
    "paths": {
        "/scs/{catalog}": _op(
            "IVOA Simple Cone Search 1.03 (VOTable; errors as INFO name=Error)",
            [
                _param("catalog", "path", "string", "catalog name"),
                _param("RA", "query", "number", "ICRS right ascension, degrees", True),
                _param("DEC", "query", "number", "ICRS declination, degrees", True),
                _param("SR", "query", "number", "radius, degrees (0: metadata only)", True),
                _param("VERB", "query", "integer", "1 minimal, 2 default, 3 all columns"),
            ],
            (VOTABLE_TYPE,),
        ),
        "/api/catalogs": _op("Published catalogs and their deployments", []),
        "/api/cone": _op(
            "Cone search with current classifications, nearest first",
            [
                _CATALOG_Q,
                _param("ra", "query", "number", "degrees [0, 360]", True),
                _param("dec", "query", "number", "degrees [-90, 90]", True),
                _param("radius", "query", "number", "degrees, up to max_radius_deg", True),
                *_PAGE,
                _FORMAT,
            ],
            TABLE_MEDIA,
        ),
        "/api/objects/{catalog}/{id}": _op(
            "One object: catalog row, current classification per deployment with class "
            "names, PDF bins and summaries, history across versions and runs, domain fields",
            [
                _param("catalog", "path", "string", "catalog name"),
                _param("id", "path", "integer", "object_id"),
            ],
        ),
        "/api/candidates": _op(
            "Objects of a class above min_probability or above the threshold that reaches a "
            "purity target on the version's calibration split, most probable first",
            [
                _CATALOG_Q,
                _param("deployment", "query", "string", "deployment (optional if only one)"),
                _param("class", "query", "string", "class name", True),
                _param("min_probability", "query", "number", "0..1"),
                _param("purity", "query", "number", "purity target (0, 1]"),
                *_PAGE,
                _FORMAT,
            ],
            TABLE_MEDIA,
        ),
        "/api/models": _op("Published model versions", [*_PAGE, _FORMAT], TABLE_MEDIA),
        "/api/models/{version}": _op(
            "Model card: provenance, metrics (mean, K-fold std) beside baselines, calibration",
            [_param("version", "path", "string", "MODEL:VERSION, MODEL (newest) or an id")],
        ),
        "/objects/{catalog}/{id}": _op(
            "Object page (HTML)",
            [
                _param("catalog", "path", "string", "catalog name"),
                _param("id", "path", "integer", "object_id"),
            ],
            ("text/html",),
        ),
        "/models/{version}": _op(
            "Model card page (HTML)",
            [_param("version", "path", "string", "MODEL:VERSION, MODEL or an id")],
            ("text/html",),
        ),
    },
}


async def openapi(request: Request) -> Response:
    """The OpenAPI 3.1 description of the service."""
    return json_response(OPENAPI)
