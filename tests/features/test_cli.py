"""The ``skyclass features`` commands, and concurrent builds of one version."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
from click.testing import CliRunner

from skyclass.cli import main
from skyclass.features import BuildInfo, build_feature_set, example_spec_path

EXAMPLE = example_spec_path("sdss_ugriz")


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_build_list_show(fdb: str, tmp_path: Path) -> None:
    code, out = _run("features", "list")
    assert code == 0 and "no feature sets" in out
    code, out = _run("features", "build", str(EXAMPLE))
    assert code == 0, out
    assert "created feature set sdss_ugriz version" in out and "5,000 objects" in out
    code, out = _run("features", "build", str(EXAMPLE), "--progress")
    assert code == 0 and "unchanged" in out

    spec = tmp_path / "flags.toml"
    spec.write_text(
        'name = "flags"\ncatalog = "sdss17"\n[[feature]]\nname = "lu"\nexpr = "log10(u)"\n'
        'missing = "indicator"\nnondetection = { column = "u", above = 24.5, mask = true }\n'
    )
    code, out = _run("features", "build", str(spec))
    assert code == 0, out
    code, out = _run("features", "list")
    assert code == 0
    assert "sdss_ugriz" in out and "flags" in out and "5,000" in out and "features.flags_" in out
    code, out = _run("features", "show", "flags", "--sql")
    assert code == 0, out
    assert "lu_missing" in out and "1 where u > 24.5, else 0 (lu is NaN there)" in out
    assert "SELECT l.object_id" in out and "24.5" in out
    code, out = _run("features", "show", "sdss_ugriz")
    assert code == 0 and "u - g" in out and "colours" in out


def test_errors_are_one_line(fdb: str, tmp_path: Path) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text('name = "s"\ncatalog = "sdss17"\n[[feature]]\nname = "x"\nexpr = "u;"\n')
    code, out = _run("features", "build", str(spec))
    assert code == 1
    assert out.startswith(f"error: {spec}, line 4: feature 'x': bad expression")
    assert "Traceback" not in out
    code, out = _run("features", "show", "nope")
    assert code == 1 and "not registered" in out
    code, out = _run("features", "build", str(tmp_path / "missing.toml"))
    assert code == 1 and "cannot read the spec" in out


def test_concurrent_builds_of_one_version(fdb: str) -> None:
    results: list[BuildInfo] = []
    errors: list[BaseException] = []

    def build() -> None:
        try:
            fs = build_feature_set(EXAMPLE, url=fdb)
            assert fs.build is not None
            results.append(fs.build)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(b.action for b in results) == ["created", "unchanged", "unchanged"]
    with psycopg.connect(fdb) as conn:
        assert conn.execute("SELECT count(*) FROM skyclass.feature_set").fetchone() == (1,)
