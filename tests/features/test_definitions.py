"""Feature definitions that travel: one definition, builds on catalogs with other column names."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest
from click.testing import CliRunner

from skyclass.cli import main
from skyclass.errors import AmbiguousName, FeatureSpecError
from skyclass.features.build import build_feature_set, feature_matrix, load_feature_set
from skyclass.features.spec import example_spec_path, load_spec
from skyclass.registry.register import register_catalog
from skyclass.train.snapshot import load_feature_set_info

MAP = {"u": "mag_u", "g": "mag_g", "r": "mag_r", "i": "mag_i", "z": "mag_z"}


def _renamed_catalog(url: str) -> None:
    """The SDSS slice again, as an archive would hold it: other names, no positions."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA archive")
        conn.execute(
            "CREATE TABLE archive.renamed AS SELECT object_id + 0 AS oid, u AS mag_u, g AS mag_g, "
            "r AS mag_r, i AS mag_i, z AS mag_z FROM catalogs.sdss17"
        )
        conn.execute("ALTER TABLE archive.renamed ADD PRIMARY KEY (oid)")
    register_catalog("archive.renamed", name="renamed", id_column="oid", positions=False, url=url)


def test_the_hash_of_an_unmapped_build_is_the_spec_hash_of_before() -> None:
    spec = load_spec(example_spec_path())
    # The version of sdss_ugriz.toml before definitions existed: old feature sets keep theirs.
    assert spec.spec_hash == "ea7150978551b8c08572158636254dfb875144595075ac23fd1f3f874a98cd85"
    moved = spec.for_catalog("renamed", MAP)
    assert moved.definition_hash == spec.definition_hash
    assert moved.spec_hash != spec.spec_hash and moved.table_name != spec.table_name
    assert spec.for_catalog("renamed").spec_hash != spec.spec_hash
    # An identity mapping is no mapping.
    assert spec.for_catalog(None, {"u": "u"}) == spec
    with pytest.raises(FeatureSpecError, match=r"--map w=mag_w: the spec reads no column 'w'"):
        spec.for_catalog("renamed", {"w": "mag_w"})
    with pytest.raises(FeatureSpecError, match=r"not allowed|catalog column"):
        spec.for_catalog("renamed", {"u": "u; DROP TABLE x"})


def test_one_definition_built_on_another_catalog_through_a_map_gives_the_same_values(
    fdb: str,
) -> None:
    _renamed_catalog(fdb)
    own = build_feature_set(example_spec_path(), url=fdb)
    moved = build_feature_set(example_spec_path(), catalog="renamed", column_map=MAP, url=fdb)
    assert moved.catalog == "renamed" and moved.definition_hash == own.definition_hash
    assert moved.spec.columns == tuple(sorted(MAP.items()))
    ids_a, x_a = feature_matrix(own, url=fdb)
    ids_b, x_b = feature_matrix(moved, url=fdb)
    assert len(ids_a) == 5000
    np.testing.assert_array_equal(ids_a, ids_b)
    np.testing.assert_array_equal(x_a, x_b)

    # Without the map, the error names the column and the catalog's numeric columns.
    with pytest.raises(FeatureSpecError, match=r"unknown column 'u' .* catalog renamed has"):
        build_feature_set(example_spec_path(), catalog="renamed", url=fdb)
    with pytest.raises(FeatureSpecError, match=r"unknown column 'mag_x' in .*mapped from 'u'"):
        build_feature_set(
            example_spec_path(), catalog="renamed", column_map={**MAP, "u": "mag_x"}, url=fdb
        )

    # A name built on two catalogs is never resolved silently.
    with pytest.raises(AmbiguousName, match="built on several catalogs") as info:
        load_feature_set("sdss_ugriz", url=fdb)
    assert "on sdss17" in str(info.value) and "on renamed" in str(info.value)
    assert load_feature_set("sdss_ugriz", url=fdb, catalog="renamed").feature_set_id == (
        moved.feature_set_id
    )
    with psycopg.connect(fdb) as conn:
        with pytest.raises(AmbiguousName, match="built on several catalogs"):
            load_feature_set_info(conn, "sdss_ugriz")
        assert load_feature_set_info(conn, moved.feature_set_id).catalog.name == "renamed"

    runner = CliRunner()
    out = runner.invoke(main, ["features", "show", "sdss_ugriz", "--catalog", "renamed"]).output
    assert f"definition {own.definition_hash}" in out and "columns mapped g=mag_g" in out
    out = runner.invoke(main, ["features", "list"]).output
    assert out.count(own.definition_hash[:12]) == 2
    result = runner.invoke(
        main,
        ["features", "build", str(example_spec_path()), "--catalog", "renamed", "--map", "u"],
    )
    assert result.exit_code == 2 and "expected SPEC_COLUMN=CATALOG_COLUMN" in result.output
    result = runner.invoke(
        main,
        ["features", "build", str(example_spec_path()), "--catalog", "renamed"]
        + [a for k, v in MAP.items() for a in ("--map", f"{k}={v}")],
    )
    assert result.exit_code == 0 and "unchanged" in result.output

    # Training names the catalog: the build on sdss17, not the newer one on renamed.
    quick = ["--param", "max_iter=5", "--folds", "2", "--baselines", "dummy", "--no-importance"]
    result = runner.invoke(
        main,
        [
            "train",
            "sdss_ugriz",
            "--catalog",
            "sdss17",
            "--model",
            "m",
            "--label",
            "class",
            *quick,
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    with psycopg.connect(fdb) as conn:
        trained_on = conn.execute(
            "SELECT f.catalog_name FROM skyclass.model_version v "
            "JOIN skyclass.training_snapshot s USING (snapshot_id) "
            "JOIN skyclass.feature_set f ON f.feature_set_id = s.feature_set_id "
            "WHERE v.task <> 'anomaly'"  # not its OOD forest (same snapshot)
        ).fetchall()
    assert trained_on == [("sdss17",)]
