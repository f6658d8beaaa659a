"""Fixtures for the feature-set tests: a database holding a 5,000-row slice of SDSS17.

The slice goes through the real ingest once per session, into a template
database; every test gets its own clone of it (``CREATE DATABASE ...
TEMPLATE``), so tests may build, append and break things independently.
The reference values are the raw CSV text parsed with ``float()``.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import psycopg
import pytest

from skyclass.ingest import ingest_file
from tests.conftest import drop_database, new_database

SDSS_FILE = (
    Path(__file__).resolve().parents[2]
    / "src/skyclass/demo/data/sdss17_star_classification_99999.csv.gz"
)
TEMPLATE = "skyclass_features_template"
SLICE_ROWS = 5_000
APPEND_ROWS = 1_000
BANDS = ("u", "g", "r", "i", "z")


@dataclass(frozen=True)
class Slice:
    """Rows of the SDSS17 file: ids and ugriz as float64 (parsed with float())."""

    ids: npt.NDArray[np.int64]
    mags: dict[str, npt.NDArray[np.float64]]
    path: Path

    def band(self, name: str) -> npt.NDArray[np.float64]:
        return self.mags[name]


@dataclass(frozen=True)
class SdssData:
    """The loaded slice, the rows kept back for an append, and the template's name."""

    loaded: Slice
    extra: Slice
    template: str


def _write_slice(rows: list[dict[str, str]], header: list[str], path: Path) -> Slice:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return Slice(
        ids=np.array([int(r["orig_row"]) for r in rows], dtype=np.int64),
        mags={b: np.array([float(r[b]) for r in rows]) for b in BANDS},
        path=path,
    )


@pytest.fixture(scope="session")
def sdss(server_url: str, template_url: str, tmp_path_factory: pytest.TempPathFactory) -> SdssData:
    """Template database with catalog sdss17 = the first 5,000 SDSS17 rows."""
    directory = tmp_path_factory.mktemp("features")
    with gzip.open(SDSS_FILE, "rt", newline="") as fh:
        reader = csv.DictReader(fh)
        header = list(reader.fieldnames or [])
        rows = [row for _, row in zip(range(SLICE_ROWS + APPEND_ROWS), reader, strict=False)]
    loaded = _write_slice(rows[:SLICE_ROWS], header, directory / "sdss17_slice.csv")
    extra = _write_slice(rows[SLICE_ROWS:], header, directory / "sdss17_extra.csv")
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
    url = new_database(server_url)
    ingest_file(
        loaded.path, "sdss17", id_column="orig_row", ra_column="alpha", dec_column="delta", url=url
    )
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {name} RENAME TO {TEMPLATE}")
    return SdssData(loaded, extra, TEMPLATE)


@pytest.fixture
def fdb(server_url: str, sdss: SdssData, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh clone of the SDSS17-slice database; SKYCLASS_DATABASE_URL points at it."""
    url = new_database(server_url, template=sdss.template)
    monkeypatch.setenv("SKYCLASS_DATABASE_URL", url)
    try:
        yield url
    finally:
        drop_database(server_url, url)


def database_objects(url: str) -> tuple[int, int, int, int]:
    """Counts of relations, functions, feature-set rows and tables in schema features."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM pg_class), (SELECT count(*) FROM pg_proc), "
            "(SELECT count(*) FROM skyclass.feature_set), "
            "(SELECT count(*) FROM pg_class WHERE relnamespace = 'features'::regnamespace)"
        ).fetchone()
    assert row is not None
    return (int(row[0]), int(row[1]), int(row[2]), int(row[3]))
