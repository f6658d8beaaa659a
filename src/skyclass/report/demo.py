"""The demo report: data summary, every demo model, the in-database results, benchmarks.

:func:`make_demo_report` writes one self-contained HTML page (and its PNGs)
for a run of ``skyclass demo``: a summary of the catalogs (rows per class,
magnitude distributions, sky coverage, the photo-z sample's redshifts), one
section per model version built from the same parts as the model report
(:mod:`skyclass.report.html`), the example SQL with the rows it returned, the
benchmark figures recorded in ``docs/benchmarks.md`` (or a plain statement
that none are recorded), and the provenance of every number: model versions,
file sha256 of every load, library versions, the demo's step times.
"""

from __future__ import annotations

import platform
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

from skyclass.registry.catalogs import find_catalog
from skyclass.report.data import ReportData, ReportError, read_report_data
from skyclass.report.html import CSS, esc, figures, headline, metric_tables, provenance
from skyclass.report.plots import PALETTE, Plot, figure_png, new_figure, render_plots

# docs/benchmarks.md, shipped as package data (a link in the checkout, a copy in the wheel).
BENCHMARKS_MD = Path(__file__).resolve().parent / "data" / "benchmarks.md"
BANDS = ("u", "g", "r", "i", "z")
NUMBERS = (int, float, Decimal)
CLASS_COLOURS = {"GALAXY": PALETTE[0], "QSO": PALETTE[1], "STAR": PALETTE[2]}

DEMO_CSS = """
.band { background:linear-gradient(135deg,#0b2545 0%,#13315c 60%,#1d4e89 100%); color:#f4f7fb;
        border-radius:10px; padding:12px 18px 16px; margin:10px 0 16px; }
.band .cards { margin-top:6px; }
pre.sql { background:#0f1b2d; color:#e3ecf7; border-radius:8px; padding:10px 14px;
          font:12.5px/1.45 ui-monospace,"DejaVu Sans Mono",monospace; overflow-x:auto; }
.example { margin:10px 0 26px; }
table.rows { font-size:13.5px; border-collapse:collapse; margin:6px 0; }
table.rows th, table.rows td { padding:4px 12px; border-bottom:1px solid var(--line);
                               text-align:right; white-space:nowrap; }
table.rows th { border-bottom:2px solid #b9c3cf; }
table.rows td.t, table.rows th.t { text-align:left; }
.steps td.n { text-align:right; }
"""


@dataclass(frozen=True)
class SqlExample:
    """One example query of the demo: title, the SQL as run, its columns and rows, a note."""

    title: str
    sql: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    note: str = ""

    def text(self, limit: int = 12) -> str:
        """The rows as a fixed-width text table (what the terminal shows)."""
        if not self.columns:
            return "(no rows)"
        cells = [[_cell(v) for v in row] for row in self.rows[:limit]]
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(self.columns)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(self.columns, widths, strict=True))]
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
        more = len(self.rows) - limit
        lines.append(f"({len(self.rows)} rows)" if more <= 0 else f"... {more} more rows")
        return "\n".join(lines)


@dataclass(frozen=True)
class DemoReportFiles:
    """What :func:`make_demo_report` wrote."""

    directory: Path
    html: Path
    pngs: tuple[Path, ...]


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


# --------------------------------------------------------------------------- data summary


@dataclass(frozen=True)
class CatalogSummary:
    """A catalog's size, load provenance and the columns the summary plots use."""

    name: str
    n_rows: int
    loads: list[dict[str, Any]]
    columns: dict[str, npt.NDArray[Any]]


def _catalog_summary(conn: psycopg.Connection[Any], name: str) -> CatalogSummary:
    found = find_catalog(conn, name)
    catalog_id, schema, table = found.catalog_id, found.schema, found.table
    wanted = ["ra", "dec", "class", *BANDS, "z_spec", *(f"mag_{b}" for b in BANDS)]
    present = [
        r[0]
        for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
            "AND table_name = %s",
            (schema, table),
        ).fetchall()
    ]
    cols = [c for c in wanted if c in present]
    data: dict[str, npt.NDArray[Any]] = {}
    if cols:
        query = sql.SQL("SELECT {} FROM {}").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in cols), sql.Identifier(schema, table)
        )
        rows = conn.execute(query).fetchall()
        for i, c in enumerate(cols):
            values = [r[i] for r in rows]
            if c == "class":
                data[c] = np.asarray([str(v) for v in values])
            else:
                data[c] = np.asarray([np.nan if v is None else float(v) for v in values])
    n = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table)))
    count = n.fetchone()
    loads = conn.execute(
        "SELECT load_id, mode, file_name, file_sha256, rows_accepted, finished_at "
        "FROM skyclass.catalog_load WHERE catalog_id = %s ORDER BY load_id",
        (catalog_id,),
    ).fetchall()
    return CatalogSummary(
        name,
        int(count[0]) if count else 0,
        [
            dict(zip(("load_id", "mode", "file", "sha256", "rows", "finished"), r, strict=True))
            for r in loads
        ],
        data,
    )


def _sky_plot(summary: CatalogSummary) -> Plot | None:
    if "ra" not in summary.columns or "class" not in summary.columns:
        return None
    ra, dec, cls = summary.columns["ra"], summary.columns["dec"], summary.columns["class"]
    with new_figure(10.5, 5.4) as fig:
        ax = fig.add_subplot(projection="mollweide")
        # Mollweide wants longitude in [-pi, pi]: RA increases to the left on the sky.
        lon = -np.radians(np.where(ra > 180, ra - 360, ra))
        lat = np.radians(dec)
        for name in sorted(set(cls.tolist())):
            mask = cls == name
            ax.scatter(
                lon[mask],
                lat[mask],
                s=1.2,
                alpha=0.35,
                color=CLASS_COLOURS.get(name, PALETTE[3]),
                label=f"{name} ({int(mask.sum()):,})",
                rasterized=True,
                linewidths=0,
            )
        ax.set_xticks(np.radians(np.arange(-150, 181, 30)))
        ax.set_xticklabels([f"{(-d) % 360}°" for d in range(-150, 181, 30)], fontsize=8)
        ax.grid(True, alpha=0.3)
        legend = ax.legend(loc="lower right", markerscale=8, fontsize=9, bbox_to_anchor=(1.1, -0.1))
        for handle in legend.legend_handles:
            if handle is not None:
                handle.set_alpha(1)
        png = figure_png(fig)
    return Plot(
        "sky_coverage",
        f"Sky coverage of {summary.name}",
        "Every object at its RA/Dec (Mollweide projection, equatorial coordinates, RA "
        "increasing to the left), coloured by its spectroscopic class.",
        png,
    )


def _magnitude_plot(summary: CatalogSummary) -> Plot | None:
    if "class" not in summary.columns or not all(b in summary.columns for b in BANDS):
        return None
    cls = summary.columns["class"]
    with new_figure(12.0, 3.4) as fig:
        axes = fig.subplots(1, len(BANDS), sharey=True)
        bins = np.linspace(13, 28, 61)
        for ax, band in zip(axes, BANDS, strict=True):
            values = summary.columns[band]
            for name in sorted(set(cls.tolist())):
                v = values[(cls == name) & np.isfinite(values)]
                ax.hist(
                    v,
                    bins=bins,
                    histtype="step",
                    linewidth=1.4,
                    color=CLASS_COLOURS.get(name, PALETTE[3]),
                    label=name,
                )
            ax.set_xlabel(f"{band} (mag)")
        axes[0].set_ylabel("objects per 0.25 mag")
        axes[-1].legend(loc="upper left")
        png = figure_png(fig)
    return Plot(
        "magnitudes",
        f"Magnitude distributions of {summary.name} by class",
        "Histograms of the five SDSS magnitudes per spectroscopic class (missing values left "
        "out). QSOs are faint and blue in u - g; stars and galaxies overlap in every band, "
        "which is why colours matter.",
        png,
    )


def _redshift_plot(summary: CatalogSummary) -> Plot | None:
    if "z_spec" not in summary.columns:
        return None
    z = summary.columns["z_spec"]
    with new_figure(10.5, 3.4) as fig:
        left, right = fig.subplots(1, 2)
        left.hist(z[np.isfinite(z)], bins=50, color=PALETTE[0], alpha=0.85)
        left.set_xlabel("spectroscopic redshift z_spec")
        left.set_ylabel("objects")
        if "mag_r" in summary.columns:
            r = summary.columns["mag_r"]
            ok = np.isfinite(r) & np.isfinite(z)
            right.hexbin(z[ok], r[ok], gridsize=50, bins="log", cmap="Blues", mincnt=1)
            right.set_xlabel("z_spec")
            right.set_ylabel("r (mag)")
            right.invert_yaxis()
        png = figure_png(fig)
    return Plot(
        "photoz_sample",
        f"Redshifts of {summary.name}",
        "Left: the spectroscopic redshifts the photo-z model learns (BOSS LOWZ/CMASS "
        "galaxies). Right: r magnitude against redshift (log density).",
        png,
    )


def _class_table(summary: CatalogSummary) -> str:
    if "class" not in summary.columns:
        return ""
    cls = summary.columns["class"]
    names, counts = np.unique(cls, return_counts=True)
    total = int(counts.sum())
    body = "".join(
        f'<tr><td class="t">{esc(n)}</td><td>{int(c):,}</td><td>{c / total:.1%}</td></tr>'
        for n, c in zip(names.tolist(), counts.tolist(), strict=True)
    )
    return (
        f'<table class="rows"><tr><th class="t">class</th><th>rows</th><th>share</th></tr>'
        f'{body}<tr><td class="t"><b>total</b></td><td><b>{total:,}</b></td><td></td></tr>'
        "</table>"
    )


def _z_table(summary: CatalogSummary) -> str:
    if "z_spec" not in summary.columns:
        return ""
    z = summary.columns["z_spec"]
    z = z[np.isfinite(z)]
    if not len(z):
        return ""
    q = np.percentile(z, [5, 25, 50, 75, 95])
    cells = "".join(f"<td>{v:.3f}</td>" for v in q)
    return (
        '<table class="rows"><tr><th class="t">rows</th><th>z 5%</th><th>25%</th><th>median'
        f'</th><th>75%</th><th>95%</th></tr><tr><td class="t">{len(z):,}</td>{cells}</tr>'
        "</table>"
    )


def _loads_table(summaries: Sequence[CatalogSummary]) -> str:
    rows = "".join(
        f'<tr><td class="t">{esc(s.name)}</td><td>{load["load_id"]}</td>'
        f'<td class="t">{esc(load["mode"])}</td>'
        f'<td class="t" title="{esc(load["file"])}">{esc(str(load["file"]).rsplit("/", 1)[-1])}'
        f'</td><td class="t hash">{esc(load["sha256"])}</td><td>{int(load["rows"]):,}</td>'
        f'<td class="t">{esc(_when(load["finished"]))}</td></tr>'
        for s in summaries
        for load in s.loads
    )
    return (
        '<div class="scroll"><table class="rows"><tr><th class="t">catalog</th><th>load</th>'
        '<th class="t">mode</th><th class="t">file</th><th class="t">file sha256</th>'
        f'<th>rows</th><th class="t">finished</th></tr>{rows}</table></div>'
    )


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    return "—" if value is None else str(value)


# --------------------------------------------------------------------------- benchmarks


def _markdown_tables(text: str) -> list[tuple[str, list[list[str]]]]:
    """The pipe tables of a Markdown text with the heading above each."""
    tables: list[tuple[str, list[list[str]]]] = []
    heading = ""
    current: list[list[str]] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            heading = stripped.lstrip("#").strip()
        if stripped.startswith("|") and stripped.endswith("|"):
            cells = [c.strip() for c in stripped.strip("|").split("|")]
            if all(re.fullmatch(r":?-{3,}:?", c) for c in cells):
                continue
            if current is None:
                current = []
                tables.append((heading, current))
            current.append(cells)
        else:
            current = None
    return tables


def benchmarks_section(path: Path = BENCHMARKS_MD) -> str:
    """The benchmark tables recorded in ``docs/benchmarks.md``, or a statement that none are."""
    if not path.is_file():
        return (
            '<p class="note missing">No benchmark figures are recorded on this machine '
            f"(<code>{esc(path.name)}</code> is not in the installed package): run "
            "<code>make bench</code> to measure them. None are shown rather than figures "
            "from another machine.</p>"
        )
    tables = _markdown_tables(path.read_text(encoding="utf-8", errors="replace"))
    if not tables:
        return f'<p class="note missing"><code>{esc(path)}</code> holds no result table yet.</p>'
    out = [
        '<p class="note">As recorded in <code>docs/benchmarks.md</code> (copied verbatim; '
        "the machine and the date of each measurement are described there). Ratios compare "
        "skyclass with the baseline named in each table on the same machine.</p>"
    ]
    for heading, rows in tables:
        header, *body = rows
        head = "".join(f'<th class="t">{esc(_md(c))}</th>' for c in header)
        cells = "".join(
            "<tr>" + "".join(f'<td class="t">{esc(_md(c))}</td>' for c in r) + "</tr>" for r in body
        )
        out.append(
            (f"<h3>{esc(heading)}</h3>" if heading else "")
            + f'<div class="scroll"><table class="rows"><tr>{head}</tr>{cells}</table></div>'
        )
    return "".join(out)


def _md(text: str) -> str:
    """Markdown cell text without emphasis and code marks."""
    return re.sub(r"[*`]", "", text)


# --------------------------------------------------------------------------- page


def _examples_html(examples: Sequence[SqlExample]) -> str:
    out = []
    for i, ex in enumerate(examples, start=1):
        head = "".join(f'<th class="t">{esc(c)}</th>' for c in ex.columns)
        body = "".join(
            "<tr>"
            + "".join(
                f'<td class="{"" if isinstance(v, NUMBERS) else "t"}">{esc(_cell(v))}</td>'
                for v in row
            )
            + "</tr>"
            for row in ex.rows[:20]
        )
        rows = (
            f'<div class="scroll"><table class="rows"><tr>{head}</tr>{body}</table></div>'
            if ex.columns
            else ""
        )
        count = f"{len(ex.rows)} row{'s' if len(ex.rows) != 1 else ''} returned"
        out.append(
            f'<div class="example" id="sql-{i}"><h3>{i}. {esc(ex.title)}</h3>'
            f'<pre class="sql">{esc(ex.sql)}</pre>{rows}'
            f'<p class="note">{esc(count)}.'
            + (f" {esc(ex.note)}" if ex.note else "")
            + "</p></div>"
        )
    return "".join(out)


def _model_section(data: ReportData, plots: Sequence[Plot], prefix: str) -> str:
    figs = figures(plots).replace('id="fig-', f'id="{prefix}-fig-')
    return (
        f'<div class="band"><b>{esc(data.model_name)} v{data.version}</b> · '
        f"{esc(data.estimator)} · model_version_id {data.model_version_id} · "
        f"{esc(data.task)}{headline(data)}</div>"
        f'<p class="note">Mean ± standard deviation over the '
        f"{esc(data.snapshot.get('n_folds'))} cross-validation folds; the shaded columns are "
        "this model, next to the baselines of the same run (same folds, same rows); the best "
        "value of each row is in bold.</p>" + metric_tables(data) + figs
    )


def _cards(items: Sequence[tuple[str, str, str]]) -> str:
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="k">{esc(k)}</div><div class="v">{v}</div>'
            + (f'<div class="b">{esc(b)}</div>' if b else "")
            + "</div>"
            for k, v, b in items
        )
        + "</div>"
    )


def _headline_cards(
    models: Sequence[ReportData],
    summaries: Sequence[CatalogSummary],
    examples: Sequence[SqlExample],
    timings: Sequence[tuple[str, float]],
) -> str:
    items: list[tuple[str, str, str]] = [
        (f"catalog {s.name}", f"{s.n_rows:,}", "objects") for s in summaries
    ]
    for data in models[:2]:
        name = "accuracy" if data.task == "classification" else "sigma_nmad"
        metric = data.candidate.metric(name)
        if metric is not None and metric.mean is not None:
            std = f" <small>± {metric.std:.3f}</small>" if metric.std is not None else ""
            digits = 3 if name == "accuracy" else 4
            items.append(
                (
                    f"{data.model_name} v{data.version}",
                    f"{metric.mean:.{digits}f}{std}",
                    "accuracy"
                    if name == "accuracy"
                    else "\N{GREEK SMALL LETTER SIGMA}_NMAD of Δz/(1+z)",
                )
            )
    for ex in examples:
        if ex.title.startswith("The QSO probability threshold") and ex.rows:
            threshold, _, purity, completeness = ex.rows[0]
            items.append(
                (
                    "QSO threshold",
                    f"{float(threshold):.3f}",
                    f"purity {float(purity):.3f}, completeness {float(completeness):.3f}",
                )
            )
        if ex.title.startswith("Objects whose class changed"):
            changed = sum(int(r[-1]) for r in ex.rows)
            items.append(("class changes", f"{changed:,}", "between the two sgq versions"))
    if timings:
        items.append(("demo run", f"{sum(t for _, t in timings):.0f} s", "all steps"))
    return _cards(items)


def _environment(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    from importlib import metadata

    from skyclass import __version__

    server = conn.execute("SELECT version()").fetchone()
    extensions = conn.execute(
        "SELECT string_agg(extname || ' ' || extversion, ', ' ORDER BY extname) FROM pg_extension"
    ).fetchone()
    out = [
        ("skyclass", __version__),
        ("PostgreSQL", str(server[0]) if server else "?"),
        ("extensions", str(extensions[0]) if extensions else "?"),
        ("Python", platform.python_version()),
    ]
    dists = ("numpy", "scikit-learn", "treelite", "tl2cgen", "astropy", "psycopg", "matplotlib")
    for dist in dists:
        try:
            out.append((dist, metadata.version(dist)))
        except metadata.PackageNotFoundError:
            out.append((dist, "not installed"))
    return out


def render_demo_html(
    models: Sequence[tuple[ReportData, Sequence[Plot]]],
    summaries: Sequence[CatalogSummary],
    data_plots: Sequence[Plot],
    examples: Sequence[SqlExample],
    timings: Sequence[tuple[str, float]],
    environment: Sequence[tuple[str, str]],
    *,
    generated: str,
    quick: bool,
    benchmarks: str,
) -> str:
    """The whole demo page: every figure embedded, every value escaped, no script."""
    data_section = (
        '<p class="note">The two bundled samples as loaded into the database. '
        "Rows per class:</p>"
        + "".join(_class_table(s) for s in summaries)
        + "".join(
            f'<p class="note">Spectroscopic redshifts of <b>{esc(s.name)}</b>:</p>{_z_table(s)}'
            for s in summaries
            if "z_spec" in s.columns
        )
        + figures(data_plots)
        .replace('id="fig-', 'id="data-fig-')
        .replace('id="data-fig-magnitudes"', 'id="data-fig-magnitudes" class="wide"')
    )
    sections = [("data", "Data", data_section)]
    for i, (data, plots) in enumerate(models):
        role = "second version (compared by class changes)" if i >= 2 else ""
        sections.append(
            (
                f"model-{i}",
                f"Model {data.model_name} v{data.version}" + (f" — {role}" if role else ""),
                _model_section(data, plots, f"m{i}"),
            )
        )
    sections.append(
        (
            "sql",
            "In-database results",
            '<p class="note">Every query below ran on the scored catalogs exactly as shown '
            "(copy it into psql). Probabilities are the calibrated in-database predictions of "
            "the deployed model versions.</p>" + _examples_html(examples),
        )
    )
    sections.append(("benchmarks", "Benchmarks", benchmarks))
    steps = "".join(
        f'<tr><td class="t">{esc(t)}</td><td class="n">{s:.1f} s</td></tr>' for t, s in timings
    )
    env = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in environment)
    prov = (
        "<h3>Data files</h3>"
        + _loads_table(summaries)
        + '<div class="prov"><div><h3>Software</h3><dl>'
        + env
        + "</dl></div><div><h3>Demo steps</h3>"
        + f'<table class="plain steps">{steps}</table></div></div>'
        + "".join(
            f"<h3>{esc(d.model_name)} v{d.version} (model_version_id {d.model_version_id})</h3>"
            + provenance(d, {"generated": generated})
            for d, _ in models
        )
    )
    sections.append(("provenance", "Provenance", prov))
    toc = "".join(f'<a href="#{sid}">{esc(name.split(" — ")[0])}</a>' for sid, name, _ in sections)
    body = "".join(
        f'<section id="{sid}"><h2>{esc(name)}</h2>{content}</section>'
        for sid, name, content in sections
    )
    lede = (
        "The whole product on the bundled SDSS DR17 and BOSS DR10 samples: validated ingest, "
        "features computed in PostgreSQL, models cross-validated next to their baselines and "
        "calibrated, compiled to native code, deployed, and every catalog rescored inside the "
        "database."
        + (" Quick run: small models and 3 folds, not the figures of the full demo." * quick)
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>skyclass demo report</title><style>{CSS}{DEMO_CSS}</style></head><body>"
        '<header class="top"><div class="kicker">skyclass demo report</div>'
        "<h1>Star / galaxy / QSO classes and photometric redshifts, inside PostgreSQL</h1>"
        f'<p class="lede">{esc(lede)}</p>'
        f"{_headline_cards([d for d, _ in models], summaries, examples, timings)}</header>"
        f'<nav class="toc">{toc}</nav><main>{body}</main>'
        f"<footer>Generated {esc(generated)} by <code>skyclass demo</code> from the registry "
        "rows of the model versions above.</footer></body></html>\n"
    )


def make_demo_report(
    models: Sequence[int | str],
    output: str | Path,
    *,
    examples: Sequence[SqlExample] = (),
    timings: Sequence[tuple[str, float]] = (),
    catalogs: Sequence[str] = (),
    quick: bool = False,
    url: str | None = None,
    benchmarks_file: Path = BENCHMARKS_MD,
) -> DemoReportFiles:
    """Write the demo report of ``models`` (ids or ``MODEL[:VERSION]``) to directory ``output``.

    ``catalogs`` are summarised in the data section; ``examples`` (the demo's
    queries with their rows) and ``timings`` (step, seconds) are shown as
    given. ``report.html`` embeds every figure; the PNGs are written next to
    it. Raises :class:`ReportError` when a catalog is unknown or the
    directory cannot be written.
    """
    from skyclass.db.connect import connect

    directory = Path(output)
    with connect(url, autocommit=True) as conn:
        loaded = [read_report_data(conn, ref) for ref in models]
        summaries = [_catalog_summary(conn, name) for name in catalogs]
        environment = _environment(conn)
    model_plots = [(d, render_plots(d)) for d in loaded]
    data_plots = [
        p
        for s in summaries
        for p in (_sky_plot(s), _magnitude_plot(s), _redshift_plot(s))
        if p is not None
    ]
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    page = render_demo_html(
        model_plots,
        summaries,
        data_plots,
        examples,
        timings,
        environment,
        generated=generated,
        quick=quick,
        benchmarks=benchmarks_section(benchmarks_file),
    )
    pngs: list[Path] = []
    try:
        directory.mkdir(parents=True, exist_ok=True)
        named = [("data", p) for p in data_plots] + [
            (f"{d.model_name}-v{d.version}", p) for d, plots in model_plots for p in plots
        ]
        for prefix, plot in named:
            path = directory / f"{prefix}-{plot.name}.png"
            _write(path, plot.png)
            pngs.append(path)
        html_path = directory / "report.html"
        _write(html_path, page.encode("utf-8"))
    except OSError as exc:
        raise ReportError(f"cannot write the demo report to {directory}: {exc}") from None
    return DemoReportFiles(directory, html_path, tuple(pngs))


def _write(path: Path, content: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(content)
    tmp.replace(path)


def embedded_images(page: str) -> int:
    """How many base64 PNG images ``page`` embeds (for checks)."""
    return page.count("data:image/png;base64,")


__all__ = [
    "DemoReportFiles",
    "SqlExample",
    "benchmarks_section",
    "make_demo_report",
    "render_demo_html",
]
