"""The report as one self-contained HTML page.

The page has no external resource: CSS is inline, figures are embedded as
base64 ``data:`` URIs (each ``<img>`` also names its PNG file in
``data-file``), there is no script and no web font, so it opens offline, from
an e-mail attachment or an archive years later. Every value that comes from
the database is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from skyclass.report.data import Evaluation, MetricValue, ReportData
from skyclass.report.domain import domain_section
from skyclass.report.plots import HIGHER_IS_BETTER, LOWER_IS_BETTER, Plot, pm

OVERALL_ORDER = (
    "accuracy",
    "balanced_accuracy",
    "roc_auc_macro",
    "log_loss",
    "brier",
    "ece",
    "sigma_nmad",
    "outlier_fraction",
    "bias_median",
    "bias_mean",
    "pit_ks",
    "crps_mean",
    "coverage_68",
    "coverage_95",
)
PER_CLASS_ROWS = ("purity", "completeness", "roc_auc", "completeness_at_fpr")
PER_CLASS_HIDDEN = frozenset({"threshold_at_fpr", "achieved_fpr", "support"})
LABELS = {
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "roc_auc_macro": "ROC AUC (macro)",
    "log_loss": "Log loss",
    "brier": "Brier score",
    "ece": "Expected calibration error",
    "sigma_nmad": "\N{GREEK SMALL LETTER SIGMA}_NMAD of Δz/(1+z)",
    "outlier_fraction": "Outlier fraction η",
    "bias_median": "Bias (median Δz/(1+z))",
    "bias_mean": "Bias (mean Δz/(1+z))",
    "pit_ks": "PIT KS distance",
    "crps_mean": "CRPS (mean)",
    "purity": "Purity",
    "completeness": "Completeness",
    "roc_auc": "ROC AUC",
}
DIGITS = {"sigma_nmad": 4, "outlier_fraction": 4, "bias_median": 4, "bias_mean": 4}
"""Decimals shown (and compared for "best") where 3 would hide real differences."""
PER_CLASS_LIMIT = 12
"""Per-class tables are left out above this many classes (photo-z bins)."""

CSS = """
:root { --ink:#1b2430; --muted:#5b6676; --line:#dde3ea; --band:#0b2545; --accent:#0072B2;
        --accent-soft:#e8f2fa; --warn:#b45309; --bg:#f6f8fb; }
* { box-sizing:border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,
            "DejaVu Sans",sans-serif; }
header.top { background:linear-gradient(135deg,#0b2545 0%,#13315c 60%,#1d4e89 100%);
             color:#f4f7fb; padding:28px 40px 24px; }
header.top .kicker { text-transform:uppercase; letter-spacing:.12em; font-size:12px;
                     color:#9fc3e7; }
header.top h1 { margin:4px 0 6px; font-size:30px; font-weight:650; }
header.top h1 .ver { font-weight:400; color:#bcd4ec; }
header.top .lede { margin:0; color:#d5e3f1; max-width:70em; }
.cards { display:flex; flex-wrap:wrap; gap:12px; margin-top:18px; }
.card { background:rgba(255,255,255,.09); border:1px solid rgba(255,255,255,.18);
        border-radius:10px; padding:10px 14px; min-width:150px; }
.card .k { font-size:12px; color:#b7cde4; }
.card .v { font-size:21px; font-weight:600; font-variant-numeric:tabular-nums; }
.card .v small { font-size:13px; font-weight:400; color:#cfe0f1; }
.card .b { font-size:12px; color:#b7cde4; }
.card .kv { display:flex; justify-content:space-between; gap:16px; font-size:15px;
            font-variant-numeric:tabular-nums; }
.card .kv span { color:#cfe0f1; }
.card .kv b { font-weight:600; }
.card .kv small { font-weight:400; color:#cfe0f1; }
.scroll { overflow-x:auto; }
details summary { cursor:pointer; color:var(--accent); }
details pre { white-space:pre-wrap; overflow-wrap:anywhere; font-size:12.5px; background:#f5f7fa;
              border:1px solid var(--line); border-radius:6px; padding:8px; max-height:28em;
              overflow:auto; }
.prov .full { grid-column:1 / -1; }
.hash { font-family:ui-monospace,"DejaVu Sans Mono",monospace; font-size:12.5px;
        word-break:break-all; }
nav.toc { background:white; border-bottom:1px solid var(--line); padding:10px 40px;
          position:sticky; top:0; z-index:2; font-size:14px; }
nav.toc a { color:var(--accent); text-decoration:none; margin-right:18px; }
main { padding:8px 40px 40px; max-width:1500px; }
section { background:white; border:1px solid var(--line); border-radius:12px;
          padding:18px 24px 22px; margin:22px 0; }
h2 { margin:0 0 6px; font-size:21px; }
h3 { margin:20px 0 6px; font-size:16px; }
p.note { color:var(--muted); margin:4px 0 12px; max-width:75em; }
p.missing { color:var(--warn); }
table { border-collapse:collapse; font-variant-numeric:tabular-nums; }
table.metrics { width:100%; font-size:14px; }
table.metrics th, table.metrics td { padding:6px 10px; border-bottom:1px solid var(--line);
                                     text-align:right; white-space:nowrap; }
table.metrics th:first-child, table.metrics td:first-child { text-align:left; }
table.metrics thead th { vertical-align:bottom; border-bottom:2px solid #b9c3cf; }
table.metrics thead .est { font-weight:650; }
table.metrics thead .role { display:block; font-weight:400; font-size:12px;
                            color:var(--muted); }
table.metrics .cand { background:var(--accent-soft); }
table.metrics td.best { font-weight:700; }
table.metrics tr.group td { background:#f1f4f8; font-weight:650; text-align:left;
                            color:#2b3a4f; }
table.metrics .sub { display:block; font-size:12px; color:var(--muted); font-weight:400; }
.dir { color:var(--muted); font-size:12px; margin-left:4px; }
.figs { display:grid; grid-template-columns:repeat(auto-fit,minmax(560px,1fr)); gap:22px; }
figure { margin:0; border:1px solid var(--line); border-radius:10px; padding:12px;
         background:white; }
figure.wide { grid-column:1 / -1; }
figure img { display:block; max-width:100%; height:auto; margin:0 auto; }
figure h3 { margin:0 0 8px; }
figcaption { color:var(--muted); font-size:13.5px; margin-top:8px; }
figcaption .file { font-family:ui-monospace,"DejaVu Sans Mono",monospace; font-size:12px; }
.prov { display:grid; grid-template-columns:repeat(auto-fit,minmax(420px,1fr)); gap:8px 28px; }
dl { display:grid; grid-template-columns:max-content 1fr; gap:4px 14px; margin:4px 0; }
dt { color:var(--muted); }
dd { margin:0; overflow-wrap:anywhere; }
code, .mono { font-family:ui-monospace,"DejaVu Sans Mono",monospace; font-size:13px; }
table.plain { font-size:13.5px; margin:4px 0 8px; }
table.plain th, table.plain td { padding:3px 14px 3px 0; text-align:left; vertical-align:top;
                                 border-bottom:1px solid var(--line); }
table.plain td.n { text-align:right; }
.warn { color:var(--warn); font-weight:600; }
footer { color:var(--muted); font-size:13px; padding:0 40px 30px; }
@media print { nav.toc { position:static; } section { break-inside:avoid; } }
"""


def esc(value: Any) -> str:
    """HTML-escaped text of ``value``."""
    return html.escape(str(value), quote=True)


def _json(value: Any) -> str:
    return esc(json.dumps(value, sort_keys=True, default=str, ensure_ascii=False))


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        return esc(value.strftime("%Y-%m-%d %H:%M:%S %Z").strip())
    return esc(value) if value is not None else "—"


def label(name: str) -> str:
    """A readable name of a metric (``coverage_68`` -> "68% interval coverage")."""
    if name.startswith("coverage_") and name[9:].isdigit():
        return f"{name[9:]}% interval coverage"
    return LABELS.get(name, name.replace("_", " "))


def _score(name: str, mean: float) -> float | None:
    """A number where larger is better, or None when the metric has no direction."""
    if name in HIGHER_IS_BETTER:
        return mean
    if name in LOWER_IS_BETTER:
        return -mean
    if name.startswith("bias"):
        return -abs(mean)
    if name.startswith("coverage_") and name[9:].isdigit():
        return -abs(mean - int(name[9:]) / 100)
    return None


def _direction(name: str) -> str:
    if name in HIGHER_IS_BETTER:
        return '<span class="dir" title="higher is better">↑</span>'
    if name in LOWER_IS_BETTER:
        return '<span class="dir" title="lower is better">↓</span>'
    if name.startswith("bias"):
        return '<span class="dir" title="closer to 0 is better">→0</span>'
    if name.startswith("coverage_") and name[9:].isdigit():
        return f'<span class="dir" title="closer to {name[9:]}% is better">→{name[9:]}%</span>'
    return ""


Column = tuple[Evaluation, str]


def _columns(data: ReportData) -> list[Column]:
    """Every evaluation at the stage the model is deployed at, and this model at its other stage.

    Comparing like with like: when the version is calibrated, the baselines are
    shown with the same (cross-fitted) calibration applied to them.
    """
    stage = data.deployed_stage
    out: list[Column] = []
    for evaluation in data.evaluations:
        shown = stage if stage in evaluation.stages() else "raw"
        out.append((evaluation, shown))
        if evaluation.evaluation_id == data.candidate.evaluation_id:
            out.extend((evaluation, s) for s in evaluation.stages() if s != shown)
    return out


def _best(name: str, values: Sequence[MetricValue | None]) -> set[int]:
    """Indices of the best cells (ties at the displayed precision all win)."""
    scored: list[tuple[int, float]] = []
    for i, v in enumerate(values):
        if v is not None and v.mean is not None:
            score = _score(name, round(v.mean, DIGITS.get(name, 3)))
            if score is not None:
                scored.append((i, score))
    if len(scored) < 2:
        return set()
    top = max(s for _, s in scored)
    return {i for i, s in scored if math.isclose(s, top, abs_tol=1e-12)}


def _header(data: ReportData, columns: Sequence[Column]) -> str:
    cells = ["<th>metric</th>"]
    for evaluation, stage in columns:
        chosen = evaluation.evaluation_id == data.candidate.evaluation_id
        role = "this model" if chosen else evaluation.role
        if chosen:
            role += ", calibrated" if stage == "calibrated" else ", uncalibrated"
        css = ' class="cand"' if chosen else ""
        cells.append(
            f'<th{css}><span class="est">{esc(evaluation.estimator)}</span>'
            f'<span class="role">{esc(role)}</span></th>'
        )
    return "<thead><tr>" + "".join(cells) + "</tr></thead>"


def _row(
    data: ReportData,
    columns: Sequence[Column],
    name: str,
    class_name: str,
    title: str,
) -> str:
    values = [e.metric(name, class_name, stage) for e, stage in columns]
    if all(v is None for v in values):
        return ""
    best = _best(name, values)
    cells = [f"<td>{title}{_direction(name)}</td>"]
    for i, ((evaluation, stage), value) in enumerate(zip(columns, values, strict=True)):
        classes = []
        if evaluation.evaluation_id == data.candidate.evaluation_id:
            classes.append("cand")
        if i in best:
            classes.append("best")
        text = esc(pm(value, DIGITS.get(name, 3)))
        if name == "completeness_at_fpr" and value is not None and value.mean is not None:
            threshold = evaluation.metric("threshold_at_fpr", class_name, stage)
            if threshold is not None and threshold.mean is not None:
                text += f'<span class="sub">at p ≥ {esc(pm(threshold))}</span>'
        css = f' class="{" ".join(classes)}"' if classes else ""
        cells.append(f"<td{css}>{text}</td>")
    return "<tr>" + "".join(cells) + "</tr>"


def metric_tables(data: ReportData) -> str:
    """The overall and per-class metric tables (candidate beside every baseline)."""
    columns = _columns(data)
    head = _header(data, columns)
    names = {k[0] for e in data.evaluations for k in e.metrics if k[1] == ""}
    ordered = [n for n in OVERALL_ORDER if n in names] + sorted(names - set(OVERALL_ORDER))
    rows = [_row(data, columns, n, "", esc(label(n))) for n in ordered]
    fit = ["<td>fit time, all folds (s)</td>"]
    for evaluation, _stage in columns:
        seconds = evaluation.fit_seconds
        css = ' class="cand"' if evaluation.evaluation_id == data.candidate.evaluation_id else ""
        fit.append(f"<td{css}>{'—' if seconds is None else f'{seconds:.2f}'}</td>")
    rows.append("<tr>" + "".join(fit) + "</tr>")
    parts = [
        '<div class="scroll"><table class="metrics">'
        + head
        + "<tbody>"
        + "".join(rows)
        + "</tbody></table></div>"
    ]
    per_class = {k[1] for e in data.evaluations for k in e.metrics if k[1]}
    if per_class and len(data.classes) <= PER_CLASS_LIMIT:
        target = data.fpr_target
        class_rows = []
        for cls in [c for c in data.classes if c in per_class]:
            block = []
            for n in PER_CLASS_ROWS:
                title = (
                    f"Completeness at {target:.0%} FPR" if n == "completeness_at_fpr" else label(n)
                )
                block.append(_row(data, columns, n, cls, esc(title)))
            extra = sorted(
                {k[0] for e in data.evaluations for k in e.metrics if k[1] == cls}
                - set(PER_CLASS_ROWS)
                - PER_CLASS_HIDDEN
            )
            block.extend(_row(data, columns, n, cls, esc(label(n))) for n in extra)
            if any(block):
                span = len(columns) + 1
                class_rows.append(f'<tr class="group"><td colspan="{span}">{esc(cls)}</td></tr>')
                class_rows.extend(block)
        parts.append("<h3>Per class</h3>")
        parts.append(
            '<p class="note">Purity is the fraction of objects called this class that are it; '
            "completeness the fraction of the class that is found. The completeness at "
            f"{target:.0%} false-positive rate is the fraction of the class kept when the "
            "probability threshold only lets that fraction of the other classes through "
            "(threshold below the value, mean ± std over folds).</p>"
        )
        parts.append(
            '<div class="scroll"><table class="metrics">'
            + head
            + "<tbody>"
            + "".join(class_rows)
            + "</tbody></table></div>"
        )
    elif per_class:
        parts.append(
            f'<p class="note">Per-class metrics of the {len(data.classes)} classes are stored '
            "in <code>skyclass.metric</code> and left out of this page.</p>"
        )
    return "".join(parts)


def _card(title: str, value: str, below: str = "") -> str:
    extra = f'<div class="b">{below}</div>' if below else ""
    return (
        f'<div class="card"><div class="k">{title}</div><div class="v">{value}</div>{extra}</div>'
    )


def _value(metric: MetricValue | None, digits: int = 3) -> str:
    if metric is None or metric.mean is None:
        return "n/a"
    text = f"{metric.mean:.{digits}f}"
    if metric.std is not None:
        text += f" <small>± {metric.std:.{digits}f}</small>"
    return text


def _best_baseline(data: ReportData, name: str, stage: str = "raw") -> str:
    candidates = [(e, e.metric(name, "", stage) or e.metric(name)) for e in data.baselines]
    scored = [
        (s, e, m)
        for e, m in candidates
        if m is not None and m.mean is not None and (s := _score(name, m.mean)) is not None
    ]
    if not scored:
        return ""
    _, evaluation, metric = max(scored, key=lambda t: t[0])
    return f"best baseline: {esc(evaluation.estimator)} {metric.mean:.{DIGITS.get(name, 3)}f}"


def headline(data: ReportData) -> str:
    """The summary cards of the header: key numbers with the best baseline under each."""
    c = data.candidate
    stage = data.deployed_stage
    cards = []
    if data.task == "photoz":
        for name, digits in (
            ("sigma_nmad", 4),
            ("outlier_fraction", 4),
            ("pit_ks", 3),
            ("coverage_68", 3),
        ):
            metric = c.metric(name, "", stage) or c.metric(name)
            if metric is not None:
                cards.append(
                    _card(esc(label(name)), _value(metric, digits), _best_baseline(data, name))
                )
    else:
        for name in ("accuracy", "balanced_accuracy"):
            if c.metric(name) is not None:
                cards.append(
                    _card(esc(label(name)), _value(c.metric(name)), _best_baseline(data, name))
                )
        if c.metric("log_loss", "", stage) is not None:
            title = "Log loss" + (" (calibrated)" if stage == "calibrated" else "")
            cards.append(
                _card(
                    title, _value(c.metric("log_loss", "", stage)), _best_baseline(data, "log_loss")
                )
            )
        if c.metric("ece", "", stage) is not None:
            title = "ECE" + (" (calibrated)" if stage == "calibrated" else "")
            cards.append(_card(title, _value(c.metric("ece", "", stage))))
        lines = [
            f'<div class="kv"><span>{esc(cls)}</span><b>{_value(metric)}</b></div>'
            for cls in data.classes[:PER_CLASS_LIMIT]
            if (metric := c.metric("completeness_at_fpr", cls, stage)) is not None
        ]
        if lines:
            cards.append(
                f'<div class="card"><div class="k">Completeness at {data.fpr_target:.0%} '
                f"false-positive rate</div>{''.join(lines)}</div>"
            )
    return '<div class="cards">' + "".join(cards) + "</div>" if cards else ""


def figures(plots: Sequence[Plot]) -> str:
    """The figures, embedded as base64 PNG data URIs."""
    if not plots:
        return '<p class="missing">No plot data was stored for this model version.</p>'
    wide = {"roc", "confusion", "ablation"}
    out = []
    for plot in plots:
        data_uri = "data:image/png;base64," + base64.b64encode(plot.png).decode("ascii")
        css = ' class="wide"' if plot.name in wide else ""
        out.append(
            f'<figure id="fig-{esc(plot.name)}"{css}><h3>{esc(plot.title)}</h3>'
            f'<img src="{data_uri}" alt="{esc(plot.title)}" data-file="{esc(plot.name)}.png">'
            f'<figcaption>{esc(plot.caption)} <span class="file">({esc(plot.name)}.png)</span>'
            "</figcaption></figure>"
        )
    return '<div class="figs">' + "".join(out) + "</div>"


def _dl(items: Iterable[tuple[str, str]]) -> str:
    return "<dl>" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


def _params(params: Mapping[str, Any]) -> str:
    if not params:
        return "—"
    return ", ".join(
        f"<code>{esc(k)}={esc(json.dumps(v, default=str))}</code>"
        for k, v in sorted(params.items())
    )


def calibration_summary(data: ReportData) -> str:
    """One line saying what the stored calibration map does."""
    kind = data.calibration_kind
    if kind == "none":
        return "none (probabilities are only clipped to [eps, 1] and renormalised)"
    if kind == "temperature":
        t = data.calibration_params[0]
        effect = "softens" if t > 1 else "sharpens"
        return f"temperature scaling, T = {t:.4g} ({effect} the probabilities)"
    offsets = data.calibration_offsets
    knots = [(offsets[i + 1] - offsets[i]) // 2 for i in range(len(offsets) - 1)]
    per_class = ", ".join(f"{esc(c)} {n}" for c, n in zip(data.classes, knots, strict=False))
    return f"per-class isotonic regression, knots per class: {per_class}"


def _counts_table(counts: Any) -> str:
    if isinstance(counts, dict) and all(isinstance(v, int | float) for v in counts.values()):
        total = sum(counts.values()) or 1
        rows = "".join(
            f'<tr><td>{esc(k)}</td><td class="n">{int(v):,}</td>'
            f'<td class="n">{v / total:.1%}</td></tr>'
            for k, v in counts.items()
        )
        return f'<table class="plain"><tr><th>class</th><th>rows</th><th></th></tr>{rows}</table>'
    if isinstance(counts, dict) and all(isinstance(v, dict) for v in counts.values()):
        parts = list(counts)
        labels = list(dict.fromkeys(k for v in counts.values() for k in v))
        head = "".join(f"<th>{esc(p)}</th>" for p in parts)
        rows = "".join(
            f"<tr><td>{esc(c)}</td>"
            + "".join(f'<td class="n">{esc(counts[p].get(c, 0))}</td>' for p in parts)
            + "</tr>"
            for c in labels
        )
        return f'<table class="plain"><tr><th>class</th>{head}</tr>{rows}</table>'
    return f"<code>{_json(counts)}</code>"


def _versions_table(versions: Any) -> str:
    if not isinstance(versions, dict) or not versions:
        return f"<code>{_json(versions)}</code>"
    return " · ".join(f"{esc(k)} <code>{esc(v)}</code>" for k, v in sorted(versions.items()))


def _json_details(summary: str, value: Any) -> str:
    text = json.dumps(value, sort_keys=True, indent=2, default=str, ensure_ascii=False)
    return f"<details><summary>{esc(summary)}</summary><pre>{esc(text)}</pre></details>"


def _label_source(source: Any) -> str:
    if not isinstance(source, dict):
        return f"<code>{_json(source)}</code>"
    kind = source.get("kind")
    if kind == "column":
        text = (
            f"column <code>{esc(source.get('column'))}</code> of catalog "
            f"<code>{esc(source.get('catalog'))}</code>"
        )
    elif kind == "crossmatch":
        text = (
            f"column <code>{esc(source.get('column'))}</code> of the nearest object of "
            f"catalog <code>{esc(source.get('catalog'))}</code> within "
            f"{esc(source.get('radius_arcsec'))} arcsec"
        )
    else:
        text = "as recorded below"
    excluded = source.get("excluded")
    if isinstance(excluded, dict) and excluded:
        listed = ", ".join(f"{esc(k.replace('_', ' '))} {esc(v)}" for k, v in excluded.items())
        text += f"; objects left out: {listed}"
    return text + _json_details("label source record", source)


def _calibration_fit(data: ReportData) -> str:
    settings = data.run.get("settings")
    fit = settings.get("calibration_fit") if isinstance(settings, dict) else None
    diagnostics = fit.get("diagnostics") if isinstance(fit, dict) else None
    if not isinstance(diagnostics, dict):
        return ""
    n = diagnostics.get("n_fit")
    before, after = diagnostics.get("log_loss_before"), diagnostics.get("log_loss_after")
    if not isinstance(before, int | float) or not isinstance(after, int | float):
        return ""
    where = (
        f"the {int(n):,}-object calibration split"
        if isinstance(n, int | float)
        else "held-out rows"
    )
    return f"; fitted on {where}, log loss there {before:.4f} → {after:.4f}"


def provenance(data: ReportData, generated_by: Mapping[str, str]) -> str:
    """The provenance block: model, estimator, snapshot, feature set, catalog, run, report."""
    run, snap, fs, cat = data.run, data.snapshot, data.feature_set, data.catalog
    started, finished = run.get("started_at"), run.get("finished_at")
    duration = ""
    if isinstance(started, datetime) and isinstance(finished, datetime):
        duration = f" ({(finished - started).total_seconds():.1f} s)"
    model = _dl(
        [
            (
                "model",
                f"<b>{esc(data.model_name)}</b> version {data.version} "
                f"(model_version_id {data.model_version_id})",
            ),
            ("description", esc(data.model_description or "—")),
            ("task", esc(data.task)),
            ("classes", ", ".join(esc(c) for c in data.classes)),
            ("registered", f"{_when(data.version_created_at)} by {esc(data.version_created_by)}"),
            ("estimator", f"<b>{esc(data.estimator)}</b>, seed {esc(data.candidate.seed)}"),
            ("parameters", _params(data.params)),
            ("features", f"{data.n_features}"),
            (
                "calibration",
                calibration_summary(data)
                + _calibration_fit(data)
                + f"; probabilities clipped at {data.calibration_eps:g}",
            ),
        ]
    )
    forced = snap.get("leakage_forced") or []
    snapshot = _dl(
        [
            (
                "snapshot",
                f"#{esc(snap.get('snapshot_id'))}, table "
                f"<code>snapshots.{esc(snap.get('table_name'))}</code>",
            ),
            ("rows", f"{int(snap.get('n_rows') or 0):,}"),
            ("folds", f"{esc(snap.get('n_folds'))}, stratified, seed {esc(snap.get('seed'))}"),
            (
                "calibration split",
                f"{float(snap.get('calibration_fraction') or 0):.0%} of the rows (fold -1), "
                "never trained on",
            ),
            ("rows per class", _counts_table(snap.get("class_counts"))),
            ("labels", _label_source(snap.get("label_source"))),
            (
                "leakage guard",
                '<span class="warn">inputs forced past the guard: ' + _json(forced) + "</span>"
                if forced
                else "passed: no feature refused, none forced",
            ),
            ("created", f"{_when(snap.get('created_at'))} by {esc(snap.get('created_by'))}"),
        ]
    )
    features = _dl(
        [
            (
                "feature set",
                f"<b>{esc(fs.get('name'))}</b>, table "
                f"<code>features.{esc(fs.get('table_name'))}</code>",
            ),
            ("spec sha256", f'<span class="hash">{esc(fs.get("spec_hash"))}</span>'),
            (
                "features",
                ", ".join(f"<code>{esc(n)}</code>" for n in fs.get("feature_names") or []),
            ),
            ("created", f"{_when(fs.get('created_at'))} by {esc(fs.get('created_by'))}"),
            ("spec", _json_details("canonical spec", fs.get("spec"))),
        ]
    )
    snap_time = snap.get("created_at")
    load_rows = "".join(
        f"<tr><td>{load.load_id}</td><td>{esc(load.mode)}</td>"
        f'<td title="{esc(load.file_name)}">{esc(load.file_name.rsplit("/", 1)[-1])}</td>'
        f'<td class="hash">{esc(load.file_sha256)}</td>'
        f'<td class="n">{load.rows_accepted:,}</td><td>{_when(load.finished_at)}'
        + (
            ' <span class="warn">after the snapshot</span>'
            if isinstance(snap_time, datetime) and load.finished_at > snap_time
            else ""
        )
        + "</td></tr>"
        for load in data.loads
    )
    catalog = _dl(
        [
            (
                "catalog",
                f"<b>{esc(cat.get('name'))}</b>, table "
                f"<code>{esc(cat.get('schema_name'))}.{esc(cat.get('table_name'))}</code>",
            ),
            (
                "columns",
                f"id <code>{esc(cat.get('id_column') or '(row number)')}</code>, "
                + (
                    f"RA <code>{esc(cat.get('ra_column'))}</code>, "
                    f"Dec <code>{esc(cat.get('dec_column'))}</code>"
                    if cat.get("ra_column")
                    else "no sky positions"
                ),
            ),
        ]
    ) + (
        '<table class="plain"><tr><th>load</th><th>mode</th><th>file</th><th>file sha256</th>'
        f"<th>rows</th><th>finished</th></tr>{load_rows}</table>"
        if load_rows
        else '<p class="missing">no load is recorded for this catalog</p>'
    )
    git = run.get("git_commit")
    settings = run.get("settings")
    notes = settings.get("notes") if isinstance(settings, dict) else None
    training = _dl(
        [
            ("training run", f"#{esc(run.get('training_run_id'))}"),
            ("when", f"{_when(started)} → {_when(finished)}{duration}"),
            (
                "who",
                f"OS user <code>{esc(run.get('os_user'))}</code>, database user "
                f"<code>{esc(run.get('db_user'))}</code>",
            ),
            (
                "git commit",
                f'<span class="hash">{esc(git)}</span>'
                if git
                else "— (not run from a git checkout)",
            ),
            ("libraries", _versions_table(run.get("library_versions"))),
            *(
                [("notes", "<br>".join(esc(n) for n in notes))]
                if isinstance(notes, list) and notes
                else []
            ),
            ("settings", _json_details("everything the run recorded", settings)),
        ]
    )
    report = _dl((esc(k), esc(v)) for k, v in generated_by.items())
    blocks = (
        ("Model version", model, ""),
        ("Training snapshot", snapshot, ""),
        ("Feature set", features, ""),
        ("Training run", training, ""),
        ("Catalog", catalog, "full"),
        ("This report", report, ""),
    )
    return (
        '<div class="prov">'
        + "".join(f'<div class="{css}"><h3>{title}</h3>{body}</div>' for title, body, css in blocks)
        + "</div>"
    )


def _lede(data: ReportData) -> str:
    snap = data.snapshot
    n_rows = int(snap.get("n_rows") or 0)
    cal = float(snap.get("calibration_fraction") or 0)
    what = (
        f"photometric redshift PDFs over {len(data.classes)} bins"
        if data.task == "photoz"
        else "classification into " + " / ".join(esc(c) for c in data.classes)
    )
    parts = [
        f"<b>{esc(data.estimator)}</b>",
        what,
        f"{esc(snap.get('n_folds'))}-fold cross-validation on {n_rows:,} objects"
        + (f" ({cal:.0%} held out for calibration)" if cal else ""),
        f"calibration: {calibration_summary(data)}",
    ]
    return " · ".join(parts)


def _stage_note(data: ReportData) -> str:
    text = ""
    if data.deployed_stage == "calibrated":
        text += (
            f" Every estimator is shown with the run's {esc(data.calibration_kind)} "
            "calibration applied (cross-fitted: each fold's map is fitted on the other folds), "
            "as this model is deployed with it; this model is also shown uncalibrated."
        )
    if data.task == "photoz" and any(e.estimator == "dummy" for e in data.baselines):
        text += (
            " The class-prior baseline (dummy) gives every object the same PDF, the redshift "
            "distribution of the training set: its PIT and interval coverage are ideal by "
            "construction while its scatter is large, so read the calibration metrics together "
            "with \N{GREEK SMALL LETTER SIGMA}_NMAD and the CRPS."
        )
    return text


def _number(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def uncertainty_table(data: ReportData) -> str:
    """The stored corrections per OOD bin: conformal quantiles (photo-z) or temperatures."""
    if not data.uncertainty:
        return (
            '<p class="note">This version stores no corrections per OOD bin (trained before '
            "they existed, or without a calibration split): the SQL functions "
            "<code>skyclass.photoz_intervals</code> and "
            "<code>skyclass.recalibrated_probabilities</code> refuse it.</p>"
        )
    photoz = data.task == "photoz"
    head = "<th>q (68%)</th><th>q (95%)</th>" if photoz else "<th>temperature</th>"
    rows = "".join(
        f"<tr><td>[{_number(r[0], 0)}, {_number(r[1], 0)})</td>"
        f'<td class="n">{int(r[2] or 0):,}</td>'
        + "".join(f'<td class="n">{_number(v)}</td>' for v in r[3:])
        + "</tr>"
        for r in data.uncertainty
    )
    if photoz:
        note = (
            "Per bin of the OOD percentile, the conformal quantile q that turns a PDF's central "
            "interval [L, U] with median M into [L - q (M - L + 0.001), U + q (U - M + 0.001)] "
            "(q &gt; 0 widens, q &lt; 0 narrows); fitted on the calibration split. "
        )
    else:
        note = (
            "Per bin of the OOD percentile, the temperature applied on top of the calibration "
            "map (T &gt; 1 softens the probabilities); fitted on the calibration split. "
        )
    note += (
        "A dash: fewer than 50 calibration objects, so no interval or probability there. "
        "Objects at percentile 99 or above, or with a feature out of the training range, get "
        "none either."
    )
    return (
        f'<p class="note">{note}</p><table class="metrics"><thead><tr><th>OOD percentile</th>'
        f"<th>calibration objects</th>{head}</tr></thead><tbody>{rows}</tbody></table>"
    )


def render_html(
    data: ReportData,
    plots: Sequence[Plot],
    *,
    generated_by: Mapping[str, str],
    notes: Sequence[str] = (),
    extra_sections: Sequence[tuple[str, str, str]] = (),
) -> str:
    """The whole report page of ``data`` with ``plots`` embedded; ``notes`` say what is missing.

    ``extra_sections`` are (id, title, HTML) sections placed before the provenance.
    """
    title = f"{data.model_name} v{data.version}"
    n_base = len(data.baselines)
    model_plots = [p for p in plots if not p.name.startswith("domain-")]
    shift_plots = [p for p in plots if p.name.startswith("domain-")]
    missing = "".join(f'<p class="note missing">{esc(n)}</p>' for n in notes)
    sections = [
        (
            "metrics",
            "Metrics against the baselines",
            '<p class="note">Every value is the mean ± sample standard deviation over the '
            f"{esc(data.snapshot.get('n_folds'))} cross-validation folds, each fold scored by a "
            "model that never saw it. The best value of each row is in bold; arrows say which "
            f"way is better. The shaded columns are this model, next to the {n_base} baselines "
            f"of the same run (same folds, same rows).{_stage_note(data)}</p>"
            + metric_tables(data),
        ),
        ("figures", "Figures", missing + figures(model_plots)),
        ("uncertainty", "Uncertainty per OOD bin", uncertainty_table(data)),
        *extra_sections,
        (
            "provenance",
            "Provenance",
            '<p class="note">Everything needed to reproduce or audit this model version, '
            "read from the skyclass registry tables.</p>" + provenance(data, generated_by),
        ),
    ]
    if data.domain:
        sections.insert(
            2,
            (
                "domain",
                "Where the model can be trusted",
                domain_section(data.domain, figures(shift_plots)),
            ),
        )
    toc = "".join(f'<a href="#{sid}">{esc(name)}</a>' for sid, name, _ in sections)
    toc += "".join(f'<a href="#fig-{esc(p.name)}">{esc(p.title)}</a>' for p in plots)
    body = "".join(
        f'<section id="{sid}"><h2>{esc(name)}</h2>{content}</section>'
        for sid, name, content in sections
    )
    generated = esc(generated_by.get("generated", ""))
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>skyclass report: {esc(title)}</title><style>{CSS}</style></head><body>"
        '<header class="top"><div class="kicker">skyclass model report</div>'
        f'<h1>{esc(data.model_name)} <span class="ver">v{data.version}</span></h1>'
        f'<p class="lede">{_lede(data)}</p>{headline(data)}</header>'
        f'<nav class="toc">{toc}</nav><main>{body}</main>'
        f"<footer>Generated {generated} by skyclass from the registry rows of "
        f"model_version_id {data.model_version_id}; regenerate with <code>skyclass report "
        f"{esc(data.model_name)}:{data.version}</code>.</footer>"
        "</body></html>\n"
    )
