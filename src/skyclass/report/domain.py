"""The report's domain section: where the model can be trusted on each catalog it was applied to.

For the newest domain fit of the version on each catalog (``skyclass domain``):
the training snapshot's feature distributions against the catalog's, the
catalog's propensities and importance weights, the expected metrics beside the
cross-validated ones with their error bars and reliability verdict, and a sky
map of the catalog coloured by propensity, with the objects the training data
does not cover marked. When ``skyclass.domain_object`` carries an
out-of-distribution column (any numeric column whose name starts with
``ood``), the map gets a second panel coloured by it.

Reading is one set of bounded queries per fit: histograms are computed in the
database, feature and sky samples are at most :data:`FEATURE_SAMPLE` and
:data:`SKY_SAMPLE` rows.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

FEATURE_SAMPLE = 5_000
SKY_SAMPLE = 20_000
MAX_FEATURES = 9
PROPENSITY_BINS = 20
WEIGHT_BINS = 30


@dataclass(frozen=True)
class DomainMetric:
    """One expected metric of a fit, beside its unweighted CV value."""

    name: str
    class_name: str
    value: float | None
    std: float | None
    unweighted: float | None
    n_effective: float


@dataclass(frozen=True)
class DomainView:
    """The newest domain fit of the version on one catalog, as the report shows it."""

    domain_shift_id: int
    catalog: str
    auc: float
    auc_std: float
    n_train: int
    n_catalog: int
    n_effective: float
    reliable: bool
    problems: tuple[str, ...]
    uncovered_fraction: float
    uncovered_threshold: float
    scorer: str
    created_at: Any
    metrics: tuple[DomainMetric, ...]
    feature_names: tuple[str, ...]
    train_x: npt.NDArray[np.float64] = field(repr=False)
    catalog_x: npt.NDArray[np.float64] = field(repr=False)
    propensity_counts: tuple[int, ...] = ()
    weight_edges: tuple[float, ...] = ()
    weight_counts: tuple[int, ...] = ()
    sky: npt.NDArray[np.float64] | None = field(default=None, repr=False)
    ood_column: str | None = None


def _sample_x(
    conn: psycopg.Connection[Any], table: sql.Composable, n_features: int
) -> npt.NDArray[np.float64]:
    rows = conn.execute(
        sql.SQL(
            "SELECT x FROM {} WHERE x IS NOT NULL ORDER BY hashint8(object_id) LIMIT %s"
        ).format(table),
        (FEATURE_SAMPLE,),
    ).fetchall()
    out = np.full((len(rows), n_features), np.nan)
    for i, (x,) in enumerate(rows):
        values = [np.nan if v is None else float(v) for v in x[:n_features]]
        out[i, : len(values)] = values
    return out


def _ood_column(conn: psycopg.Connection[Any]) -> str | None:
    row = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'skyclass' "
        "AND table_name = 'domain_object' AND column_name LIKE 'ood%%' "
        "AND data_type IN ('real', 'double precision', 'numeric', 'integer', 'smallint') "
        "ORDER BY ordinal_position LIMIT 1"
    ).fetchone()
    return None if row is None else str(row[0])


def read_domain_views(conn: psycopg.Connection[Any], model_version_id: int) -> list[DomainView]:
    """The newest domain fit of ``model_version_id`` per catalog (empty when there is none).

    A role that may not read the domain tables gets an empty list.
    """
    allowed = conn.execute(
        "SELECT to_regclass('skyclass.domain_shift') IS NOT NULL AND "
        "has_table_privilege('skyclass.domain_shift', 'SELECT') AND "
        "has_table_privilege('skyclass.domain_object', 'SELECT')"
    ).fetchone()
    if not allowed or not allowed[0]:
        return []
    fits = conn.execute(
        "SELECT DISTINCT ON (d.catalog_name) d.domain_shift_id, d.catalog_name, d.auc, "
        "d.auc_std, d.n_train, d.n_catalog, d.n_effective, d.reliable, d.problems, "
        "d.uncovered_fraction, d.uncovered_threshold, d.scorer, d.created_at, d.feature_set_id, "
        "d.catalog_id FROM skyclass.domain_shift AS d WHERE d.model_version_id = %s "
        "ORDER BY d.catalog_name, d.created_at DESC, d.domain_shift_id DESC",
        (model_version_id,),
    ).fetchall()
    if not fits:
        return []
    ood = _ood_column(conn)
    version = conn.execute(
        "SELECT s.table_name, f.feature_names FROM skyclass.model_version AS v "
        "JOIN skyclass.training_snapshot AS s USING (snapshot_id) "
        "JOIN skyclass.feature_set AS f ON f.feature_set_id = v.feature_set_id "
        "WHERE v.model_version_id = %s",
        (model_version_id,),
    ).fetchone()
    assert version is not None
    names = tuple(str(n) for n in version[1])
    shown = min(len(names), MAX_FEATURES)
    train_x = _sample_x(conn, sql.Identifier("snapshots", str(version[0])), shown)
    views = []
    for fit in fits:
        shift_id = int(fit[0])
        metrics = tuple(
            DomainMetric(str(r[0]), str(r[1]), r[2], r[3], r[4], float(r[5]))
            for r in conn.execute(
                "SELECT name, class_name, value, std, unweighted, n_effective "
                "FROM skyclass.domain_metric WHERE domain_shift_id = %s ORDER BY name, class_name",
                (shift_id,),
            )
        )
        table = conn.execute(
            "SELECT table_name FROM skyclass.feature_set WHERE feature_set_id = %s", (fit[13],)
        ).fetchone()
        catalog_x = (
            _sample_x(conn, sql.Identifier("features", str(table[0])), shown)
            if table is not None
            else np.zeros((0, shown))
        )
        counts = [0] * PROPENSITY_BINS
        for b, n in conn.execute(
            "SELECT least(width_bucket(propensity, 0, 1, %s), %s), count(*) "
            "FROM skyclass.domain_object WHERE domain_shift_id = %s GROUP BY 1",
            (PROPENSITY_BINS, PROPENSITY_BINS, shift_id),
        ):
            counts[int(b) - 1] = int(n)
        weight_row = conn.execute(
            "SELECT min(weight), max(weight) FROM skyclass.domain_object "
            "WHERE domain_shift_id = %s",
            (shift_id,),
        ).fetchone()
        w_edges: tuple[float, ...] = ()
        w_counts: tuple[int, ...] = ()
        if weight_row is not None and weight_row[0] is not None:
            lo, hi = math.log10(float(weight_row[0])), math.log10(float(weight_row[1]))
            hi = max(hi, lo + 1e-6)
            w_edges = tuple(float(v) for v in np.logspace(lo, hi, WEIGHT_BINS + 1))
            wc = [0] * WEIGHT_BINS
            for b, n in conn.execute(
                "SELECT least(greatest(width_bucket(log(weight::numeric)::float8, %s, %s, %s), "
                "1), %s), count(*) FROM skyclass.domain_object WHERE domain_shift_id = %s "
                "GROUP BY 1",
                (lo, hi, WEIGHT_BINS, WEIGHT_BINS, shift_id),
            ):
                wc[int(b) - 1] += int(n)
            w_counts = tuple(wc)
        views.append(
            DomainView(
                domain_shift_id=shift_id,
                catalog=str(fit[1]),
                auc=float(fit[2]),
                auc_std=float(fit[3]),
                n_train=int(fit[4]),
                n_catalog=int(fit[5]),
                n_effective=float(fit[6]),
                reliable=bool(fit[7]),
                problems=tuple(fit[8]),
                uncovered_fraction=float(fit[9]),
                uncovered_threshold=float(fit[10]),
                scorer=str(fit[11]),
                created_at=fit[12],
                metrics=metrics,
                feature_names=names[:shown],
                train_x=train_x,
                catalog_x=catalog_x,
                propensity_counts=tuple(counts),
                weight_edges=w_edges,
                weight_counts=w_counts,
                sky=_sky(conn, fit[14], shift_id, ood),
                ood_column=ood,
            )
        )
    return views


def _sky(
    conn: psycopg.Connection[Any], catalog_id: int | None, shift_id: int, ood: str | None
) -> npt.NDArray[np.float64] | None:
    """Up to SKY_SAMPLE rows of (ra, dec, propensity[, ood]).

    None when the catalog has no sky positions or this role may not read it.
    """
    if catalog_id is None:
        return None
    cat = conn.execute(
        "SELECT schema_name, table_name, ra_column IS NOT NULL AND dec_column IS NOT NULL "
        "AND has_table_privilege(format('%%I.%%I', schema_name, table_name), 'SELECT') "
        "FROM skyclass.catalog WHERE catalog_id = %s",
        (catalog_id,),
    ).fetchone()
    if cat is None or not cat[2]:
        return None
    # Catalog tables have object_id, ra and dec whatever the source called them.
    extra = sql.SQL(", o.{}::float8").format(sql.Identifier(ood)) if ood else sql.SQL("")
    query = sql.SQL(
        "SELECT c.ra::float8, c.dec::float8, o.propensity::float8{extra} "
        "FROM skyclass.domain_object AS o JOIN {table} AS c ON c.object_id = o.object_id "
        "WHERE o.domain_shift_id = %s ORDER BY hashint8(o.object_id) LIMIT %s"
    ).format(extra=extra, table=sql.Identifier(cat[0], cat[1]))
    rows = conn.execute(query, (shift_id, SKY_SAMPLE)).fetchall()
    if not rows:
        return None
    return np.asarray(rows, dtype=np.float64)


# -- plots ------------------------------------------------------------------------------------
def domain_plots(views: Sequence[DomainView]) -> list[Any]:
    """Feature distributions, propensities and weights, and the sky map of each fit."""
    from skyclass.report.plots import Plot, figure_png, new_figure

    plots: list[Plot] = []
    for k, view in enumerate(views):
        suffix = f"-{k + 1}" if len(views) > 1 else ""
        n = len(view.feature_names)
        if n and view.catalog_x.size and view.train_x.size:
            cols = min(3, n)
            rows = math.ceil(n / cols)
            with new_figure(3.0 * cols, 2.2 * rows) as fig:
                axes = fig.subplots(rows, cols, squeeze=False)
                for i, name in enumerate(view.feature_names):
                    ax = axes[i // cols][i % cols]
                    a, b = view.train_x[:, i], view.catalog_x[:, i]
                    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
                    both = np.r_[a, b]
                    if both.size == 0:
                        continue
                    lo, hi = np.quantile(both, [0.005, 0.995])
                    edges = np.linspace(lo, hi if hi > lo else lo + 1, 31)
                    ax.hist(a, edges, density=True, histtype="step", color="#0072B2", lw=1.4)
                    ax.hist(
                        b, edges, density=True, histtype="stepfilled", color="#D55E00", alpha=0.35
                    )
                    ax.set_title(name, fontsize=9)
                    ax.set_yticks([])
                for j in range(n, rows * cols):
                    axes[j // cols][j % cols].set_visible(False)
                axes[0][0].legend(["training", view.catalog], fontsize=8)
                png = figure_png(fig)
            plots.append(
                Plot(
                    f"domain-features{suffix}",
                    f"Training against {view.catalog}: feature distributions",
                    f"Density of each feature in the training snapshot (line) and in catalog "
                    f"{view.catalog} (filled), from up to {FEATURE_SAMPLE:,} rows of each. "
                    "Where the filled histogram has mass and the line has none, the model "
                    "extrapolates.",
                    png,
                )
            )
        if view.propensity_counts and view.weight_counts:
            with new_figure(9.0, 3.0) as fig:
                left, right = fig.subplots(1, 2)
                centres = (np.arange(PROPENSITY_BINS) + 0.5) / PROPENSITY_BINS
                left.bar(
                    centres, view.propensity_counts, width=1 / PROPENSITY_BINS, color="#0072B2"
                )
                left.axvline(view.uncovered_threshold, color="#D55E00", ls="--", lw=1)
                left.axvline(0.5, color="#A9B2BD", lw=1)
                left.set_xlabel("propensity p(catalog | x)")
                left.set_ylabel("objects")
                edges = np.asarray(view.weight_edges)
                right.bar(
                    edges[:-1],
                    view.weight_counts,
                    width=np.diff(edges),
                    align="edge",
                    color="#009E73",
                )
                right.set_xscale("log")
                right.set_xlabel("importance weight (clipped)")
                png = figure_png(fig)
            plots.append(
                Plot(
                    f"domain-weights{suffix}",
                    f"{view.catalog}: propensities and importance weights",
                    "Left: the domain classifier's propensity of every catalog object (0.5: "
                    "looks like the training data; right of the dashed line: not covered by it). "
                    "Right: the importance weights p/(1-p) scaled by the sample sizes, clipped.",
                    png,
                )
            )
        if view.sky is not None and view.sky.shape[0]:
            panels = 2 if view.ood_column and view.sky.shape[1] > 3 else 1
            with new_figure(5.0 * panels + 1, 3.6) as fig:
                axes = fig.subplots(1, panels, squeeze=False)[0]
                ra, dec, p = view.sky[:, 0], view.sky[:, 1], view.sky[:, 2]
                sc = axes[0].scatter(ra, dec, c=p, s=3, cmap="viridis", vmin=0, vmax=1)
                out = p > view.uncovered_threshold
                axes[0].scatter(ra[out], dec[out], s=9, facecolors="none", edgecolors="#D55E00")
                fig.colorbar(sc, ax=axes[0], label="propensity")
                axes[0].set_xlabel("RA (deg)")
                axes[0].set_ylabel("Dec (deg)")
                axes[0].invert_xaxis()
                if panels == 2:
                    sc2 = axes[1].scatter(ra, dec, c=view.sky[:, 3], s=3, cmap="magma")
                    fig.colorbar(sc2, ax=axes[1], label=str(view.ood_column))
                    axes[1].set_xlabel("RA (deg)")
                    axes[1].invert_xaxis()
                png = figure_png(fig)
            plots.append(
                Plot(
                    f"domain-sky{suffix}",
                    f"{view.catalog} on the sky: propensity"
                    + (f" and {view.ood_column}" if panels == 2 else ""),
                    f"Up to {SKY_SAMPLE:,} objects of {view.catalog} coloured by the domain "
                    "classifier's propensity; circled: objects the training data does not "
                    f"cover (propensity > {view.uncovered_threshold})."
                    + (
                        f" Right: the out-of-distribution score {view.ood_column}."
                        if panels == 2
                        else ""
                    ),
                    png,
                )
            )
    return plots


# -- html -------------------------------------------------------------------------------------
def _num(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{round(value, digits) + 0.0:.{digits}f}"


def domain_section(views: Sequence[DomainView], figures_html: str) -> str:
    """The section's text and tables, followed by its figures."""
    e = html.escape
    parts = [
        '<p class="note">A domain classifier tells the training snapshot from each catalog the '
        "model was applied to (<code>skyclass domain</code>); its propensities weigh the "
        "out-of-fold predictions into the metrics to expect on that catalog, with bootstrap "
        "errors and the effective sample size. AUC 0.5 means no detectable shift.</p>"
    ]
    for view in views:
        verdict = (
            '<span class="ok">reliable</span>'
            if view.reliable
            else '<span class="missing">UNRELIABLE: ' + e("; ".join(view.problems)) + "</span>"
        )
        rows = "".join(
            "<tr><td>"
            + e(m.name + (f"[{m.class_name}]" if m.class_name else ""))
            + f"</td><td>{_num(m.unweighted)}</td><td><b>{_num(m.value)}</b> ± {_num(m.std)}</td>"
            f"<td>{_num(m.n_effective, 0)}</td></tr>"
            for m in view.metrics
        )
        parts.append(
            f'<h3 id="domain-{view.domain_shift_id}">Catalog {e(view.catalog)}</h3>'
            f'<p class="note">Domain-classifier AUC <b>{view.auc:.3f} ± {view.auc_std:.3f}</b>; '
            f"{view.n_catalog:,} catalog objects scored "
            + ("in the database" if view.scorer == "database" else "in the client")
            + f"; {view.uncovered_fraction:.1%} not covered by the training data; effective "
            f"sample size {view.n_effective:,.0f} of {view.n_train:,} training rows; "
            f"{verdict}. Fit {view.domain_shift_id}; in SQL: <code>SELECT * FROM "
            f"skyclass.expected_metrics(…, '{e(view.catalog)}')</code>.</p>"
            '<table class="metrics domain"><thead><tr><th>metric</th><th>cross-validated '
            "(training distribution)</th><th>expected on "
            f"{e(view.catalog)}</th><th>n<sub>eff</sub></th></tr></thead><tbody>{rows}"
            "</tbody></table>"
        )
    return "".join(parts) + figures_html
