"""ADQL -> PostgreSQL + Q3C translation, without a database.

Every refused feature names itself in the error; accepted queries read only
the published tables, with every identifier quoted.
"""

from __future__ import annotations

import pytest

from skyclass.serve.tap.adql import AdqlError, PublishedTable, translate

TABLES = {
    ("catalogs", "sdss17"): PublishedTable("catalogs", "sdss17", "catalogs", "sdss17"),
    ("catalogs", "tables"): PublishedTable("catalogs", "tables", "catalogs", "tables"),
    ("tap_schema", "tables"): PublishedTable("TAP_SCHEMA", "tables", "tap_schema", "tables"),
    ("skyclass", "current_classification"): PublishedTable(
        "skyclass", "current_classification", "skyclass", "current_classification"
    ),
}


def sql(adql: str) -> str:
    return translate(adql, TABLES, "public")


def test_a_cone_becomes_q3c_radial_query_on_the_point_columns() -> None:
    text = sql(
        "SELECT TOP 10 ra FROM catalogs.sdss17 "
        "WHERE CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', 10.5, -2, 0.1)) = 1"
    )
    assert text == (
        'SELECT "ra" FROM "catalogs"."sdss17" '
        'WHERE ("public".q3c_radial_query("ra", "dec", 10.5, -2, 0.1)) LIMIT 10'
    )


@pytest.mark.parametrize(
    "condition",
    [
        "1 = CONTAINS(POINT(ra, dec), CIRCLE(10.5, -2, 0.1))",
        "CONTAINS(POINT('', ra, dec), CIRCLE(POINT('ICRS', 10.5, -2), 0.1)) = 1",
        "CONTAINS(POINT('ICRS GEOCENTER', ra, dec), CIRCLE('icrs', 10.5, -2, 0.1)) = 1",
    ],
)
def test_the_spellings_of_a_cone_all_translate_the_same(condition: str) -> None:
    text = sql(f"SELECT ra FROM catalogs.sdss17 WHERE {condition}")
    assert '"public".q3c_radial_query("ra", "dec", 10.5, -2, 0.1)' in text


def test_outside_a_circle_is_the_negation() -> None:
    for condition in (
        "CONTAINS(POINT(ra, dec), CIRCLE(1, 2, 3)) = 0",
        "CONTAINS(POINT(ra, dec), CIRCLE(1, 2, 3)) <> 1",
    ):
        assert 'NOT ("public".q3c_radial_query' in sql(
            f"SELECT ra FROM catalogs.sdss17 WHERE {condition}"
        )


def test_a_circle_around_another_tables_rows_is_a_q3c_join() -> None:
    text = sql(
        "SELECT a.ra FROM catalogs.sdss17 AS a JOIN catalogs.sdss17 AS b "
        "ON CONTAINS(POINT(b.ra, b.dec), CIRCLE(a.ra, a.dec, 0.001)) = 1"
    )
    assert '"public".q3c_join("a"."ra", "a"."dec", "b"."ra", "b"."dec", 0.001)' in text


def test_distance_becomes_q3c_dist_in_both_forms() -> None:
    assert sql("SELECT DISTANCE(POINT(ra, dec), POINT(1, 2)) AS d FROM catalogs.sdss17") == (
        'SELECT "public".q3c_dist("ra", "dec", 1, 2) AS "d" FROM "catalogs"."sdss17"'
    )
    assert 'q3c_dist("ra", "dec", 1, 2)' in sql("SELECT DISTANCE(ra, dec, 1, 2) FROM sdss17")


def test_identifiers_fold_to_lower_case_unless_delimited() -> None:
    assert sql('SELECT RA, "Dec" FROM CATALOGS.SDSS17') == (
        'SELECT "ra", "Dec" FROM "catalogs"."sdss17"'
    )
    assert sql("SELECT * FROM TAP_SCHEMA.tables") == 'SELECT * FROM "tap_schema"."tables"'
    assert sql("SELECT * FROM current_classification") == (
        'SELECT * FROM "skyclass"."current_classification"'
    )


def test_adql_functions_keep_their_adql_meaning() -> None:
    text = sql("SELECT LOG(ra), LOG10(ra), ROUND(ra, 2), TRUNCATE(ra), CEILING(dec) FROM sdss17")
    assert text == (
        'SELECT LN("ra"), LOG(10, "ra"), ROUND(CAST("ra" AS DECIMAL), 2), TRUNC("ra"), '
        'CEIL("dec") FROM "catalogs"."sdss17"'
    )
    assert 'CAST("ra" AS TIMESTAMP)' in sql("SELECT CAST(ra AS TIMESTAMP) FROM sdss17")


def test_order_by_keeps_the_order_of_nulls_of_postgresql() -> None:
    assert sql("SELECT ra FROM sdss17 ORDER BY ra DESC, dec").endswith('ORDER BY "ra" DESC, "dec"')


@pytest.mark.parametrize(
    ("adql", "message"),
    [
        ("", "QUERY is empty"),
        ("SELECT * FROM catalogs.sdss17 WHERE", "syntax error"),
        ("SELEKT 1", "syntax error"),
        ("DELETE FROM catalogs.sdss17", "only SELECT"),
        ("UPDATE catalogs.sdss17 SET ra = 0", "only SELECT"),
        ("SELECT * INTO t FROM catalogs.sdss17", "only SELECT"),
        ("SELECT 1 FROM sdss17; DROP TABLE sdss17", "one SELECT statement"),
        ("SELECT * FROM skyclass.model_artifact", "not published"),
        ("SELECT * FROM pg_catalog.pg_authid", "not published"),
        ("SELECT * FROM db.catalogs.sdss17", "three parts"),
        ('SELECT * FROM "SDSS17"', "quoted names are exact"),
        ("SELECT * FROM tables", "ambiguous"),
        ("SELECT pg_sleep(10) FROM sdss17", "function pg_sleep is not available"),
        ("SELECT set_config('a.b', 'c', false) FROM sdss17", "not available"),
        ("SELECT POINT(ra, dec) FROM sdss17", "POINT is only supported"),
        ("SELECT CIRCLE(1, 2, 3) FROM sdss17", "CIRCLE is only supported"),
        ("SELECT * FROM sdss17 WHERE CONTAINS(POINT(ra, dec), BOX('', 1, 2, 3, 4)) = 1", "BOX"),
        (
            "SELECT ra FROM sdss17 WHERE CONTAINS(POINT(ra, dec), CIRCLE(1, 2, pg_sleep(1))) = 1",
            "pg_sleep",
        ),
        (
            "SELECT DISTANCE(POINT(ra, dec), POINT(1, (SELECT 1 FROM pg_catalog.pg_class))) "
            "FROM sdss17",
            "not published",
        ),
        ("SELECT * FROM sdss17 WHERE CONTAINS(POINT(ra, dec), CIRCLE(1, 2, 3)) = 2", "1 or 0"),
        ("SELECT CONTAINS(POINT(ra, dec), CIRCLE(1, 2, 3)) FROM sdss17", "1 or 0"),
        ("SELECT * FROM sdss17 WHERE CONTAINS(POINT(ra, dec), CIRCLE(1, 2, 11)) = 1", "radius"),
        ("SELECT * FROM sdss17 WHERE CONTAINS(POINT(ra, dec), CIRCLE(1, 2, -1)) = 1", "radius"),
        (
            "SELECT * FROM sdss17 WHERE CONTAINS(POINT('GALACTIC', ra, dec), CIRCLE(1, 2, 1)) = 1",
            "GALACTIC",
        ),
        ("SELECT AREA(x) FROM sdss17", "AREA"),
        ("SELECT COORD1(x) FROM sdss17", "COORD1"),
        ("SELECT IN_UNIT(ra, 'rad') FROM sdss17", "IN_UNIT"),
        ("WITH x AS (SELECT ra FROM sdss17) SELECT * FROM x", "WITH"),
        ("SELECT COUNT(*) OVER () FROM sdss17", "window functions"),
        ("SELECT RAND(42) FROM sdss17", "seed"),
        ("SELECT CAST(ra AS BINARY) FROM sdss17", "CAST"),
        ("SELECT TOP 5 PERCENT ra FROM sdss17", "PERCENT"),
        ("SELECT @x FROM sdss17", "not supported"),
        ("SELECT ra FROM sdss17 WHERE ra = 1\x00", "NUL"),
        ("SELECT " + "1 + " * 30_000 + "1", "longer than"),
    ],
)
def test_refused_features_say_what_is_refused(adql: str, message: str) -> None:
    with pytest.raises(AdqlError, match=message):
        sql(adql)


def test_distance_below_a_constant_uses_the_q3c_index_and_keeps_the_comparison() -> None:
    text = sql("SELECT ra FROM sdss17 WHERE DISTANCE(POINT(ra, dec), POINT(1, 2)) < 0.1")
    assert text.endswith(
        'WHERE ("public".q3c_radial_query("ra", "dec", 1, 2, 0.1) '
        'AND "public".q3c_dist("ra", "dec", 1, 2) < 0.1)'
    )
    pair = sql(
        "SELECT a.ra FROM sdss17 AS a, sdss17 AS b WHERE DISTANCE(a.ra, a.dec, b.ra, b.dec) <= 1"
    )
    assert '"public".q3c_join("a"."ra", "a"."dec", "b"."ra", "b"."dec", 1) AND' in pair
    wide = sql("SELECT ra FROM sdss17 WHERE DISTANCE(POINT(ra, dec), POINT(1, 2)) < 20")
    assert "q3c_radial_query" not in wide  # beyond the cone bound: the plain comparison


def test_comments_are_dropped_so_no_user_text_reaches_the_database_unchecked() -> None:
    assert sql("SELECT ra -- */, pg_sleep(5) /*\nFROM sdss17 /* x */") == (
        'SELECT "ra" FROM "catalogs"."sdss17"'
    )


def test_string_literals_keep_quotes_doubled_and_backslashes_literal() -> None:
    assert sql("SELECT ra FROM sdss17 WHERE top_label = 'a''b\\c'").endswith(
        "WHERE \"top_label\" = 'a''b\\c'"
    )


def test_maxrec_plus_one_becomes_the_outermost_limit() -> None:
    def limited(adql: str, rows: int) -> str:
        return translate(adql, TABLES, "public", row_limit=rows)

    assert limited("SELECT ra FROM sdss17", 11).endswith('FROM "catalogs"."sdss17" LIMIT 11')
    assert limited("SELECT TOP 5 ra FROM sdss17", 11).endswith("LIMIT 5")
    assert limited("SELECT TOP 50 ra FROM sdss17 ORDER BY ra", 11).endswith(
        'ORDER BY "ra" LIMIT 11'
    )
    assert limited("SELECT ra FROM sdss17 UNION SELECT dec FROM sdss17", 3).endswith(
        'UNION SELECT "dec" FROM "catalogs"."sdss17" LIMIT 3'
    )
    assert limited("SELECT ra FROM sdss17 OFFSET 4", 2).endswith("LIMIT 2 OFFSET 4")
