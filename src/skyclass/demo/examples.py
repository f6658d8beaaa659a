"""The demo's example SQL: what a scientist types in psql once the catalogs are scored.

Each example is run as printed (the statement shown is the statement
executed), and its rows go to the terminal and to the demo report. The QSO
threshold is not a constant: it is computed in SQL from the calibration
split of the model's own training snapshot (objects the model never trained
on), scored by the in-database predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from skyclass.db.connect import connect
from skyclass.errors import SkyclassError
from skyclass.report.demo import SqlExample

CONE_RADIUS_DEG = 1.0
SHOW_ROWS = 10


def _run(conn: psycopg.Connection[Any], title: str, text: str, note: str = "") -> SqlExample:
    cur = conn.execute(text.encode())
    columns = tuple(d.name for d in cur.description or ())
    rows = [tuple(r) for r in cur.fetchall()]
    return SqlExample(title, text, columns, rows, note)


def _sgq_context(conn: psycopg.Connection[Any], model_version_id: int) -> tuple[str, int]:
    """The snapshot table of the version and the 1-based index of QSO in its classes."""
    row = conn.execute(
        "SELECT t.table_name, array_position(v.classes, 'QSO') FROM skyclass.model_version AS v "
        "JOIN skyclass.training_snapshot AS t USING (snapshot_id) WHERE v.model_version_id = %s",
        (model_version_id,),
    ).fetchone()
    if row is None or row[1] is None:
        raise SkyclassError(f"model version {model_version_id} has no class 'QSO'")
    return str(row[0]), int(row[1])


def run_examples(
    url: str,
    sgq_version: int,
    sgq_other_version: int,
    purity: float,
    *,
    cone: tuple[float, float],
    catalog: str,
    sgq_deployment: str = "sgq_current",
    photoz_deployment: str = "photoz_current",
    photoz_catalog: str = "boss_dr10",
) -> Sequence[SqlExample]:
    """Run the demo's example queries on ``url`` and return them with their rows.

    ``sgq_version`` is the deployed star/galaxy/QSO version (the QSO threshold
    for ``purity`` is computed for it), ``sgq_other_version`` the second
    version compared with it by ``skyclass.class_changes``; ``cone`` is the
    centre of the cone search.
    """
    out: list[SqlExample] = []
    with connect(url, autocommit=True) as conn:
        table, k = _sgq_context(conn, sgq_version)
        snapshot = sql.Identifier("snapshots", table).as_string(conn)
        ra, dec = cone
        out.append(
            _run(
                conn,
                f"Cone search ({CONE_RADIUS_DEG:g}° around RA {ra}, Dec {dec}) joined with the "
                "current classifications",
                f"""\
SELECT s.object_id, round(s.distance_arcsec::numeric, 1) AS distance_arcsec,
       c.class AS sdss_class, cc.top_label, round(cc.top_probability::numeric, 3) AS p_top
  FROM skyclass.cone_search('{catalog}', {ra}, {dec}, {CONE_RADIUS_DEG}) AS s
  JOIN catalogs.{catalog} AS c USING (object_id)
  JOIN skyclass.current_classification AS cc
    ON cc.object_id = s.object_id AND cc.deployment = '{sgq_deployment}'
   AND cc.catalog = '{catalog}'
 ORDER BY s.distance_arcsec LIMIT {SHOW_ROWS};""",
            )
        )
        threshold_sql = f"""\
-- calibration split (fold -1) of the model's snapshot: never trained on
WITH cal AS (
  SELECT s.label = 'QSO' AS is_qso, p.probabilities[{k}] AS p_qso
    FROM {snapshot} AS s
    JOIN skyclass.prediction AS p
      ON p.model_version_id = {sgq_version} AND p.object_id = s.object_id
     AND p.catalog_id = (SELECT catalog_id FROM skyclass.catalog WHERE name = '{catalog}')
   WHERE s.fold = -1),
ranked AS (
  SELECT p_qso, count(*) FILTER (WHERE is_qso) OVER w AS true_qso, count(*) OVER w AS selected,
         count(*) FILTER (WHERE is_qso) OVER () AS all_qso
    FROM cal WINDOW w AS (ORDER BY p_qso DESC))
SELECT p_qso AS threshold, selected, round(true_qso::numeric / selected, 4) AS purity,
       round(true_qso::numeric / all_qso, 4) AS completeness
  FROM ranked WHERE true_qso >= {purity} * selected
 ORDER BY p_qso LIMIT 1;"""
        found = _run(
            conn,
            f"The QSO probability threshold that gives {purity:.0%} purity",
            threshold_sql,
            "Lowest threshold whose selection on the calibration split is at least "
            f"{purity:.0%} pure: the largest completeness at that purity.",
        )
        out.append(found)
        threshold = float(found.rows[0][0]) if found.rows else None
        if threshold is None:
            out.append(
                SqlExample(
                    "QSO candidates",
                    "-- skipped",
                    (),
                    [],
                    f"no threshold reaches {purity:.0%} purity on the calibration split",
                )
            )
        else:
            where = (
                f"cc.deployment = '{sgq_deployment}' AND cc.catalog = '{catalog}'\n"
                f"   AND cc.probabilities[{k}] >= {threshold!r}"
            )
            count = conn.execute(
                f"SELECT count(*), count(*) FILTER (WHERE c.class = 'QSO') "
                f"FROM skyclass.current_classification AS cc JOIN catalogs.{catalog} AS c "
                f"USING (object_id) WHERE {where}".encode()
            ).fetchone()
            n, n_qso = (int(count[0]), int(count[1])) if count else (0, 0)
            out.append(
                _run(
                    conn,
                    f"QSO candidates above the {purity:.0%}-purity threshold",
                    f"""\
SELECT cc.object_id, round(c.ra::numeric, 5) AS ra, round(c.dec::numeric, 5) AS dec,
       round(cc.probabilities[{k}]::numeric, 4) AS p_qso, c.class AS sdss_class
  FROM skyclass.current_classification AS cc
  JOIN catalogs.{catalog} AS c USING (object_id)
 WHERE {where}
 ORDER BY p_qso DESC, cc.object_id LIMIT {SHOW_ROWS};""",
                    f"{n:,} candidates in the whole catalog, {n_qso:,} of them spectroscopic "
                    "QSOs (this includes the objects the model was trained on).",
                )
            )
        changes = _run(
            conn,
            "Objects whose class changed between the two model versions",
            f"""\
SELECT label_a, label_b, count(*) AS objects
  FROM skyclass.class_changes({sgq_version}, {sgq_other_version}, '{catalog}')
 GROUP BY label_a, label_b ORDER BY objects DESC, label_a, label_b;""",
        )
        total = sum(int(r[2]) for r in changes.rows)
        scored = conn.execute(
            "SELECT count(*) FROM skyclass.prediction WHERE model_version_id = %s",
            (sgq_version,),
        ).fetchone()
        n_scored = int(scored[0]) if scored else 0
        share = f" ({total / n_scored:.2%} of {n_scored:,})" if n_scored else ""
        out.append(
            SqlExample(
                changes.title,
                changes.sql,
                changes.columns,
                changes.rows,
                f"{total:,} objects changed class{share} between model_version_id "
                f"{sgq_version} (label_a) and {sgq_other_version} (label_b).",
            )
        )
        out.append(
            _run(
                conn,
                "Photometric redshifts of the current photo-z model",
                f"""\
SELECT cc.object_id, round(cc.z_median::numeric, 3) AS z_phot,
       round(cc.z_lo68::numeric, 3) AS z_lo68, round(cc.z_hi68::numeric, 3) AS z_hi68,
       round(b.z_spec::numeric, 3) AS z_spec
  FROM skyclass.current_classification AS cc
  JOIN catalogs.{photoz_catalog} AS b USING (object_id)
 WHERE cc.deployment = '{photoz_deployment}' AND cc.catalog = '{photoz_catalog}'
 ORDER BY cc.object_id LIMIT {SHOW_ROWS};""",
            )
        )
    return out
