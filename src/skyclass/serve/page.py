"""HTML pages: an object page and a model card, self-contained (inline CSS and SVG).

No script, no font, no image from elsewhere: a page saved to disk shows the
same thing. Every value from the database is escaped.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

import psycopg
from starlette.requests import Request
from starlette.responses import HTMLResponse

from skyclass.serve import params, queries

PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442")
CSS = """
body{font-family:system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1b1f24}
header{background:#14213d;color:#fff;padding:18px 28px}header a{color:#cfe3ff}
h1{margin:0;font-size:22px}main{padding:20px 28px;display:grid;gap:18px;
grid-template-columns:repeat(auto-fit,minmax(420px,1fr))}
section{background:#fff;border:1px solid #d9dde3;border-radius:8px;padding:14px 18px;
overflow-x:auto}
h2{font-size:16px;margin:0 0 10px}table{border-collapse:collapse;font-size:13px;width:100%}
td,th{border-bottom:1px solid #eceff3;padding:3px 6px;text-align:left}
th{background:#f0f2f5}.num{text-align:right;font-variant-numeric:tabular-nums}
.note{color:#5b6570;font-size:12px}
"""


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.6g}"
    if isinstance(value, list | tuple):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def _document(title: str, subtitle: str, sections: list[str]) -> str:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{escape(title)}</h1><div>{subtitle}</div></header>"
        f"<main>{''.join(sections)}</main></body></html>"
    )


def _section(panel: str, heading: str, body: str) -> str:
    return f'<section id="{panel}"><h2>{escape(heading)}</h2>{body}</section>'


def _table(header: list[str], rows: list[list[str]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def probability_bars(probabilities: dict[str, float]) -> str:
    """Horizontal bars, one per class, as inline SVG."""
    width, bar, gap, left = 420, 22, 8, 90
    height = len(probabilities) * (bar + gap) + gap
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="class probabilities">'
    ]
    for i, (cls, p) in enumerate(probabilities.items()):
        y = gap + i * (bar + gap)
        share = min(max(float(p or 0.0), 0.0), 1.0)
        parts.append(
            f'<text x="{left - 6}" y="{y + 16}" text-anchor="end" font-size="13">'
            f"{escape(cls)}</text>"
            f'<rect x="{left}" y="{y}" width="{width - left - 60}" height="{bar}" fill="#eceff3"/>'
            f'<rect x="{left}" y="{y}" width="{(width - left - 60) * share:.1f}" height="{bar}" '
            f'fill="{PALETTE[i % len(PALETTE)]}"/>'
            f'<text x="{width - 54}" y="{y + 16}" font-size="13">{share:.3f}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def pdf_plot(edges: list[float], probabilities: list[float], summary: dict[str, Any]) -> str:
    """A redshift PDF as a histogram (density per bin) with its median and 68% interval."""
    width, height, pad = 440, 220, 36
    if len(edges) != len(probabilities) + 1 or not probabilities:
        return '<p class="note">no PDF bins</p>'
    lo, hi = float(edges[0]), float(edges[-1])
    dens = [
        float(p or 0) / max(float(edges[i + 1]) - float(edges[i]), 1e-12)
        for i, p in enumerate(probabilities)
    ]
    top = max(dens) or 1.0

    def x(z: float) -> float:
        return pad + (z - lo) / ((hi - lo) or 1) * (width - 2 * pad)

    def y(d: float) -> float:
        return height - pad - d / top * (height - 2 * pad)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="redshift PDF">'
    ]
    for i, d in enumerate(dens):
        x0, x1 = x(float(edges[i])), x(float(edges[i + 1]))
        parts.append(
            f'<rect x="{x0:.1f}" y="{y(d):.1f}" width="{max(x1 - x0 - 1, 0.5):.1f}" '
            f'height="{height - pad - y(d):.1f}" fill="#0072B2"/>'
        )
    low68, high68, median = summary.get("z_lo68"), summary.get("z_hi68"), summary.get("z_median")
    if low68 is not None and high68 is not None:
        parts.append(
            f'<rect x="{x(low68):.1f}" y="{pad}" width="{x(high68) - x(low68):.1f}" '
            f'height="{height - 2 * pad}" fill="#D55E00" fill-opacity="0.18"/>'
        )
    if median is not None:
        parts.append(
            f'<line x1="{x(median):.1f}" x2="{x(median):.1f}" y1="{pad}" '
            f'y2="{height - pad}" stroke="#D55E00" stroke-width="2"/>'
        )
    parts.append(
        f'<line x1="{pad}" x2="{width - pad}" y1="{height - pad}" y2="{height - pad}" '
        'stroke="#333"/>'
        f'<text x="{pad}" y="{height - 12}" font-size="12">{lo:g}</text>'
        f'<text x="{width - pad}" y="{height - 12}" font-size="12" text-anchor="end">{hi:g}'
        "</text>"
        f'<text x="{width / 2}" y="{height - 12}" font-size="12" text-anchor="middle">'
        "redshift (median line, 68% band)</text></svg>"
    )
    return "".join(parts)


async def object_page(request: Request, conn: psycopg.AsyncConnection[Any]) -> HTMLResponse:
    """The object page: catalog row, probabilities, PDF, history, domain, model card links."""
    params.check_known(request.query_params, ())
    name = params.name(request.path_params["catalog"], "catalog", required=True)
    object_id = params.object_id(request.path_params["id"])
    assert name is not None
    cat = await queries.catalog(conn, name, positions=False)
    doc = await queries.object_document(conn, cat, object_id)
    sections = [
        _section(
            "row",
            f"Catalog row ({name})",
            _table(
                ["column", "value"],
                [[escape(str(k)), escape(_fmt(v))] for k, v in doc["row"].items()],
            ),
        )
    ]
    classes, pdfs = [], []
    for dep, entry in doc["current"].items():
        card = f'<a href="/models/{entry["model_version_id"]}">model card</a>'
        head = (
            f"<p><b>{escape(dep)}</b> = {escape(entry['model_version'])} ({card}), "
            f"scored {escape(_fmt(entry['scored_at']))}</p>"
        )
        if entry["task"] == "classification":
            classes.append(head + probability_bars(entry["probabilities"]))
        else:
            summary = entry["summary"]
            pdfs.append(
                head
                + pdf_plot(entry["pdf"]["bin_edges"], entry["pdf"]["probabilities"], summary)
                + _table(
                    ["summary", "z"],
                    [[escape(k), escape(_fmt(v))] for k, v in summary.items()],
                    {1},
                )
            )
    none = '<p class="note">no deployment has scored this object</p>'
    sections.append(_section("classes", "Class probabilities", "".join(classes) or none))
    sections.append(
        _section(
            "pdf",
            "Redshift PDF",
            "".join(pdfs) or '<p class="note">no photo-z deployment has scored this object</p>',
        )
    )
    history_rows = [
        [
            f'<a href="/models/{h["model_version_id"]}">{escape(h["model_version"])}</a>',
            escape(", ".join(h["deployments"]) or "—"),
            escape(_fmt(h["top_label"])),
            escape(_fmt(h["top_probability"])),
            escape(_fmt(h["run_id"])),
            escape(_fmt(h["scored_at"])),
        ]
        for h in doc["history"]
    ]
    sections.append(
        _section(
            "history",
            "History across model versions and runs",
            _table(
                ["model version", "deployed as", "top class", "p", "run", "scored at"],
                history_rows,
                {3, 4},
            )
            if history_rows
            else none,
        )
    )
    if doc["domain"]:
        sections.append(
            _section(
                "domain",
                "Domain (training coverage)",
                _table(
                    ["model version", "AUC", "reliable", "propensity", "weight", "clipped"],
                    [
                        [
                            escape(_fmt(d[k]))
                            for k in (
                                "model_version_id",
                                "auc",
                                "reliable",
                                "propensity",
                                "weight",
                                "clipped",
                            )
                        ]
                        for d in doc["domain"]
                    ],
                ),
            )
        )
    subtitle = (
        f"object {object_id} of catalog {escape(name)} · "
        f'<a href="/api/objects/{escape(name)}/{object_id}">JSON</a>'
    )
    return HTMLResponse(_document(f"{name} {object_id}", subtitle, sections))


async def model_page(request: Request, conn: psycopg.AsyncConnection[Any]) -> HTMLResponse:
    """The model card page: provenance, metrics beside baselines, calibration table."""
    params.check_known(request.query_params, ())
    version = await queries.resolve_version(conn, request.path_params["version"])
    card = await queries.model_card(conn, version)
    v = card["model_version"]
    keep = (
        "label",
        "task",
        "estimator",
        "classes",
        "calibration_kind",
        "description",
        "feature_set",
        "feature_names",
        "training_catalog",
        "snapshot_rows",
        "n_folds",
        "calibration_fraction",
        "trained_at",
        "git_commit",
        "created_by",
    )
    sections = [
        _section(
            "provenance",
            "Provenance",
            _table(["field", "value"], [[escape(k), escape(_fmt(v.get(k)))] for k in keep]),
        )
    ]
    metric_rows = [
        [
            escape(m["estimator"]) + (" <b>(this version)</b>" if m["is_version"] else ""),
            escape(m["role"]),
            escape(m["name"]),
            escape(m["class_name"] or "all"),
            escape(m["stage"]),
            escape(_fmt(m["mean"])) + " ± " + escape(_fmt(m["std"])),
            escape(_fmt(m["n_folds"])),
        ]
        for m in card["metrics"]
        if not m["class_name"]
    ]
    sections.append(
        _section(
            "metrics",
            "Metrics (mean ± K-fold std) beside baselines",
            _table(
                ["estimator", "role", "metric", "class", "stage", "value", "folds"],
                metric_rows,
                {5, 6},
            ),
        )
    )
    calib = [
        [
            escape(c["name"]),
            escape(c["class_name"] or "all"),
            escape(c["stage"]),
            escape(
                ", ".join(sorted(map(str, c["data"])))[:200]
                if isinstance(c["data"], dict)
                else str(type(c["data"]).__name__)
            ),
        ]
        for c in card["calibration"]
    ]
    sections.append(
        _section(
            "calibration",
            "Calibration curves",
            _table(["curve", "class", "stage", "fields"], calib)
            if calib
            else '<p class="note">no calibration curves recorded</p>',
        )
    )
    subtitle = (
        f"model version {version} · deployed as "
        f"{escape(', '.join(card['deployments']) or 'nothing')} · "
        f'<a href="/api/models/{version}">JSON</a>'
    )
    return HTMLResponse(_document(f"Model card {v['label']}", subtitle, sections))


def error_page(status: int, message: str) -> str:
    """A small HTML page for an error."""
    return _document(
        f"Error {status}", "", [_section("error", "What went wrong", f"<p>{escape(message)}</p>")]
    )
