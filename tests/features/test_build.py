"""Building feature sets in PostgreSQL: values, missing data, versions, appends, reading back."""

from __future__ import annotations

import hashlib
import math
import secrets
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import psycopg
import pytest
from psycopg import sql

from skyclass.errors import (
    CatalogNotFoundError,
    DatabaseError,
    FeatureSetNotFoundError,
    FeatureSpecError,
)
from skyclass.features import (
    Feature,
    FeatureSpec,
    Nondetection,
    build_feature_set,
    example_spec_path,
    feature_matrix,
    list_feature_sets,
    load_feature_set,
    load_spec,
    parse_spec,
)
from skyclass.ingest import ingest_file
from skyclass.registry.locks import feature_set_resource, lock
from tests.features.conftest import SdssData, database_objects

EXAMPLE = example_spec_path("sdss_ugriz")


def _expected_ugriz(mags: dict[str, np.ndarray]) -> np.ndarray:
    u, g, r, i, z = (mags[b] for b in "ugriz")
    return np.column_stack([u, g, r, i, z, u - g, g - r, r - i, i - z]).astype(np.float32)


def test_example_features_equal_numpy_exactly(fdb: str, sdss: SdssData) -> None:
    fs = build_feature_set(EXAMPLE, url=fdb)
    assert fs.build is not None and fs.build.action == "created"
    assert fs.build.rows_added == 5_000 and fs.n_objects == 5_000
    assert fs.table == ("features", fs.spec.table_name)
    assert fs.feature_names == ("u", "g", "r", "i", "z", "u_g", "g_r", "r_i", "i_z")
    assert fs.groups["colours"] == ("u_g", "g_r", "r_i", "i_z")
    ids, x = feature_matrix(fs, url=fdb)
    assert ids.dtype == np.int64 and x.dtype == np.float32 and x.shape == (5_000, 9)
    order = np.argsort(sdss.loaded.ids)
    np.testing.assert_array_equal(ids, sdss.loaded.ids[order])
    # float64 arithmetic then one rounding to float32: bit-identical to numpy.
    np.testing.assert_array_equal(x, _expected_ugriz(sdss.loaded.mags)[order])

    with psycopg.connect(fdb) as conn:
        table = conn.execute(
            "SELECT format_type(atttypid, atttypmod), attnotnull FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 ORDER BY attnum",
            (fs.qualified_table,),
        ).fetchall()
        pkey = conn.execute(
            "SELECT count(*) FROM pg_index WHERE indrelid = %s::regclass AND indisprimary",
            (fs.qualified_table,),
        ).fetchone()
        row = conn.execute(
            "SELECT name, spec_hash, feature_names, table_name, spec->>'catalog', spec_text "
            "FROM skyclass.feature_set"
        ).fetchone()
    assert table == [("bigint", True), ("real[]", True), ("vector(9)", False)]
    assert pkey == (1,)
    assert row is not None
    assert row[:4] == ("sdss_ugriz", fs.spec_hash, list(fs.feature_names), fs.table[1])
    assert row[4] == "sdss17" and row[5] == EXAMPLE.read_text()


def test_functions_and_constants_match_numpy(fdb: str, sdss: SdssData) -> None:
    spec = parse_spec(
        """
name = "funcs"
catalog = "sdss17"
[[feature]]
name = "lg"
expr = "log10(u / g)"
[[feature]]
name = "lnr"
expr = "ln(r) * 2.5 - 1e-3"
[[feature]]
name = "rt"
expr = "sqrt(abs(i - z))"
[[feature]]
name = "flux"
expr = "mag_to_flux(r, 22.5)"
[[feature]]
name = "back"
expr = "flux_to_mag(mag_to_flux(r, 22.5), 22.5)"
[[feature]]
name = "neg"
expr = "-(u - g) / (r + 1)"
[[feature]]
name = "const"
expr = "7"
"""
    )
    fs = build_feature_set(spec, url=fdb)
    _, x = feature_matrix(fs, url=fdb)
    m = sdss.loaded.mags
    u, g, r, i, z = (m[b] for b in "ugriz")
    expected = np.column_stack(
        [
            np.log10(u / g),
            np.log(r) * 2.5 - 1e-3,
            np.sqrt(np.abs(i - z)),
            10 ** (-0.4 * (r - 22.5)),
            22.5 - 2.5 * np.log10(10 ** (-0.4 * (r - 22.5))),
            -(u - g) / (r + 1),
            np.full_like(u, 7.0),
        ]
    ).astype(np.float32)[np.argsort(sdss.loaded.ids)]
    # Arithmetic is exact; libm and numpy may differ in the last bit of a float64
    # transcendental, which changes the float32 result at most by one unit.
    np.testing.assert_array_equal(x[:, [5, 6]], expected[:, [5, 6]])
    np.testing.assert_array_max_ulp(x, expected, maxulp=1)
    assert np.mean(x == expected) > 0.999


def _set_values(url: str, updates: dict[int, dict[str, float | None]]) -> None:
    with psycopg.connect(url) as conn:
        for object_id, values in updates.items():
            for column, value in values.items():
                conn.execute(
                    f"UPDATE catalogs.sdss17 SET {column} = %s WHERE object_id = %s",
                    (value, object_id),
                )


def test_missing_undefined_and_extreme_values_become_nan(fdb: str, sdss: SdssData) -> None:
    ids = [int(v) for v in np.sort(sdss.loaded.ids)[:8]]
    # Values ingest would never produce (NaN, inf, huge, tiny) are set directly: the
    # build must not fail on any catalog content.
    _set_values(
        fdb,
        {
            ids[0]: {"u": None},
            ids[1]: {"g": math.nan},
            ids[2]: {"r": math.inf},
            ids[3]: {"i": 0.0, "z": 0.0},  # log10(0) and 0/0
            ids[4]: {"i": -5.0},  # log10 of a negative, sqrt of a negative
            ids[5]: {"u": 1e300, "g": 1e300},  # u * g would overflow float8
            ids[6]: {"u": 1e-300, "g": 1e300},  # u / g would underflow float8
            ids[7]: {"z": 1e-160},
        },
    )
    features = (
        Feature("u", "u", missing="indicator"),
        Feature("u_g", "u - g", missing="indicator"),
        Feature("ug", "u * g"),
        Feature("ratio", "u / g"),
        Feature("lg", "log10(i)"),
        Feature("sq", "sqrt(i)"),
        Feature("iz", "i / z"),
        Feature("zz", "z * z"),
        Feature("zraw", "z"),
    )
    fs = build_feature_set(FeatureSpec("edge", "sdss17", features), url=fdb)
    got, x = feature_matrix(fs, ids[:8], url=fdb)
    assert got.tolist() == ids[:8]
    names = list(fs.feature_names)
    col = {n: x[:, names.index(n)] for n in names}
    nan = np.isnan
    assert nan(col["u"][0]) and col["u_missing"][0] == 1 and col["u_missing"][1] == 0
    assert nan(col["u_g"][0]) and nan(col["u_g"][1]) and col["u_g_missing"][1] == 1
    assert not nan(col["u_g"][2])  # r = inf does not touch u - g
    assert nan(col["lg"][3]) and nan(col["iz"][3])
    assert nan(col["lg"][4]) and nan(col["sq"][4]) and not nan(col["iz"][4])
    # Beyond the sane range an input is undefined for operations, and beyond float4 NaN.
    assert nan(col["u"][5]) and col["u_missing"][5] == 1 and nan(col["ug"][5])
    assert nan(col["ratio"][6])
    # A tiny result rounds to 0 like a float32 cast; a tiny operand counts as undefined.
    assert col["zraw"][7] == 0 and nan(col["zz"][7])
    # Every row with a NaN has v NULL; the others have v equal to x.
    with psycopg.connect(fdb) as conn:
        rows = conn.execute(
            f"SELECT object_id, v IS NULL, 'NaN'::real = ANY (x), v::real[] = x "
            f"FROM {fs.qualified_table}"
        ).fetchall()
    assert all(v_null == has_nan for _, v_null, has_nan, _ in rows)
    assert all(same for _, v_null, _, same in rows if not v_null)


def test_nondetection_indicators_and_masks(fdb: str, sdss: SdssData) -> None:
    with psycopg.connect(fdb, autocommit=True) as conn:
        conn.execute("ALTER TABLE catalogs.sdss17 ADD COLUMN u_flag boolean")
        conn.execute("UPDATE catalogs.sdss17 SET u_flag = (object_id % 3 = 0)")
        conn.execute("UPDATE catalogs.sdss17 SET u_flag = NULL WHERE object_id % 7 = 0")
    features = (
        Feature("u", "u", nondetection=Nondetection(column="u", above=24.0)),
        Feature("um", "u", nondetection=Nondetection(column="u", above=24.0, mask=True)),
        Feature("gb", "g", nondetection=Nondetection(column="g", below=18.0)),
        Feature("uf", "u - g", nondetection=Nondetection(flag="u_flag", mask=True)),
    )
    fs = build_feature_set(FeatureSpec("nondet", "sdss17", features), url=fdb)
    assert fs.feature_names == (
        "u",
        "u_nondet",
        "um",
        "um_nondet",
        "gb",
        "gb_nondet",
        "uf",
        "uf_nondet",
    )
    ids, x = feature_matrix(fs, url=fdb)
    m = {b: v[np.argsort(sdss.loaded.ids)] for b, v in sdss.loaded.mags.items()}
    faint = m["u"] > 24.0
    assert faint.any() and not faint.all()
    np.testing.assert_array_equal(x[:, 0], m["u"].astype(np.float32))
    np.testing.assert_array_equal(x[:, 1], faint.astype(np.float32))
    np.testing.assert_array_equal(np.isnan(x[:, 2]), faint)
    np.testing.assert_array_equal(x[:, 5], (m["g"] < 18.0).astype(np.float32))
    flag = (ids % 3 == 0) & (ids % 7 != 0)  # NULL flags count as detected
    np.testing.assert_array_equal(x[:, 7], flag.astype(np.float32))
    np.testing.assert_array_equal(np.isnan(x[:, 6]), flag)


def test_rebuild_is_idempotent_and_append_adds_only_new_rows(fdb: str, sdss: SdssData) -> None:
    first = build_feature_set(EXAMPLE, url=fdb)
    again = build_feature_set(EXAMPLE, url=fdb)
    assert again.build is not None and again.build.action == "unchanged"
    assert again.build.rows_added == 0
    assert again.feature_set_id == first.feature_set_id and again.n_objects == 5_000

    ingest_file(
        sdss.extra.path,
        "sdss17",
        id_column="orig_row",
        ra_column="alpha",
        dec_column="delta",
        mode="append",
        url=fdb,
    )
    appended = build_feature_set(EXAMPLE, url=fdb)
    assert appended.build is not None and appended.build.action == "appended"
    assert appended.build.rows_added == 1_000 and appended.n_objects == 6_000
    assert appended.feature_set_id == first.feature_set_id
    ids, x = feature_matrix(appended, sdss.extra.ids, url=fdb)
    np.testing.assert_array_equal(ids, sdss.extra.ids)
    np.testing.assert_array_equal(x, _expected_ugriz(sdss.extra.mags))
    last = build_feature_set(EXAMPLE, url=fdb)
    assert last.build is not None and (last.build.action, last.build.rows_added) == ("unchanged", 0)
    with psycopg.connect(fdb) as conn:
        assert conn.execute("SELECT count(*) FROM skyclass.feature_set").fetchone() == (1,)


def test_replace_recomputes_and_new_spec_is_a_new_version(
    fdb: str, sdss: SdssData, tmp_path: Path
) -> None:
    first = build_feature_set(EXAMPLE, url=fdb)
    # Replace the catalog with the same objects, u one magnitude fainter.
    text = sdss.loaded.path.read_text().splitlines()
    header = text[0].split(",")
    col = header.index("u")
    rows = [line.split(",") for line in text[1:]]
    for row in rows:
        row[col] = repr(float(row[col]) + 1.0)
    path = tmp_path / "fainter.csv"
    path.write_text("\n".join([text[0], *(",".join(r) for r in rows)]) + "\n")
    ingest_file(
        path,
        "sdss17",
        id_column="orig_row",
        ra_column="alpha",
        dec_column="delta",
        mode="replace",
        url=fdb,
    )
    rebuilt = build_feature_set(EXAMPLE, url=fdb)
    assert rebuilt.build is not None and rebuilt.build.action == "recomputed"
    assert rebuilt.build.rows_added == 5_000 and rebuilt.feature_set_id == first.feature_set_id
    _, x = feature_matrix(rebuilt, sdss.loaded.ids[:10], url=fdb)
    expected = (sdss.loaded.mags["u"][:10] + 1.0).astype(np.float32)
    np.testing.assert_array_equal(x[:, 0], expected)
    again = build_feature_set(EXAMPLE, url=fdb)
    assert again.build is not None and again.build.action == "unchanged"

    # A changed spec is a new version beside the old one; load_feature_set finds both.
    spec = load_spec(EXAMPLE)
    spec2 = replace(spec, features=spec.features[:5], origin=None)
    second = build_feature_set(spec2, url=fdb)
    assert second.spec_hash != first.spec_hash and second.table != first.table
    assert second.n_features == 5
    assert load_feature_set("sdss_ugriz", url=fdb).spec_hash == second.spec_hash
    assert load_feature_set("sdss_ugriz", first.spec_hash[:8], url=fdb).feature_set_id == (
        first.feature_set_id
    )
    listed = list_feature_sets(url=fdb)
    assert [f.spec_hash for f in listed] == [first.spec_hash, second.spec_hash]
    assert listed[0].n_objects == 5_000  # ANALYZE after each build keeps estimates exact
    with pytest.raises(FeatureSetNotFoundError, match="not registered"):
        load_feature_set("nope", url=fdb)
    with pytest.raises(FeatureSetNotFoundError, match="not registered"):
        load_feature_set("sdss_ugriz", "0" * 12, url=fdb)
    with pytest.raises(FeatureSetNotFoundError, match="hexadecimal"):
        load_feature_set("sdss_ugriz", "'; DROP", url=fdb)
    # The table going missing is reported, and the next build recreates it.
    with psycopg.connect(fdb, autocommit=True) as conn:
        conn.execute(f"DROP TABLE {second.qualified_table}")
    with pytest.raises(FeatureSetNotFoundError, match="missing"):
        load_feature_set("sdss_ugriz", url=fdb)
    back = build_feature_set(spec2, url=fdb)
    assert back.build is not None and back.build.action == "rebuilt" and back.n_objects == 5_000


def test_feature_matrix_by_ids(fdb: str, sdss: SdssData) -> None:
    fs = build_feature_set(EXAMPLE, url=fdb)
    wanted = np.array([sdss.loaded.ids[7], sdss.loaded.ids[3], sdss.loaded.ids[4000]])
    ids, x = feature_matrix("sdss_ugriz", wanted.tolist(), url=fdb)
    np.testing.assert_array_equal(ids, wanted)
    np.testing.assert_array_equal(x, _expected_ugriz(sdss.loaded.mags)[[7, 3, 4000]])
    with pytest.raises(FeatureSetNotFoundError, match="1 of the 2 object ids"):
        feature_matrix(fs, [int(wanted[0]), 10**12], url=fdb)
    ids, x = feature_matrix(fs, [int(wanted[0]), 10**12], url=fdb, missing="drop")
    assert ids.tolist() == [int(wanted[0])] and x.shape == (1, 9)
    ids, x = feature_matrix(fs, [], url=fdb)
    assert ids.shape == (0,) and x.shape == (0, 9)


def test_pgvector_column_finds_the_object_itself(fdb: str, sdss: SdssData) -> None:
    fs = build_feature_set(EXAMPLE, url=fdb)
    picks = [int(v) for v in sdss.loaded.ids[[0, 123, 2500, 4999]]]
    with psycopg.connect(fdb) as conn:
        for object_id in picks:
            rows = conn.execute(
                f"SELECT object_id, v <-> (SELECT v FROM {fs.qualified_table} "
                f"WHERE object_id = %s) AS d FROM {fs.qualified_table} ORDER BY d LIMIT 3",
                (object_id,),
            ).fetchall()
            assert rows[0] == (object_id, 0.0)
            assert rows[1][1] > 0


HOSTILE = {
    "semicolon": ('expr = "u; DROP TABLE catalogs.sdss17"', "unexpected character ';'"),
    "unknown column": ('expr = "u - foo"', "unknown column 'foo'"),
    "uppercase column": ('expr = "U - g"', "did you mean 'u'"),
    "text column": ('expr = "class"', "column 'class' in expression 'class' is text"),
    "unknown function": ('expr = "exp(u)"', "unknown function 'exp'"),
    "import": ("expr = \"__import__('os').system('x')\"", "unexpected character"),
    "quotes": ("expr = 'u\" || pg_sleep(5) || \"'", "unexpected character '\"'"),
    "dollars": ('expr = "$$ || u"', "unexpected character '$'"),
    "nul": ('expr = "u\\u0000; DROP TABLE x"', "'\\x00'"),
    "long name": ('expr = "u"\nname = "' + "x" * 64 + '"', "longer than 63 bytes"),
    "nondetection column": (
        'expr = "u"\nnondetection = { column = "nope", above = 1 }',
        "unknown column 'nope' in nondetection",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_specs_are_refused_without_side_effects(
    fdb: str, tmp_path: Path, case: str
) -> None:
    body, fragment = HOSTILE[case]
    name_line = 'name = "evil"\n' if "\nname = " not in body else ""
    text = (
        'name = "hostile"\ncatalog = "sdss17"\n\n[[feature]]\nname = "g"\nexpr = "g"\n\n'
        f"[[feature]]\n{name_line}{body}\n"
    )
    path = tmp_path / "hostile.toml"
    path.write_text(text)
    before = database_objects(fdb)
    with pytest.raises(FeatureSpecError) as info:
        build_feature_set(path, url=fdb)
    message = str(info.value)
    assert fragment in message, message
    # The line of the offending feature's name (the second [[feature]] table).
    name_at = next(
        n for n, line in enumerate(text.splitlines(), 1) if line.startswith("name =") and n > 6
    )
    assert message.startswith(f"{path}, line {name_at}: "), message
    assert database_objects(fdb) == before
    with psycopg.connect(fdb) as conn:
        assert conn.execute("SELECT count(*) FROM catalogs.sdss17").fetchone() == (5_000,)


def test_unknown_catalog_is_refused(fdb: str, tmp_path: Path) -> None:
    path = tmp_path / "spec.toml"
    path.write_text('name = "s"\ncatalog = "nosuch"\n[[feature]]\nname = "u"\nexpr = "u"\n')
    before = database_objects(fdb)
    with pytest.raises(CatalogNotFoundError, match=r"line 2: catalog 'nosuch' is not registered"):
        build_feature_set(path, url=fdb)
    assert database_objects(fdb) == before
    with pytest.raises(FeatureSpecError, match="line 1"):
        bad = tmp_path / "bad.toml"
        bad.write_text("name = \n")
        build_feature_set(bad, url=fdb)


def test_insert_select_build_equals_create_table_as(fdb: str) -> None:
    spec = load_spec(EXAMPLE)
    a = build_feature_set(spec, url=fdb)
    b = build_feature_set(
        replace(spec, name="other", origin=None), url=fdb, first_build="insert_select"
    )
    assert b.build is not None and b.build.rows_added == 5_000
    ids_a, x_a = feature_matrix(a, url=fdb)
    ids_b, x_b = feature_matrix(b, url=fdb)
    np.testing.assert_array_equal(ids_a, ids_b)
    np.testing.assert_array_equal(x_a, x_b)


def test_a_foreign_table_with_the_name_is_left_alone(fdb: str) -> None:
    spec = load_spec(EXAMPLE)
    with psycopg.connect(fdb, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE features.{spec.table_name} (object_id bigint, x real[], v int)")
        conn.execute(f"INSERT INTO features.{spec.table_name} VALUES (1, '{{1}}', 1)")
    with pytest.raises(DatabaseError, match="is not the table of feature set sdss_ugriz"):
        build_feature_set(spec, url=fdb)
    with psycopg.connect(fdb) as conn:
        assert conn.execute(f"SELECT count(*) FROM features.{spec.table_name}").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM skyclass.feature_set").fetchone() == (0,)


def test_builds_of_one_version_queue_on_a_lock_no_stranger_can_take(fdb: str) -> None:
    """The advisory key builds used before 0011 is anyone's; the lock row is not."""
    spec = load_spec(EXAMPLE)
    role = f"stranger_{secrets.token_hex(4)}"
    with psycopg.connect(fdb, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
    try:
        with psycopg.connect(fdb, autocommit=True) as stranger:
            stranger.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
            key = f"skyclass.feature_set:{spec.name}:{spec.spec_hash}"
            digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)
            assert stranger.execute("SELECT pg_try_advisory_lock(%s)", (digest,)).fetchone() == (
                True,
            )
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                stranger.execute("SELECT * FROM skyclass.operation_lock FOR UPDATE")
            assert build_feature_set(spec, url=fdb).build.action == "created"  # type: ignore[union-attr]
        # An authorised holder of the version's lock makes a second build wait for it.
        with psycopg.connect(fdb) as holder:
            lock(holder, feature_set_resource(spec.name, spec.spec_hash))
            done: list[str] = []
            thread = threading.Thread(
                target=lambda: done.append(str(build_feature_set(spec, url=fdb).build))
            )
            thread.start()
            thread.join(1.0)
            assert thread.is_alive() and not done
            holder.rollback()
            thread.join(30)
            assert not thread.is_alive() and len(done) == 1 and "unchanged" in done[0]
    finally:
        with psycopg.connect(fdb, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
