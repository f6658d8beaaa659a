"""Parts of the demo report that need no database: benchmarks, example tables, escaping.

The whole page (with a database, every figure and a Chromium render) is
checked by tests/demo/test_demo.py, which runs ``skyclass demo --quick``.
"""

from __future__ import annotations

from pathlib import Path

from skyclass.report.demo import SqlExample, benchmarks_section


def test_no_benchmark_file_is_said_plainly(tmp_path: Path) -> None:
    text = benchmarks_section(tmp_path / "benchmarks.md")
    assert "No benchmark figures are recorded" in text and "make bench" in text
    assert "<table" not in text


def test_benchmark_tables_are_copied_with_their_headings(tmp_path: Path) -> None:
    path = tmp_path / "benchmarks.md"
    path.write_text(
        "# Benchmarks\n\n## Cone search <1M rows>\n\n"
        "| variant | p50 ms | ratio |\n|---|---:|:---:|\n| **q3c** | 0.4 | `12.5x` |\n"
        "| seq scan | 5.0 | 1x |\n\ntext\n\n## Empty\n\nno table here\n"
    )
    text = benchmarks_section(path)
    assert "<h3>Cone search &lt;1M rows&gt;</h3>" in text
    assert '<td class="t">q3c</td>' in text and "12.5x" in text
    assert text.count("<tr>") == 3 and "---" not in text


def test_empty_benchmark_file(tmp_path: Path) -> None:
    path = tmp_path / "benchmarks.md"
    path.write_text("# Benchmarks\n\nnothing measured yet\n")
    assert "holds no result table yet" in benchmarks_section(path)


def test_sql_example_text_table() -> None:
    example = SqlExample(
        "t", "SELECT 1", ("object_id", "p"), [(1, 0.5), (22, None), (3, 0.125)], "note"
    )
    lines = example.text(limit=2).splitlines()
    assert lines[0].split() == ["object_id", "p"]
    assert lines[2].split() == ["1", "0.5"] and lines[3].split() == ["22", "NULL"]
    assert lines[-1] == "... 1 more rows"
    assert SqlExample("t", "-- skipped", (), []).text() == "(no rows)"
