"""Real-data fixtures for the training-pipeline tests: catalogs and feature sets in PostgreSQL.

SDSS17 and BOSS DR10 slices are written to CSV files and loaded with the real
ingest; feature sets are built with :func:`skyclass.features.build_feature_set`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from skyclass.features.build import build_feature_set
from skyclass.features.spec import FeatureSpec, parse_spec

SDSS_SPEC = Path(__file__).resolve().parents[2] / "src/skyclass/features/examples/sdss_ugriz.toml"

BOSS_SPEC = (
    """
name = "boss_ugriz"
catalog = "boss"
"""
    + "".join(
        f'\n[[feature]]\nname = "mag_{b}"\nexpr = "mag_{b}"\ngroup = "magnitudes"\n'
        for b in "ugriz"
    )
    + "".join(
        f'\n[[feature]]\nname = "magerr_{b}"\nexpr = "magerr_{b}"\ngroup = "errors"\n'
        for b in "ugriz"
    )
    + "".join(
        f'\n[[feature]]\nname = "{a}_{b}"\nexpr = "mag_{a} - mag_{b}"\ngroup = "colours"\n'
        for a, b in ("ug", "gr", "ri", "iz")
    )
)


def sdss_slice(shared_data: Path, out: Path, rows: int, seed: int = 3) -> Path:
    """A CSV of ``rows`` random SDSS17 rows (original columns, file order kept)."""
    path = shared_data / "sdss17_stellar_classification" / "sdss17_star_classification_99999.csv.gz"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    keep = np.sort(np.random.default_rng(seed).choice(len(frame), size=rows, replace=False))
    frame.iloc[keep].to_csv(out, index=False)
    return out


def boss_slice(shared_data: Path, out: Path, rows: int, seed: int = 4) -> Path:
    """A CSV of ``rows`` random BOSS DR10 photo-z rows (no ids, no positions)."""
    path = shared_data / "photoz_boss_dr10_annz" / "boss_dr10_photoz_35762.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    keep = np.sort(np.random.default_rng(seed).choice(len(frame), size=rows, replace=False))
    frame.iloc[keep].to_csv(out, index=False)
    return out


def ingest_sdss(path: Path, url: str, name: str = "sdss17") -> None:
    """Load an SDSS17 CSV as catalog ``name``."""
    from skyclass.ingest import ingest_file

    ingest_file(path, name, id_column="orig_row", ra_column="alpha", dec_column="delta", url=url)


def ingest_boss(path: Path, url: str, name: str = "boss") -> None:
    """Load a BOSS CSV as a catalog without sky positions (huge errors are data, not sentinels)."""
    from skyclass.ingest import ingest_file

    ingest_file(path, name, positions=False, null_values=[], url=url)


def build_features(spec_text: str, url: str, **replace: str) -> int:
    """Build a feature set from spec text; return its ``feature_set_id``.

    ``replace`` substitutes the set's ``name`` or ``catalog``.
    """
    spec = parse_spec(spec_text, source="test spec")
    if replace:
        spec = FeatureSpec(
            replace.get("name", spec.name), replace.get("catalog", spec.catalog), spec.features
        )
    return int(build_feature_set(spec, url=url).feature_set_id)
