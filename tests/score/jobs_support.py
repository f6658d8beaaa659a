"""Helpers of the scoring-job tests: databases, compiled models and many objects, quickly.

Objects are written with binary COPY encoded by numpy (the registry helper's
row-by-row COPY would take most of a test's time for 100k objects); their
features are SDSS17 photometry rows of the scoring test split, drawn with
replacement and perturbed, with 10% NaN, so the models see realistic inputs.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

from skyclass.db.cluster import EmbeddedCluster, find_pg_bindir
from skyclass.db.migrate import upgrade
from skyclass.ingest.copy_binary import (
    BIGINT,
    COPY_SIGNATURE,
    COPY_TRAILER,
    DOUBLE,
    REAL,
    array_field,
    encode_rows,
    fixed_field,
)
from tests.conftest import TEMPLATE, _free_port, new_database
from tests.score.models import N_FEATURES, case, sdss17
from tests.support.registry import register_test_model

CASE = "hgb_multiclass"


def jobs_database(server_url: str) -> str:
    """A fresh migrated database with the skyclass extension."""
    url = new_database(server_url, TEMPLATE)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS skyclass")
    return url


def register(
    conn: psycopg.Connection[Any],
    name: str = CASE,
    method: str = "isotonic",
    *,
    model: str | None = None,
) -> int:
    """Register the compiled test case ``name`` with a calibration; returns its model_version_id."""
    c = case(name)
    return register_test_model(
        conn,
        c.estimator,
        classes=c.classes,
        n_features=N_FEATURES,
        calibration=c.calibrations[method],
        model=model or name,
        artifact=c.artifact,
    )


def object_features(n: int, seed: int = 0) -> npt.NDArray[np.float32]:
    """``n`` feature rows: SDSS17 evaluation rows with replacement, jittered, 10% NaN."""
    rng = np.random.default_rng(seed)
    base = sdss17().x_eval
    x = base[rng.integers(0, len(base), n)] + rng.normal(0, 0.05, (n, base.shape[1]))
    x = x.astype(np.float32)
    x[rng.random(x.shape) < 0.1] = np.nan
    return x


def version_tables(
    conn: psycopg.Connection[Any], version: int
) -> tuple[sql.Identifier, sql.Identifier]:
    row = conn.execute(
        "SELECT c.table_name, f.table_name FROM skyclass.model_version AS v "
        "JOIN skyclass.feature_set AS f USING (feature_set_id) "
        "JOIN skyclass.catalog AS c USING (catalog_id) WHERE v.model_version_id = %s",
        (version,),
    ).fetchone()
    assert row is not None
    return sql.Identifier("catalogs", str(row[0])), sql.Identifier("features", str(row[1]))


def _copy(conn: psycopg.Connection[Any], query: sql.Composable, data: bytes) -> None:
    with conn.cursor().copy(query) as copy:
        copy.write(data)


def add_objects(
    conn: psycopg.Connection[Any],
    version: int,
    x: npt.NDArray[np.float32],
    *,
    first_id: int | None = None,
    with_features: bool = True,
) -> npt.NDArray[np.int64]:
    """Add catalog objects (and, by default, their feature rows) for ``version``'s feature set.

    ``v`` is the pgvector copy of ``x`` (NULL when a feature is missing), as
    the feature-table contract says. Returns the new object ids.
    """
    catalog, features = version_tables(conn, version)
    if first_id is None:
        row = conn.execute(
            sql.SQL("SELECT coalesce(max(object_id), 0) + 1 FROM {}").format(catalog)
        ).fetchone()
        assert row is not None
        first_id = int(row[0])
    ids = np.arange(first_id, first_id + len(x), dtype=np.int64)
    ra = (ids * 0.37) % 360.0
    dec = (ids * 0.011) % 180.0 - 90.0
    with conn.transaction():
        data = encode_rows(
            [fixed_field(ids, BIGINT), fixed_field(ra, DOUBLE), fixed_field(dec, DOUBLE)],
            len(ids),
        )
        _copy(
            conn,
            sql.SQL("COPY {} (object_id, ra, dec) FROM STDIN (FORMAT BINARY)").format(catalog),
            COPY_SIGNATURE + data.tobytes() + COPY_TRAILER,
        )
        if with_features:
            conn.execute(
                "CREATE TEMPORARY TABLE skyclass_new_features (object_id bigint, x real[]) "
                "ON COMMIT DROP"
            )
            data = encode_rows([fixed_field(ids, BIGINT), array_field(x, REAL, None)], len(ids))
            _copy(
                conn,
                sql.SQL("COPY skyclass_new_features FROM STDIN (FORMAT BINARY)"),
                COPY_SIGNATURE + data.tobytes() + COPY_TRAILER,
            )
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (object_id, x, v) SELECT object_id, x, "
                    "CASE WHEN 'NaN'::real = ANY (x) THEN NULL ELSE x::vector END "
                    "FROM skyclass_new_features"
                ).format(features)
            )
    conn.execute(sql.SQL("ANALYZE {}").format(features))
    return ids


def predictions(conn: psycopg.Connection[Any], version: int) -> dict[int, tuple[Any, ...]]:
    """object_id -> (run_id, top_label, top_probability, probabilities, z columns...)."""
    rows = conn.execute(
        "SELECT object_id, run_id, top_label, top_probability, probabilities, z_mean, z_median, "
        "z_mode, z_lo68, z_hi68, z_lo95, z_hi95 FROM skyclass.prediction "
        "WHERE model_version_id = %s",
        (version,),
    ).fetchall()
    return {int(r[0]): tuple(r[1:]) for r in rows}


def run_row(conn: psycopg.Connection[Any], run_id: int) -> dict[str, Any]:
    """The scoring_run row as a dict."""
    cur = conn.execute("SELECT * FROM skyclass.scoring_run WHERE run_id = %s", (run_id,))
    row = cur.fetchone()
    assert row is not None and cur.description is not None
    return {d.name: v for d, v in zip(cur.description, row, strict=True)}


@contextmanager
def own_cluster(prefix: str) -> Iterator[EmbeddedCluster]:
    """A throwaway cluster of this test alone (restarting it cannot disturb other tests).

    Same settings as the session cluster (pg_cron preloaded for database
    ``skyclass``), migrated; its ``skyclass`` database has the extension.
    """
    home = Path(tempfile.mkdtemp(prefix=f"skyclass-{prefix}-"))
    os.chmod(home, 0o755)
    cluster = EmbeddedCluster(
        home=home,
        port=_free_port(59000),
        bindir=find_pg_bindir(),
        extra_conf={
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "'128MB'",
        },
    )
    cluster.start()
    try:
        upgrade(cluster.url)
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS skyclass")
        yield cluster
    finally:
        cluster.destroy()
