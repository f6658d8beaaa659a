"""The scorer against the registry of migration 0003: uncompiled versions, compiling, sharing."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql

from skyclass.cli import main
from skyclass.compile import artifact_of
from tests.score.conftest import Registered, register_cases
from tests.score.models import N_FEATURES, case, sdss17
from tests.support.registry import add_test_objects, feature_table, register_test_model

ROW = [20.0, 19.0, 18.5, 18.2, 18.0, 1.0, 0.5, 0.3, 0.2]
TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def versions(scoring_url: str) -> Registered:
    return register_cases(scoring_url, ("rf_binary",))


def _uncompiled(url: str, model: str) -> int:
    c = case("hgb_binary")
    with psycopg.connect(url, autocommit=True) as conn:
        version = register_test_model(
            conn,
            c.estimator,
            classes=c.classes,
            n_features=N_FEATURES,
            calibration=c.calibrations["isotonic"],
            model=model,
        )
    return version


def test_uncompiled_version_then_cli_compile_then_predict(
    scoring_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """55000 (not 42704) naming the command; after `skyclass compile` the same session scores."""
    c = case("hgb_binary")
    version = _uncompiled(scoring_url, "cli_model")
    x = sdss17().x_eval[:300]
    with psycopg.connect(scoring_url, autocommit=True) as conn:
        objects = add_test_objects(conn, version, x)
        table = feature_table(conn, version)
        query = sql.SQL("SELECT skyclass.predict(%s, x) FROM {} ORDER BY object_id").format(table)
        with pytest.raises(
            psycopg.errors.ObjectNotInPrerequisiteState,
            match=rf"model version {version} is not compiled: run `skyclass compile cli_model:1`",
        ):
            conn.execute(query, (version,))
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
            conn.execute("SELECT * FROM skyclass.model_info(%s)", (version,))
        with pytest.raises(psycopg.errors.UndefinedObject, match="does not exist"):
            conn.execute("SELECT skyclass.predict(%s, %s::real[])", (version + 1000, ROW))

        monkeypatch.setenv("SKYCLASS_DATABASE_URL", scoring_url)
        result = CliRunner().invoke(main, ["compile", "cli_model", "--no-progress"])
        assert result.exit_code == 0, result.output
        assert f"compiled cli_model:1 (model_version_id {version})" in result.output

        # The failed lookup was not cached: this session now loads the new artifact.
        rows = conn.execute(query, (version,)).fetchall()
    proba = np.array([r[0] for r in rows], dtype=np.float64)
    assert len(objects) == len(x) == len(proba)
    assert np.abs(proba - c.reference(x, "isotonic")).max() <= TOLERANCE
    # Rebuilt from the stored checkpoint with the default options: the same bytes.
    with psycopg.connect(scoring_url) as conn:
        info = artifact_of(conn, version)
    assert info is not None and info.sha256_hex == c.artifact.sha256_hex


@pytest.fixture
def reader_role(scoring_url: str) -> Iterator[str]:
    """A role that may score (reads versions and artifacts) but not read model names."""
    name = f"skyclass_test_{secrets.token_hex(4)}"
    ident = sql.Identifier(name)
    with psycopg.connect(scoring_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(ident))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA skyclass TO {}").format(ident))
        conn.execute(
            sql.SQL("GRANT SELECT ON skyclass.model_version, skyclass.model_artifact TO {}").format(
                ident
            )
        )
    try:
        yield name
    finally:
        with psycopg.connect(scoring_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(ident))
            conn.execute(sql.SQL("DROP ROLE {}").format(ident))


def test_not_compiled_hint_without_access_to_model_names(
    scoring_url: str, versions: Registered, reader_role: str
) -> None:
    version = _uncompiled(scoring_url, "hidden_model")
    with psycopg.connect(scoring_url) as conn:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(reader_role)))
        score = conn.execute(
            "SELECT skyclass.predict(%s, %s::real[])",
            (versions.versions["rf_binary"]["identity"], ROW),
        ).fetchone()
        assert score is not None and len(score[0]) == 2
        with pytest.raises(
            psycopg.errors.ObjectNotInPrerequisiteState,
            match=rf"is not compiled: run `skyclass compile {version}`",
        ):
            conn.execute("SELECT skyclass.predict(%s, %s::real[])", (version, ROW))


def _memfds(conn: psycopg.Connection[Any]) -> set[str]:
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    maps = Path(f"/proc/{row[0]}/maps")
    if not maps.exists():
        pytest.skip("the test server is not on this machine")
    return {
        line.split()[-1] for line in maps.read_text().splitlines() if "skyclass-artifact" in line
    }


def test_identical_libraries_are_loaded_once(scoring_url: str, versions: Registered) -> None:
    """Three versions (one per calibration) of one model: three artifact rows, one library."""
    ids = versions.versions["rf_binary"]
    assert len(set(versions.artifacts["rf_binary"].values())) == 3
    with psycopg.connect(scoring_url) as conn:
        results = [
            conn.execute("SELECT skyclass.predict(%s, %s::real[])", (v, ROW)).fetchone()
            for v in ids.values()
        ]
        loaded = conn.execute(
            "SELECT bool_and(loaded) FROM unnest(%s::bigint[]) AS v, skyclass.model_info(v)",
            (list(ids.values()),),
        ).fetchone()
        mapped = _memfds(conn)
    assert all(r is not None for r in results)
    assert loaded == (True,)
    assert len(mapped) == 1, mapped
