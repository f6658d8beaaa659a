"""The compact storage of predictions (revision 0017) in numbers.

``skyclass.prediction_codec`` (SQL) stores each class probability in 16 bits,
``q = round(p * 65535) - 32768``, read back as ``(q + 32768) / 65535`` in
``real``; photo-z versions store their point estimates in 16 bits over the range
of the bin edges and the PDF as its CDF at the inner edges in 8 bits. These
constants are the bounds the tests and the documentation quote; the functions
mirror the SQL so that the loss can be measured without a database
(``bench/bench_pdf_codec.py``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

PROBABILITY_STEP = 1.0 / 65535
"""The quantum of a stored probability."""

MAX_PROBABILITY_ERROR = 0.5 * PROBABILITY_STEP + 2e-7
"""Largest difference between a stored probability and the model's (half a quantum, plus the
rounding of the model's ``real`` and of the decoded ``real``): 7.8e-6."""

CDF_STEP = 1.0 / 255
"""The quantum of a stored photo-z CDF value; bin masses are differences of two of them."""

MAX_CDF_ERROR = 0.5 * CDF_STEP + 1e-7
"""Largest difference between a stored CDF value and the model's (0.00196)."""

MAX_MASS_ERROR = CDF_STEP + 2e-7
"""Largest difference between a stored PDF bin mass and the model's (0.0039)."""


def point_estimate_error(edges: npt.ArrayLike) -> float:
    """Largest difference between a stored photo-z point estimate and the model's."""
    e = np.asarray(edges, dtype=np.float64)
    return float((e[-1] - e[0]) * 0.5 / 65535 + abs(e[-1]) * 1.2e-7)


def quantise_pdf(pdf: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The bin masses the database gives back for ``pdf`` (rows of masses), as the SQL does."""
    p = np.asarray(pdf, dtype=np.float64)
    total = p.sum(axis=1, keepdims=True)
    cdf = np.cumsum(p, axis=1)[:, :-1] / np.where(total == 0, np.nan, total)
    q = np.rint(np.clip(np.nan_to_num(cdf, nan=0.0), 0.0, 1.0) * 255)
    full = np.concatenate([np.zeros((len(p), 1)), q, np.full((len(p), 1), 255.0)], axis=1)
    masses = np.diff(full, axis=1).astype(np.float32) / np.float32(255)
    out: npt.NDArray[np.float64] = masses.astype(np.float64)
    return out


def quantise_probabilities(p: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The class probabilities the database gives back for ``p``, as the SQL does."""
    q = np.rint(np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0) * 65535 - 32768)
    out: npt.NDArray[np.float64] = ((q + 32768).astype(np.float32) / np.float32(65535)).astype(
        np.float64
    )
    return out
