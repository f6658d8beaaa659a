"""Coverage and calibration per OOD quintile: the table and the figure of the uncertainty check.

The quintiles are the training-percentile bins [0, 20), ..., [80, 99) of the
OOD score (a percentile of held-out training scores, so these are the score's
own quintiles; 99 and above is out of domain). :func:`coverage_by_quintile`
and :func:`ece_by_quintile` compute the rows from arrays, :func:`markdown_table`
prints them as in docs/results.md and :func:`coverage_plot` draws coverage
against nominal per quintile (PNG bytes, Agg canvas, no pyplot).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from skyclass.probability.conformal import FLAG_OK, Intervals, top_label_ece

QUINTILES: tuple[tuple[float, float], ...] = (
    (0.0, 20.0),
    (20.0, 40.0),
    (40.0, 60.0),
    (60.0, 80.0),
    (80.0, 99.0),
)
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7")


@dataclass(frozen=True)
class QuintileRow:
    """One method's value per OOD quintile (NaN where the quintile has no object)."""

    method: str
    what: str
    values: tuple[float, ...]
    counts: tuple[int, ...]


BoolArray = npt.NDArray[np.bool_]


def _quintile_masks(pct: npt.NDArray[np.float64], ok: BoolArray) -> list[BoolArray]:
    return [np.asarray(ok & (pct >= lo) & (pct < hi)) for lo, hi in QUINTILES]


def coverage_by_quintile(
    method: str,
    intervals: Intervals,
    percentile: npt.ArrayLike,
    z: npt.ArrayLike,
    levels: Sequence[float] = (0.68, 0.95),
) -> list[QuintileRow]:
    """Coverage of each level per quintile, among the objects that got an interval."""
    pct = np.asarray(percentile, dtype=np.float64)
    masks = _quintile_masks(pct, np.asarray(intervals.flag == FLAG_OK))
    rows = []
    for level in levels:
        covered = intervals.covered(z, level)
        rows.append(
            QuintileRow(
                method=method,
                what=f"coverage {round(100 * level)}%",
                values=tuple(float(covered[m].mean()) if m.any() else math.nan for m in masks),
                counts=tuple(int(m.sum()) for m in masks),
            )
        )
    return rows


def ece_by_quintile(
    method: str,
    proba: npt.ArrayLike,
    y_index: npt.ArrayLike,
    percentile: npt.ArrayLike,
    ok: npt.ArrayLike | None = None,
) -> QuintileRow:
    """Top-label ECE per quintile (rows where ``ok``; NaN probabilities are never ok)."""
    p = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y_index, dtype=np.intp)
    pct = np.asarray(percentile, dtype=np.float64)
    keep: BoolArray = np.asarray(~np.isnan(p).any(axis=1))
    if ok is not None:
        keep = np.asarray(keep & np.asarray(ok, dtype=bool))
    masks = _quintile_masks(pct, keep)
    return QuintileRow(
        method=method,
        what="ECE",
        values=tuple(top_label_ece(p[m], y[m]) if m.any() else math.nan for m in masks),
        counts=tuple(int(m.sum()) for m in masks),
    )


def markdown_table(rows: Sequence[QuintileRow], title: str = "method") -> str:
    """Rows as a Markdown table: one column per quintile, object counts in the header."""
    head = [f"[{lo:g}, {hi:g})" for lo, hi in QUINTILES]
    counts = rows[0].counts if rows else ()
    if counts:
        head = [f"{h} (n={n})" for h, n in zip(head, counts, strict=True)]
    lines = [
        "| " + " | ".join([title, "measure", *head]) + " |",
        "|" + "---|" * (2 + len(head)),
    ]
    for row in rows:
        cells = ["-" if math.isnan(v) else f"{v:.3f}" for v in row.values]
        lines.append("| " + " | ".join([row.method, row.what, *cells]) + " |")
    return "\n".join(lines)


def coverage_plot(rows: Sequence[QuintileRow], nominal: Mapping[str, float], title: str) -> bytes:
    """Coverage per quintile, one line per method and level, with the nominal +-3 point band."""
    fig = Figure(figsize=(6.4, 3.6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = np.arange(len(QUINTILES))
    methods = sorted({r.method for r in rows})
    for what, level in nominal.items():
        ax.axhspan(level - 0.03, level + 0.03, color="#DDDDDD", zorder=0)
        ax.axhline(level, color="#888888", lw=0.8, zorder=1)
        for k, method in enumerate(methods):
            for r in rows:
                if r.method == method and r.what == what:
                    style = "-" if "95" in what else "--"
                    label = f"{method}, {what}"
                    ax.plot(x, r.values, style, marker="o", color=PALETTE[k % 4], label=label)
    ax.set_xticks(x, [f"{lo:g}-{hi:g}" for lo, hi in QUINTILES])
    ax.set_xlabel("OOD percentile (training quintiles; 99+ gets no interval)")
    ax.set_ylabel("coverage")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()
