"""The demo command, run as a newcomer runs it (against the test database)."""

from __future__ import annotations

import subprocess
import sys

import psycopg


def test_demo_runs_twice_and_shows_results(db_url: str) -> None:
    for _ in range(2):  # re-running replaces the catalog instead of failing
        result = subprocess.run(
            [sys.executable, "-m", "skyclass.cli", "demo"],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "99,999" in out or "99999" in out
    # the object observed twice shows up in the cone search and in the self cross-match
    assert "62669" in out and "62670" in out
    assert "psql" in out and "skyclass.cone_search" in out
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT count(*) FROM catalogs.sdss17").fetchone()
        loads = conn.execute(
            "SELECT count(*), array_agg(mode ORDER BY load_id) FROM skyclass.catalog_load"
        ).fetchone()
    assert rows == (99_999,)
    assert loads == (2, ["create", "replace"])
