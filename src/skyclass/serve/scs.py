"""IVOA Simple Cone Search 1.03 at ``/scs/{catalog}``.

``RA``, ``DEC`` (ICRS degrees) and ``SR`` (degrees, up to the service's
``max_radius_deg``) are required, ``VERB`` (1-3) is optional; parameter names
are case-insensitive. The answer is one VOTable TABLE with the catalog's
columns (``object_id`` as ``ID_MAIN``, a string; ``ra``/``dec`` as
``POS_EQ_RA_MAIN``/``POS_EQ_DEC_MAIN``), the distance, and the current
classification of every deployment with predictions on the catalog, with its
class names. ``SR=0`` returns the fields and no rows (a metadata query).
``VERB=1`` keeps the id, position, distance and each deployment's top class.
Bad input: HTTP 200 with an error VOTable (``INFO name="Error"``).
"""

from __future__ import annotations

from typing import Any

import psycopg
from starlette.requests import Request
from starlette.responses import Response

from skyclass.serve import params, queries
from skyclass.serve.config import ServeConfig
from skyclass.serve.formats import VOTABLE_TYPE, Table, table_votable

ALLOWED = ("RA", "DEC", "SR", "VERB", "RESPONSEFORMAT", "FORMAT")


async def cone(request: Request, conn: psycopg.AsyncConnection[Any]) -> Response:
    """One cone search: the VOTable of objects within SR of (RA, DEC), nearest first."""
    config: ServeConfig = request.app.state.config
    query = {k.upper(): v for k, v in request.query_params.items()}
    params.check_known(request.query_params, ALLOWED, fold=True)
    name = params.name(request.path_params["catalog"], "catalog", required=True)
    fmt = query.get("RESPONSEFORMAT") or query.get("FORMAT")
    if fmt is not None and fmt.lower() not in (
        "votable",
        "application/x-votable+xml",
        "text/xml",
        "metadata",
    ):
        raise params.ApiError(
            400,
            f"RESPONSEFORMAT {fmt[:100]!r}: this service writes VOTable",
            param="RESPONSEFORMAT",
        )
    ra = params.number(query.get("RA"), "RA", low=0, high=360, required=True)
    dec = params.number(query.get("DEC"), "DEC", low=-90, high=90, required=True)
    sr = params.number(query.get("SR"), "SR", low=0, high=config.max_radius_deg, required=True)
    verb = params.integer(query.get("VERB"), "VERB", low=1, high=3) or 2
    assert name is not None and ra is not None and dec is not None and sr is not None
    cat = await queries.catalog(conn, name, positions=True)
    deps = await queries.deployments(conn, cat)
    radius = 0.0 if sr == 0 else sr
    table, more = await queries.cone(
        conn,
        cat,
        deps,
        ra % 360.0,
        dec,
        radius,
        limit=0 if sr == 0 else config.max_rows,
        scs=True,
    )
    if sr == 0:
        table.rows = []
    if verb == 1:
        keep = {
            "object_id",
            "ra",
            "dec",
            "distance_arcsec",
            *(f"{d.name}_class" for d in deps),
            *(f"{d.name}_z_median" for d in deps),
        }
        index = [i for i, c in enumerate(table.columns) if c.name in keep]
        table = Table(
            [table.columns[i] for i in index], [tuple(r[i] for i in index) for r in table.rows]
        )
    table.infos.append(("QUERY_STATUS", "OVERFLOW" if more and sr > 0 else "OK"))
    if more and sr > 0:
        table.infos.append(("Warning", f"truncated to the first {config.max_rows} objects"))
    described = ", ".join(f"{d.name} = {d.label}" for d in deps) or "no deployments"
    body = table_votable(
        table,
        description=f"Cone search of catalog {cat.name} with current classifications ({described})",
    )
    return Response(body, media_type=VOTABLE_TYPE)
