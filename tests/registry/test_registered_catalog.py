"""A plain SQL table of 1M rows with its own column names, used in place end to end.

Registered without a copy, featured with a definition built elsewhere through a
column map, scored by a model trained on another (registered) catalog,
cone-searched, joined in SQL with its classifications, and dropped with
``--cascade`` leaving exactly the tables that were there before (plus the frozen
training snapshot, which outlives its catalog by design).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import drop_database, new_database
from tests.registry.conftest import relations, run, survey_rows

ROWS = 1_000_000
BASE_ID = 7_000_000_000
SPEC = """\
# Colours from fluxes in nanomaggies: the definition names the survey's own columns.
name = "ls_colours"
catalog = "ls_dr10"

[[feature]]
name = "r"
expr = "flux_to_mag(flux_r, 22.5)"

[[feature]]
name = "g_r"
expr = "flux_to_mag(flux_g, 22.5) - flux_to_mag(flux_r, 22.5)"

[[feature]]
name = "r_z"
expr = "flux_to_mag(flux_r, 22.5) - flux_to_mag(flux_z, 22.5)"
"""


@pytest.fixture(scope="module")
def archive(skyclass_extension: None, server_url: str, template_url: str) -> Iterator[str]:
    """A database holding archive.ls_dr10 (1M rows) and archive.spec_sample (3,000 labelled)."""
    url = new_database(server_url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA archive")
        # A column literally named ra that is not the position: it must not shadow ra_deg.
        conn.execute(
            "CREATE TABLE archive.ls_dr10 (ls_id bigint PRIMARY KEY, ra_deg float8 NOT NULL, "
            "dec_deg float8 NOT NULL, flux_g real, flux_r real, flux_z real, ra real)"
        )
        clock = time.perf_counter()
        conn.execute(
            survey_rows(
                "archive.ls_dr10",
                str(BASE_ID),
                0,
                ROWS,
                columns=("ls_id", "ra_deg", "dec_deg", "flux_g", "flux_r", "flux_z"),
            )
        )
        print(f"archive table of {ROWS:,} rows made in {time.perf_counter() - clock:.1f} s")
        conn.execute("UPDATE archive.ls_dr10 SET ra = -1 WHERE ls_id % 1000 = 0")
        conn.execute("ANALYZE archive.ls_dr10")
        conn.execute(
            "CREATE TABLE archive.spec_sample (objid bigint PRIMARY KEY, ra float8, dec float8, "
            "g_flux real, r_flux real, z_flux real, class text)"
        )
        conn.execute(
            survey_rows(
                "archive.spec_sample",
                "0",
                1,
                3000,
                columns=("objid", "ra", "dec", "g_flux", "r_flux", "z_flux", "class"),
            )
        )
    try:
        yield url
    finally:
        drop_database(server_url, url)


def _model_version(url: str, name: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT v.model_version_id FROM skyclass.model_version v JOIN skyclass.model m "
            "USING (model_id) WHERE m.name = %s",
            (name,),
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.slow
def test_a_plain_table_is_registered_featured_scored_searched_and_dropped(
    archive: str, tmp_path: Path
) -> None:
    url = archive
    before = relations(url)
    spec = tmp_path / "ls_colours.toml"
    spec.write_text(SPEC)

    # -- registration: nothing copied, checks counted, index built concurrently ------------
    code, out = run(
        url, "catalog", "register", "archive.ls_dr10", "--name", "ls_dr10",
        "--id", "ls_id", "--ra", "ra_deg", "--dec", "dec_deg", "--no-progress",
    )  # fmt: skip
    assert code != 0 and "no Q3C index on q3c_ang2ipix(ra_deg, dec_deg)" in out
    assert "--create-index" in out
    clock = time.perf_counter()
    code, out = run(
        url, "catalog", "register", "archive.ls_dr10", "--name", "ls_dr10",
        "--id", "ls_id", "--ra", "ra_deg", "--dec", "dec_deg", "--create-index", "--no-progress",
    )  # fmt: skip
    assert code == 0, out
    print(f"registered 1M rows in {time.perf_counter() - clock:.1f} s")
    assert "registered table archive.ls_dr10 as catalog ls_dr10 (1,000,000 rows" in out
    assert "check id unique: 0 offending rows (unique index archive.ls_dr10_pkey)" in out
    assert "check ra in [0, 360): 0 offending rows" in out
    assert "Q3C index: archive.ls_dr10_q3c_skyclass (built now)" in out
    assert "not shown in catalogs.ls_dr10" in out and ": ra" in out
    with psycopg.connect(url) as conn:
        kind = conn.execute("SELECT relkind FROM pg_class WHERE oid = 'catalogs.ls_dr10'::regclass")
        assert kind.fetchone() == ("v",)
        row = conn.execute(
            "SELECT r.row_estimate, r.source_kind, r.index_created, r.column_map, r.checks, "
            "r.os_user, c.kind FROM skyclass.catalog_registration r "
            "JOIN skyclass.catalog c USING (catalog_id) WHERE c.name = 'ls_dr10'"
        ).fetchone()
        assert row is not None
        assert row[:3] == (ROWS, "table", True) and row[6] == "registered"
        assert row[3]["object_id"] == "ls_id" and row[3]["ra"] == "ra_deg"
        assert {c["check"] for c in row[4]} == {
            "id unique", "id not null", "ra in [0, 360)", "dec in [-90, 90]"
        }  # fmt: skip
        # The view's ra is the mapped ra_deg, not the table's own column named ra.
        ra = conn.execute(
            "SELECT ra FROM catalogs.ls_dr10 WHERE object_id = %s", (BASE_ID + 1000,)
        ).fetchone()
        assert ra is not None and ra[0] == pytest.approx((1000 * 137.50776405) % 360.0, abs=1e-6)
        # The planner inlines the view: the cone search uses the table's own Q3C index.
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                "EXPLAIN SELECT object_id FROM catalogs.ls_dr10 "
                "WHERE q3c_radial_query(ra, dec, 180.0, 0.0, 0.2)"
            )
        )
        assert "ls_dr10_q3c_skyclass" in plan and "Seq Scan" not in plan

    code, out = run(url, "catalog", "list")
    assert code == 0 and re.search(r"ls_dr10\s+registered \(archive.ls_dr10\)\s+1,000,000", out)

    code, out = run(
        url, "catalog", "register", "archive.spec_sample", "--name", "spec_sample",
        "--id", "objid", "--ra", "ra", "--dec", "dec", "--create-index", "--no-progress",
    )  # fmt: skip
    assert code == 0, out
    assert "check id unique: 0 offending rows (unique index archive.spec_sample_pkey)" in out

    # -- train on one catalog through a column map ----------------------------------------
    maps = ("--map", "flux_g=g_flux", "--map", "flux_r=r_flux", "--map", "flux_z=z_flux")
    code, out = run(
        url, "train", str(spec), "--catalog", "spec_sample", *maps, "--model", "lsq",
        "--label", "class", "--param", "max_iter=20", "--folds", "3", "--baselines", "dummy",
        "--no-importance", "--no-progress",
    )  # fmt: skip
    assert code == 0, out
    version = _model_version(url, "lsq")
    code, out = run(url, "compile", "lsq:1")
    assert code == 0, out

    # -- scoring names what is missing, then what differs ----------------------------------
    code, out = run(url, "score", "lsq:1", "--catalog", "ls_dr10")
    assert code != 0
    assert "catalog ls_dr10 has no build of feature definition ls_colours version" in out
    other = tmp_path / "ls_colours_v2.toml"
    other.write_text(SPEC.replace("flux_to_mag(flux_g, 22.5) - flux_to_mag", "flux_to_mag"))
    code, out = run(url, "features", "build", str(other), "--no-progress")
    assert code == 0, out
    code, out = run(url, "score", "lsq:1", "--catalog", "ls_dr10")
    assert code != 0
    assert "its builds of that name have another definition" in out
    assert "g_r is flux_to_mag(flux_r, 22.5), not" in out

    # -- the same definition built on the archive's own names: same definition hash --------
    clock = time.perf_counter()
    code, out = run(url, "features", "build", str(spec), "--no-progress")
    assert code == 0, out
    print(f"features of 1M rows built in {time.perf_counter() - clock:.1f} s")
    assert "1,000,000 objects of catalog ls_dr10" in out
    with psycopg.connect(url) as conn:
        hashes = conn.execute(
            "SELECT catalog_name, definition_hash, column_map FROM skyclass.feature_set "
            "WHERE name = 'ls_colours' ORDER BY feature_set_id"
        ).fetchall()
    train_build, other_build, archive_build = hashes
    assert train_build[0] == "spec_sample" and train_build[2] == {
        "flux_g": "g_flux", "flux_r": "r_flux", "flux_z": "z_flux"
    }  # fmt: skip
    assert archive_build[:2] == ("ls_dr10", train_build[1]) and archive_build[2] == {}
    assert other_build[1] != train_build[1]

    # `train ls_colours` alone would pick one of two catalogs' builds: refused, both named.
    code, out = run(url, "train", "ls_colours", "--model", "lsq", "--label", "class")
    assert code != 0 and "built on several catalogs" in out
    assert "on spec_sample" in out and "on ls_dr10" in out

    clock = time.perf_counter()
    code, out = run(url, "score", "lsq:1", "--catalog", "ls_dr10")
    assert code == 0, out
    print(f"scored 1M rows in {time.perf_counter() - clock:.1f} s")
    assert "1,000,000 objects of ls_dr10 scored with lsq:1" in out

    # -- cone search and a SQL join with the classifications -------------------------------
    code, out = run(url, "cone", "ls_dr10", "180", "0", "0.5deg", "--format", "csv")
    assert code == 0, out
    cone_ids = {int(line.split(",")[0]) for line in out.strip().splitlines()[1:]}
    with psycopg.connect(url) as conn:
        truth = {
            r[0]
            for r in conn.execute(
                "SELECT ls_id FROM archive.ls_dr10 "
                "WHERE q3c_radial_query(ra_deg, dec_deg, 180.0, 0.0, 0.5)"
            )
        }
        joined = conn.execute(
            "SELECT c.object_id, p.top_label FROM skyclass.cone_search('ls_dr10', 180, 0, 0.5) c "
            "JOIN skyclass.prediction p ON p.object_id = c.object_id "
            "AND p.model_version_id = %s "
            "AND p.catalog_id = (SELECT catalog_id FROM skyclass.catalog WHERE name = 'ls_dr10')",
            (version,),
        ).fetchall()
        right = conn.execute(
            "SELECT avg((p.top_label = (ARRAY['star', 'galaxy', 'qso'])"
            "[(p.object_id - %s) %% 3 + 1])::int) FROM skyclass.prediction p "
            "WHERE p.model_version_id = %s",
            (BASE_ID, version),
        ).fetchone()
    assert len(truth) > 10 and cone_ids == truth
    assert {r[0] for r in joined} == truth
    # Features computed through the map on one catalog and natively on the other agree.
    assert right is not None and float(right[0]) > 0.95

    # -- drop: dependents listed and refused, then --cascade leaves no orphans -------------
    code, out = run(url, "catalog", "drop", "ls_dr10", "--yes")
    assert code != 0 and "has dependents" in out and "--cascade" in out
    assert "feature builds: ls_colours:" in out and "prediction tables: predictions.mv_" in out
    code, out = run(url, "catalog", "drop", "ls_dr10", "--yes", "--cascade")
    assert code == 0, out
    assert "table archive.ls_dr10 kept" in out
    code, out = run(url, "catalog", "drop", "spec_sample", "--yes", "--cascade")
    assert code == 0, out
    with psycopg.connect(url) as conn:
        snapshot = conn.execute(
            "SELECT 'snapshots.' || s.table_name FROM skyclass.model_version v "
            "JOIN skyclass.training_snapshot s USING (snapshot_id) WHERE v.model_version_id = %s",
            (version,),
        ).fetchone()
        kept = conn.execute(
            "SELECT catalog_id, catalog_name FROM skyclass.feature_set f "
            "JOIN skyclass.model_version v USING (feature_set_id) WHERE v.model_version_id = %s",
            (version,),
        ).fetchone()
        count = conn.execute("SELECT count(*) FROM archive.ls_dr10").fetchone()
    assert snapshot is not None
    assert relations(url) == before | {snapshot[0]}
    # The model version keeps the build it was trained on (catalog gone, name kept).
    assert kept == (None, "spec_sample")
    assert count == (ROWS,)
