"""``skyclass explain``: TreeSHAP explanations of catalog objects, stored as rows.

The target (deployment, ``MODEL:VERSION`` or model_version_id) is resolved
in the database; the objects come from the catalog's build of the version's
feature definition, chosen by ids or by a WHERE clause over the catalog
(run in a read-only transaction). One ``skyclass.explanation_run`` row and
one ``skyclass.explanation`` row per object are written in one transaction.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

from skyclass.errors import SkyclassError
from skyclass.explain.errors import ExplainError
from skyclass.explain.treeshap import Explanation, ensemble_from_treelite, explain
from skyclass.registry.models import resolve_target

#: At most this many objects per call (TreeSHAP costs about a millisecond per object).
MAX_OBJECTS = 100_000
#: What the raw margin of each Treelite post-processor is.
MODEL_OUTPUT = {
    "softmax": "softmax_logit",
    "sigmoid": "logit",
    "identity_multiclass": "probability",
}


@dataclass(frozen=True)
class ExplainResult:
    """A stored explanation run and what it holds."""

    explanation_run_id: int
    model_version_id: int
    label: str
    catalog: str
    feature_names: tuple[str, ...]
    output_names: tuple[str, ...]
    model_output: str
    object_id: npt.NDArray[np.int64] = field(repr=False)
    features: npt.NDArray[np.float32] = field(repr=False)
    explanation: Explanation = field(repr=False)
    seconds: float


def _feature_build(
    conn: psycopg.Connection[Any], version_id: int, catalog: str
) -> tuple[int, int, str, tuple[str, ...]]:
    from skyclass.registry.catalogs import find_catalog

    try:
        found = find_catalog(conn, catalog)
    except SkyclassError as exc:
        raise ExplainError(str(exc)) from None
    try:
        fs = conn.execute(
            "SELECT fs.feature_set_id, fs.table_name, fs.feature_names FROM skyclass.feature_set "
            "AS fs WHERE fs.feature_set_id = skyclass.scoring_feature_set(%s, %s)",
            (version_id, found.catalog_id),
        ).fetchone()
    except psycopg.errors.UndefinedObject as exc:
        conn.rollback()
        hint = f"; {exc.diag.message_hint}" if exc.diag.message_hint else ""
        raise ExplainError(f"{exc.diag.message_primary}{hint}") from None
    assert fs is not None
    return found.catalog_id, int(fs[0]), str(fs[1]), tuple(str(n) for n in fs[2])


def _select_objects(
    conn: psycopg.Connection[Any],
    catalog: str,
    feature_table: str,
    ids: Sequence[int] | None,
    where: str | None,
    limit: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    features = sql.Identifier("features", feature_table)
    if ids is not None:
        query = sql.SQL(
            "SELECT f.object_id, f.x FROM {} AS f WHERE f.object_id = ANY(%s) ORDER BY f.object_id"
        ).format(features)
        params: tuple[Any, ...] = (list(ids),)
    else:
        # The user's own SQL, over the catalog they name, in a read-only transaction.
        query = sql.SQL(
            "SELECT f.object_id, f.x FROM {} AS f JOIN {} AS c USING (object_id) "
            "WHERE ({}) ORDER BY f.object_id LIMIT %s"
        ).format(features, sql.Identifier("catalogs", catalog), sql.SQL(where or "true"))
        params = (limit,)
    if not conn.autocommit:
        conn.commit()  # SET TRANSACTION READ ONLY must open the transaction
    with conn.transaction():
        conn.execute("SET TRANSACTION READ ONLY")
        try:
            rows = conn.execute(query, params).fetchall()
        except psycopg.Error as exc:
            raise ExplainError(
                f"cannot select objects of catalog {catalog!r}: {exc.diag.message_primary}"
            ) from None
    if ids is not None:
        missing = sorted(set(ids) - {int(r[0]) for r in rows})
        if missing:
            shown = ", ".join(str(i) for i in missing[:10])
            raise ExplainError(
                f"{len(missing)} object id(s) have no features in catalog {catalog!r}: {shown}"
            )
    if not rows:
        raise ExplainError(f"no object of catalog {catalog!r} matches {where!r}")
    object_id = np.asarray([r[0] for r in rows], dtype=np.int64)
    x = np.asarray([r[1] for r in rows], dtype=np.float32).reshape(len(rows), -1)
    return object_id, x


def explain_objects(
    conn: psycopg.Connection[Any],
    target: str,
    catalog: str,
    *,
    ids: Sequence[int] | None = None,
    where: str | None = None,
    limit: int = 100,
) -> ExplainResult:
    """Explain the chosen objects of ``catalog`` by ``target`` and store the rows."""
    from skyclass.compile.checkpoint import load_checkpoint

    if (ids is None) == (where is None):
        raise ExplainError("choose the objects with ids or with a WHERE clause (one of them)")
    if ids is not None and not 0 < len(ids) <= MAX_OBJECTS:
        raise ExplainError(f"give between 1 and {MAX_OBJECTS} object ids, not {len(ids)}")
    if not 0 < limit <= MAX_OBJECTS:
        raise ExplainError(f"--limit must be between 1 and {MAX_OBJECTS}, not {limit}")
    found = resolve_target(conn, target)
    version_id, label = found.model_version_id, found.label
    catalog_id, feature_set_id, table, names = _feature_build(conn, version_id, catalog)
    row = conn.execute(
        "SELECT checkpoint, classes FROM skyclass.model_version WHERE model_version_id = %s",
        (version_id,),
    ).fetchone()
    assert row is not None
    if row[0] is None:
        raise ExplainError(f"{label} keeps no Treelite checkpoint: only tree models are explained")
    model = load_checkpoint(bytes(row[0]))
    classes = tuple(str(c) for c in row[1])
    object_id, x = _select_objects(conn, catalog, table, ids, where, limit)
    started = time.perf_counter()
    ensemble = ensemble_from_treelite(model)
    result = explain(ensemble, x)
    seconds = time.perf_counter() - started
    postprocessor = str(model.get_header_accessor().get_field("postprocessor"))
    outputs = classes if result.n_outputs == len(classes) else classes[-result.n_outputs :]
    selection = (
        f"ids: {', '.join(str(i) for i in object_id[:20])}{' ...' if object_id.size > 20 else ''}"
        if ids is not None
        else f"where: {where} (limit {limit})"
    )
    with conn.transaction():
        run_row = conn.execute(
            "INSERT INTO skyclass.explanation_run (model_version_id, catalog_id, catalog_name, "
            "feature_set_id, method, model_output, feature_names, output_names, base, selection, "
            "n_objects, seconds) VALUES (%s, %s, %s, %s, 'treeshap', %s, %s, %s, %s, %s, %s, %s) "
            "RETURNING explanation_run_id",
            (
                version_id,
                catalog_id,
                catalog,
                feature_set_id,
                MODEL_OUTPUT.get(postprocessor, "probability"),
                list(names),
                list(outputs),
                result.base.tolist(),
                selection,
                int(object_id.size),
                seconds,
            ),
        ).fetchone()
        assert run_row is not None
        run_id = int(run_row[0])
        with conn.cursor().copy(
            "COPY skyclass.explanation (explanation_run_id, object_id, margin, contributions) "
            "FROM STDIN"
        ) as copy:
            for i, oid in enumerate(object_id.tolist()):
                copy.write_row(
                    (
                        run_id,
                        oid,
                        result.margin[i].tolist(),
                        result.contributions[i].ravel().tolist(),
                    )
                )
    return ExplainResult(
        explanation_run_id=run_id,
        model_version_id=version_id,
        label=label,
        catalog=catalog,
        feature_names=names,
        output_names=tuple(outputs),
        model_output=MODEL_OUTPUT.get(postprocessor, "probability"),
        object_id=object_id,
        features=x,
        explanation=result,
        seconds=seconds,
    )


def as_records(result: ExplainResult) -> list[dict[str, Any]]:
    """One JSON-ready record per object: margins, base values and contributions per output."""
    records = []
    for i, oid in enumerate(result.object_id.tolist()):
        outputs = {}
        for k, name in enumerate(result.output_names):
            contributions = result.explanation.contributions[i, :, k]
            outputs[name] = {
                "base": float(result.explanation.base[k]),
                "margin": float(result.explanation.margin[i, k]),
                "contributions": {
                    f: float(c) for f, c in zip(result.feature_names, contributions, strict=True)
                },
            }
        records.append(
            {
                "object_id": oid,
                "features": {
                    f: (None if np.isnan(v) else float(v))
                    for f, v in zip(result.feature_names, result.features[i], strict=True)
                },
                "model_output": result.model_output,
                "outputs": outputs,
            }
        )
    return records
