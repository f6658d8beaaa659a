"""Dropping a catalog without orphans: what depends on it, and ``--cascade``.

A catalog has dependents: feature builds (``skyclass.feature_set`` rows and
their ``features.*`` tables), scoring runs, prediction tables
(``predictions.mv_<version>_c<catalog>_r<run>`` and their chunks) and
rescoring schedules. :func:`catalog_dependents` lists them, with the
deployments whose model versions predicted the catalog (they stay).
:func:`drop_catalog` refuses while there are any, unless ``cascade``; then it
removes them and the catalog in one transaction. Model versions, their
training snapshots and the feature builds they were trained on stay: provenance
outlives the catalog (such a build keeps its row, with ``catalog_id`` NULL and
``catalog_name`` kept, and loses its table). An ingested catalog's table is
dropped; a registered catalog loses only the view skyclass made, never the
table it was registered from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from skyclass.db.connect import connect
from skyclass.errors import RegistryError
from skyclass.ingest.columns import check_name
from skyclass.registry.catalogs import drop_table, not_found
from skyclass.registry.locks import lock_catalog

FEATURE_SCHEMA = "features"
PREDICTION_SCHEMA = "predictions"


@dataclass(frozen=True)
class CatalogDependents:
    """What depends on a catalog (see the module); ``kept_builds`` are used by model versions."""

    catalog: str
    kind: str
    feature_builds: tuple[str, ...]
    kept_builds: tuple[str, ...]
    runs: tuple[int, ...]
    prediction_tables: tuple[str, ...]
    schedules: tuple[str, ...]
    deployments: tuple[str, ...]

    @property
    def empty(self) -> bool:
        """True when nothing but the catalog itself would be removed."""
        return not (self.feature_builds or self.runs or self.prediction_tables or self.schedules)

    def describe(self) -> list[str]:
        """One line per kind of dependent, for messages and ``catalog drop``."""
        lines = []
        if self.feature_builds:
            lines.append(f"feature builds: {', '.join(self.feature_builds)}")
        if self.kept_builds:
            lines.append(
                "  of which used by model versions (row kept, table dropped): "
                + ", ".join(self.kept_builds)
            )
        if self.runs:
            lines.append(f"scoring runs: {', '.join(str(r) for r in self.runs)}")
        if self.prediction_tables:
            lines.append(f"prediction tables: {', '.join(self.prediction_tables)}")
        if self.schedules:
            lines.append(f"schedules: {', '.join(self.schedules)}")
        if self.deployments:
            lines.append(
                "deployments with predictions of it (they stay): " + ", ".join(self.deployments)
            )
        return lines


@dataclass(frozen=True)
class DropReport:
    """What :func:`drop_catalog` removed."""

    dependents: CatalogDependents
    dropped_relation: str
    source_kept: str | None


def _column(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...]) -> list[Any]:
    return [r[0] for r in conn.execute(query, params).fetchall()]


def _prediction_tables(conn: psycopg.Connection[Any], catalog_id: int) -> list[str]:
    # Run partitions are named mv_<version>_c<catalog>_r<run>, their chunks ..._<chunk>;
    # partitioned parents first, so that dropping them takes their attached chunks along.
    return _column(
        conn,
        "SELECT c.relname FROM pg_class AS c WHERE c.relnamespace = to_regnamespace(%s) "
        "AND c.relkind IN ('r', 'p') AND c.relname ~ %s "
        "ORDER BY c.relkind = 'p' DESC, c.relname",
        (PREDICTION_SCHEMA, f"^mv_[0-9]+_c{catalog_id}_r[0-9]+(_[0-9]+)?$"),
    )


def _dependents(
    conn: psycopg.Connection[Any], catalog_id: int, name: str, kind: str
) -> CatalogDependents:
    builds = conn.execute(
        "SELECT fs.name || ':' || left(fs.spec_hash, 12), "
        "EXISTS (SELECT FROM skyclass.model_version AS v "
        "        WHERE v.feature_set_id = fs.feature_set_id) "
        "OR EXISTS (SELECT FROM skyclass.training_snapshot AS t "
        "            WHERE t.feature_set_id = fs.feature_set_id) "
        "FROM skyclass.feature_set AS fs WHERE fs.catalog_id = %s ORDER BY fs.feature_set_id",
        (catalog_id,),
    ).fetchall()
    return CatalogDependents(
        catalog=name,
        kind=kind,
        feature_builds=tuple(b[0] for b in builds),
        kept_builds=tuple(b[0] for b in builds if b[1]),
        runs=tuple(
            _column(
                conn,
                "SELECT run_id FROM skyclass.scoring_run WHERE catalog_id = %s ORDER BY run_id",
                (catalog_id,),
            )
        ),
        prediction_tables=tuple(
            f"{PREDICTION_SCHEMA}.{t}" for t in _prediction_tables(conn, catalog_id)
        ),
        schedules=tuple(
            _column(
                conn,
                "SELECT name FROM skyclass.scoring_schedule WHERE catalog_id = %s ORDER BY name",
                (catalog_id,),
            )
        ),
        deployments=tuple(
            _column(
                conn,
                "SELECT DISTINCT d.name FROM skyclass.deployment AS d JOIN skyclass.scoring_run "
                "AS r USING (model_version_id) WHERE r.catalog_id = %s ORDER BY d.name",
                (catalog_id,),
            )
        ),
    )


def catalog_dependents(name: str, url: str | None = None) -> CatalogDependents:
    """What depends on catalog ``name`` (raises :class:`CatalogNotFoundError` when unknown)."""
    check_name(name)
    with connect(url) as conn:
        row = conn.execute(
            "SELECT catalog_id, kind FROM skyclass.catalog WHERE name = %s", (name,)
        ).fetchone()
        if row is None:
            raise not_found(conn, name)
        return _dependents(conn, int(row[0]), name, str(row[1]))


def drop_catalog(name: str, *, cascade: bool = False, url: str | None = None) -> DropReport:
    """Drop catalog ``name``; with ``cascade`` also what depends on it, in one transaction.

    Raises :class:`CatalogNotFoundError` when it is not registered, and
    :class:`RegistryError` when it has dependents and ``cascade`` is False,
    when a scoring job of it is running, when a schedule's pg_cron job lives in
    another database, or when objects skyclass does not know depend on it;
    nothing is changed then.
    """
    check_name(name)
    with connect(url) as conn, conn.transaction():
        lock_catalog(conn, name)
        row = conn.execute(
            "SELECT catalog_id, schema_name, table_name, kind, source_schema, source_table "
            "FROM skyclass.catalog WHERE name = %s FOR UPDATE",
            (name,),
        ).fetchone()
        if row is None:
            raise not_found(conn, name)
        catalog_id, schema, table, kind = int(row[0]), str(row[1]), str(row[2]), str(row[3])
        deps = _dependents(conn, catalog_id, name, kind)
        if not deps.empty and not cascade:
            raise RegistryError(
                f"catalog {name!r} has dependents: {'; '.join(deps.describe())}. "
                "Add --cascade to drop them with it (model versions and their training "
                "snapshots stay)"
            )
        if not deps.empty:
            _drop_dependents(conn, catalog_id, deps)
        if kind == "registered":
            _drop_view(conn, schema, table, name)
        else:
            drop_table(conn, schema, table, what=f"catalog {name!r}")
        # OOD scores have no foreign key (it doubled their write cost): deleted here.
        conn.execute("DELETE FROM skyclass.ood_score WHERE catalog_id = %s", (catalog_id,))
        try:
            with conn.transaction():
                conn.execute("DELETE FROM skyclass.catalog WHERE catalog_id = %s", (catalog_id,))
        except psycopg.errors.ForeignKeyViolation as exc:
            raise RegistryError(
                f"catalog {name!r} is still referenced ({exc.diag.constraint_name} on "
                f"{exc.diag.table_name}); remove those rows first"
            ) from None
    source = None if row[5] is None else f"{row[4]}.{row[5]}"
    return DropReport(deps, f"{schema}.{table}", source)


def _drop_view(conn: psycopg.Connection[Any], schema: str, view: str, name: str) -> None:
    """Drop the view skyclass made for a registered catalog; refuse anything else."""
    kind = conn.execute(
        "SELECT c.relkind FROM pg_class AS c "
        "WHERE c.oid = to_regclass(format('%%I.%%I', %s::text, %s::text))",
        (schema, view),
    ).fetchone()
    if kind is None:
        return
    if kind[0] != "v":
        raise RegistryError(
            f"catalog {name!r} is registered but {schema}.{view} is not the view skyclass made "
            f"(relkind {kind[0]!r}); skyclass drops only its own objects: inspect it"
        )
    drop_table(conn, schema, view, what=f"catalog {name!r}", view=True)


def _drop_dependents(
    conn: psycopg.Connection[Any], catalog_id: int, deps: CatalogDependents
) -> None:
    running = conn.execute(
        "SELECT r.run_id, skyclass.scoring_job_holder(r.model_version_id, r.catalog_id) "
        "FROM skyclass.scoring_run AS r WHERE r.catalog_id = %s AND r.status = 'running'",
        (catalog_id,),
    ).fetchall()
    live = [(run, pid) for run, pid in running if pid is not None]
    if live:
        run, pid = live[0]
        raise RegistryError(
            f"catalog {deps.catalog!r} is being scored (run {run}, backend pid {pid}); wait for "
            "it to finish or cancel it, then drop again"
        )
    if deps.schedules:
        _unschedule(conn, catalog_id, deps)
    # The view skyclass.prediction stops showing the catalog's run tables before they go.
    conn.execute("SELECT count(*) FROM skyclass.unpublish_predictions(%s)", (catalog_id,))
    for table in _prediction_tables(conn, catalog_id):
        drop_table(conn, PREDICTION_SCHEMA, table, what=f"catalog {deps.catalog!r}")
    # The job leases of the catalog (free: a live holder was refused above).
    conn.execute("DELETE FROM skyclass.scoring_lease WHERE catalog_id = %s", (catalog_id,))
    versions = _column(
        conn,
        "DELETE FROM skyclass.scoring_run WHERE catalog_id = %s RETURNING model_version_id",
        (catalog_id,),
    )
    # A version's partition of skyclass.prediction is made on its first scoring; without
    # catalogs left under it, it goes too (the next scoring makes it again).
    for version in sorted(set(versions)):
        empty = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL AND NOT EXISTS "
            "(SELECT FROM pg_inherits WHERE inhparent = to_regclass(%s))",
            (f"{PREDICTION_SCHEMA}.mv_{version}",) * 2,
        ).fetchone()
        if empty and empty[0]:
            drop_table(conn, PREDICTION_SCHEMA, f"mv_{version}", what=f"model version {version}")
    tables = _column(
        conn, "SELECT table_name FROM skyclass.feature_set WHERE catalog_id = %s", (catalog_id,)
    )
    for table in tables:
        drop_table(conn, FEATURE_SCHEMA, table, what=f"catalog {deps.catalog!r}")
    # Builds no model version or snapshot uses go; the others keep their row (catalog_id
    # becomes NULL when the catalog row goes) as the provenance of those versions.
    conn.execute(
        "DELETE FROM skyclass.feature_set AS fs WHERE fs.catalog_id = %s "
        "AND NOT EXISTS (SELECT FROM skyclass.model_version AS v "
        "                WHERE v.feature_set_id = fs.feature_set_id) "
        "AND NOT EXISTS (SELECT FROM skyclass.training_snapshot AS t "
        "                WHERE t.feature_set_id = fs.feature_set_id)",
        (catalog_id,),
    )


def _unschedule(conn: psycopg.Connection[Any], catalog_id: int, deps: CatalogDependents) -> None:
    """Remove the catalog's schedules and their pg_cron jobs in this transaction."""
    row = conn.execute(
        "SELECT current_setting('cron.database_name', true) = current_database() "
        "AND to_regclass('cron.job') IS NOT NULL"
    ).fetchone()
    jobs = conn.execute(
        "SELECT name, cron_jobid FROM skyclass.scoring_schedule WHERE catalog_id = %s",
        (catalog_id,),
    ).fetchall()
    if not (row and row[0]):
        names = ", ".join(j[0] for j in jobs)
        raise RegistryError(
            f"catalog {deps.catalog!r} has schedules ({names}) whose pg_cron jobs live in "
            "another database, which this transaction cannot change: remove them first with "
            "`skyclass schedule remove NAME`, then drop again"
        )
    for _name, jobid in jobs:
        conn.execute(
            "SELECT cron.unschedule(j.jobid) FROM cron.job AS j WHERE j.jobid = %s", (jobid,)
        )
    conn.execute("DELETE FROM skyclass.scoring_schedule WHERE catalog_id = %s", (catalog_id,))
