"""What the package reads at run time lives inside it (fast checks on the checkout)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import skyclass
from skyclass.db.migrate import HEAD_SQL_DIR, MIGRATIONS_DIR, head_sql_files
from skyclass.report.demo import BENCHMARKS_MD, benchmarks_section

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = Path(skyclass.__file__).resolve().parent


def test_run_time_paths_are_inside_the_package() -> None:
    for path in (MIGRATIONS_DIR, HEAD_SQL_DIR, BENCHMARKS_MD.parent):
        assert path.is_relative_to(PACKAGE), path
    assert head_sql_files()[0].name == "01_spatial.sql"


def test_benchmarks_shipped_are_the_docs_figures() -> None:
    # A link in the checkout (the wheel holds a copy): it cannot drift from docs/.
    assert BENCHMARKS_MD.read_text(encoding="utf-8") == (ROOT / "docs" / "benchmarks.md").read_text(
        encoding="utf-8"
    )
    assert "No benchmark figures" not in benchmarks_section()


def test_every_package_data_pattern_matches_files() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["skyclass"]
    for pattern in patterns:
        assert list(PACKAGE.glob(pattern)), f"package-data {pattern!r} matches nothing"
    for wanted in ("db/migrations/versions/*.py", "db/sql/*.sql", "demo/data/*"):
        assert wanted in patterns
