"""The vectorised binary COPY encoder against psycopg's own binary COPY."""

from __future__ import annotations

import decimal
import math

import numpy as np
import psycopg
import pytest

from skyclass.ingest.copy_binary import (
    BIGINT,
    BOOLEAN,
    COPY_SIGNATURE,
    COPY_TRAILER,
    DOUBLE,
    INTEGER,
    REAL,
    SMALLINT,
    TEXT,
    Field,
    TextValueError,
    array_field,
    encode_rows,
    fixed_field,
    numeric_field,
    slow_array_field,
    text_field,
)

N = 500
COLUMNS = [
    ("pos", "bigint"),
    ("b", "boolean"),
    ("i2", "smallint"),
    ("i4", "integer"),
    ("i8", "bigint"),
    ("f4", "real"),
    ("f8", "double precision"),
    ("t", "text"),
    ("a4", "real[]"),
    ("a8", "bigint[]"),
    ("ab", "boolean[]"),
    ("an", "double precision[]"),
]


def _data(rng: np.random.Generator) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    values = {
        "pos": np.arange(N, dtype=np.int64),
        "b": rng.integers(0, 2, N).astype(bool),
        "i2": rng.integers(-(2**15), 2**15, N).astype(np.int16),
        "i4": rng.integers(-(2**31), 2**31, N).astype(np.int32),
        "i8": rng.integers(-(2**63), 2**63 - 1, N, dtype=np.int64),
        "f4": rng.normal(0, 1e3, N).astype(np.float32),
        "f8": rng.normal(0, 1e6, N),
        "t": np.array(
            [["", "GALAXY", "é", "QSO ☄", "a,b\tc\nd", "x" * 40][i % 6] for i in range(N)]
        ),
        "a4": rng.normal(0, 1, (N, 3)).astype(np.float32),
        "a8": rng.integers(-(2**62), 2**62, (N, 2), dtype=np.int64),
        "ab": rng.integers(0, 2, (N, 4)).astype(bool),
        "an": rng.normal(0, 1, (N, 2)),
    }
    values["f4"][:3] = [np.nan, np.inf, -np.inf]
    values["f8"][:4] = [np.nan, np.inf, -np.inf, -0.0]
    values["i8"][:2] = [2**63 - 1, -(2**63)]
    nulls = {name: rng.random(N) < 0.2 for name in values}
    nulls["pos"][:] = False
    return values, nulls


def _fields(values: dict[str, np.ndarray], nulls: dict[str, np.ndarray]) -> list[Field]:
    element_nulls = np.zeros_like(values["an"], dtype=bool)
    element_nulls[::5, 1] = True
    return [
        fixed_field(values["pos"], BIGINT),
        fixed_field(values["b"], BOOLEAN, nulls["b"]),
        fixed_field(values["i2"], SMALLINT, nulls["i2"]),
        fixed_field(values["i4"], INTEGER, nulls["i4"]),
        fixed_field(values["i8"], BIGINT, nulls["i8"]),
        fixed_field(values["f4"], REAL, nulls["f4"]),
        fixed_field(values["f8"], DOUBLE, nulls["f8"]),
        text_field(values["t"], nulls["t"]),
        array_field(values["a4"], REAL, nulls["a4"]),
        array_field(values["a8"], BIGINT, nulls["a8"]),
        array_field(values["ab"], BOOLEAN, nulls["ab"]),
        slow_array_field(values["an"], DOUBLE, element_nulls, nulls["an"]),
    ]


def _python_rows(values: dict[str, np.ndarray], nulls: dict[str, np.ndarray]) -> list[list[object]]:
    rows = []
    for r in range(N):
        row: list[object] = []
        for name, _ in COLUMNS:
            if nulls[name][r]:
                row.append(None)
            elif name == "an":
                row.append(
                    [
                        None if (r % 5 == 0 and j == 1) else float(v)
                        for j, v in enumerate(values[name][r])
                    ]
                )
            else:
                row.append(values[name][r].tolist())
        rows.append(row)
    return rows


def _copy_out(conn: psycopg.Connection, table: str) -> bytes:
    out = bytearray()
    with conn.cursor().copy(
        f"COPY (SELECT * FROM {table} ORDER BY pos) TO STDOUT (FORMAT BINARY)"
    ) as copy:
        for block in copy:
            out += block
    return bytes(out)


def test_encoder_matches_psycopg_binary_copy(conn: psycopg.Connection) -> None:
    values, nulls = _data(np.random.default_rng(20261121))
    ddl = ", ".join(f"{name} {sqltype}" for name, sqltype in COLUMNS)
    conn.execute(f"CREATE TABLE by_psycopg ({ddl})")
    conn.execute(f"CREATE TABLE by_skyclass ({ddl})")

    with conn.cursor().copy("COPY by_psycopg FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types([sqltype for _, sqltype in COLUMNS])
        for row in _python_rows(values, nulls):
            copy.write_row(row)

    encoded = COPY_SIGNATURE + encode_rows(_fields(values, nulls), N).tobytes() + COPY_TRAILER
    with conn.cursor().copy("COPY by_skyclass FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(encoded)

    reference = _copy_out(conn, "by_psycopg")
    assert _copy_out(conn, "by_skyclass") == reference
    # PostgreSQL's own binary output of the same rows is byte for byte what we send.
    assert encoded == reference
    nan_row = conn.execute("SELECT f4, f8 FROM by_skyclass WHERE pos = 0").fetchone()
    assert nan_row is not None
    assert all(v is None or math.isnan(v) for v in nan_row)


def test_numeric_and_no_null_layout(conn: psycopg.Connection) -> None:
    values = np.array([0, 1, 9999, 10000, 2**63, 2**64 - 1, 12345678901234567890], dtype=np.uint64)
    nulls = np.zeros(len(values), dtype=bool)
    nulls[2] = True
    conn.execute("CREATE TABLE n (pos integer, v numeric(20,0))")
    fields = [fixed_field(np.arange(len(values)), INTEGER), numeric_field(values, nulls)]
    with conn.cursor().copy("COPY n FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(COPY_SIGNATURE + encode_rows(fields, len(values)).tobytes() + COPY_TRAILER)
    got = [r[0] for r in conn.execute("SELECT v FROM n ORDER BY pos")]
    expected = [None if nulls[i] else decimal.Decimal(int(v)) for i, v in enumerate(values)]
    assert got == expected


def test_zero_rows_and_empty_text() -> None:
    assert encode_rows([fixed_field(np.zeros(0), DOUBLE)], 0).size == 0
    field = text_field(np.array(["", ""]), None)
    # two rows: field count, then length 0 and no bytes
    assert encode_rows([field], 2).tobytes() == b"\x00\x01\x00\x00\x00\x00" * 2


def test_text_that_postgresql_cannot_store_is_refused() -> None:
    with pytest.raises(TextValueError) as info:
        text_field(np.array(["ok", "a\x00b"]), None)
    assert info.value.row == 1
    with pytest.raises(TextValueError) as info:
        text_field(np.array([b"ok", b"\xff\xfe"], dtype="S2"), None)
    assert info.value.row == 1
    # under a NULL the value does not matter
    text_field(np.array(["ok", "a\x00b"]), np.array([False, True]))
    assert TEXT.sql == "text"
