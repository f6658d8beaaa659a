"""Registry rows for the report tests, made by the real training pipeline on real data.

One database per module: an SDSS17 slice is ingested (``skyclass.ingest``),
its ugriz feature set is built (``skyclass.features.build``), and
``skyclass.train.pipeline.train_model`` cross-validates a small
HistGradientBoosting model next to its baselines, calibrates it, computes
permutation importance and ablates the feature groups; a BOSS DR10 slice gets
a photo-z model the same way. Small models and slices keep the module to
a few seconds of training.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from skyclass.features.build import build_feature_set
from skyclass.features.spec import Feature, FeatureSpec, load_spec
from skyclass.ingest import ingest_file
from skyclass.train.pipeline import TrainResult, train_model
from skyclass.train.snapshot import create_snapshot
from tests.conftest import drop_database, new_database

DEMO_CSV = (
    Path(__file__).resolve().parents[2]
    / "src/skyclass/demo/data/sdss17_star_classification_99999.csv.gz"
)
EXAMPLE_SPEC = (
    Path(__file__).resolve().parents[2] / "src/skyclass/features/examples/sdss_ugriz.toml"
)
SDSS_ROWS = 3000
BOSS_ROWS = 3000
BANDS = ("u", "g", "r", "i", "z")
SMALL_HGB = {"max_iter": 30, "max_leaf_nodes": 15}


@dataclass(frozen=True)
class Trained:
    """The database and the registered classification and photo-z models."""

    url: str
    sdss: TrainResult
    photoz: TrainResult


def _slice(source: Path, target: Path, n: int, seed: int, opener: object = open) -> None:
    """Copy a seeded random sample of ``n`` data rows of a CSV (header kept, order kept)."""
    with opener(source, "rt", newline="") as handle:  # type: ignore[operator]
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    keep = np.sort(np.random.default_rng(seed).choice(len(body), size=n, replace=False))
    with open(target, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(body[i] for i in keep)


def _boss_catalog(conn: psycopg.Connection, path: Path) -> None:
    """BOSS DR10 rows as catalog ``boss_dr10`` (the file has neither ids nor positions).

    Ingest needs sky positions, which this photo-z training set does not
    have, so the table is written directly: ids are the row numbers, RA/Dec
    are NULL (unknown), and the load row records the real file and its sha256.
    """
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = [f"mag_{b}" for b in BANDS] + [f"magerr_{b}" for b in BANDS] + ["z_spec"]
    conn.execute(
        "CREATE TABLE catalogs.boss_dr10 (object_id bigint PRIMARY KEY, ra double precision, "
        "dec double precision, " + ", ".join(f"{c} double precision" for c in columns) + ")"
    )
    with conn.cursor().copy(
        sql.SQL("COPY catalogs.boss_dr10 (object_id, {}) FROM STDIN").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        )
    ) as copy:
        for i, r in enumerate(rows, start=1):
            copy.write_row([i, *(float(r[c]) for c in columns)])
    catalog_id = conn.execute(
        "INSERT INTO skyclass.catalog (name, table_name, id_column, ra_column, dec_column, "
        "description) VALUES ('boss_dr10', 'boss_dr10', NULL, 'none', 'none', %s) "
        "RETURNING catalog_id",
        ("BOSS DR10 photo-z training slice (no positions), written by tests/report",),
    ).fetchone()[0]  # type: ignore[index]
    data = path.read_bytes()
    conn.execute(
        "INSERT INTO skyclass.catalog_load (catalog_id, mode, file_name, file_size, "
        "file_sha256, file_format, rows_accepted, rows_rejected, nulls_per_column, "
        "null_values, options, astropy_version, skyclass_version, os_user, started_at) "
        "VALUES (%s, 'create', %s, %s, %s, 'csv', %s, 0, '{}', '[]', %s, 'n/a', '0.1.0', "
        "'tests', %s)",
        (
            catalog_id,
            str(path),
            len(data),
            hashlib.sha256(data).hexdigest(),
            len(rows),
            Jsonb({"written_by": "tests/report/conftest.py"}),
            datetime.now(UTC),
        ),
    )


@pytest.fixture(scope="module")
def trained(
    server_url: str, template_url: str, shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Trained]:
    """A database holding two trained model versions (SDSS17 classes, BOSS photo-z)."""
    url = new_database(server_url)
    work = tmp_path_factory.mktemp("report-data")
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("SKYCLASS_DATABASE_URL", url)
            sdss_csv = work / "sdss17_slice.csv"
            _slice(DEMO_CSV, sdss_csv, SDSS_ROWS, seed=17, opener=gzip.open)
            ingest_file(
                sdss_csv,
                "sdss17",
                id_column="orig_row",
                ra_column="alpha",
                dec_column="delta",
                url=url,
            )
            boss_csv = work / "boss_dr10_slice.csv"
            _slice(
                shared_data / "photoz_boss_dr10_annz" / "boss_dr10_photoz_35762.csv",
                boss_csv,
                BOSS_ROWS,
                seed=10,
            )
            sdss_spec = load_spec(EXAMPLE_SPEC)
            boss_spec = FeatureSpec(
                "boss_ugriz",
                "boss_dr10",
                tuple(Feature(f"mag_{b}", f"mag_{b}", group="magnitudes") for b in BANDS)
                + tuple(
                    Feature(f"{a}_{b}", f"mag_{a} - mag_{b}", group="colours")
                    for a, b in itertools.pairwise(BANDS)
                ),
            )
            with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
                _boss_catalog(conn, boss_csv)
            sdss_fs = build_feature_set(sdss_spec, url=url).feature_set_id
            boss_fs = build_feature_set(boss_spec, url=url).feature_set_id
            snap = create_snapshot(sdss_fs, "class", seed=3, url=url)
            sdss = train_model(
                "sdss_classes",
                snap.snapshot_id,
                params=SMALL_HGB,
                ablate=True,
                description="star/galaxy/QSO from SDSS ugriz <script>alert(1)</script> & co",
                url=url,
            )
            zsnap = create_snapshot(
                boss_fs, "z_spec", task="photoz", bin_edges="0:0.8:0.1", seed=5, url=url
            )
            photoz = train_model(
                "boss_photoz",
                zsnap.snapshot_id,
                params=SMALL_HGB,
                url=url,
                baselines=("dummy", "logistic"),
            )
            yield Trained(url, sdss, photoz)
    finally:
        drop_database(server_url, url)
