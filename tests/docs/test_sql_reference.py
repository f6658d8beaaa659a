"""docs/sql-reference.md: every example runs, and every SQL object is documented.

Each fenced ``sql`` block runs, in document order, against one database with
real data (``docs_db``: an SDSS17 slice, its features, two compiled versions of
model ``sgq``), so the examples can build on each other as a reader's psql
session would. A ``sql-error`` block must fail with the SQLSTATE named in its
first line (``-- SQLSTATE 22023``). Every function, procedure and view of
schema ``skyclass`` (except internal ``_``-prefixed ones) must have a section
whose signature and properties match the database, at least one example, and a
``COMMENT ON`` in the database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg.pq import TransactionStatus

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "sql-reference.md"
BLOCK = re.compile(r"^```(sql|sql-error)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
EXPECTED_STATE = re.compile(r"\A--\s*SQLSTATE\s+([0-9A-Z]{5})\b")
SECTION = re.compile(r"^### (skyclass\.[a-z_0-9]+)\n(.*?)(?=^##)", re.MULTILINE | re.DOTALL)
VOLATILITY = {"i": "IMMUTABLE", "s": "STABLE", "v": "VOLATILE"}
PARALLEL = {"s": "PARALLEL SAFE", "r": "PARALLEL RESTRICTED", "u": "PARALLEL UNSAFE"}


@dataclass(frozen=True)
class Block:
    """One fenced SQL example."""

    line: int
    kind: str
    text: str


def blocks() -> list[Block]:
    """The ``sql`` and ``sql-error`` blocks of the reference, in order."""
    text = REFERENCE.read_text(encoding="utf-8")
    return [
        Block(text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2))
        for m in BLOCK.finditer(text)
    ]


def sections() -> dict[str, str]:
    """Section text by object name (``skyclass.predict``)."""
    text = REFERENCE.read_text(encoding="utf-8") + "\n## end\n"
    return {m.group(1): m.group(2) for m in SECTION.finditer(text)}


def _reset(conn: psycopg.Connection) -> None:
    """Leave no transaction open (a block may fail between its BEGIN and COMMIT)."""
    if conn.info.transaction_status != TransactionStatus.IDLE:
        conn.execute("ROLLBACK")


def test_examples_run(docs_db: str) -> None:
    found = blocks()
    assert len(found) > 40
    failures: list[str] = []
    # One session for the whole page: advisory locks of the scoring job examples are
    # session-level, as in a psql session.
    with psycopg.connect(docs_db, autocommit=True) as conn:
        for block in found:
            expected = EXPECTED_STATE.match(block.text)
            try:
                conn.execute(block.text)  # type: ignore[arg-type]  # trusted text of the docs
            except psycopg.Error as exc:
                _reset(conn)
                if block.kind == "sql" or (expected and exc.sqlstate != expected.group(1)):
                    failures.append(
                        f"line {block.line}: {exc.sqlstate} {exc}".strip() + f"\n{block.text}"
                    )
                continue
            _reset(conn)
            if block.kind == "sql-error":
                failures.append(f"line {block.line}: sql-error block did not fail\n{block.text}")
    assert not failures, "examples of docs/sql-reference.md failed:\n\n" + "\n\n".join(failures)


def test_error_blocks_name_their_sqlstate() -> None:
    for block in blocks():
        if block.kind == "sql-error":
            assert EXPECTED_STATE.match(block.text), f"line {block.line}: no '-- SQLSTATE' line"


def _objects(conn: psycopg.Connection) -> list[tuple[str, str, str, str, str, str, bool, bool]]:
    """(kind, name, identity args, result, volatility, parallel, strict, has comment)."""
    rows = conn.execute(
        """
        SELECT CASE p.prokind WHEN 'p' THEN 'procedure' ELSE 'function' END, p.proname,
               pg_get_function_identity_arguments(p.oid),
               coalesce(pg_get_function_result(p.oid), ''),
               p.provolatile::text, p.proparallel::text, p.proisstrict,
               obj_description(p.oid, 'pg_proc') IS NOT NULL
          FROM pg_catalog.pg_proc AS p
         WHERE p.pronamespace = 'skyclass'::regnamespace AND p.proname NOT LIKE '\\_%'
        UNION ALL
        SELECT 'view', c.relname, '', '', '', '', false,
               obj_description(c.oid, 'pg_class') IS NOT NULL
          FROM pg_catalog.pg_class AS c
         WHERE c.relnamespace = 'skyclass'::regnamespace AND c.relkind IN ('v', 'm')
           AND c.relname NOT LIKE '\\_%'
         ORDER BY 2
        """
    ).fetchall()
    return rows


def test_every_object_is_documented_and_commented(docs_db: str) -> None:
    documented = sections()
    problems: list[str] = []
    with psycopg.connect(docs_db) as conn:
        objects = _objects(conn)
    assert len(objects) > 30
    for kind, name, args, result, volatility, parallel, strict, commented in objects:
        full = f"skyclass.{name}"
        if not commented:
            problems.append(f"{kind} {full} has no COMMENT ON in the database")
        section = documented.get(full)
        if section is None:
            problems.append(f"{kind} {full} has no section '### {full}' in docs/sql-reference.md")
            continue
        if "```sql" not in section:
            problems.append(f"{full}: no example")
        props = re.search(r"^\*\*Properties:\*\* `([^`]*)`", section, re.MULTILINE)
        if props is None:
            problems.append(f"{full}: no **Properties:** line")
            continue
        declared = props.group(1)
        if kind == "view":
            if declared != "VIEW":
                problems.append(f"{full}: properties should be `VIEW`")
            continue
        signature = re.search(r"^```text\n(.*?)\n```", section, re.MULTILINE | re.DOTALL)
        if signature is None:
            problems.append(f"{full}: no signature block")
            continue
        sig = signature.group(1)
        start = sig.find(f"{full}(")
        if start < 0:
            problems.append(f"{full}: signature does not start with {full}(")
        # Each argument, as the database names and types it, in order.
        position = start
        for arg in filter(None, args.split(", ")):
            at = sig.find(arg, position)
            if at < 0:
                problems.append(f"{full}: argument '{arg}' missing or out of order")
                break
            position = at + len(arg)
        if kind == "procedure":
            if declared != "PROCEDURE":
                problems.append(f"{full}: properties should be `PROCEDURE`")
            continue
        if f"RETURNS {result}" not in sig:
            problems.append(f"{full}: signature should say RETURNS {result}")
        expected = [VOLATILITY[volatility], *(["STRICT"] if strict else []), PARALLEL[parallel]]
        if declared.split() != " ".join(expected).split():
            wanted = " ".join(expected)
            problems.append(f"{full}: properties `{declared}`, database says `{wanted}`")
    names = {f"skyclass.{o[1]}" for o in objects}
    for extra in sorted(set(documented) - names):
        problems.append(f"{extra} is documented but does not exist in the database")
    assert not problems, "docs/sql-reference.md vs the database:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("text", "kinds"),
    [
        ("```sql\nSELECT 1;\n```\n", ["sql"]),
        ("```sql-error\n-- SQLSTATE 22023\nSELECT 1;\n```\n```text\nno\n```\n", ["sql-error"]),
    ],
)
def test_block_pattern(text: str, kinds: list[str]) -> None:
    assert [m.group(1) for m in BLOCK.finditer(text)] == kinds
