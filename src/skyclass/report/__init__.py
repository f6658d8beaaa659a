"""The model report: PNG plots and one self-contained HTML page per model version.

:func:`make_report` reads a model version and everything recorded with it
(:mod:`skyclass.report.data`), draws the figures (:mod:`skyclass.report.plots`)
and writes them with the page (:mod:`skyclass.report.html`) to a directory.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from skyclass.report.data import ReportData, ReportError, load_report_data

if TYPE_CHECKING:
    from skyclass.report.plots import Plot

REPORT_FILE = "report.html"


@dataclass(frozen=True)
class ReportFiles:
    """What :func:`make_report` wrote: the directory, the page, the PNGs, what was missing."""

    directory: Path
    html: Path
    pngs: tuple[Path, ...]
    notes: tuple[str, ...]
    data: ReportData


def default_directory(data: ReportData) -> Path:
    """``./skyclass-report-<model>-v<version>``."""
    return Path(f"skyclass-report-{data.model_name}-v{data.version}")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        # No login name (a container with an unnamed uid): the uid still says who.
        return str(os.getuid())


def _write(path: Path, content: bytes) -> None:
    # Write next to the target and rename, so a reader never sees half a file.
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(content)
    tmp.replace(path)


def _missing_notes(data: ReportData, names: set[str]) -> list[str]:
    expected = {
        "confusion": "no confusion matrix is stored for the candidate evaluation",
        "roc": "no ROC curves are stored for the candidate evaluation",
        "reliability": "no reliability bins are stored for the candidate evaluation",
        "importance": "no feature importance is stored for the candidate evaluation",
        "ablation": "no feature-group ablation was run in this training run",
    }
    if data.task == "photoz":
        expected = {
            "zphot_zspec": "no z_phot/z_spec sample is stored for the candidate evaluation",
            "pit": "no PIT histogram is stored for the candidate evaluation",
            "coverage": "no interval coverage is stored for the candidate evaluation",
            "importance": expected["importance"],
            "ablation": expected["ablation"],
        }
    return [f"Not shown: {text}." for name, text in expected.items() if name not in names]


def _learning_section(data: ReportData, url: str | None) -> tuple[tuple[str, str, str], list[Plot]]:
    """The "why and what if" section (explanations, curves, learning curves) and its plots."""
    from skyclass.db.connect import connect
    from skyclass.report.html import figures
    from skyclass.report.learning import learning_html, learning_plots, read_learning

    with connect(url) as conn:
        learning = read_learning(conn, data.model_version_id, f"{data.model_name}:{data.version}")
    plots = learning_plots(learning)
    body = learning_html(learning) + (figures(plots) if plots else "")
    return ("learning", "Why and what if", body), plots


def make_report(
    ref: str, output: str | Path | None = None, *, url: str | None = None
) -> ReportFiles:
    """Write the PNG plots and the HTML page of model version ``ref`` (``MODEL[:VERSION]``).

    ``output`` defaults to ``./skyclass-report-<model>-v<version>/``; it is
    created if needed, and files of an earlier report there are replaced. The
    page embeds the PNGs, so ``report.html`` alone is the complete report.
    ``ref`` may also be a ``model_version_id``. Raises
    :class:`skyclass.errors.ModelNotFoundError` for an unknown model or
    version and :class:`~skyclass.report.data.ReportError` when the registry
    rows are inconsistent or the directory cannot be written.
    """
    import matplotlib

    from skyclass import __version__
    from skyclass.report.html import render_html
    from skyclass.report.plots import render_plots

    data = load_report_data(ref, url)
    directory = Path(output) if output is not None else default_directory(data)
    plots = render_plots(data)
    notes = _missing_notes(data, {p.name for p in plots})
    generated_by = {
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "by": _user(),
        "skyclass": __version__,
        "matplotlib": matplotlib.__version__,
    }
    learning = _learning_section(data, url)
    page = render_html(
        data, plots, generated_by=generated_by, notes=notes, extra_sections=[learning[0]]
    )
    plots = [*plots, *learning[1]]
    try:
        directory.mkdir(parents=True, exist_ok=True)
        pngs = []
        for plot in plots:
            path = directory / f"{plot.name}.png"
            _write(path, plot.png)
            pngs.append(path)
        html_path = directory / REPORT_FILE
        _write(html_path, page.encode("utf-8"))
    except OSError as exc:
        raise ReportError(
            f"cannot write the report to {directory}: {exc.strerror or exc}"
        ) from None
    return ReportFiles(directory, html_path, tuple(pngs), tuple(notes), data)


__all__ = ["ReportError", "ReportFiles", "make_report"]
