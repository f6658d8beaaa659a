"""The head SQL files hold exactly the functions that ``upgrade head`` leaves.

Each file of ``skyclass/db/sql`` is executed inside a transaction on a database
migrated to head, then rolled back. ``CREATE OR REPLACE`` and ``COMMENT ON``
rewrite their catalog rows even when nothing changes, so a row written by this
transaction shows the head files cover that function and its comment; the
definition (``pg_get_functiondef``) and comment must be what the migrations made.
"""

from __future__ import annotations

import psycopg
import pytest

from skyclass.db.migrate import head_sql_files

# Functions of schema skyclass, except those the C extension owns (its own SQL scripts).
FUNCTIONS = """
SELECT p.oid::regprocedure::text,
       pg_get_functiondef(p.oid),
       obj_description(p.oid, 'pg_proc'),
       age(p.xmin) = 0,
       coalesce((SELECT age(d.xmin) = 0 FROM pg_description AS d
                  WHERE d.classoid = 'pg_proc'::regclass AND d.objoid = p.oid
                    AND d.objsubid = 0), false)
  FROM pg_proc AS p
 WHERE p.pronamespace = 'skyclass'::regnamespace
   AND NOT EXISTS (SELECT FROM pg_depend AS e
                    WHERE e.classid = 'pg_proc'::regclass AND e.objid = p.oid
                      AND e.deptype = 'e')
"""


def head_differences(url: str, texts: list[str]) -> list[str]:
    """What ``texts`` (head SQL) get wrong about the database at ``url``; rolled back."""
    problems: list[str] = []
    with psycopg.connect(url) as conn:
        conn.execute("SELECT pg_current_xact_id()")  # this transaction's id, for age(xmin) = 0
        before = {row[0]: row[1:3] for row in conn.execute(FUNCTIONS)}
        for text in texts:
            conn.execute(text)
        for name, definition, comment, replaced, commented in conn.execute(FUNCTIONS):
            if name not in before:
                problems.append(f"{name}: in a head file but not made by the migrations")
                continue
            if not replaced:
                problems.append(f"{name}: missing from the head files")
            elif " ".join(definition.split()) != " ".join(before[name][0].split()):
                problems.append(f"{name}: the head file's definition differs from the migrations'")
            if not commented:
                problems.append(f"{name}: the head files have no COMMENT ON for it")
            elif comment != before[name][1]:
                problems.append(f"{name}: the head file's comment differs from the migrations'")
        conn.rollback()
    return problems


@pytest.fixture
def head_texts() -> list[str]:
    return [path.read_text(encoding="utf-8") for path in head_sql_files()]


def test_head_files_equal_upgrade_head(db_url: str, head_texts: list[str]) -> None:
    with psycopg.connect(db_url) as conn:
        count = conn.execute(f"SELECT count(*) FROM ({FUNCTIONS}) AS f").fetchone()
    assert count is not None and count[0] >= 38
    assert head_differences(db_url, head_texts) == []


def test_every_head_function_is_create_or_replace_with_a_comment(head_texts: list[str]) -> None:
    text = "\n".join(head_texts)
    assert "CREATE FUNCTION" not in text and "CREATE PROCEDURE" not in text
    created = text.count("CREATE OR REPLACE FUNCTION") + text.count("CREATE OR REPLACE PROCEDURE")
    assert created == text.count("COMMENT ON FUNCTION") + text.count("COMMENT ON PROCEDURE")


def test_a_changed_body_is_caught(db_url: str, head_texts: list[str]) -> None:
    changed = [t.replace("has at least 2 bins", "has at least two bins") for t in head_texts]
    assert changed != head_texts
    assert head_differences(db_url, changed) == [
        "skyclass.pdf_summary(real[],double precision[]): "
        "the head file's definition differs from the migrations'"
    ]


def test_a_missing_function_or_comment_is_caught(db_url: str, head_texts: list[str]) -> None:
    published = next(t for t in head_texts if "skyclass.class_changes(" in t)
    comment = published.index("COMMENT ON FUNCTION skyclass.class_changes")
    others = [t for t in head_texts if t is not published]
    assert head_differences(db_url, [*others, published[:comment]]) == [
        "skyclass.class_changes(bigint,bigint,text): the head files have no COMMENT ON for it"
    ]
    assert head_differences(db_url, others) == [
        "skyclass.class_changes(bigint,bigint,text): missing from the head files",
        "skyclass.class_changes(bigint,bigint,text): the head files have no COMMENT ON for it",
    ]


def test_a_changed_comment_is_caught(db_url: str, head_texts: list[str]) -> None:
    changed = [t.replace("with'\n' both labels", "with'\n' the two labels") for t in head_texts]
    assert changed != head_texts
    assert head_differences(db_url, changed) == [
        "skyclass.class_changes(bigint,bigint,text): "
        "the head file's comment differs from the migrations'"
    ]


def test_a_function_only_the_files_have_is_caught(db_url: str, head_texts: list[str]) -> None:
    extra = (
        "CREATE OR REPLACE FUNCTION skyclass.not_migrated() RETURNS integer "
        "LANGUAGE sql AS 'SELECT 1';\n"
        "COMMENT ON FUNCTION skyclass.not_migrated() IS 'only in a head file';\n"
    )
    assert head_differences(db_url, [*head_texts, extra]) == [
        "skyclass.not_migrated(): in a head file but not made by the migrations"
    ]
