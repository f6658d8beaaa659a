"""The report's "Why and what if" section: explanations, dependence curves, learning curves,
and the anomaly list.

Read from the rows ``skyclass explain``, ``skyclass.partial_dependence`` and
``skyclass queue simulate`` store for the reported version (the simulation:
the newest one on the version's feature definition), and from
``skyclass.anomaly_rank``: the version's own OOD forest when it was scored,
else the newest scored anomaly model (``skyclass anomaly``) of the same
feature definition. Each part is left out when its rows do not exist; the
section says what to run to get them.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from skyclass.report.plots import PALETTE, Plot, figure_png, new_figure


@dataclass(frozen=True)
class ExplainedObject:
    """One explained object: its top output and that output's largest contributions."""

    object_id: int
    output: str
    margin: float
    base: float
    top: tuple[tuple[str, float], ...]  # feature, contribution


@dataclass(frozen=True)
class AnomalyList:
    """The strangest objects of a scored catalog, and the class mix of the top 1%."""

    model: str  # MODEL:VERSION of the forest's ranking (an anomaly model or a classifier)
    own: bool  # the reported version's own OOD forest
    catalog: str
    n_objects: int
    feature_names: tuple[str, ...]
    label_column: str | None
    rows: tuple[tuple[Any, ...], ...] = field(repr=False)  # rank, id, score, pct, label, x
    mix: tuple[tuple[str, int, int], ...] = ()  # label, in the top 1%, in the catalog
    n_top: int = 0


@dataclass(frozen=True)
class LearningData:
    """What the section shows; empty parts are skipped."""

    model_version_id: int
    label: str
    explanation_catalog: str | None = None
    model_output: str | None = None
    feature_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()
    mean_abs: Any = field(default=None, repr=False)  # features x outputs
    n_explained: int = 0
    objects: tuple[ExplainedObject, ...] = ()
    curves: tuple[dict[str, Any], ...] = field(default=(), repr=False)
    simulation: dict[str, Any] | None = field(default=None, repr=False)
    anomalies: AnomalyList | None = None


def _explanations(conn: psycopg.Connection[Any], version: int) -> dict[str, Any]:
    run = conn.execute(
        "SELECT explanation_run_id, catalog_name, model_output, feature_names, output_names, base "
        "FROM skyclass.explanation_run WHERE model_version_id = %s "
        "ORDER BY explanation_run_id DESC LIMIT 1",
        (version,),
    ).fetchone()
    if run is None:
        return {}
    rows = conn.execute(
        "SELECT object_id, margin, contributions FROM skyclass.explanation "
        "WHERE explanation_run_id = %s ORDER BY object_id",
        (run[0],),
    ).fetchall()
    features, outputs = tuple(run[3]), tuple(run[4])
    contributions = np.asarray([r[2] for r in rows], dtype=np.float64).reshape(
        len(rows), len(features), len(outputs)
    )
    objects = []
    for r, c in zip(rows[:3], contributions[:3], strict=False):
        k = int(np.argmax(r[1]))
        order = np.argsort(-np.abs(c[:, k]))[:4]
        objects.append(
            ExplainedObject(
                int(r[0]),
                outputs[k],
                float(r[1][k]),
                float(run[5][k]),
                tuple((features[f], float(c[f, k])) for f in order),
            )
        )
    return {
        "explanation_catalog": str(run[1]),
        "model_output": str(run[2]),
        "feature_names": features,
        "output_names": outputs,
        "mean_abs": np.abs(contributions).mean(axis=0),
        "n_explained": len(rows),
        "objects": tuple(objects),
    }


def _curves(conn: psycopg.Connection[Any], version: int) -> tuple[dict[str, Any], ...]:
    runs = conn.execute(
        "SELECT DISTINCT ON (feature, coalesce(second_feature, ''), second_quantile) "
        "dependence_run_id, feature, second_feature, second_quantile, catalog_name "
        "FROM skyclass.dependence_run WHERE model_version_id = %s "
        "ORDER BY feature, coalesce(second_feature, ''), second_quantile, dependence_run_id DESC",
        (version,),
    ).fetchall()
    out = []
    for run_id, feature, second, quantile, catalog in runs[:12]:
        rows = conn.execute(
            "SELECT curve, object_id, class_name, grid_index, value, probability "
            "FROM skyclass.dependence_curve WHERE dependence_run_id = %s "
            "ORDER BY curve, object_id, class_name, grid_index",
            (run_id,),
        ).fetchall()
        out.append(
            {
                "feature": feature,
                "second": second,
                "quantile": quantile,
                "catalog": catalog,
                "rows": rows,
            }
        )
    return tuple(out)


def _simulation(conn: psycopg.Connection[Any], version: int) -> dict[str, Any] | None:
    sim = conn.execute(
        "SELECT s.simulation_id, s.catalog_name, s.label_column, s.target_class, s.purity, "
        "s.params FROM skyclass.learning_simulation AS s "
        "JOIN skyclass.feature_set AS f USING (feature_set_id) "
        "JOIN skyclass.feature_set AS own ON own.definition_hash = f.definition_hash "
        "JOIN skyclass.model_version AS v ON v.feature_set_id = own.feature_set_id "
        "WHERE v.model_version_id = %s ORDER BY s.simulation_id DESC LIMIT 1",
        (version,),
    ).fetchone()
    if sim is None:
        return None
    rows = conn.execute(
        "SELECT strategy, seed, round, n_labels, accuracy, completeness_at_purity "
        "FROM skyclass.learning_curve WHERE simulation_id = %s ORDER BY strategy, round, seed",
        (sim[0],),
    ).fetchall()
    return {
        "id": sim[0],
        "catalog": sim[1],
        "label": sim[2],
        "target": sim[3],
        "purity": sim[4],
        "params": sim[5],
        "rows": rows,
    }


#: Objects in the report's anomaly table.
ANOMALY_ROWS = 10

_RANKED_SQL = """
SELECT o.model_version_id, c.name, o.model_version_id = v.model_version_id AS own,
       m.name || ':' || av.version
  FROM skyclass.model_version AS v
  JOIN skyclass.feature_set AS vf ON vf.feature_set_id = v.feature_set_id
  JOIN skyclass.feature_set AS af ON af.definition_hash = vf.definition_hash
  JOIN skyclass.model_version AS av ON av.feature_set_id = af.feature_set_id
  JOIN skyclass.model AS m ON m.model_id = av.model_id
  JOIN skyclass.ood_model AS o ON o.model_version_id = av.model_version_id
  JOIN skyclass.ood_run AS r ON r.model_version_id = o.model_version_id AND r.status = 'done'
  JOIN skyclass.catalog AS c ON c.catalog_id = r.catalog_id
 WHERE v.model_version_id = %s
   AND (o.model_version_id = v.model_version_id OR o.model_version_id = o.ood_version_id)
 ORDER BY own DESC, r.ood_run_id DESC
 LIMIT 1
"""


def _label_column(
    conn: psycopg.Connection[Any], version: int, table: tuple[str, str]
) -> str | None:
    """The catalog column the version's labels came from, when the catalog table has it."""
    row = conn.execute(
        "SELECT s.label_source->>'column' FROM skyclass.model_version AS v "
        "JOIN skyclass.training_snapshot AS s USING (snapshot_id) "
        "WHERE v.model_version_id = %s AND s.label_source->>'kind' = 'column' "
        "AND EXISTS (SELECT FROM information_schema.columns AS c WHERE c.table_schema = %s "
        "AND c.table_name = %s AND c.column_name = s.label_source->>'column')",
        (version, *table),
    ).fetchone()
    return None if row is None else str(row[0])


def _anomalies(conn: psycopg.Connection[Any], version: int) -> AnomalyList | None:
    from skyclass.domain.anomaly import anomaly_top
    from skyclass.registry.catalogs import find_catalog

    found = conn.execute(_RANKED_SQL, (version,)).fetchone()
    if found is None:
        return None
    ranked, catalog, own, model = int(found[0]), str(found[1]), bool(found[2]), str(found[3])
    top = anomaly_top(conn, str(ranked), catalog, ANOMALY_ROWS)
    info = find_catalog(conn, catalog)
    table = sql.Identifier(info.schema, info.table)
    label = _label_column(conn, version, (info.schema, info.table))
    total = conn.execute(
        "SELECT count(*) FROM skyclass.ood_score WHERE model_version_id = %s AND catalog_id = %s",
        (ranked, info.catalog_id),
    ).fetchone()
    n_objects = int(total[0]) if total is not None else 0
    n_top = max(1, n_objects // 100)
    labels: dict[int, Any] = {}
    mix: tuple[tuple[str, int, int], ...] = ()
    if label is not None:
        ids = [int(r[1]) for r in top.rows]
        labels = dict(
            conn.execute(
                sql.SQL("SELECT object_id, {}::text FROM {} WHERE object_id = ANY(%s)").format(
                    sql.Identifier(label), table
                ),
                (ids,),
            ).fetchall()
        )
        mix = tuple(
            (str(r[0]), int(r[1]), int(r[2]))
            for r in conn.execute(
                sql.SQL(
                    "SELECT coalesce(t.{}::text, '(none)'), count(*) FILTER (WHERE a.rank <= %s), "
                    "count(*) FROM skyclass.anomaly_rank(%s, %s) AS a "
                    "JOIN {} AS t USING (object_id) GROUP BY 1 ORDER BY 3 DESC"
                ).format(sql.Identifier(label), table),
                (n_top, str(ranked), catalog),
            )
        )
    rows = tuple((*r[:4], labels.get(int(r[1])), r[5]) for r in top.rows)
    return AnomalyList(model, own, catalog, n_objects, top.feature_names, label, rows, mix, n_top)


def read_learning(conn: psycopg.Connection[Any], version: int, label: str) -> LearningData:
    """The stored explanations, curves, simulation and anomaly ranking of a model version."""
    return LearningData(
        model_version_id=version,
        label=label,
        curves=_curves(conn, version),
        simulation=_simulation(conn, version),
        anomalies=_anomalies(conn, version),
        **_explanations(conn, version),
    )


def explanation_plot(data: LearningData) -> Plot | None:
    """Mean absolute contribution per feature, one bar group per output."""
    if data.mean_abs is None:
        return None
    features, outputs = data.feature_names, data.output_names
    order = np.argsort(data.mean_abs.sum(axis=1))
    y = np.arange(len(features))
    height = 0.8 / max(len(outputs), 1)
    with new_figure(6.8, 0.36 * len(features) * max(1, len(outputs) / 2) + 1.6) as fig:
        ax = fig.subplots()
        for k, name in enumerate(outputs[:7]):
            ax.barh(
                y + (k - (len(outputs) - 1) / 2) * height,
                data.mean_abs[order, k],
                height=height,
                color=PALETTE[k % len(PALETTE)],
                label=name,
            )
        ax.set_yticks(y, [features[f] for f in order])
        ax.grid(axis="y", visible=False)
        ax.set_xlabel(f"mean |contribution| to the {data.model_output}")
        ax.set_title(f"TreeSHAP over {data.n_explained} objects of {data.explanation_catalog}")
        ax.legend(loc="lower right")
        png = figure_png(fig)
    return Plot(
        "explanations",
        "What the model leans on (TreeSHAP)",
        f"Mean absolute exact TreeSHAP contribution of each feature to each class's "
        f"{data.model_output}, over the {data.n_explained} objects of the newest `skyclass "
        "explain` run. Unlike shuffling importance, contributions are per object and add up: "
        "base value + contributions = the model's output for that object.",
        png,
    )


def dependence_plot(data: LearningData) -> Plot | None:
    """Partial dependence (thick), the median object (dashed) and ICE curves (thin) per feature."""
    single = [c for c in data.curves if c["second"] is None][:4]
    paired = [c for c in data.curves if c["second"] is not None]
    panels = single + ([paired] if paired else [])
    if not panels:
        return None
    with new_figure(4.2 * len(panels) + 0.4, 3.6) as fig:
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, panel in zip(axes, panels, strict=True):
            if isinstance(panel, list):
                _paired_panel(ax, panel)
                continue
            classes = sorted({r[2] for r in panel["rows"]})
            for k, name in enumerate(classes):
                colour = PALETTE[k % len(PALETTE)]
                for curve, style, width, alpha in (
                    ("ice", "-", 0.5, 0.15),
                    ("pd", "-", 2.2, 1.0),
                    ("median", "--", 1.4, 1.0),
                ):
                    by_object: dict[int, list[tuple[float, float]]] = {}
                    for c, oid, cls, _, x, p in panel["rows"]:
                        if c == curve and cls == name:
                            by_object.setdefault(oid, []).append((x, p))
                    for points in by_object.values():
                        xs, ps = zip(*points, strict=True)
                        ax.plot(
                            xs,
                            ps,
                            style,
                            color=colour,
                            lw=width,
                            alpha=alpha,
                            label=name if curve == "pd" else None,
                        )
            ax.set_xlabel(panel["feature"])
            ax.set_ylabel("calibrated probability")
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"varying {panel['feature']}")
            ax.legend(loc="best")
        png = figure_png(fig)
    return Plot(
        "dependence",
        "What if one input changed (partial dependence and ICE)",
        "Computed in the database with the compiled model (skyclass.partial_dependence): one "
        "feature runs over its 2nd to 98th percentile while the others stay put. Thick: the "
        "mean over sampled objects (partial dependence); dashed: the median object; thin: "
        "individual objects (ICE). Curves that fan out mean the feature's effect depends on "
        "the others.",
        png,
    )


def _paired_panel(ax: Any, runs: list[dict[str, Any]]) -> None:
    """The median object's top-class curve with the second feature at each quantile."""
    styles = ("-", "--", ":", "-.")
    for i, run in enumerate(sorted(runs, key=lambda r: r["quantile"])[:4]):
        classes = sorted({r[2] for r in run["rows"]})
        for k, name in enumerate(classes):
            pts = [(r[4], r[5]) for r in run["rows"] if r[0] == "median" and r[2] == name]
            if pts:
                xs, ps = zip(*pts, strict=True)
                ax.plot(
                    xs,
                    ps,
                    styles[i % 4],
                    color=PALETTE[k % len(PALETTE)],
                    lw=1.4,
                    label=f"{name}, {run['second']} at q{run['quantile']:.2f}",
                )
    ax.set_xlabel(runs[0]["feature"])
    ax.set_ylabel("calibrated probability")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{runs[0]['feature']} with {runs[0]['second']} held")
    ax.legend(loc="best", fontsize=7)


def learning_curve_plot(data: LearningData) -> Plot | None:
    """Accuracy and target-class completeness against labels, per strategy, mean ± std."""
    sim = data.simulation
    if sim is None or not sim["rows"]:
        return None
    strategies = sorted({r[0] for r in sim["rows"]}, key=lambda s: (s == "random", s))
    with new_figure(10.4, 3.8) as fig:
        axes = fig.subplots(1, 2)
        for ax, column, title in (
            (axes[0], 4, "accuracy"),
            (axes[1], 5, f"{sim['target']} completeness at {sim['purity']:.0%} purity"),
        ):
            for k, strategy in enumerate(strategies):
                rows = [r for r in sim["rows"] if r[0] == strategy and r[column] is not None]
                labels = sorted({r[3] for r in rows})
                means = [np.mean([r[column] for r in rows if r[3] == n]) for n in labels]
                stds = [np.std([r[column] for r in rows if r[3] == n], ddof=1) for n in labels]
                colour = "0.35" if strategy == "random" else PALETTE[k % len(PALETTE)]
                ax.errorbar(
                    labels,
                    means,
                    yerr=stds,
                    color=colour,
                    capsize=2,
                    lw=1.4,
                    ls="--" if strategy == "random" else "-",
                    label=strategy,
                )
            ax.set_xlabel("labelled objects")
            ax.set_title(title)
            ax.legend(loc="lower right")
        png = figure_png(fig)
    seeds = sim["params"].get("seeds")
    return Plot(
        "learning_curves",
        "Active learning against random labelling",
        f"Simulated labelling loop on {sim['catalog']} ({sim['label']} labels, simulation "
        f"{sim['id']}): each strategy starts from the same random labels and adds the most "
        f"uncertain objects each round; mean ± std over {seeds} seeds (different test sets "
        "and start labels). The dashed grey line is random labelling.",
        png,
    )


def learning_plots(data: LearningData) -> list[Plot]:
    """The section's figures that the stored rows allow."""
    makers = (explanation_plot, dependence_plot, learning_curve_plot)
    return [p for p in (m(data) for m in makers) if p is not None]


def learning_html(data: LearningData) -> str:
    """The section's text: a few explained objects, and what to run for missing parts."""
    esc = html.escape
    parts = []
    if data.objects:
        rows = "".join(
            f"<tr><td>{o.object_id}</td><td>{esc(o.output)}</td><td>{o.base:+.3f}</td>"
            + "<td>"
            + ", ".join(f"{esc(f)} {c:+.3f}" for f, c in o.top)
            + f"</td><td>{o.margin:+.3f}</td></tr>"
            for o in data.objects
        )
        parts.append(
            f'<p class="note">Why a few objects of {esc(data.explanation_catalog or "")} got '
            f"their class: base value, the largest contributions to the top class's "
            f"{esc(data.model_output or '')}, and the result. All of them: "
            "<code>skyclass.explanation_long</code>.</p>"
            "<table><thead><tr><th>object</th><th>class</th><th>base</th><th>largest "
            "contributions</th><th>output</th></tr></thead><tbody>" + rows + "</tbody></table>"
        )
    if data.anomalies is not None:
        parts.append(anomaly_html(data.anomalies))
    missing = []
    if data.mean_abs is None:
        missing.append(
            f"explanations: <code>skyclass explain {esc(data.label)} --catalog NAME "
            "--where 'true' --limit 200</code>"
        )
    if not data.curves:
        missing.append(
            "what-if curves: <code>SELECT skyclass.partial_dependence('"
            f"{esc(data.label)}', 'CATALOG', 'FEATURE')</code>"
        )
    if data.simulation is None:
        missing.append(
            "learning curves: <code>skyclass queue simulate FEATURE_SET --label COLUMN</code>"
        )
    if data.anomalies is None:
        missing.append(
            "the anomaly list: <code>skyclass anomaly fit NAME --feature-set FEATURE_SET "
            "--catalog CATALOG</code>, then <code>skyclass anomaly score NAME --catalog "
            "CATALOG</code>"
        )
    if missing:
        parts.append('<p class="note missing">Not shown yet: ' + "; ".join(missing) + ".</p>")
    return "".join(parts)


def anomaly_html(a: AnomalyList) -> str:
    """The strangest objects (rank, score, percentile, class, features) and the top 1% mix."""
    esc = html.escape
    whose = (
        f"this version's OOD forest ({esc(a.model)})"
        if a.own
        else f"the anomaly model {esc(a.model)} (an IsolationForest on the same features)"
    )
    head = "".join(f"<th>{esc(f)}</th>" for f in a.feature_names)
    label_head = f"<th>{esc(a.label_column)}</th>" if a.label_column else ""
    body = ""
    for rank, oid, score, pct, label, x in a.rows:
        cells = "".join(
            "<td>-</td>" if v is None else f"<td>{float(v):.2f}</td>" for v in (x or ())
        )
        label_cell = f"<td>{esc(str(label)) if label is not None else '-'}</td>"
        body += (
            f"<tr><td>{rank}</td><td>{oid}</td><td>{score:.3f}</td><td>{pct:.2f}</td>"
            + (label_cell if a.label_column else "")
            + cells
            + "</tr>"
        )
    mix = ""
    if a.mix:
        n_all = sum(m[2] for m in a.mix)
        share = ", ".join(
            f"{esc(name)} {100 * top / a.n_top:.0f}% (catalog {100 * every / n_all:.0f}%)"
            for name, top, every in a.mix
        )
        mix = (
            f'<p class="note">Top 1% ({a.n_top:,} objects) by {esc(a.label_column or "")}: '
            f"{share}.</p>"
        )
    return (
        f'<h3 id="anomalies">The oddest objects of {esc(a.catalog)}</h3>'
        f'<p class="note">Ranked by {whose}, scored in the database over {a.n_objects:,} '
        "objects: score (higher = stranger), percentile among held-out rows, "
        f"{'spectroscopic class, ' if a.label_column else ''}features. All of them: "
        f"<code>SELECT * FROM skyclass.anomaly_rank('{esc(a.model)}', '{esc(a.catalog)}')"
        "</code>.</p>"
        f"<table><thead><tr><th>rank</th><th>object</th><th>score</th><th>percentile</th>"
        f"{label_head}{head}</tr></thead><tbody>{body}</tbody></table>{mix}"
    )
