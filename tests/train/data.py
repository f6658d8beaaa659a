"""Data helpers shared by the training-core tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BANDS = ("u", "g", "r", "i", "z")
SDSS_FEATURES = ("u", "g", "r", "i", "z", "u_g", "g_r", "r_i", "i_z")


@dataclass(frozen=True)
class Labelled:
    """Features, labels and the feature names of one data set."""

    X: np.ndarray
    y: np.ndarray
    names: tuple[str, ...]


@dataclass(frozen=True)
class Photoz:
    """BOSS DR10 magnitudes, their errors and spectroscopic redshifts."""

    mags: np.ndarray
    errs: np.ndarray
    z: np.ndarray


def sdss_features(mags: np.ndarray) -> np.ndarray:
    """ugriz plus the four adjacent colours, as float32 (photometry only)."""
    colours = mags[:, :-1] - mags[:, 1:]
    return np.column_stack([mags, colours]).astype(np.float32)
