"""Alembic migrations: up, down, and no drift from the SQLAlchemy metadata."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from skyclass.db.connect import engine
from skyclass.db.migrate import current_revision, downgrade, head_revision, upgrade
from skyclass.db.schema import metadata
from tests.conftest import drop_database, new_database


@pytest.fixture
def empty_db(server_url: str) -> str:
    url = new_database(server_url, template="template0")
    yield url  # type: ignore[misc]
    drop_database(server_url, url)


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables "
            "WHERE table_schema IN ('skyclass', 'catalogs') AND table_name <> 'alembic_version'"
        ).fetchall()
    return {row[0] for row in rows}


def _extensions(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {row[0] for row in conn.execute("SELECT extname FROM pg_extension")}


def test_upgrade_downgrade_upgrade(empty_db: str) -> None:
    assert current_revision(empty_db) is None
    upgrade(empty_db)
    assert current_revision(empty_db) == head_revision()
    assert {"skyclass.catalog", "skyclass.catalog_load"} <= _tables(empty_db)
    assert {"q3c", "vector"} <= _extensions(empty_db)

    downgrade(empty_db, "base")
    assert _tables(empty_db) == set()
    assert not {"q3c", "vector"} & _extensions(empty_db)
    assert current_revision(empty_db) is None

    upgrade(empty_db)
    assert current_revision(empty_db) == head_revision()


def test_metadata_matches_migrations(template_url: str) -> None:
    eng = engine(template_url)
    with eng.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "include_schemas": True,
                "include_name": lambda name, type_, parent: (
                    name == "skyclass" if type_ == "schema" else True
                ),
                "version_table_schema": "skyclass",
            },
        )
        diff = compare_metadata(context, metadata)
    eng.dispose()
    assert diff == []


def test_metadata_declares_every_registry_table(template_url: str) -> None:
    # compare_metadata above reports a table the metadata lacks as a drop; this names it.
    with psycopg.connect(template_url) as conn:
        rows = conn.execute(
            "SELECT c.relname FROM pg_class AS c WHERE c.relnamespace = 'skyclass'::regnamespace "
            "AND c.relkind IN ('r', 'p') AND c.relname <> 'alembic_version' "
            "AND NOT c.relispartition"
        ).fetchall()
    tables = {row[0] for row in rows}
    assert len(tables) >= 24
    assert tables == {table.name for table in metadata.tables.values()}


def _ang2ipix_parallel(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT proparallel FROM pg_proc WHERE proname = 'q3c_ang2ipix' "
            "AND proargtypes = '701 701'::oidvector"
        ).fetchone()
    assert row is not None
    return str(row[0])


def test_0007_declares_q3c_ang2ipix_parallel_safe(empty_db: str) -> None:
    upgrade(empty_db, "0006")
    assert _ang2ipix_parallel(empty_db) == "u"  # Q3C 2.0.0's own declaration
    upgrade(empty_db, "0007")
    assert _ang2ipix_parallel(empty_db) == "s"
    with psycopg.connect(empty_db) as conn:
        conn.execute(
            "CREATE TABLE t AS SELECT g::float8 AS ra, 0::float8 AS dec "
            "FROM generate_series(0, 359) AS g"
        )
        conn.execute("SET client_min_messages = debug1")
        notices: list[str] = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        conn.execute("SET min_parallel_table_scan_size = 0")
        conn.execute("CREATE INDEX ON t (q3c_ang2ipix(ra, dec))")
    assert any("parallel workers" in n for n in notices), notices
    downgrade(empty_db, "0006")
    assert _ang2ipix_parallel(empty_db) == "u"


def test_0010_converts_feature_sets_to_builds_of_definitions_exactly(empty_db: str) -> None:
    from psycopg.types.json import Jsonb

    from skyclass.features.spec import Feature, FeatureSpec, Nondetection

    upgrade(empty_db, "0007")
    # A spec as 0003..0007 stored it; 1e20 comes back from jsonb as an integer.
    features = (
        Feature("g_r", "g - r", group="colours"),
        Feature("u", "u", nondetection=Nondetection(column="u", above=1e20, mask=True)),
    )
    specs = [
        FeatureSpec("colours", "sdss17", features),
        FeatureSpec("colours", "holdout", features),
    ]
    with psycopg.connect(empty_db) as conn:
        for spec in specs:
            conn.execute(
                "INSERT INTO skyclass.catalog (name, table_name) VALUES (%s, %s)",
                (spec.catalog, spec.catalog),
            )
            conn.execute(
                "INSERT INTO skyclass.feature_set (name, spec_hash, catalog_id, spec, spec_text, "
                "feature_names, table_name) SELECT %s, %s, catalog_id, %s, '', %s, %s "
                "FROM skyclass.catalog WHERE name = %s",
                (spec.name, spec.spec_hash, Jsonb(spec.canonical()), spec.feature_names,
                 spec.table_name, spec.catalog),
            )  # fmt: skip
    upgrade(empty_db, "0010")
    with psycopg.connect(empty_db) as conn:
        rows = conn.execute(
            "SELECT catalog_name, spec_hash, definition_hash, column_map "
            "FROM skyclass.feature_set ORDER BY feature_set_id"
        ).fetchall()
        definitions = conn.execute(
            "SELECT definition_hash, name, feature_names FROM skyclass.feature_definition"
        ).fetchall()
        # One definition, two builds: the copied spec differed only in its catalog.
        assert rows == [(s.catalog, s.spec_hash, specs[0].definition_hash, {}) for s in specs]
        assert definitions == [(specs[0].definition_hash, "colours", ["g_r", "u", "u_nondet"])]
        # Builds stay immutable, except for losing their catalog.
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
            conn.execute("UPDATE skyclass.feature_set SET table_name = 'x'")
        conn.rollback()
        conn.execute(
            "INSERT INTO skyclass.catalog (name, table_name, kind, source_schema, "
            "source_table) VALUES ('reg', 'reg', 'registered', 'public', 't')"
        )
        conn.commit()
    with pytest.raises(RuntimeError, match="1 registered catalogs"):
        downgrade(empty_db, "0007")
    with psycopg.connect(empty_db) as conn:
        conn.execute("DELETE FROM skyclass.catalog WHERE name = 'reg'")
        conn.commit()
    downgrade(empty_db, "0007")
    with psycopg.connect(empty_db) as conn:
        assert conn.execute("SELECT count(*) FROM skyclass.feature_set").fetchone() == (2,)
        assert conn.execute("SELECT to_regclass('skyclass.feature_definition')").fetchone() == (
            None,
        )


VERSIONS = Path(__file__).resolve().parents[2] / "src/skyclass/db/migrations/versions"


def _migration(filename: str) -> ModuleType:
    """A migration module loaded from its file (the test may read released texts)."""
    spec = importlib.util.spec_from_file_location(f"migration_{filename[:4]}", VERSIONS / filename)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _statement(text: str, start: str, end: str = "\n$$;\n") -> str:
    """The part of ``text`` from ``start`` up to and including the first ``end`` after it."""
    first = text.index(start)
    return text[first : text.index(end, first) + len(end)]


def test_no_migration_reads_another_migration() -> None:
    for path in sorted(VERSIONS.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert "frozen_sql" not in text and "importlib" not in text, path.name
        assert "migrate import" not in text, path.name


def test_frozen_copies_equal_the_released_texts() -> None:
    # 0005 and 0006 keep their own copies of what 0004 and 0002 created; the copies
    # must be byte for byte the released statements, or their downgrades would differ.
    released = _statement(
        _migration("0004_scoring.py").UPGRADE, "CREATE FUNCTION skyclass.plan_scoring_run("
    )
    m0005 = _migration("0005_scoring_scan.py")
    assert (
        m0005.PLAN_SCORING_RUN_0004.strip()
        == released.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1).strip()
    )
    index_line = (
        " " * 8
        + "EXECUTE format('CREATE INDEX ON %s (top_label, top_probability DESC)', target_t);\n"
    )
    assert index_line in m0005.PLAN_SCORING_RUN_0004
    assert m0005.PLAN_SCORING_RUN_0004.replace(index_line, "") == m0005.PLAN_SCORING_RUN
    comment = _statement(
        _migration("0002_spatial_functions.py").CROSSMATCH,
        "COMMENT ON FUNCTION skyclass.crossmatch(",
        end="';\n",
    )
    assert _migration("0006_crossmatch_sweep.py").CROSSMATCH_COMMENT_0002.strip() == comment.strip()
