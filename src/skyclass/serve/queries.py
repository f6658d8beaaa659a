"""The SQL of the service: fixed statements over the published views, parameters bound.

Catalog relations come from the registry (``skyclass._catalog_table`` or the
``schema_name``/``table_name`` of ``skyclass.catalog``) and are composed with
:class:`psycopg.sql.Identifier`; nothing a request sends becomes SQL text.
Connections are in autocommit mode and each answer is one statement where it can
be: a statement waits for the lock of a catalog being replaced and then reads
with a snapshot taken after it, so it sees the whole old or the whole new
catalog (``skyclass.cone_search`` locks through ``skyclass._catalog_table``).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from skyclass.serve.formats import OID_DATATYPE, Column, Table
from skyclass.serve.params import ApiError

CLASS_COLUMNS = ("top_label", "top_probability")
Z_COLUMNS = ("z_mean", "z_median", "z_mode", "z_lo68", "z_hi68", "z_lo95", "z_hi95")
SCS_UCD = {"object_id": "ID_MAIN", "ra": "POS_EQ_RA_MAIN", "dec": "POS_EQ_DEC_MAIN"}


@dataclass(frozen=True)
class Catalog:
    """A registered catalog as the portal sees it."""

    catalog_id: int
    name: str
    relation: sql.Composable
    description: str | None
    has_positions: bool
    columns: tuple[tuple[str, int], ...]  # (name, type oid) in table order


@dataclass(frozen=True)
class Deployment:
    """A deployment whose version has predictions on a catalog."""

    name: str
    model_version_id: int
    label: str
    task: str
    classes: tuple[str, ...]
    bin_edges: tuple[float, ...] | None


def column_slug(text: str) -> str:
    """A class name as part of a column name: letters, digits and _ only."""
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return slug or "class"


# Catalog metadata and deployment lists are read at most every CACHE_SECONDS per process:
# two round trips fewer per request. A deployment switch or a new catalog shows within that
# time; the rows themselves (predictions, catalog rows) are always read fresh.
CACHE_SECONDS = 2.0
_catalogs: dict[str, tuple[float, Catalog]] = {}
_catalogs_read = 0.0
_deployments: dict[int, tuple[float, list[Deployment]]] = {}
THRESHOLD_SECONDS = 60.0
_thresholds: dict[tuple[int, str, float], tuple[float, dict[str, Any] | None]] = {}


async def catalog(conn: AsyncConnection[Any], name: str, *, positions: bool) -> Catalog:
    """The catalog ``name`` (404 when unknown; 400 for a cone on one without positions).

    The published catalogs are read all at once (a handful of rows) and looked
    up here: SQL never looks a registry row up by a request's name.
    """
    global _catalogs_read
    if time.monotonic() - _catalogs_read >= CACHE_SECONDS or name not in _catalogs:
        _catalogs.clear()
        _catalogs.update({c.name: (time.monotonic(), c) for c in await _read_catalogs(conn)})
        _catalogs_read = time.monotonic()
    found = _catalogs.get(name)
    if found is None:
        names = sorted(_catalogs)[:50]
        raise ApiError(
            404,
            f"catalog {name!r} is not published; catalogs: " + (", ".join(names) or "none"),
            param="catalog",
        )
    cat = found[1]
    if positions and not cat.has_positions:
        raise ApiError(
            400, f"catalog {name!r} has no sky positions: no cone search", param="catalog"
        )
    return cat


async def _read_catalogs(conn: AsyncConnection[Any]) -> list[Catalog]:
    """Every registered catalog with its relation and columns (in table order)."""
    rows = await (
        await conn.execute(
            "SELECT c.catalog_id, c.name, c.schema_name, c.table_name, c.description, "
            "c.ra_column IS NOT NULL, "
            "(SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute AS a "
            "  WHERE a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped), "
            "(SELECT array_agg(a.atttypid::int ORDER BY a.attnum) FROM pg_attribute AS a "
            "  WHERE a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped) "
            "FROM skyclass.catalog AS c "
            "CROSS JOIN LATERAL (SELECT to_regclass(format('%I.%I', c.schema_name, "
            "c.table_name))::oid AS oid) AS t WHERE t.oid IS NOT NULL ORDER BY c.name"
        )
    ).fetchall()
    return [
        Catalog(
            int(catalog_id),
            str(name),
            sql.Identifier(schema, table),
            description,
            bool(has_positions),
            tuple(zip(names or [], types or [], strict=True)),
        )
        for catalog_id, name, schema, table, description, has_positions, names, types in rows
    ]


async def deployments(conn: AsyncConnection[Any], cat: Catalog) -> list[Deployment]:
    """Deployments whose current version has predictions on ``cat``, by name."""
    cached = _deployments.get(cat.catalog_id)
    if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
        return cached[1]
    rows = await (
        await conn.execute(
            "SELECT d.name, v.model_version_id, m.name || ':' || v.version, v.task, v.classes, "
            "v.bin_edges FROM skyclass.deployment AS d "
            "JOIN skyclass.model_version AS v USING (model_version_id) "
            "JOIN skyclass.model AS m ON m.model_id = v.model_id "
            # The published prediction tables of (version, catalog), read from their registry
            # (skyclass.prediction_table): a scan of the skyclass.prediction view would lock
            # every run's table and queue behind a rescoring job publishing its own.
            "WHERE EXISTS (SELECT FROM skyclass.prediction_table AS p "
            "  WHERE p.model_version_id = d.model_version_id AND p.catalog_id = %s) "
            "ORDER BY d.name",
            (cat.catalog_id,),
        )
    ).fetchall()
    found = [
        Deployment(n, int(v), lab, t, tuple(c), tuple(e) if e is not None else None)
        for n, v, lab, t, c, e in rows
    ]
    _deployments[cat.catalog_id] = (time.monotonic(), found)
    return found


def catalog_columns(cat: Catalog, *, scs: bool) -> list[Column]:
    """Output columns of the catalog's own columns (SCS: UCD1 on id and position)."""
    out = []
    for name, oid in cat.columns:
        datatype = OID_DATATYPE.get(oid, "char")
        ucd = SCS_UCD.get(name, "") if scs else ""
        if scs and name == "object_id":
            datatype = "char"  # SCS 1.03: ID_MAIN is a string
        unit = "deg" if name in ("ra", "dec") else ""
        out.append(Column(name, datatype, ucd, unit))
    return out


def classification_columns(deps: list[Deployment]) -> tuple[list[Column], list[sql.Composable]]:
    """Output columns and select expressions of the current classification per deployment.

    Deployment ``d`` is joined as ``p_<i>``; classification gives ``d_class``,
    ``d_p`` and ``d_p_<class>`` per class, photo-z ``d_z_*`` summaries.
    """
    columns: list[Column] = []
    exprs: list[sql.Composable] = []
    for i, d in enumerate(deps):
        alias = sql.Identifier(f"p_{i}")
        label = f"{d.name} ({d.label})"
        if d.task == "classification":
            columns.append(
                Column(f"{d.name}_class", "char", "", "", f"most probable class, {label}")
            )
            exprs.append(sql.SQL("{}.top_label").format(alias))
            columns.append(
                Column(
                    f"{d.name}_p",
                    "float",
                    "",
                    "",
                    f"probability of the most probable class, {label}",
                )
            )
            exprs.append(sql.SQL("{}.top_probability").format(alias))
            for k, cls in enumerate(d.classes, start=1):
                columns.append(
                    Column(
                        f"{d.name}_p_{column_slug(cls)}",
                        "float",
                        "",
                        "",
                        f"probability of class {cls}, {label}",
                    )
                )
                exprs.append(sql.SQL("{}.probabilities[{}]").format(alias, sql.Literal(k)))
        else:
            for z in Z_COLUMNS:
                columns.append(
                    Column(f"{d.name}_{z}", "float", "", "", f"photo-z {z[2:]} of the PDF, {label}")
                )
                exprs.append(sql.SQL("{}.{}").format(alias, sql.Identifier(z)))
    return columns, exprs


def _joins(cat: Catalog, deps: list[Deployment], id_expr: sql.Composable) -> sql.Composable:
    return sql.SQL(" ").join(
        sql.SQL(
            "LEFT JOIN skyclass.prediction AS {a} ON {a}.model_version_id = {v} "
            "AND {a}.catalog_id = {c} AND {a}.object_id = {i}"
        ).format(
            a=sql.Identifier(f"p_{i}"),
            v=sql.Literal(d.model_version_id),
            c=sql.Literal(cat.catalog_id),
            i=id_expr,
        )
        for i, d in enumerate(deps)
    )


async def cone(
    conn: AsyncConnection[Any],
    cat: Catalog,
    deps: list[Deployment],
    ra: float,
    dec: float,
    radius_deg: float,
    *,
    limit: int,
    after: list[Any] | None = None,
    scs: bool = False,
) -> tuple[Table, bool]:
    """Objects within ``radius_deg``, nearest first, with classifications; (table, more rows)."""
    class_cols, class_exprs = classification_columns(deps)
    columns = [
        *catalog_columns(cat, scs=scs),
        Column("distance_arcsec", "double", "", "arcsec", "distance from the centre"),
        *class_cols,
    ]
    own = [sql.SQL("c.{}").format(sql.Identifier(n)) for n, _ in cat.columns]
    keyset = sql.SQL("")
    params: list[Any] = [cat.name, ra, dec, radius_deg]
    if after is not None:
        keyset = sql.SQL("WHERE (s.distance_arcsec, s.object_id) > (%s, %s)")
        params += after
    query = sql.SQL(
        "SELECT {cols} FROM skyclass.cone_search(%s, %s, %s, %s) AS s "
        "JOIN {rel} AS c ON c.object_id = s.object_id {joins} {keyset} "
        "ORDER BY s.distance_arcsec, s.object_id LIMIT {limit}"
    ).format(
        cols=sql.SQL(", ").join([*own, sql.SQL("s.distance_arcsec"), *class_exprs]),
        rel=cat.relation,
        joins=_joins(cat, deps, sql.SQL("s.object_id")),
        keyset=keyset,
        limit=sql.Literal(limit + 1),
    )
    rows = await (await conn.execute(query, params)).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    if scs:
        at = [n for n, _ in cat.columns].index("object_id")
        rows = [(*r[:at], str(r[at]), *r[at + 1 :]) for r in rows]
    return Table(columns, list(rows)), more


async def object_row(conn: AsyncConnection[Any], cat: Catalog, object_id: int) -> dict[str, Any]:
    """The catalog row of ``object_id`` (404 when the catalog has no such object)."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        sql.SQL("SELECT * FROM {} WHERE object_id = %s").format(cat.relation), (object_id,)
    )
    row = await cur.fetchone()
    if row is None:
        raise ApiError(404, f"catalog {cat.name!r} has no object {object_id}", param="id")
    return dict(row)


def _prediction(
    d_classes: tuple[str, ...], edges: Any, task: str, row: dict[str, Any]
) -> dict[str, Any]:
    probabilities = list(row["probabilities"] or [])
    out: dict[str, Any] = {
        "top_label": row["top_label"],
        "top_probability": row["top_probability"],
        "run_id": row["run_id"],
        "scored_at": row["scored_at"],
    }
    if task == "classification":
        out["probabilities"] = dict(zip(d_classes, probabilities, strict=False))
    else:
        out["pdf"] = {"bin_edges": list(edges or []), "probabilities": probabilities}
        out["summary"] = {z: row[z] for z in Z_COLUMNS}
    return out


PREDICTION_COLUMNS = (
    "p.model_version_id, p.top_label, p.top_probability, p.probabilities, p.run_id, "
    "p.scored_at, " + ", ".join(f"p.{z}" for z in Z_COLUMNS)
)


_versions: tuple[float, list[int]] = (-1e9, [])


async def version_ids(conn: AsyncConnection[Any]) -> list[int]:
    """Every model version id (read at most every CACHE_SECONDS)."""
    global _versions
    if time.monotonic() - _versions[0] >= CACHE_SECONDS:
        rows = await (
            await conn.execute("SELECT model_version_id FROM skyclass.published_model_version")
        ).fetchall()
        _versions = (time.monotonic(), [int(r[0]) for r in rows])
    return _versions[1]


async def object_document(
    conn: AsyncConnection[Any], cat: Catalog, object_id: int
) -> dict[str, Any]:
    """Everything published about one object: row, current classifications, history, domain."""
    row = await object_row(conn, cat, object_id)
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT " + PREDICTION_COLUMNS + ", m.name || ':' || v.version AS label, v.task, "
        "v.classes, v.bin_edges, "
        "(SELECT array_agg(d.name ORDER BY d.name) FROM skyclass.deployment AS d "
        "  WHERE d.model_version_id = p.model_version_id) AS deployments "
        "FROM skyclass.prediction AS p "
        "JOIN skyclass.model_version AS v USING (model_version_id) "
        "JOIN skyclass.model AS m ON m.model_id = v.model_id "
        # Naming the versions lets each partition (LIST by version) use its primary key
        # (model_version_id, catalog_id, object_id): 0.1 ms instead of a scan of each.
        "WHERE p.model_version_id = ANY(%s) AND p.catalog_id = %s AND p.object_id = %s "
        "ORDER BY p.scored_at, p.model_version_id",
        (await version_ids(conn), cat.catalog_id, object_id),
    )
    history = []
    current: dict[str, Any] = {}
    for r in await cur.fetchall():
        entry = {
            "model_version_id": r["model_version_id"],
            "model_version": r["label"],
            "task": r["task"],
            "deployments": r["deployments"] or [],
            **_prediction(tuple(r["classes"]), r["bin_edges"], r["task"], r),
        }
        history.append(entry)
        for d in r["deployments"] or []:
            current[d] = entry
    await cur.execute(
        "SELECT s.model_version_id, s.domain_shift_id, s.auc, s.reliable, o.propensity, "
        "o.weight, o.clipped FROM skyclass.domain_object AS o "
        "JOIN skyclass.domain_shift AS s USING (domain_shift_id) "
        "WHERE s.catalog_id = %s AND o.object_id = %s ORDER BY s.domain_shift_id",
        (cat.catalog_id, object_id),
    )
    domain = [dict(r) for r in await cur.fetchall()]
    return {
        "catalog": cat.name,
        "object_id": object_id,
        "row": row,
        "current": {name: current[name] for name in sorted(current)},
        "history": history,
        "domain": domain,
    }


async def resolve_deployment(
    conn: AsyncConnection[Any], cat: Catalog, name: str | None, *, task: str
) -> Deployment:
    """The deployment ``name`` on ``cat``, or the only one of ``task`` when not given."""
    deps = [d for d in await deployments(conn, cat) if d.task == task]
    if name is None:
        if len(deps) == 1:
            return deps[0]
        raise ApiError(
            400,
            "parameter 'deployment' is required: catalog "
            f"{cat.name!r} has {task} deployments " + (", ".join(d.name for d in deps) or "none"),
            param="deployment",
        )
    for d in deps:
        if d.name == name:
            return d
    raise ApiError(
        404,
        f"deployment {name!r} has no {task} predictions on catalog {cat.name!r}; deployments: "
        + (", ".join(d.name for d in deps) or "none"),
        param="deployment",
    )


async def purity_threshold(
    conn: AsyncConnection[Any], d: Deployment, cls: str, purity: float
) -> dict[str, Any]:
    """The threshold reaching ``purity`` on the calibration split (409 when none does).

    Cached per (version, class, purity) for THRESHOLD_SECONDS: a version never
    changes, only a rescoring of its training catalog could move the figure.
    """
    key = (d.model_version_id, cls, purity)
    cached = _thresholds.get(key)
    if cached is not None and time.monotonic() - cached[0] < THRESHOLD_SECONDS:
        row = cached[1]
    else:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            "SELECT * FROM skyclass.purity_threshold(%s, %s, %s)",
            (d.model_version_id, cls, purity),
        )
        row = await cur.fetchone()
        if len(_thresholds) > 10_000:
            _thresholds.clear()
        _thresholds[key] = (time.monotonic(), row)
    if row is None:
        raise ApiError(
            409,
            f"no threshold of {d.label} reaches purity {purity:g} for class {cls!r} on its "
            "calibration split (or the version has not scored its training catalog)",
            param="purity",
        )
    return dict(row)


async def candidates(
    conn: AsyncConnection[Any],
    cat: Catalog,
    d: Deployment,
    k: int,
    threshold: float,
    *,
    limit: int,
    after: list[Any] | None,
) -> tuple[Table, bool]:
    """Objects with p(class k) >= threshold, most probable first (ties by object_id).

    Above 0.5 a class can only be the most probable one, so the query also
    says ``top_label = class`` and orders by ``top_probability`` (the same
    value then): the index on ``(top_label, top_probability DESC)`` finds the
    page without sorting every object of the class.
    """
    keyset: sql.Composable = sql.SQL("")
    params: list[Any] = [d.model_version_id, cat.catalog_id, threshold]
    top = threshold > 0.5
    prob = sql.SQL("p.top_probability" if top else "p.probabilities[{}]").format(sql.Literal(k))
    if top:
        keyset = sql.SQL("AND p.top_label = %s ")
        params.append(d.classes[k - 1])
    if after is not None:
        keyset = sql.SQL("{} AND ({p} < %s::real OR ({p} = %s::real AND p.object_id > %s))").format(
            keyset, p=prob
        )
        params += [after[0], after[0], after[1]]
    own = [n for n, _ in cat.columns if n in ("ra", "dec")]
    query = sql.SQL(
        # The page of predictions first, then its catalog rows: joining every candidate
        # to the catalog before the sort cost a hash join of the whole catalog.
        "SELECT s.object_id, {own} s.probability, s.top_label, s.top_probability FROM ("
        "SELECT p.object_id, p.probabilities[{k}] AS probability, p.top_label, "
        "p.top_probability FROM skyclass.prediction AS p "
        "WHERE p.model_version_id = %s AND p.catalog_id = %s "
        "AND p.probabilities[{k}] >= %s::real {keyset} "
        "ORDER BY {prob} DESC, p.object_id LIMIT {limit}) AS s "
        "LEFT JOIN {rel} AS c ON c.object_id = s.object_id "
        "ORDER BY s.probability DESC, s.object_id"
    ).format(
        prob=prob,
        own=sql.SQL("").join(sql.SQL("c.{}, ").format(sql.Identifier(n)) for n in own),
        k=sql.Literal(k),
        rel=cat.relation,
        keyset=keyset,
        limit=sql.Literal(limit + 1),
    )
    rows = await (await conn.execute(query, params)).fetchall()
    more = len(rows) > limit
    columns = [
        Column("object_id", "long", "meta.id;meta.main"),
        *(Column(n, "double", "", "deg") for n in own),
        Column("probability", "float", "", "", f"probability of class {d.classes[k - 1]}"),
        Column("top_label", "char"),
        Column("top_probability", "float"),
    ]
    return Table(columns, list(rows[:limit])), more


MODEL_COLUMNS = (
    "model_version_id",
    "label",
    "model",
    "version",
    "task",
    "estimator",
    "classes",
    "calibration_kind",
    "feature_set",
    "training_catalog",
    "snapshot_rows",
    "created_at",
)


async def models(
    conn: AsyncConnection[Any], *, limit: int, after: list[Any] | None
) -> tuple[Table, bool]:
    """Published model versions by id, with the deployments pointing at each."""
    cur = await conn.execute(
        sql.SQL(
            "SELECT {cols}, (SELECT array_agg(d.name ORDER BY d.name) FROM skyclass.deployment "
            "AS d WHERE d.model_version_id = v.model_version_id) AS deployments "
            "FROM skyclass.published_model_version AS v WHERE v.model_version_id > %s "
            "ORDER BY v.model_version_id LIMIT {limit}"
        ).format(
            cols=sql.SQL(", ").join(
                sql.SQL("v.{}").format(sql.Identifier(c)) for c in MODEL_COLUMNS
            ),
            limit=sql.Literal(limit + 1),
        ),
        (after[0] if after else -1,),
    )
    rows = await cur.fetchall()
    columns = [
        Column(
            c,
            "long"
            if c in ("model_version_id", "snapshot_rows")
            else "int"
            if c == "version"
            else "char",
        )
        for c in MODEL_COLUMNS
    ]
    columns.append(Column("deployments", "char"))
    return Table(columns, list(rows[:limit])), len(rows) > limit


async def resolve_version(conn: AsyncConnection[Any], ref: str) -> int:
    """A model version from ``MODEL:VERSION``, ``MODEL`` (newest) or an id; 404 when unknown."""
    if re.fullmatch(r"\d{1,18}", ref):
        found = await (
            await conn.execute(
                "SELECT model_version_id FROM skyclass.published_model_version "
                "WHERE model_version_id = %s",
                (int(ref),),
            )
        ).fetchone()
    else:
        match = re.fullmatch(r"([a-z][a-z0-9_]{0,62})(?::(\d{1,9}))?", ref)
        if not match:
            raise ApiError(
                400, f"model version {ref[:200]!r} is not MODEL[:VERSION] or an id", param="version"
            )
        found = await (
            await conn.execute(
                "SELECT model_version_id FROM skyclass.published_model_version WHERE model = %s "
                "AND (%s::int IS NULL OR version = %s::int) ORDER BY version DESC LIMIT 1",
                (match.group(1), match.group(2), match.group(2)),
            )
        ).fetchone()
    if found is None:
        raise ApiError(404, f"model version {ref[:200]!r} does not exist", param="version")
    return int(found[0])


async def model_card(conn: AsyncConnection[Any], version_id: int) -> dict[str, Any]:
    """The model card: provenance, metrics with errors beside baselines, calibration curves."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT * FROM skyclass.published_model_version WHERE model_version_id = %s",
        (version_id,),
    )
    version = await cur.fetchone()
    if version is None:
        raise ApiError(404, f"model version {version_id} does not exist", param="version")
    await cur.execute(
        "SELECT estimator, role, is_version, name, class_name, stage, mean, std, n_folds "
        "FROM skyclass.published_metric WHERE model_version_id = %s "
        "ORDER BY is_version DESC, role, estimator, name, class_name, stage",
        (version_id,),
    )
    metrics = [dict(r) for r in await cur.fetchall()]
    await cur.execute(
        "SELECT name, class_name, stage, data FROM skyclass.published_curve "
        "WHERE model_version_id = %s AND name IN ('reliability', 'pit', 'coverage') "
        "ORDER BY name, class_name, stage",
        (version_id,),
    )
    curves = [dict(r) for r in await cur.fetchall()]
    await cur.execute(
        "SELECT name FROM skyclass.deployment WHERE model_version_id = %s ORDER BY name",
        (version_id,),
    )
    deployed = [r["name"] for r in await cur.fetchall()]
    return {
        "model_version": dict(version),
        "deployments": deployed,
        "metrics": metrics,
        "calibration": curves,
    }
