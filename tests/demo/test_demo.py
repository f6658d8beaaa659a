"""The demo command, run as a newcomer runs it (against the test database).

``skyclass demo --quick`` is the same pipeline as ``make demo`` with small
models and 3 folds; it runs twice to show that re-running is harmless.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import psycopg
import pytest

from tests.report.test_report import CHROMIUM, _screenshot


def _demo(output: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "skyclass.cli", "demo", "--quick", "--output", str(output)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


def test_demo_runs_twice_and_shows_results(db_url: str, tmp_path: Path) -> None:
    first = _demo(tmp_path / "first")
    assert first.returncode == 0, first.stderr[-3000:]
    result = _demo(tmp_path / "report")  # re-running replaces catalogs, adds versions
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "99,999" in out
    # the object observed twice shows up in the cone search and in the self cross-match
    assert "62669" in out and "62670" in out
    # each step prints its time; the run ends with the report and how to connect
    assert out.count("done in") >= 12
    report = tmp_path / "report" / "report.html"
    assert f"report:  {report}" in out and "connect: psql '" in out

    # the example SQL returned rows: a 95%-purity QSO threshold and candidates above it
    threshold = re.search(r"^\s+threshold\s+selected\s+purity\s+completeness\s*$", out, re.M)
    assert threshold, out
    assert re.search(r"([\d,]+) candidates in the whole catalog", out)
    assert re.search(r"[\d,]+ objects changed class \(", out)
    # the BOSS catalog, unlike the SDSS training set: its expected metrics and coverage
    assert re.search(r"domain-classifier AUC 0\.\d+ ± 0\.\d+ \(0\.5 = no shift\); [\d.]+% of ", out)
    assert re.search(r"^\s+balanced_accuracy\s+0\.\d+ ± 0\.\d+\s+0\.\d+\s*$", out, re.M), out
    # why and what if: explanations, a what-if curve, the oddest objects with their class
    assert re.search(r"TreeSHAP of \d+ quasars in [\d.]+ s; object \d+: \w+ logit", out), out
    assert re.search(
        r"p\(QSO\) of the median object as u-g runs over its range: ([01]\.\d+ ?){15}", out
    )
    oddest = out[out.index("the oddest objects") :].splitlines()[2:10]
    assert len(oddest) == 8 and all(re.search(r"(STAR|GALAXY|QSO)", line) for line in oddest)

    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM catalogs.sdss17").fetchone() == (99_999,)
        loads = conn.execute(
            "SELECT c.name, array_agg(l.mode ORDER BY l.load_id) FROM skyclass.catalog_load AS l "
            "JOIN skyclass.catalog AS c USING (catalog_id) GROUP BY c.name ORDER BY c.name"
        ).fetchall()
        assert loads == [("boss_dr10", ["create", "replace"]), ("sdss17", ["create", "replace"])]
        versions = conn.execute(
            "SELECT m.name, max(v.version), count(a.artifact_id) FROM skyclass.model AS m "
            "JOIN skyclass.model_version AS v USING (model_id) "
            "LEFT JOIN skyclass.model_artifact AS a USING (model_version_id) "
            "GROUP BY m.name ORDER BY m.name"
        ).fetchall()
        # each run fits, compiles and scores a domain classifier of sgq v1 against boss_dr10,
        # and a version of the anomaly model of the sdss_ugriz features (the oddest objects)
        assert versions == [
            ("photoz", 2, 2),
            ("sdss17_oddities", 2, 2),
            ("sgq", 4, 4),
            ("sgq_domain", 2, 2),
        ]
        ranks = conn.execute(
            "SELECT count(*), min(rank), max(rank) "
            "FROM skyclass.anomaly_rank('sdss17_oddities', 'sdss17')"
        ).fetchone()
        assert ranks == (99_999, 1, 99_999)
        shifts = conn.execute(
            "SELECT d.scorer, d.n_catalog, v.version, d.auc > 0.8 FROM skyclass.domain_shift "
            "AS d JOIN skyclass.model_version AS v USING (model_version_id) ORDER BY v.version"
        ).fetchall()
        assert shifts[-1] == ("database", 35_762, 3, True), shifts
        deployed = conn.execute(
            "SELECT deployment, catalog, count(*), max(v.version) "
            "FROM skyclass.current_classification JOIN skyclass.model_version AS v "
            "USING (model_version_id) GROUP BY 1, 2 ORDER BY 1"
        ).fetchall()
        # the deployments moved to the second run's first versions, fully rescored
        assert deployed == [
            ("photoz_current", "boss_dr10", 35_762, 2),
            ("sgq_current", "sdss17", 99_999, 3),
        ]
        runs = conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'succeeded'), count(*) "
            "FROM skyclass.scoring_run"
        ).fetchone()
        assert runs == (6, 6)
        # photo-z point estimates come with their intervals
        bad = conn.execute(
            "SELECT count(*) FROM skyclass.current_classification WHERE deployment = "
            "'photoz_current' AND NOT (z_lo68 <= z_median AND z_median <= z_hi68)"
        ).fetchone()
        assert bad == (0,)

    page = report.read_text()
    for section in ("Data", "Model sgq v3", "Model photoz v2", "Model sgq v4", "Benchmarks"):
        assert f">{section}" in page, section
    assert page.count("data:image/png;base64,") >= 12
    assert "<script" not in page
    assert "class_changes(" in page and "current_classification" in page
    # provenance: the sha256 of both bundled files
    assert "7b40b2856f6437d695d88281bfb222d784190a285d7c7e5dda653f6453be2c7e" in page
    assert "0ccc447220c2e382c08a9cfdb4cb6909ffa1dc8f1a2d8c6c5f1f6b876173fa25" in page

    if not CHROMIUM.exists():
        pytest.skip("headless Chromium is not installed: the demo report is not rendered")
    shot = _screenshot(report, tmp_path / "demo.png", tmp_path / "profile", 5000)
    pixels = np.asarray(shot, dtype=np.int32)
    assert pixels.std() > 20, "the rendered page is blank"
    assert pixels[:150].mean() < 110 and pixels[700:].mean() > 190
    # the sky map and magnitude histograms (Okabe-Ito blue, orange, green) were drawn
    for colour in ((0x00, 0x72, 0xB2), (0xD5, 0x5E, 0x00), (0x00, 0x9E, 0x73)):
        count = (np.abs(pixels - colour).sum(axis=2) < 40).sum()
        assert count > 1500, f"only {count} pixels of {colour}: the plots did not render"
