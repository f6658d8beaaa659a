"""The registry layer owns name resolution.

Static checks over ``src/skyclass`` (no database): ``score/`` and ``report/``
never import ``skyclass.train`` (they use :mod:`skyclass.registry` and
:mod:`skyclass.probability`);
and outside ``registry/`` no SQL text looks a model, model version or catalog
up by its name, except the writers that create or replace those rows inside
their own transaction (listed below with the reason).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "skyclass"

# SQL that finds a registry row by a user's name: model, catalog, feature build, deployment.
BY_NAME = {
    "model": re.compile(r"\bFROM\s+skyclass\.model\b(?!_)[^;]*?\bname\s*=\s*%s", re.S),
    "catalog": re.compile(r"\bFROM\s+skyclass\.catalog\b(?!_)[^;]*?\bname\s*=\s*%s", re.S),
    "feature_set": re.compile(r"\bFROM\s+skyclass\.feature_set\b(?!_)[^;]*?\bname\s*=\s*%s", re.S),
    "deployment": re.compile(r"\bFROM\s+skyclass\.deployment\b(?!_)[^;]*?\bname\s*=\s*%s", re.S),
}
# Writers that read a row by name to lock and change it in the same transaction.
WRITERS = {
    ("model", "train/pipeline.py"),  # checks the task, then creates the next version FOR UPDATE
    ("model", "domain/compiled.py"),  # locks <model>_domain, then creates its next version
    ("catalog", "ingest/load.py"),  # locks the catalog row it is about to load into
    ("feature_set", "features/build.py"),  # a build checks, under its lock, if it is new
    ("deployment", "score/deploy.py"),  # deletes the deployment it has just read
}


def _modules(package: str) -> list[Path]:
    return sorted((SRC / package).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _strings(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


# score/ and report/ apply what training fits (calibration maps, PDF summaries) through
# skyclass.probability and read the registry through skyclass.registry, never train/.
@pytest.mark.parametrize("package", ["score", "report"])
def test_score_and_report_do_not_import_train(package: str) -> None:
    modules = _modules(package)
    assert modules
    offending = {
        f"{path.relative_to(SRC)}: {name}"
        for path in modules
        for name in _imports(path)
        if name == "skyclass.train" or name.startswith("skyclass.train.")
    }
    assert not offending, sorted(offending)


def test_the_shared_output_maps_never_touch_the_database() -> None:
    for path in _modules("probability"):
        touching = {
            n
            for n in _imports(path)
            if n.startswith(("psycopg", "sqlalchemy", "skyclass.db", "skyclass.train"))
        }
        assert not touching, (path.name, touching)


def test_only_the_registry_looks_rows_up_by_name() -> None:
    found: list[str] = []
    for path in _modules("."):
        where = path.relative_to(SRC).as_posix()
        if where.startswith("registry/"):
            continue
        for line, text in _strings(path):
            for kind, pattern in BY_NAME.items():
                if pattern.search(text) and (kind, where) not in WRITERS:
                    found.append(f"{where}:{line}: {kind} by name: {text[:80]!r}")
    assert not found, "\n".join(found)


def test_the_rule_sees_a_lookup_by_name() -> None:
    """The patterns match real lookups (else the rule is vacuous) and nothing else."""
    texts = [t for p in _modules("registry") for _, t in _strings(p)]
    for kind in ("model", "catalog", "feature_set"):
        assert any(BY_NAME[kind].search(t) for t in texts), kind
    for kind, pattern in BY_NAME.items():
        assert pattern.search(f"SELECT x_id FROM skyclass.{kind} AS x\n WHERE x.name = %s")
        assert not pattern.search(f"SELECT 1 FROM skyclass.{kind}_history WHERE name = %s")
        assert not pattern.search(f"SELECT 1 FROM skyclass.{kind} WHERE x_id = %s")
