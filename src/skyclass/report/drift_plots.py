"""The report's drift figures: a sky map of drift by region and drift by magnitude.

Both read :attr:`~skyclass.report.data.ReportData.drift`, the summary of the
newest scoring run of the version (``skyclass.drift_summary`` and
``skyclass.drift``), and are left out when no run has one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.colors import BoundaryNorm, ListedColormap

from skyclass.report.data import DriftBin, DriftData, ReportData
from skyclass.report.plots import PALETTE, Plot, figure_png, new_figure

# PSI levels: below 0.1 no drift, 0.1-0.25 warn, 0.25 and above alert (docs/drift.md).
_LEVELS = (0.0, 0.1, 0.25, 10.0)
_LEVEL_COLOURS = ListedColormap(["#009E73", "#E69F00", "#D55E00"])
_NORM = BoundaryNorm(_LEVELS, _LEVEL_COLOURS.N)


def _where(drift: DriftData) -> str:
    name = drift.deployment or "the model version"
    return f"scoring run {drift.run_id} of {name} on catalog {drift.catalog}"


def _sky_panel(
    ax: Any, regions: tuple[DriftBin, ...], values: list[float | None], title: str
) -> None:
    shown = [
        (r, v)
        for r, v in zip(regions, values, strict=True)
        if r.ra is not None and r.dec is not None
    ]
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if not shown:
        return
    ra = np.asarray([r.ra for r, _ in shown], dtype=float)
    dec = np.asarray([r.dec for r, _ in shown], dtype=float)
    # Astronomers' convention: RA grows to the left, 0 h in the middle.
    x = -np.radians(np.where(ra > 180, ra - 360, ra))
    y = np.radians(dec)
    size = 12 + 140 * np.sqrt(
        np.asarray([r.n_objects for r, _ in shown], dtype=float)
        / max(r.n_objects for r, _ in shown)
    )
    low = np.asarray([v is None for _, v in shown])
    value = np.asarray([0.0 if v is None else min(v, 9.9) for _, v in shown])
    ax.scatter(x[low], y[low], s=size[low], facecolors="none", edgecolors="0.55", lw=0.8)
    ax.scatter(
        x[~low],
        y[~low],
        s=size[~low],
        c=value[~low],
        cmap=_LEVEL_COLOURS,
        norm=_NORM,
        edgecolors="0.2",
        lw=0.4,
    )
    ax.set_xticks(np.radians([-150, -120, -90, -60, -30, 0, 30, 60, 90, 120, 150]))
    ax.set_xticklabels(
        ["330°", "300°", "270°", "240°", "210°", "", "150°", "120°", "90°", "60°", "30°"],
        fontsize=7,
    )


def sky_drift_plot(data: ReportData) -> Plot | None:
    """Mollweide map of the regions, coloured by the worst feature PSI (training, previous run)."""
    drift = data.drift
    if drift is None or not any(r.ra is not None for r in drift.regions):
        return None
    panels = [("against the training snapshot", [r.training for r in drift.regions])]
    if drift.previous_run_id is not None:
        panels.append((f"against run {drift.previous_run_id}", [r.previous for r in drift.regions]))
    with new_figure(6.4 * len(panels), 3.9) as fig:
        axes = [
            fig.add_subplot(1, len(panels), k + 1, projection="mollweide")
            for k in range(len(panels))
        ]
        for ax, (title, values) in zip(axes, panels, strict=True):
            _sky_panel(ax, drift.regions, values, title)
        mappable = axes[0].collections[-1] if axes[0].collections else None
        if mappable is not None:
            bar = fig.colorbar(mappable, ax=axes, orientation="horizontal", shrink=0.5, pad=0.02)
            bar.set_ticks([0.05, 0.175, 0.3])
            bar.set_ticklabels(["PSI < 0.1", "0.1-0.25 warn", "≥ 0.25 alert"])
        png = figure_png(fig)
    return Plot(
        "drift_sky",
        "Drift by sky region",
        f"Each HEALPix region (nside 4, equal areas of 215 deg²) of {_where(drift)}, drawn at "
        "the mean position of its objects with a size growing with their number, coloured by "
        "the worst population stability index of any feature: against the training snapshot "
        "(left; a region unlike the training mix as a whole) and against the previous run of the "
        "same deployment (right; what changed since). Open circles: fewer than 500 objects, not "
        "judged. `skyclass drift` lists the values.",
        png,
    )


def magnitude_drift_plot(data: ReportData) -> Plot | None:
    """Objects and drift per magnitude bin: counts as bars, PSI against training as points."""
    drift = data.drift
    bins = [] if drift is None else [b for b in drift.magnitudes if b.bin >= 0]
    if drift is None or not bins:
        return None
    centre = []
    for b in bins:
        if b.low is not None and b.high is not None:
            centre.append((b.low + b.high) / 2)
        elif b.high is not None:
            centre.append(b.high - 0.25)
        else:
            centre.append((b.low or 0.0) + 0.25)
    x = np.asarray(centre)
    with new_figure(7.2, 3.6) as fig:
        ax = fig.add_subplot(1, 1, 1)
        counts = ax.twinx()
        counts.bar(x, [b.n_objects for b in bins], width=0.45, color="0.85", zorder=0)
        counts.set_ylabel("objects in the run")
        counts.grid(False)
        ax.set_zorder(counts.get_zorder() + 1)
        ax.patch.set_visible(False)
        feat = [np.nan if b.training is None else b.training for b in bins]
        cls = [np.nan if b.class_psi is None else b.class_psi for b in bins]
        ax.plot(x, feat, "o-", color=PALETTE[0], label="worst feature PSI vs training")
        ax.plot(x, cls, "s--", color=PALETTE[1], label="predicted classes PSI vs training labels")
        if drift.previous_run_id is not None:
            prev = [np.nan if b.previous is None else b.previous for b in bins]
            ax.plot(
                x,
                prev,
                "^:",
                color=PALETTE[2],
                label=f"worst feature PSI vs run {drift.previous_run_id}",
            )
        ax.axhline(0.1, color="#E69F00", lw=0.8, ls="--")
        ax.axhline(0.25, color="#D55E00", lw=0.8, ls="--")
        ax.set_xlabel(f"{drift.magnitude_feature or 'magnitude'} (0.5 mag bins)")
        ax.set_ylabel("PSI")
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper left")
        png = figure_png(fig)
    return Plot(
        "drift_magnitude",
        "Drift by magnitude",
        f"The objects of {_where(drift)} in bins of {drift.magnitude_feature or 'magnitude'} "
        "(grey bars, right axis) and, per bin, the worst feature PSI against the training "
        "objects of the same bin, the PSI of the predicted classes against the training labels "
        "of that bin and, when there is one, the worst feature PSI against the previous run. "
        "Dashed lines: 0.1 (warn) and 0.25 (alert). Missing points: fewer than 500 objects on "
        "one side (a bin the training set barely covers is itself a warning sign).",
        png,
    )


DRIFT_PLOTS = (sky_drift_plot, magnitude_drift_plot)
