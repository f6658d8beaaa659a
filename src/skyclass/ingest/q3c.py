"""Q3C pixel numbers computed in numpy, equal to the SQL function ``q3c_ang2ipix``.

The ingest writes a catalog's rows in the order of its Q3C index, so that the
table is clustered without a ``CLUSTER`` rewrite; that needs, on the client,
the very numbers Q3C 2.0.0 computes in the server. This module is a port of
its ``q3c_ang2ipix`` (cube face, gnomonic projection onto it, 2^30 x 2^30
quadtree cells numbered in Z order): the same double-precision operations in
the same order.

One difference would remain: numpy's vectorised ``tan`` (SIMD code) is not
always the C library's ``tan`` that Q3C calls, and can differ in the last bit.
A last-bit difference changes the pixel only when a projected coordinate lies
within about 1e-7 cell of a cell edge (or ``|y| = 1`` of a face edge), so the
points that come within :data:`_CELL_MARGIN` of an edge (a few in ten
thousand) are computed again one by one with :mod:`math`, which calls the C
library like Q3C does. The tests compare the result with SQL ``q3c_ang2ipix``
on millions of random points and on poles, RA 0/360 and cube-face edges.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import numpy.typing as npt

NSIDE = 1 << 30
# Q3C's constant, as its C compiler rounds it (not numpy's pi / 180).
DEGRA = float("0.0174532925199432957692369076848861271344")
# Points whose projected x or y is this close (in cells) to a cell edge, or whose
# |y| is this close to 1 (a face edge), are recomputed with the C library's tan.
_CELL_MARGIN = 1e-4
_FACE_MARGIN = 1e-9
_MASKS = (
    (16, 0x0000FFFF0000FFFF),
    (8, 0x00FF00FF00FF00FF),
    (4, 0x0F0F0F0F0F0F0F0F),
    (2, 0x3333333333333333),
    (1, 0x5555555555555555),
)


def ang2ipix(ra: npt.ArrayLike, dec: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Q3C pixel numbers of positions (degrees), as SQL ``q3c_ang2ipix(ra, dec)`` gives them.

    Like Q3C, RA outside [0, 360] is wrapped and Dec outside [-90, 90] clamped;
    the values must be finite (the ingest has refused others before).
    """
    ra_in = np.asarray(ra, dtype=np.float64)
    dec_in = np.asarray(dec, dtype=np.float64)
    ra_w = _unwrap(ra_in)
    dec_c = np.clip(dec_in, -90.0, 90.0)
    face = np.fmod((ra_w + 45.0) / 90.0, 4.0).astype(np.int64)
    ra1 = DEGRA * (ra_w - 90.0 * face.astype(np.float64))
    dec1 = DEGRA * dec_c
    x0 = np.tan(ra1)
    td1 = np.tan(dec1)
    y0 = td1 / np.cos(ra1)
    face += 1
    north = y0 > 1
    south = y0 < -1
    polar = north | south
    uncertain = np.abs(np.abs(y0) - 1.0) < _FACE_MARGIN
    if polar.any():
        ra_p = DEGRA * ra_w[polar]
        tmp0 = 1.0 / td1[polar]
        sign = np.where(north[polar], 1.0, -1.0)
        x0[polar] = np.sin(ra_p) * (sign * tmp0)
        y0[polar] = np.cos(ra_p) * (-tmp0)
        face[north] = 0
        face[south] = 5
    x0 = (x0 + 1.0) / 2.0
    y0 = (y0 + 1.0) / 2.0
    xs = x0 * NSIDE
    ys = y0 * NSIDE
    uncertain |= np.abs(xs - np.rint(xs)) < _CELL_MARGIN
    uncertain |= np.abs(ys - np.rint(ys)) < _CELL_MARGIN
    xi = np.minimum(xs.astype(np.int64), NSIDE - 1)
    yi = np.minimum(ys.astype(np.int64), NSIDE - 1)
    ipix = (face << 60) | _spread(xi) | (_spread(yi) << 1)
    for i in np.flatnonzero(uncertain):
        ipix[i] = ang2ipix_one(float(ra_in.flat[i]), float(dec_in.flat[i]))
    return ipix


def ang2ipix_one(ra: float, dec: float) -> int:
    """Q3C pixel number of one position with the C library's functions (see the module doc)."""
    ra_w = _unwrap_one(ra)
    dec_c = min(max(dec, -90.0), 90.0)
    face = int(math.fmod((ra_w + 45.0) / 90.0, 4.0))
    ra1 = DEGRA * (ra_w - 90.0 * float(face))
    dec1 = DEGRA * dec_c
    x0 = math.tan(ra1)
    td1 = math.tan(dec1)
    y0 = td1 / math.cos(ra1)
    face += 1
    if y0 > 1 or y0 < -1:
        ra_p = DEGRA * ra_w
        tmp0 = 1.0 / td1
        if y0 > 1:
            face = 0
            x0 = math.sin(ra_p) * tmp0
        else:
            face = 5
            x0 = math.sin(ra_p) * (-tmp0)
        y0 = math.cos(ra_p) * (-tmp0)
    xi = min(int((x0 + 1.0) / 2.0 * NSIDE), NSIDE - 1)
    yi = min(int((y0 + 1.0) / 2.0 * NSIDE), NSIDE - 1)
    return (face << 60) | _spread_one(xi) | (_spread_one(yi) << 1)


def _unwrap(ra: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    if not ((ra < 0) | (ra > 360)).any():
        return ra
    wrapped = np.fmod(ra, 360.0)
    return np.where(ra < 0, wrapped + 360.0, np.where(ra > 360, wrapped, ra))


def _unwrap_one(ra: float) -> float:
    if ra < 0:
        return math.fmod(ra, 360.0) + 360.0
    if ra > 360:
        return math.fmod(ra, 360.0)
    return ra


def _spread(v: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Move bit k of each value (< 2^30) to bit 2k (Z-order interleaving), by table look-up."""
    table = _spread_table()
    out: npt.NDArray[np.int64] = table[v & 0xFFFF] | (table[v >> 16] << 32)
    return out


@functools.cache
def _spread_table() -> npt.NDArray[np.int64]:
    out: npt.NDArray[Any] = np.arange(1 << 16, dtype=np.int64)
    for shift, mask in _MASKS:
        out = (out | (out << shift)) & mask
    return out


def _spread_one(v: int) -> int:
    for shift, mask in _MASKS:
        v = (v | (v << shift)) & mask
    return v
