"""The wheel installs and works outside the checkout.

The wheel is built from the checkout and installed into a fresh virtual
environment in a temporary directory; every command then runs from another
temporary directory, so nothing can read ``migrations/``, ``docs/`` or the
sources of the checkout. ``skyclass db migrate`` brings an empty database to
head, then a tiny SDSS17 sample goes through ingest → features build → train →
compile → score.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from skyclass.db.migrate import head_revision
from tests.conftest import drop_database, new_database
from tests.docs.test_compose import copy_sources, instructions
from tests.train.pipeline_data import sdss_slice

ROOT = Path(__file__).resolve().parents[2]
ROWS = 1200
FILES = ("pyproject.toml", "constraints.txt", "README.md", "docs/benchmarks.md")
IGNORE = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.o", "*.so", "*.bc")


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    """Run ``args``; fail the test with its output when it exits non-zero."""
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture
def fresh_url(server_url: str) -> str:
    url = new_database(server_url, template="template0")
    yield url  # type: ignore[misc]
    drop_database(server_url, url)


@pytest.mark.slow
def test_wheel_installs_migrates_and_scores_outside_the_checkout(
    fresh_url: str, shared_data: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # Build from a copy of what the Docker image copies (docker/skyclass.Dockerfile), so
    # neither a stale build/ of the checkout nor a file outside that list can slip in.
    copied = [
        source
        for word, arguments in instructions(ROOT / "docker" / "skyclass.Dockerfile")
        if word == "COPY"
        for source in copy_sources(arguments) or []
    ]
    assert sorted(copied) == sorted([*FILES, "src"])
    source = tmp_path / "source"
    for name in FILES:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", symlinks=True, ignore=IGNORE)
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q", "-w", str(wheels)],
         tmp_path, env)  # fmt: skip
    (wheel,) = wheels.glob("skyclass-*.whl")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path, env)
    python, skyclass = venv / "bin" / "python", venv / "bin" / "skyclass"
    _run([str(python), "-m", "pip", "install", "-q", "--no-compile", "--disable-pip-version-check",
          "-c", str(ROOT / "constraints.txt"), str(wheel)], tmp_path, env)  # fmt: skip

    work = tmp_path / "work"
    work.mkdir()
    package = Path(_run([str(python), "-c", "import skyclass; print(skyclass.__file__)"],
                        work, env).strip()).parent  # fmt: skip
    assert package.is_relative_to(venv) and not package.is_relative_to(ROOT)
    # What the package reads at run time is in it, as files (a link in the checkout is copied).
    assert len(list((package / "db" / "migrations" / "versions").glob("0*.py"))) >= 10
    assert len(list((package / "db" / "sql").glob("*.sql"))) >= 7
    benchmarks = package / "report" / "data" / "benchmarks.md"
    assert benchmarks.is_file() and not benchmarks.is_symlink()
    spec = package / "features" / "examples" / "sdss_ugriz.toml"
    assert spec.is_file() and list((package / "demo" / "data").glob("*.csv*"))

    env["SKYCLASS_DATABASE_URL"] = fresh_url
    env["HOME"] = str(work)
    out = _run([str(skyclass), "db", "migrate"], work, env)
    with psycopg.connect(fresh_url) as conn:
        version = conn.execute("SELECT version_num FROM skyclass.alembic_version").fetchone()
    assert version == (head_revision(),), out

    csv = sdss_slice(shared_data, work / "tiny.csv", ROWS, seed=5)
    steps = [
        ["ingest", str(csv), "--catalog", "sdss17", "--id", "orig_row", "--ra", "alpha",
         "--dec", "delta", "--no-progress"],
        ["features", "build", str(spec), "--no-progress"],
        ["train", "sdss_ugriz", "--model", "sgq", "--label", "class", "--param", "max_iter=10",
         "--folds", "2", "--baselines", "dummy", "--no-importance", "--no-progress"],
        ["compile", "sgq:1", "--opt-level", "-O0", "--parallel-comp", "1", "--no-progress"],
        ["score", "sgq:1", "--catalog", "sdss17", "--workers", "1", "--no-progress"],
    ]  # fmt: skip
    for step in steps:
        _run([str(skyclass), *step], work, env)
    with psycopg.connect(fresh_url) as conn:
        scored = conn.execute(
            "SELECT count(*), count(DISTINCT top_label) FROM skyclass.prediction"
        ).fetchone()
    assert scored is not None and scored[0] == ROWS and scored[1] >= 2
