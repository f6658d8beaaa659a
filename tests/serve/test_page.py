"""The object page and the model card page, rendered by headless Chromium from the service."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx
import numpy as np
import psycopg
import pytest
from PIL import Image

from tests.report.test_report import CHROMIUM
from tests.serve.conftest import CATALOG, Service

PANELS = ("row", "classes", "pdf", "history")
SHOT = Path("/tmp/skyclass-object-page.png")  # kept for a person to look at


def _chromium(url: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # The flags keep headless Chromium off the network beyond the local service.
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
        *args,
        url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def _colour(pixels: np.ndarray, rgb: tuple[int, int, int]) -> int:
    return int((np.abs(pixels - rgb).sum(axis=2) < 40).sum())


def test_object_page_html_has_every_panel_and_no_external_asset(
    service: Service, admin: psycopg.Connection
) -> None:
    oid = admin.execute(f"SELECT min(object_id) FROM catalogs.{CATALOG}").fetchone()[0]  # type: ignore[index]
    answer = httpx.get(f"{service.base}/objects/{CATALOG}/{oid}")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    html = answer.text
    for panel in PANELS:
        assert f'<section id="{panel}">' in html
    assert f'href="/models/{service.db.sgq_v2}"' in html and "sgq:1" in html
    # self-contained: no script, no stylesheet link, no remote URL
    assert "<script" not in html and "<link" not in html
    assert not re.search(r"(src|href)=\"(https?:)?//", html)
    assert html.count("<svg") == 2


def test_object_page_errors_are_html(service: Service) -> None:
    answer = httpx.get(f"{service.base}/objects/{CATALOG}/12345678901")
    assert answer.status_code == 404 and "has no object 12345678901" in answer.text
    assert answer.headers["content-type"].startswith("text/html")


def test_model_card_page_shows_metrics_beside_baselines(service: Service) -> None:
    html = httpx.get(f"{service.base}/models/sgq:2").text
    for panel in ("provenance", "metrics", "calibration"):
        assert f'<section id="{panel}">' in html
    assert "(this version)" in html and "dummy" in html and "logistic" in html and " ± " in html


@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="headless Chromium is not installed "
    "(/usr/bin/chromium; Debian packages chromium and chromium-driver)",
)
def test_object_page_renders_in_headless_chromium(
    service: Service, admin: psycopg.Connection, tmp_path: Path
) -> None:
    oid = admin.execute(f"SELECT min(object_id) FROM catalogs.{CATALOG}").fetchone()[0]  # type: ignore[index]
    url = f"{service.base}/objects/{CATALOG}/{oid}"
    dom = _chromium(url, tmp_path / "p1", "--dump-dom").stdout
    for panel in PANELS:
        assert f'id="{panel}"' in dom, f"panel {panel} missing from the rendered page"
    shot_path = tmp_path / "object-page.png"
    _chromium(url, tmp_path / "p2", f"--screenshot={shot_path}", "--window-size=1400,1400")
    shot = Image.open(shot_path).convert("RGB")
    assert shot.size == (1400, 1400)
    pixels = np.asarray(shot, dtype=np.int32)
    assert pixels[:40].mean() < 90, "the dark header band is missing"
    # class bars (blue GALAXY, orange QSO, green STAR) and the PDF (blue bars, orange median)
    assert _colour(pixels, (0x00, 0x72, 0xB2)) > 500, "no blue: bars or PDF not drawn"
    assert _colour(pixels, (0xD5, 0x5E, 0x00)) > 50, "no orange: QSO bar / PDF median not drawn"
    shot.save(SHOT) if SHOT.parent.exists() else None
