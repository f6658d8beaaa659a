"""The model report: PNG plots and one self-contained HTML page from the registry rows."""

from __future__ import annotations

import base64
import re
import subprocess
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import psycopg
import pytest
from click.testing import CliRunner
from PIL import Image

from skyclass.cli import main
from skyclass.errors import ModelNotFoundError, SkyclassError
from skyclass.report import make_report
from skyclass.report.data import load_report_data
from tests.report.conftest import Trained

CHROMIUM = Path("/usr/bin/chromium")
CLASSIFICATION_PNGS = ("confusion", "roc", "reliability", "importance", "ablation")
PHOTOZ_PNGS = ("zphot_zspec", "pit", "coverage", "reliability", "confusion", "importance")


@dataclass(frozen=True)
class Written:
    """A report written by ``skyclass report``: its directory and what the command printed."""

    directory: Path
    output: str

    @property
    def html(self) -> Path:
        return self.directory / "report.html"

    @property
    def pngs(self) -> list[str]:
        """PNG file names in the order the command listed them."""
        return [
            Path(line.strip()).name
            for line in self.output.splitlines()[1:]
            if line.strip().endswith(".png")
        ]

    @property
    def notes(self) -> list[str]:
        return [line[6:] for line in self.output.splitlines() if line.startswith("note: ")]


@dataclass(frozen=True)
class Reports:
    """The two reports of the module's models."""

    sdss: Written
    photoz: Written


@pytest.fixture(scope="module")
def reports(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Reports:
    """Reports of both models, written once per module with the command line.

    The classification report goes to the default directory (in a fresh
    working directory), the photo-z one to ``--output``.
    """
    root = tmp_path_factory.mktemp("reports")
    runner = CliRunner()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SKYCLASS_DATABASE_URL", trained.url)
        patch.chdir(root)
        sdss = runner.invoke(main, ["report", "sdss_classes"])
        photoz = runner.invoke(main, ["report", "boss_photoz:1", "--output", "photoz"])
    assert sdss.exit_code == 0, sdss.output
    assert photoz.exit_code == 0, photoz.output
    return Reports(
        Written(root / "skyclass-report-sdss_classes-v1", sdss.output),
        Written(root / "photoz", photoz.output),
    )


class Tables(HTMLParser):
    """Every ``<table class="metrics">`` as rows of (cell text, cell CSS classes)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[tuple[str, set[str]]]]] = []
        self._cell: tuple[list[str], set[str]] | None = None
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        css = set((dict(attrs).get("class") or "").split())
        if tag == "table" and "metrics" in css:
            self.tables.append([])
            self._depth = 1
        elif tag == "tr" and self._depth:
            self.tables[-1].append([])
        elif tag in ("td", "th") and self._depth:
            self._cell = ([], css)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append((" ".join("".join(self._cell[0]).split()), self._cell[1]))
            self._cell = None
        elif tag == "table":
            self._depth = 0

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell[0].append(data + " ")


def _tables(page: str) -> list[list[list[tuple[str, set[str]]]]]:
    parser = Tables()
    parser.feed(page)
    return parser.tables


def _check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    assert len(data) > 8_000, f"{path.name} is only {len(data)} bytes"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    assert 500 <= width <= 2500 and 250 <= height <= 2000, (path.name, image.size)
    # A blank or single-colour figure has (almost) no variance.
    assert pixels.std() > 10, f"{path.name} looks blank"


def _check_page(files: Written, names: tuple[str, ...]) -> str:
    page = files.html.read_text(encoding="utf-8")
    assert files.pngs == [f"{n}.png" for n in names]
    assert sorted(p.name for p in files.directory.iterdir()) == sorted(["report.html", *files.pngs])
    for name in names:
        path = files.directory / f"{name}.png"
        _check_png(path)
        # The page embeds exactly the bytes of the PNG file it names.
        match = re.search(
            r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="[^"]*" '
            rf'data-file="{name}\.png">',
            page,
        )
        assert match, f"{name}.png is not embedded in the page"
        assert base64.b64decode(match.group(1)) == path.read_bytes()
    # Self-contained: nothing is fetched, nothing runs.
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"<(script|link|iframe|object|embed)\b", page, re.IGNORECASE)
    assert not re.search(r'src="(?!data:)', page)
    assert "@import" not in page and "url(" not in page
    return page


def test_classification_report_files(reports: Reports) -> None:
    page = _check_page(reports.sdss, CLASSIFICATION_PNGS)
    assert reports.sdss.notes == []
    assert reports.sdss.output.startswith(
        "report of sdss_classes v1: skyclass-report-sdss_classes-v1/report.html\n"
    )
    assert "<title>skyclass report: sdss_classes v1</title>" in page
    for section in ("Metrics against the baselines", "Per class", "Provenance"):
        assert section in page
    # The per-OOD-bin temperatures (7 bins) follow the metric tables.
    uncertainty = _tables(page)[2]
    assert [c[0] for c in uncertainty[0]] == [
        "OOD percentile",
        "calibration objects",
        "temperature",
    ]
    assert [c[0] for c in uncertainty[1][:1]] == ["[0, 20)"] and len(uncertainty) == 8


def test_metric_table_has_every_baseline_with_error_bars(
    reports: Reports, trained: Trained
) -> None:
    page = reports.sdss.html.read_text(encoding="utf-8")
    overall, per_class, *_ = _tables(page)
    header = [text for text, _ in overall[0]]
    with psycopg.connect(trained.url) as conn:
        rows = conn.execute(
            "SELECT e.estimator, e.role, m.mean, m.std FROM skyclass.evaluation e "
            "JOIN skyclass.metric m USING (evaluation_id) "
            "WHERE e.training_run_id = %s AND m.name = 'accuracy' AND m.stage = 'calibrated' "
            "ORDER BY e.evaluation_id",
            (trained.sdss.training_run_id,),
        ).fetchall()
    assert {r[0] for r in rows if r[1] == "baseline"} == {"dummy", "colour_cut", "logistic"}
    # Candidate (calibrated, then uncalibrated) first, then each baseline.
    assert header[1].startswith("hist_gradient_boosting this model, calibrated")
    assert header[2].startswith("hist_gradient_boosting this model, uncalibrated")
    assert [h.split()[0] for h in header[3:]] == [r[0] for r in rows if r[1] == "baseline"]
    accuracy = next(r for r in overall if r[0][0].startswith("Accuracy"))
    by_estimator = {h.split()[0]: cell for h, cell in zip(header[3:], accuracy[3:], strict=True)}
    for estimator, role, mean, std in rows:
        if role == "baseline":
            assert by_estimator[estimator][0] == f"{mean:.3f} ± {std:.3f}"
    # The best accuracy is bold, and only cells holding the best value are.
    values = [float(text.split(" ± ")[0]) for text, _ in accuracy[1:]]
    best = {i for i, (_, css) in enumerate(accuracy[1:]) if "best" in css}
    assert best == {i for i, v in enumerate(values) if v == max(values)}
    # Per class: purity, completeness and the completeness at 1% FPR with its threshold.
    labels = [row[0][0] for row in per_class[1:]]
    assert labels.count("GALAXY") == labels.count("QSO") == labels.count("STAR") == 1
    assert labels.count("Completeness at 1% FPR ↑") == 3
    assert labels.count("Purity ↑") == labels.count("Completeness ↑") == 3
    fpr_rows = [r for r in per_class if r[0][0].startswith("Completeness at 1% FPR")]
    assert all(re.fullmatch(r"\d\.\d{3} ± \d\.\d{3} at p ≥ .+", r[1][0]) for r in fpr_rows)


def test_provenance_block(reports: Reports, trained: Trained) -> None:
    page = reports.sdss.html.read_text(encoding="utf-8")
    with psycopg.connect(trained.url) as conn:
        spec_hash, sha256s = conn.execute(
            "SELECT fs.spec_hash, array_agg(l.file_sha256) FROM skyclass.model_version mv "
            "JOIN skyclass.feature_set fs USING (feature_set_id) "
            "JOIN skyclass.catalog_load l ON l.catalog_id = fs.catalog_id "
            "WHERE mv.model_version_id = %s GROUP BY fs.spec_hash",
            (trained.sdss.model_version_id,),
        ).fetchone()
        git, versions = conn.execute(
            "SELECT git_commit, library_versions FROM skyclass.training_run "
            "WHERE training_run_id = %s",
            (trained.sdss.training_run_id,),
        ).fetchone()
    assert spec_hash in page
    assert all(sha in page for sha in sha256s)
    if git:
        assert git in page
    assert f"scikit-learn <code>{versions['scikit-learn']}</code>" in page
    assert "temperature scaling, T = " in page
    assert f"#{trained.sdss.snapshot_id}, table <code>snapshots." in page
    # Free text from the database is escaped, never markup.
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in page


def test_photoz_report(reports: Reports) -> None:
    page = _check_page(reports.photoz, PHOTOZ_PNGS)
    assert reports.photoz.notes == [
        "Not shown: no feature-group ablation was run in this training run."
    ]
    overall, uncertainty = _tables(page)
    labels = [row[0][0].rsplit(" ", 1)[0] for row in overall[1:]]
    assert [c[0] for c in uncertainty[0]][2:] == ["q (68%)", "q (95%)"]
    for name in (
        "\N{GREEK SMALL LETTER SIGMA}_NMAD of Δz/(1+z)",
        "Outlier fraction η",
        "PIT KS distance",
        "CRPS (mean)",
    ):
        assert name in labels
    assert "68% interval coverage" in " ".join(labels)
    assert "photometric redshift PDFs over 8 bins" in page


def test_model_references(trained: Trained, tmp_path: Path) -> None:
    by_id = load_report_data(trained.sdss.model_version_id, trained.url)
    assert (by_id.model_name, by_id.version) == ("sdss_classes", 1)
    empty = tmp_path / "empty"
    with pytest.raises(ModelNotFoundError, match="has no version 2; its versions are 1"):
        make_report("sdss_classes:2", empty, url=trained.url)
    with pytest.raises(ModelNotFoundError, match="known models: boss_photoz, sdss_classes"):
        make_report("nope", empty, url=trained.url)
    for bad in ("Bad", "a;drop", "x:0", "x:", "../x", "x" * 64):
        with pytest.raises(SkyclassError):
            make_report(bad, empty, url=trained.url)
    assert not empty.exists()


def test_cli_errors(trained: Trained, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYCLASS_DATABASE_URL", trained.url)
    result = CliRunner().invoke(main, ["report", "nope"])
    assert result.exit_code == 1
    assert "error: unknown model 'nope' (known models: boss_photoz, sdss_classes" in result.output
    result = CliRunner().invoke(main, ["report", "--help"])
    assert result.exit_code == 0 and "MODEL[:VERSION]" in result.output


def _screenshot(page: Path, target: Path, profile: Path, height: int) -> Image.Image:
    # The flags keep headless Chromium off the network (closed here) and let it run as root.
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--screenshot={target}",
        f"--window-size=1400,{height}",
        page.resolve().as_uri(),
    ]
    subprocess.run(command, capture_output=True, timeout=120, check=True)
    return Image.open(target).convert("RGB")


@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="headless Chromium is not installed (/usr/bin/chromium; Debian packages chromium "
    "and chromium-driver): the page is not rendered",
)
def test_page_renders_in_headless_chromium(reports: Reports, tmp_path: Path) -> None:
    shot = _screenshot(reports.sdss.html, tmp_path / "page.png", tmp_path / "profile", 6000)
    assert shot.size == (1400, 6000)
    pixels = np.asarray(shot, dtype=np.int32)
    assert pixels.std() > 20, "the rendered page is blank"
    # The header band is dark navy, the page body light.
    assert pixels[:150].mean() < 90 and pixels[400:].mean() > 200
    # The figures were decoded and drawn: the reliability diagram's orange (Okabe-Ito
    # #D55E00) and the ROC curves' blue (#0072B2) cover many pixels.
    orange = (np.abs(pixels - (0xD5, 0x5E, 0x00)).sum(axis=2) < 40).sum()
    assert orange > 2000, f"only {orange} orange pixels: the plots did not render"
    blue = (np.abs(pixels - (0x00, 0x72, 0xB2)).sum(axis=2) < 40).sum()
    assert blue > 2000, f"only {blue} blue pixels: the plots did not render"
