"""The report's figures, drawn with matplotlib's Agg canvas into PNG bytes.

Each function takes the :class:`~skyclass.report.data.ReportData` of one model
version and returns a :class:`Plot` (PNG bytes plus a title and a caption
saying how to read it), or None when the rows it needs were not stored. No
pyplot: figures are plain :class:`matplotlib.figure.Figure` objects on an Agg
canvas, so nothing needs a display and no global state leaks between reports.
Colours are the Okabe-Ito palette, which stays distinguishable for
colour-blind readers; PNGs carry no software/version metadata, so the same
rows give the same bytes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from skyclass.report.data import Evaluation, MetricValue, ReportData, confusion_matrix, pick

PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
"""Okabe-Ito colours: candidate first, then one per other evaluation."""
NEUTRAL = "#A9B2BD"
"""Bars whose error bar reaches zero."""
DPI = 110
OUTLIER_DZ = 0.15
HIGHER_IS_BETTER = frozenset(
    {
        "accuracy",
        "balanced_accuracy",
        "roc_auc_macro",
        "roc_auc",
        "purity",
        "completeness",
        "completeness_at_fpr",
    }
)
LOWER_IS_BETTER = frozenset(
    {"log_loss", "brier", "ece", "sigma_nmad", "outlier_fraction", "pit_ks", "crps_mean"}
)

# Any: matplotlib types rc keys as literals, which a shared dict cannot satisfy.
_STYLE: Any = {
    "font.family": "DejaVu Sans",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "grid.linewidth": 0.6,
    "legend.frameon": False,
    "legend.fontsize": 9,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
}

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Plot:
    """One figure of the report: file stem, title, how to read it, and the PNG bytes."""

    name: str
    title: str
    caption: str
    png: bytes


@contextmanager
def new_figure(width: float, height: float) -> Iterator[Figure]:
    """A figure in the report's style (constrained layout, white), drawn off screen."""
    with rc_context(_STYLE):
        fig = Figure(figsize=(width, height), layout="constrained", facecolor="white")
        FigureCanvasAgg(fig)
        yield fig


def figure_png(fig: Figure) -> bytes:
    """``fig`` as PNG bytes at the report's resolution, without a Software tag."""
    buffer = io.BytesIO()
    with rc_context(_STYLE):
        fig.savefig(buffer, format="png", dpi=DPI, facecolor="white", metadata={"Software": None})
    return buffer.getvalue()


def _array(values: Sequence[Any] | None) -> FloatArray:
    """A float array with JSON nulls as NaN."""
    if values is None:
        return np.zeros(0)
    return np.asarray([math.nan if v is None else float(v) for v in values], dtype=np.float64)


def wilson_interval(
    fraction: FloatArray, n: FloatArray, z: float = 1.0
) -> tuple[FloatArray, FloatArray]:
    """Wilson score interval (``z`` standard deviations) of binomial fractions out of ``n``.

    Unlike ``p ± sqrt(p(1-p)/n)`` it stays inside [0, 1] and does not shrink to
    nothing when a small bin is all right or all wrong.
    """
    n = np.maximum(n, 1.0)
    centre = (fraction + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(fraction * (1 - fraction) / n + z * z / (4 * n * n))
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)


def pm(value: MetricValue | None, digits: int = 3) -> str:
    """``mean ± std`` of a metric ("n/a" when undefined, no ± with a single fold)."""
    if value is None or value.mean is None:
        return "n/a"
    # "+ 0.0" turns a mean that rounds to -0.000 into 0.000.
    mean = f"{round(value.mean, digits) + 0.0:.{digits}f}"
    return mean if value.std is None else f"{mean} ± {value.std:.{digits}f}"


def colour_of(data: ReportData, evaluation: Evaluation) -> str:
    """A stable colour per evaluation: the candidate's is the first of :data:`PALETTE`."""
    index = [e.evaluation_id for e in data.evaluations].index(evaluation.evaluation_id)
    return PALETTE[index % len(PALETTE)]


def _n_folds(data: ReportData) -> int:
    return int(data.snapshot.get("n_folds") or 0)


# -- classification ------------------------------------------------------------


def confusion_plot(data: ReportData) -> Plot | None:
    """Confusion matrix of the candidate's out-of-fold predictions: counts and row-normalised."""
    found = confusion_matrix(data.candidate, data.classes)
    if found is None:
        return None
    labels, matrix = found
    counts = np.asarray(matrix, dtype=np.float64)
    k = len(labels)
    rows = counts.sum(axis=1, keepdims=True)
    norm = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    side = min(3.6 + 0.28 * k, 9.0)
    unit = "redshift bin" if data.task == "photoz" else "class"
    with new_figure(2 * side + 1.6, side + 0.4) as fig:
        axes = fig.subplots(1, 2)
        panels = (
            (axes[0], counts, "Counts", "{:,.0f}", float(counts.max()) or 1.0),
            (axes[1], norm, "Row-normalised (diagonal = completeness)", "{:.1%}", 1.0),
        )
        for ax, values, title, fmt, vmax in panels:
            image = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=vmax)
            ax.grid(False)
            ax.set_xticks(
                range(k), labels, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center"
            )
            ax.set_yticks(range(k), labels)
            ax.set_xlabel(f"predicted {unit}")
            ax.set_ylabel(f"true {unit}")
            ax.set_title(title)
            if k <= 12:
                for i in range(k):
                    for j in range(k):
                        dark = values[i, j] > 0.55 * vmax
                        ax.text(
                            j,
                            i,
                            fmt.format(values[i, j]),
                            ha="center",
                            va="center",
                            fontsize=9 if k <= 6 else 7,
                            color="white" if dark else "#1a1a1a",
                            fontweight="bold" if i == j else "normal",
                        )
            fig.colorbar(image, ax=ax, shrink=0.8)
        png = figure_png(fig)
    total = int(counts.sum())
    return Plot(
        "confusion",
        "Confusion matrix",
        f"Out-of-fold predictions of {data.candidate.estimator} pooled over the "
        f"{_n_folds(data)} folds ({total:,} objects): every object is predicted by a model that "
        "never saw it. Rows are the true classes, columns the predicted ones; the right "
        "panel divides each row by its total, so the diagonal is the completeness and the "
        "off-diagonal cells show where each class leaks to.",
        png,
    )


def _roc_points(curve: Any) -> tuple[FloatArray, FloatArray]:
    fpr = _array(pick(curve, "fpr"))
    tpr = _array(pick(curve, "tpr"))
    keep = np.isfinite(fpr) & np.isfinite(tpr) & (fpr > 0)
    return fpr[keep], tpr[keep]


def roc_plot(data: ReportData) -> Plot | None:
    """One-vs-rest ROC per class, log false-positive axis, the fixed-FPR slice marked."""
    candidate = data.candidate
    stage = data.deployed_stage
    shown = [
        c for c in data.classes if candidate.curve("roc", c, stage) or candidate.curve("roc", c)
    ]
    if not shown:
        return None
    target = data.fpr_target
    # The class-prior baseline gives every object the same score: its ROC is the
    # chance diagonal, drawn once as such instead of as a curve per fold prior.
    others = [
        e for e in data.others if e.estimator != "dummy" and any(e.curve("roc", c) for c in shown)
    ]
    ncols = min(len(shown), 3)
    nrows = math.ceil(len(shown) / ncols)
    lowest = 1.0
    with new_figure(4.6 * ncols, 4.1 * nrows + 0.6) as fig:
        axes = fig.subplots(nrows, ncols, squeeze=False)
        for ax, cls in zip(axes.flat, shown, strict=False):
            st = stage if candidate.curve("roc", cls, stage) else "raw"
            for other in others:
                curve = other.curve("roc", cls)
                if curve:
                    fpr, tpr = _roc_points(curve)
                    ax.plot(fpr, tpr, color=colour_of(data, other), lw=1.2, ls="--", alpha=0.9)
            fpr, tpr = _roc_points(candidate.curve("roc", cls, st) or {})
            if fpr.size:
                lowest = min(lowest, float(fpr.min()))
            ax.plot(fpr, tpr, color=PALETTE[0], lw=2.2)
            chance = np.logspace(-6, 0, 100)
            ax.plot(chance, chance, color="0.6", lw=0.9)
            ax.axvline(target, color="0.3", ls=":", lw=1.2)
            cut = candidate.metric("completeness_at_fpr", cls, st)
            threshold = candidate.metric("threshold_at_fpr", cls, st)
            if cut is not None and cut.mean is not None:
                ax.errorbar(
                    [target],
                    [cut.mean],
                    yerr=[[cut.std or 0.0], [cut.std or 0.0]],
                    fmt="o",
                    ms=7,
                    color=PALETTE[1],
                    mec="white",
                    capsize=3,
                    zorder=5,
                )
                text = f"completeness {pm(cut)}\nat FPR {target:.0%}"
                if threshold is not None and threshold.mean is not None:
                    text += f" (p ≥ {threshold.mean:.3g})"
                ax.annotate(
                    text,
                    xy=(target, cut.mean),
                    xytext=(0.97, 0.05),
                    textcoords="axes fraction",
                    ha="right",
                    va="bottom",
                    fontsize=9,
                    arrowprops={"arrowstyle": "->", "color": "0.35", "lw": 1},
                    bbox={"boxstyle": "round,pad=0.35", "fc": "white", "ec": "0.75", "alpha": 0.88},
                )
            auc = candidate.metric("roc_auc", cls, st)
            ax.set_title(f"{cls}   (AUC {pm(auc)})" if auc else cls)
            ax.set_xscale("log")
            ax.set_ylim(0.0, 1.02)
            ax.set_xlabel("false-positive rate (other classes called " + cls + ")")
            ax.set_ylabel("completeness")
        left = max(min(lowest, target / 10) / 1.5, 1e-6)
        for ax in axes.flat[: len(shown)]:
            ax.set_xlim(left, 1.0)
        for ax in axes.flat[len(shown) :]:
            ax.set_visible(False)
        handles = [
            _line(PALETTE[0], "-", 2.2, f"{candidate.estimator} (this model)"),
            *[_line(colour_of(data, e), "--", 1.2, f"{e.estimator} ({e.role})") for e in others],
            _line("0.6", "-", 0.9, "chance"),
            _line("0.3", ":", 1.2, f"FPR {target:.0%}"),
        ]
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 5))
        png = figure_png(fig)
    stage_text = "calibrated" if stage == "calibrated" else "uncalibrated"
    return Plot(
        "roc",
        "ROC curves per class",
        f"One-vs-rest ROC of the pooled out-of-fold {stage_text} probabilities, with a "
        "logarithmic false-positive axis so the low-contamination end a survey selects from "
        f"is visible. The dotted line is the fixed false-positive rate of {target:.0%}; the "
        "point is the completeness reached there (mean ± std over the folds, the value in "
        "the metric table) with the probability threshold that reaches it. Dashed lines: "
        "the baselines of the same training run on the same folds; grey: chance (the "
        "class-prior baseline).",
        png,
    )


def _line(colour: str, style: str, width: float, label: str) -> Any:
    from matplotlib.lines import Line2D

    return Line2D([], [], color=colour, ls=style, lw=width, label=label)


def reliability_plot(data: ReportData) -> Plot | None:
    """Top-label reliability diagram before and after calibration, with bin counts below."""
    candidate = data.candidate
    stages = [s for s in ("raw", "calibrated") if candidate.curve("reliability", "", s)]
    if not stages:
        return None
    styles = {"raw": (PALETTE[1], "o", "before calibration"), "calibrated": (PALETTE[0], "s", "")}
    kind = data.calibration_kind if data.calibration_kind != "none" else "calibrated"
    styles["calibrated"] = (PALETTE[0], "s", f"after calibration ({kind})")
    lowest = floor = 1.0
    with new_figure(7.4, 6.4) as fig:
        grid = fig.add_gridspec(2, 1, height_ratios=(3, 1.1))
        ax = fig.add_subplot(grid[0])
        hist = fig.add_subplot(grid[1], sharex=ax)
        ax.plot([0, 1], [0, 1], color="0.55", ls="--", lw=1, label="perfectly calibrated")
        span = 1.0
        for offset, stage in enumerate(stages):
            curve = candidate.curve("reliability", "", stage) or {}
            edges = _array(pick(curve, "edges", "bin_edges"))
            count = _array(pick(curve, "count", "counts"))
            conf = _array(pick(curve, "confidence", "mean_predicted"))
            acc = _array(pick(curve, "accuracy", "fraction_positive"))
            if edges.size != count.size + 1 or conf.size != count.size or acc.size != count.size:
                continue
            colour, marker, label = styles[stage]
            ece = candidate.metric("ece", "", stage)
            if ece is not None:
                label += f", ECE {pm(ece)}"
            ok = (count > 0) & np.isfinite(conf) & np.isfinite(acc)
            low, high = wilson_interval(acc[ok], count[ok])
            ax.errorbar(
                conf[ok],
                acc[ok],
                yerr=[acc[ok] - low, high - acc[ok]],
                color=colour,
                marker=marker,
                ms=5,
                lw=1.6,
                elinewidth=0.9,
                capsize=2,
                label=label,
            )
            if ok.any():
                floor = min(floor, float(low.min()))
            width = np.diff(edges)
            left = edges[:-1] + width * (0.05 + 0.45 * offset)
            hist.bar(left[ok], count[ok], width=width[ok] * 0.45, align="edge", color=colour)
            if ok.any():
                lowest = min(lowest, float(edges[:-1][ok].min()))
                span = max(span, float(count[ok].max() / max(count[ok].min(), 1.0)))
        lo = math.floor(lowest * 10) / 10
        ax.set_xlim(lo, 1.0)
        ax.set_ylim(max(min(lo, floor) - 0.03, 0.0), 1.02)
        ax.set_ylabel("fraction correct")
        ax.legend(loc="lower right")
        ax.tick_params(labelbottom=False)
        if span > 50:
            hist.set_yscale("log")
        hist.set_xlabel("predicted probability of the top class (confidence)")
        hist.set_ylabel("objects")
        png = figure_png(fig)
    return Plot(
        "reliability",
        "Reliability (calibration) diagram",
        "Each point is one bin of top-class probability: its mean predicted probability "
        "against the fraction of those objects whose top class is right. On the dashed "
        "diagonal, 'p = 0.9' means right 9 times in 10. Below the diagonal the model is "
        "overconfident. Calibrated probabilities are cross-fitted (each fold's map is fitted "
        "on the other folds only), so both curves are honest out-of-fold estimates; ECE is "
        "the count-weighted mean distance from the diagonal (mean ± std over folds). Error "
        "bars: 68% Wilson intervals of each bin's fraction (wide where a bin holds few "
        "objects). Bottom: objects per bin.",
        png,
    )


# -- features ------------------------------------------------------------------


def importance_plot(data: ReportData) -> Plot | None:
    """Feature importance of the candidate as horizontal bars with error bars."""
    rows = data.candidate.importance
    if not rows:
        return None
    methods = sorted({r.method for r in rows})
    settings = data.run.get("settings")
    metric = settings.get("importance_metric") if isinstance(settings, dict) else None
    if metric in LOWER_IS_BETTER:
        what = f"increase of {metric}"
    elif isinstance(metric, str):
        what = f"decrease of {metric}"
    else:
        what = "degradation of the score"
    n_features = max(sum(1 for r in rows if r.method == m) for m in methods)
    with new_figure(6.2 * len(methods) + 0.6, 0.34 * n_features + 1.6) as fig:
        axes = fig.subplots(1, len(methods), squeeze=False)[0]
        for ax, method in zip(axes, methods, strict=True):
            part = sorted((r for r in rows if r.method == method), key=lambda r: r.mean)
            y = np.arange(len(part))
            means = np.asarray([r.mean for r in part])
            stds = np.asarray([r.std for r in part])
            colours = [
                PALETTE[0] if m - s > 0 else NEUTRAL for m, s in zip(means, stds, strict=True)
            ]
            ax.barh(
                y,
                means,
                xerr=stds,
                color=colours,
                capsize=3,
                height=0.7,
                error_kw={"ecolor": "0.25", "lw": 1},
            )
            ax.set_yticks(y, [r.feature for r in part])
            ax.axvline(0.0, color="0.3", lw=0.8)
            ax.grid(axis="y", visible=False)
            ax.set_title(f"{method} importance")
            ax.set_xlabel(f"{what} when the feature is shuffled")
        png = figure_png(fig)
    return Plot(
        "importance",
        "Feature importance",
        f"How much worse {data.candidate.estimator} gets when one feature's values are "
        "shuffled among the objects (mean ± std over the repeats); positive means the model "
        "relies on the feature (grey: the error bar reaches zero). Correlated features "
        "(magnitudes and the colours built from them) share credit, so a small bar does not "
        "mean the information is useless"
        + (": see the ablation below." if data.ablations else "."),
        png,
    )


def _ablation_colour(metric: str, mean: float, std: float) -> str:
    """Blue when the model is worse without the group by more than the fold scatter,
    orange when better, grey when the change is within one standard deviation of 0."""
    if abs(mean) <= std:
        return NEUTRAL
    worse = mean > 0 if metric in LOWER_IS_BETTER else mean < 0
    return PALETTE[0] if worse else PALETTE[1]


def ablation_plot(data: ReportData) -> Plot | None:
    """Metric change with error bars when each feature group is dropped and the model retrained."""
    rows = [a for a in data.ablations if a.estimator == data.candidate.estimator]
    rows = rows or list(data.ablations)
    if not rows:
        return None
    metrics = list(dict.fromkeys(a.metric for a in rows))
    groups = list(dict.fromkeys(a.group for a in rows))
    ncols = min(len(metrics), 3)
    nrows = math.ceil(len(metrics) / ncols)
    with new_figure(4.8 * ncols + 1.4, max(0.55 * len(groups) + 1.6, 3.0) * nrows) as fig:
        axes = fig.subplots(nrows, ncols, squeeze=False)
        for ax, metric in zip(axes.flat, metrics, strict=False):
            part = {a.group: a for a in rows if a.metric == metric}
            present = [g for g in groups if g in part]
            y = np.arange(len(present))[::-1]
            means = np.asarray([part[g].delta_mean for g in present])
            stds = np.asarray([part[g].delta_std for g in present])
            colours = [_ablation_colour(metric, m, s) for m, s in zip(means, stds, strict=True)]
            ax.barh(
                y,
                means,
                xerr=stds,
                color=colours,
                height=0.6,
                capsize=3,
                error_kw={"ecolor": "0.25", "lw": 1},
            )
            ax.axvline(0.0, color="0.3", lw=0.8)
            ax.set_yticks(y, [_group_label(part[g].group, part[g].features) for g in present])
            ax.grid(axis="y", visible=False)
            ax.set_title(f"Δ {metric}")
            ax.set_xlabel("without the group - full model")
        for ax in axes.flat[len(metrics) :]:
            ax.set_visible(False)
        png = figure_png(fig)
    estimator = rows[0].estimator
    return Plot(
        "ablation",
        "Ablation of feature groups",
        f"{estimator} retrained without each feature group on the same folds as the full "
        "model; bars are the paired per-fold change (ablated - full), mean ± std over the "
        "folds. Blue: the model is worse without the group by more than the fold-to-fold "
        "scatter, so the group carries information the other features do not; orange: it "
        "is better without it; grey: no change beyond one standard deviation.",
        png,
    )


def _group_label(group: str, features: Sequence[str]) -> str:
    listed = ", ".join(features)
    if len(listed) > 28:
        listed = listed[:26] + "…"
    return f"{group}\n({listed})"


# -- photometric redshifts -----------------------------------------------------


def _photoz_curve(data: ReportData, name: str) -> Any:
    stage = data.deployed_stage
    return data.candidate.curve(name, "", stage) or data.candidate.curve(name)


def _metric_any(data: ReportData, name: str) -> MetricValue | None:
    c = data.candidate
    return c.metric(name, "", data.deployed_stage) or c.metric(name)


def pit_plot(data: ReportData) -> Plot | None:
    """PIT histogram with the uniform line and its one-sigma band."""
    curve = _photoz_curve(data, "pit_histogram")
    if not curve:
        return None
    edges = _array(pick(curve, "edges", "bin_edges"))
    counts = _array(pick(curve, "counts", "count"))
    if edges.size != counts.size + 1 or counts.sum() <= 0:
        return None
    n = float(counts.sum())
    width = np.diff(edges)
    density = counts / (n * width)
    p = width / (edges[-1] - edges[0])
    sigma = np.sqrt(n * p * (1 - p)) / (n * width)
    with new_figure(7.0, 4.8) as fig:
        ax = fig.subplots()
        ax.bar(
            edges[:-1],
            density,
            width=width,
            align="edge",
            color=PALETTE[0],
            alpha=0.85,
            edgecolor="white",
            label="out-of-fold PIT values",
        )
        ax.stairs(
            1 + sigma,
            edges,
            baseline=1 - sigma,
            fill=True,
            color=PALETTE[1],
            alpha=0.18,
            label="uniform ±1\N{GREEK SMALL LETTER SIGMA} (counting noise)",
        )
        ax.axhline(1.0, color=PALETTE[1], lw=2, label="uniform: calibrated PDFs")
        ks = _metric_any(data, "pit_ks")
        title = f"PIT histogram ({int(n):,} objects)"
        if ks is not None:
            title += f", KS distance {pm(ks)}"
        ax.set_title(title)
        ax.set_xlim(edges[0], edges[-1])
        ax.set_ylim(0, max(float(density.max()), float((1 + sigma).max())) * 1.08)
        ax.set_xlabel("PIT = CDF of the predicted PDF at the spectroscopic redshift")
        ax.set_ylabel("density")
        fig.legend(loc="outside lower center", ncol=3, fontsize=8.5)
        png = figure_png(fig)
    return Plot(
        "pit",
        "PIT histogram",
        "The probability integral transform of each object's PDF at its true redshift. "
        "Calibrated PDFs give a flat histogram at 1. A U shape means the PDFs are too "
        "narrow (overconfident), a hump that they are too wide, and a slope a bias.",
        png,
    )


def zphot_zspec_plot(data: ReportData) -> Plot | None:
    """z_phot against z_spec with the ±0.15(1+z) outlier lines, and the scaled residual below."""
    curve = _photoz_curve(data, "zphot_zspec")
    if not curve:
        return None
    zs = _array(pick(curve, "z_spec"))
    zp = _array(pick(curve, "z_phot"))
    if zs.size == 0 or zs.size != zp.size:
        return None
    ok = np.isfinite(zs) & np.isfinite(zp) & (zs > -1)
    zs, zp = zs[ok], zp[ok]
    dz = (zp - zs) / (1 + zs)
    hi = float(max(zs.max(), zp.max())) * 1.04
    lo = min(0.0, float(min(zs.min(), zp.min())))
    z = np.linspace(lo, hi, 200)
    point = str(curve.get("point", "median"))
    with new_figure(7.0, 7.6) as fig:
        grid = fig.add_gridspec(2, 1, height_ratios=(3, 1.2))
        ax = fig.add_subplot(grid[0])
        res = fig.add_subplot(grid[1], sharex=ax)
        if zs.size > 2000:
            cells = ax.hexbin(
                zs, zp, gridsize=70, bins="log", mincnt=1, cmap="viridis", extent=(lo, hi, lo, hi)
            )
            fig.colorbar(cells, ax=ax, label="objects per cell", shrink=0.85)
            res.hexbin(
                zs,
                dz,
                gridsize=(70, 20),
                bins="log",
                mincnt=1,
                cmap="viridis",
                extent=(lo, hi, -0.5, 0.5),
            )
        else:
            ax.scatter(zs, zp, s=5, alpha=0.45, color=PALETTE[0], lw=0)
            res.scatter(zs, dz, s=5, alpha=0.45, color=PALETTE[0], lw=0)
        ax.plot(z, z, color="0.15", lw=1.2, label="z_phot = z_spec")
        ax.plot(
            z,
            z + OUTLIER_DZ * (1 + z),
            color=PALETTE[1],
            ls="--",
            lw=1.3,
            label="±0.15 (1 + z): outlier limits",
        )
        ax.plot(z, z - OUTLIER_DZ * (1 + z), color=PALETTE[1], ls="--", lw=1.3)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal", adjustable="box")
        ax.set_ylabel(f"z_phot (PDF {point})")
        ax.legend(loc="upper left")
        ax.tick_params(labelbottom=False)
        lines = [
            f"\N{GREEK SMALL LETTER SIGMA}_NMAD = {pm(_metric_any(data, 'sigma_nmad'), 4)}",
            f"outliers η = {pm(_metric_any(data, 'outlier_fraction'), 4)}",
            f"bias (median) = {pm(_metric_any(data, 'bias_median'), 4)}",
            _shown(zs.size, curve.get("n_total")),
        ]
        ax.text(
            0.97,
            0.04,
            "\n".join(lines),
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=9,
            bbox={"boxstyle": "round,pad=0.4", "fc": "white", "ec": "0.75"},
        )
        for level, style in ((0.0, "-"), (OUTLIER_DZ, "--"), (-OUTLIER_DZ, "--")):
            res.axhline(level, color="0.15" if level == 0 else PALETTE[1], ls=style, lw=1.1)
        res.set_ylim(-0.5, 0.5)
        res.set_xlabel("z_spec")
        res.set_ylabel("Δz / (1 + z_spec)")
        png = figure_png(fig)
    return Plot(
        "zphot_zspec",
        "Photometric against spectroscopic redshift",
        "Out-of-fold point estimates against the spectroscopic redshifts. Objects outside "
        "the dashed lines, |Δz| > 0.15 (1 + z_spec), are catastrophic outliers (η); "
        "\N{GREEK SMALL LETTER SIGMA}_NMAD is the robust scatter of Δz / (1 + z_spec) "
        "(mean ± std over the folds).",
        png,
    )


def _shown(n: int, total: Any) -> str:
    if isinstance(total, int) and total > n:
        return f"{n:,} of {total:,} objects shown"
    return f"{n:,} objects"


def coverage_plot(data: ReportData) -> Plot | None:
    """Empirical against nominal coverage of the central PDF intervals."""
    curve = _photoz_curve(data, "coverage") or {}
    # Levels with a coverage_NN metric row carry a K-fold error bar; the curve
    # (pooled over folds) may add more levels without one.
    measured: dict[float, MetricValue] = {}
    for name, class_name, _stage in data.candidate.metrics:
        digits = name.removeprefix("coverage_")
        if name.startswith("coverage_") and digits.isdigit() and not class_name:
            value = _metric_any(data, name)
            if value is not None and value.mean is not None:
                measured[int(digits) / 100] = value
    nominal = [float(v) for v in pick(curve, "nominal") or []]
    empirical = [float(v) for v in pick(curve, "observed", "empirical") or []]
    if not nominal or len(nominal) != len(empirical):
        nominal = sorted(measured)
        empirical = [float(measured[c].mean or 0.0) for c in nominal]
    if not nominal or len(nominal) != len(empirical):
        return None
    with new_figure(5.8, 5.2) as fig:
        ax = fig.subplots()
        ax.plot([0, 1], [0, 1], color="0.55", ls="--", lw=1, label="nominal = empirical")
        ax.plot(
            nominal,
            empirical,
            "o-",
            color=PALETTE[0],
            ms=5,
            lw=1.6,
            label="central intervals of the PDFs (pooled)",
        )
        for level, value in sorted(measured.items()):
            assert value.mean is not None
            ax.errorbar(
                [level],
                [value.mean],
                yerr=[value.std or 0.0],
                fmt="s",
                ms=8,
                color=PALETTE[1],
                capsize=4,
                zorder=5,
            )
            ax.annotate(
                f"{level:.0%} interval holds {pm(value)}",
                (level, value.mean),
                xytext=(-14, 0),
                textcoords="offset points",
                ha="right",
                va="center",
                fontsize=9,
                bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "0.8"},
            )
        if measured:
            ax.plot([], [], "s", color=PALETTE[1], ms=8, label="mean ± std over the folds")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("nominal coverage")
        ax.set_ylabel("fraction of z_spec inside the interval")
        ax.legend(loc="lower right")
        png = figure_png(fig)
    return Plot(
        "coverage",
        "Interval coverage",
        "How often the spectroscopic redshift falls inside each object's central PDF "
        "interval. Points below the diagonal mean intervals too narrow (overconfident), "
        "above it too wide. The line uses every object at once; the squares are the "
        "per-fold mean ± std of the levels in the metric table.",
        png,
    )


PlotFunction = Callable[[ReportData], Plot | None]
CLASSIFICATION_PLOTS: tuple[PlotFunction, ...] = (
    confusion_plot,
    roc_plot,
    reliability_plot,
    importance_plot,
    ablation_plot,
)
PHOTOZ_PLOTS: tuple[PlotFunction, ...] = (
    zphot_zspec_plot,
    pit_plot,
    coverage_plot,
    reliability_plot,
    confusion_plot,
    importance_plot,
    ablation_plot,
)


def render_plots(data: ReportData) -> list[Plot]:
    """Every figure the stored rows allow, in reading order for the model's task."""
    from skyclass.report.domain import domain_plots

    # Imported here: the drift figures use this module's helpers.
    from skyclass.report.drift_plots import DRIFT_PLOTS

    functions = PHOTOZ_PLOTS if data.task == "photoz" else CLASSIFICATION_PLOTS
    plots = [plot for plot in (f(data) for f in (*functions, *DRIFT_PLOTS)) if plot is not None]
    return plots + domain_plots(data.domain)
