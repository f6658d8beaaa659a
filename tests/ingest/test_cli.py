"""The ``skyclass ingest`` and ``skyclass catalog`` commands."""

from __future__ import annotations

from pathlib import Path

import psycopg
from click.testing import CliRunner

from skyclass.cli import main
from tests.ingest.corpus import clean_columns, with_value, write_csv, write_fits


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_ingest_prints_a_summary(db_url: str, tmp_path: Path) -> None:
    cols = with_value(clean_columns(), "mag", 4, -9999.0)
    cols = with_value(cols, "mag", 5, float("nan"))
    path = write_fits(tmp_path / "cat.fits", cols)
    code, out = _run("ingest", str(path), "--catalog", "cat", "--description", "test catalog")
    assert code == 0, out
    assert "loaded 50 rows into catalog cat" in out and "rows/s" in out
    assert "mag: 2 (1 nan, 1 sentinel)" in out
    assert "sha256" in out

    code, out = _run("ingest", str(path), "--catalog", "cat")
    assert code == 1 and "--append" in out and "--replace" in out
    code, out = _run("ingest", str(path), "--catalog", "cat", "--append", "--replace")
    assert code == 1 and "exclude each other" in out
    code, out = _run("ingest", str(path), "--catalog", "cat", "--replace", "--null-values", "none")
    assert code == 0, out
    assert "replaced with 50 rows" in out and "mag: 1 (1 nan)" in out
    code, out = _run("ingest", str(path), "--catalog", "c2", "--null-values", "-9999,abc")
    assert code == 1 and "--null-values" in out


def test_catalog_list_show_drop(db_url: str, tmp_path: Path) -> None:
    code, out = _run("catalog", "list")
    assert code == 0 and "no catalogs" in out
    cols = clean_columns()
    del cols["id"]
    write_csv(tmp_path / "a.csv", cols)
    assert _run("ingest", str(tmp_path / "a.csv"), "-c", "alpha")[0] == 0
    code, out = _run("catalog", "list")
    assert code == 0 and "alpha" in out and "(generated)" in out and "50" in out
    code, out = _run("catalog", "show", "alpha")
    assert code == 0, out
    assert "catalogs.alpha, 50 rows" in out
    assert "object_id" in out and "double precision" in out and "deg" in out
    assert "create" in out and "a.csv" in out
    code, out = _run("catalog", "show", "beta")
    assert code == 1 and "not registered" in out and "alpha" in out
    code, out = _run("catalog", "drop", "alpha")
    assert code == 1 and "--yes" in out
    code, out = _run("catalog", "drop", "alpha", "--yes")
    assert code == 0 and "dropped" in out
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM skyclass.catalog_load").fetchone() == (0,)
        assert conn.execute("SELECT to_regclass('catalogs.alpha')").fetchone() == (None,)
    code, out = _run("catalog", "drop", "alpha", "--yes")
    assert code == 1 and "not registered" in out
    code, out = _run("catalog", "show", "Bad;Name")
    assert code == 1 and "not allowed" in out
