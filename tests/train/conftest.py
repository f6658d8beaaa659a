"""Real data for the training-core tests: SDSS17 photometry and BOSS DR10 photo-z rows.

Subsamples keep the module fast; the seeds are fixed so every run sees the same rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from tests.train.data import BANDS, SDSS_FEATURES, Labelled, Photoz, sdss_features


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Single-threaded OpenMP/BLAS: spinning OpenMP threads on a shared 2-core machine
    made a 20-iteration HistGradientBoosting fit take 20 s instead of 0.2 s."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="session")
def sdss17_frame(shared_data: Path) -> pd.DataFrame:
    """All 99,999 SDSS17 rows."""
    path = shared_data / "sdss17_stellar_classification" / "sdss17_star_classification_99999.csv.gz"
    return pd.read_csv(path)


@pytest.fixture(scope="session")
def sdss17(sdss17_frame: pd.DataFrame) -> Labelled:
    """12,000 random SDSS17 rows: ugriz and colours (no redshift, no positions) and the class."""
    rows = np.random.default_rng(17).choice(len(sdss17_frame), size=12_000, replace=False)
    frame = sdss17_frame.iloc[np.sort(rows)]
    mags = frame[list(BANDS)].to_numpy(dtype=np.float64)
    return Labelled(sdss_features(mags), frame["class"].to_numpy(dtype=object), SDSS_FEATURES)


@pytest.fixture(scope="session")
def boss(shared_data: Path) -> Photoz:
    """8,000 random BOSS DR10 rows (magnitudes, errors, z_spec)."""
    path = shared_data / "photoz_boss_dr10_annz" / "boss_dr10_photoz_35762.csv"
    frame = pd.read_csv(path)
    rows = np.sort(np.random.default_rng(10).choice(len(frame), size=8_000, replace=False))
    frame = frame.iloc[rows]
    return Photoz(
        mags=frame[[f"mag_{b}" for b in BANDS]].to_numpy(dtype=np.float64),
        errs=frame[[f"magerr_{b}" for b in BANDS]].to_numpy(dtype=np.float64),
        z=frame["z_spec"].to_numpy(dtype=np.float64),
    )
