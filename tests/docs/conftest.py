"""A database with real data for the documentation examples.

One database per module: a 2,000-object slice of the bundled SDSS17 sample is
ingested as catalog ``sdss17`` (``skyclass.ingest``), the example ugriz feature
set is built, and the real pipeline trains, registers and compiles two small
versions of model ``sgq`` (star/galaxy/QSO). The SQL reference's examples run
against it in document order, so they can build on each other (deploy, then
rescore, then read the views) just as a reader would type them.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest

from skyclass.compile.store import compile_model_version
from skyclass.domain.anomaly import fit_anomaly_model
from skyclass.domain.ood_store import fit_version_ood
from skyclass.features.build import build_feature_set
from skyclass.ingest import ingest_file
from skyclass.train.pipeline import train_model
from skyclass.train.snapshot import create_snapshot
from tests.conftest import drop_database, new_database

ROOT = Path(__file__).resolve().parents[2]
DEMO_CSV = ROOT / "src/skyclass/demo/data/sdss17_star_classification_99999.csv.gz"
EXAMPLE_SPEC = ROOT / "src/skyclass/features/examples/sdss_ugriz.toml"
ROWS = 2000
# Tiny models: the examples need real versions, not good ones; compiling stays ~1 s.
VERSIONS = ({"max_iter": 8, "max_leaf_nodes": 7}, {"max_iter": 12, "max_leaf_nodes": 5})


def _slice(target: Path, n: int, seed: int) -> None:
    """A seeded random sample of ``n`` rows of the bundled SDSS17 CSV (header kept)."""
    with gzip.open(DEMO_CSV, "rt", newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    keep = np.sort(np.random.default_rng(seed).choice(len(body), size=n, replace=False))
    with open(target, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(body[i] for i in keep)


@pytest.fixture(scope="module")
def docs_db(
    server_url: str, template_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """URL of a database holding catalog sdss17, its features and model sgq versions 1 and 2."""
    url = new_database(server_url)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS skyclass")
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("SKYCLASS_DATABASE_URL", url)
            data = tmp_path_factory.mktemp("docs-data") / "sdss17_slice.csv"
            _slice(data, ROWS, seed=5)
            ingest_file(
                data, "sdss17", id_column="orig_row", ra_column="alpha", dec_column="delta", url=url
            )
            feature_set = build_feature_set(EXAMPLE_SPEC, url=url).feature_set_id
            snapshot = create_snapshot(feature_set, "class", n_folds=2, seed=1, url=url)
            for params in VERSIONS:
                result = train_model(
                    "sgq",
                    snapshot.snapshot_id,
                    params=params,
                    baselines=("dummy",),
                    importance=False,
                    description="star/galaxy/QSO from SDSS ugriz (docs examples)",
                    url=url,
                )
                compile_model_version(result.model_version_id, url=url, opt_level="-O0")
            # OOD forests of both versions (model versions 3 and 4 of model sgq_ood), and
            # an anomaly model of the feature set (model version 5, oddities:1).
            with psycopg.connect(url, autocommit=True) as conn:
                for version in (1, 2):
                    fit_version_ood(conn, version, opt_level="-O0")
                fit_anomaly_model(conn, "oddities", "sdss_ugriz", "sdss17", opt_level="-O0")
        yield url
    finally:
        drop_database(server_url, url)
