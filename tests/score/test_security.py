"""Native code is loaded only as registered: hash check, immutability, privileges, bad rows."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from skyclass.compile import CalibrationColumns
from tests.score.conftest import Registered, register_cases
from tests.score.models import N_FEATURES, case
from tests.support.registry import register_test_model

ROW = [20.0, 19.0, 18.5, 18.2, 18.0, 1.0, 0.5, 0.3, 0.2]


@pytest.fixture(scope="module")
def versions(scoring_url: str) -> Registered:
    return register_cases(scoring_url, ("et_binary", "hgb_multiclass"))


def _mapped_memfds(conn: psycopg.Connection[Any]) -> str:
    """The backend's memory map lines of skyclass model memfds (what dlopen mapped)."""
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    maps = Path(f"/proc/{row[0]}/maps")
    if not maps.exists():
        pytest.skip("the test server is not on this machine")
    return "\n".join(line for line in maps.read_text().splitlines() if "skyclass-artifact" in line)


def test_library_is_mapped_from_a_memfd(scoring_url: str, versions: Registered) -> None:
    artifact_id = versions.artifacts["hgb_multiclass"]["identity"]
    with psycopg.connect(scoring_url) as conn:
        assert _mapped_memfds(conn) == ""
        conn.execute(
            "SELECT skyclass.predict(%s, %s::real[])",
            (versions.versions["hgb_multiclass"]["identity"], ROW),
        )
        mapped = _mapped_memfds(conn)
    assert f"/memfd:skyclass-artifact-{artifact_id} " in mapped + " "


def test_tampered_artifact_is_refused_before_loading(
    scoring_url: str, versions: Registered
) -> None:
    artifact_id = versions.artifacts["et_binary"]["identity"]
    version = versions.versions["et_binary"]["identity"]
    with psycopg.connect(scoring_url, autocommit=True) as conn:
        # A superuser (or disk corruption) bypasses the immutability trigger.
        conn.execute("SET session_replication_role = replica")
        conn.execute(
            "UPDATE skyclass.model_artifact "
            "SET library = overlay(library PLACING '\\xcc'::bytea FROM 2000 FOR 1) "
            "WHERE artifact_id = %s",
            (artifact_id,),
        )
    with psycopg.connect(scoring_url) as conn:
        with pytest.raises(psycopg.errors.DataCorrupted, match="failed its sha256 check"):
            conn.execute("SELECT skyclass.predict(%s, %s::real[])", (version, ROW))
        conn.rollback()
        assert _mapped_memfds(conn) == ""
        info = conn.execute("SELECT loaded FROM skyclass.model_info(%s)", (version,)).fetchone()
        assert info == (False,)
        # Other artifacts still load in the same session.
        conn.execute(
            "SELECT skyclass.predict(%s, %s::real[])",
            (versions.versions["hgb_multiclass"]["identity"], ROW),
        )


def test_versions_and_artifacts_are_immutable(scoring_url: str, versions: Registered) -> None:
    with psycopg.connect(scoring_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="immutable"):
            conn.execute("UPDATE skyclass.model_artifact SET compiler = 'x'")
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="immutable"):
            conn.execute("UPDATE skyclass.model_version SET classes = '{a,b}'")


@pytest.fixture
def plain_role(scoring_url: str) -> Iterator[str]:
    """A NOLOGIN role with no privileges (a portal user), dropped afterwards."""
    name = f"skyclass_test_{secrets.token_hex(4)}"
    with psycopg.connect(scoring_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(name)))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA skyclass TO {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(scoring_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def _uncompiled_version(url: str) -> int:
    """A new model version of the hgb_binary case without an artifact."""
    c = case("hgb_binary")
    with psycopg.connect(url, autocommit=True) as conn:
        return register_test_model(
            conn, c.estimator, classes=c.classes, n_features=N_FEATURES, model="hgb_binary"
        )


def _insert_artifact(conn: psycopg.Connection[Any], model_version_id: int) -> Any:
    """Insert the hgb_binary library as the artifact of a version, as the current role."""
    artifact = case("hgb_binary").artifact
    return conn.execute(
        "INSERT INTO skyclass.model_artifact (model_version_id, sha256, library, n_features, "
        "n_outputs, output_transform, treelite_version, tl2cgen_version, compiler, "
        "compiler_flags) VALUES (%s, %s, %s, %s, %s, %s, '4.8.1', '1.0.0', 'gcc', '') "
        "RETURNING artifact_id",
        (
            model_version_id,
            artifact.sha256,
            artifact.library,
            artifact.n_features,
            artifact.n_outputs,
            artifact.output_transform,
        ),
    ).fetchone()


def test_only_superusers_register_artifacts(
    scoring_url: str, versions: Registered, plain_role: str
) -> None:
    """A portal-like role and skyclass_model_admin cannot insert artifacts; a superuser can."""
    target = _uncompiled_version(scoring_url)
    with psycopg.connect(scoring_url) as conn:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(plain_role)))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            _insert_artifact(conn, target)
        conn.rollback()
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(plain_role)))
        # Scoring reads the tables as the caller: no privilege, no model.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "SELECT skyclass.predict(%s, %s::real[])",
                (versions.versions["hgb_multiclass"]["identity"], ROW),
            )
        conn.rollback()
        conn.execute("SET ROLE skyclass_model_admin")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            _insert_artifact(conn, target)
        conn.rollback()
        # Even with INSERT granted, the trigger refuses a non-superuser, naming it.
        conn.execute(
            sql.SQL("GRANT SELECT, INSERT ON skyclass.model_artifact TO {}").format(
                sql.Identifier(plain_role)
            )
        )
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(plain_role)))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match=f"{plain_role} is not one"):
            _insert_artifact(conn, target)
        conn.rollback()
        row = _insert_artifact(conn, target)  # the superuser
        assert row is not None and row[0] > 0
        registrar = conn.execute(
            "SELECT registered_by = current_user FROM skyclass.model_artifact "
            "WHERE artifact_id = %s",
            (row[0],),
        ).fetchone()
        assert registrar == (True,)
        conn.rollback()


def test_a_version_has_one_artifact(scoring_url: str, versions: Registered) -> None:
    with (
        psycopg.connect(scoring_url, autocommit=True) as conn,
        pytest.raises(psycopg.errors.UniqueViolation),
    ):
        _insert_artifact(conn, versions.versions["et_binary"]["identity"])


@pytest.mark.parametrize(
    ("kind", "params", "offsets", "message"),
    [
        ("isotonic", [0.0, 1.0, 0.0, 1.0, 0.5, 0.2, 0.5, 0.8], [0, 3, 6, 8], "even number"),
        ("isotonic", [0.5, 0.2, 0.0, 1.0] * 3, [0, 4, 8, 12], "strictly increasing"),
        ("isotonic", [0.2, 0.5, 0.0, 1.0] * 3, [0, 4, 8, 11], "end at the number"),
    ],
)
def test_malformed_calibration_is_an_invalid_definition(
    scoring_url: str,
    versions: Registered,
    kind: str,
    params: list[float],
    offsets: list[int],
    message: str,
) -> None:
    """Maps the table's CHECKs accept but the scorer cannot use are refused with 42P17."""
    c = case("hgb_multiclass")
    with psycopg.connect(scoring_url, autocommit=True) as conn:
        version = register_test_model(
            conn,
            c.estimator,
            classes=["a", "b", "c"],
            n_features=N_FEATURES,
            calibration=CalibrationColumns(kind, tuple(params), tuple(offsets)),
            model="malformed",
            artifact=c.artifact,
        )
        with pytest.raises(psycopg.errors.InvalidObjectDefinition, match=message):
            conn.execute("SELECT skyclass.predict(%s, %s::real[])", (version, ROW))


def test_class_count_must_match_the_artifact(scoring_url: str, versions: Registered) -> None:
    """A registry row pairing a binary version with a 3-class library (bypassing the
    compile step's checks) is refused before the library is used."""
    c = case("hgb_multiclass")
    version = _uncompiled_version(scoring_url)
    with psycopg.connect(scoring_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO skyclass.model_artifact (model_version_id, sha256, library, n_features, "
            "n_outputs, output_transform, treelite_version, tl2cgen_version, compiler, "
            "compiler_flags) VALUES (%s, %s, %s, %s, %s, %s, '4.8.1', '1.0.0', 'gcc', '')",
            (
                version,
                c.artifact.sha256,
                c.artifact.library,
                c.artifact.n_features,
                c.artifact.n_outputs,
                c.artifact.output_transform,
            ),
        )
        with pytest.raises(psycopg.errors.InvalidObjectDefinition, match="names 2 classes"):
            conn.execute("SELECT skyclass.predict(%s, %s::real[])", (version, ROW))
    assert len(ROW) == N_FEATURES


def test_artifact_row_must_match_its_loaded_library(scoring_url: str) -> None:
    """Two rows with one sha256 share a loaded library; a row declaring another layout
    for those bytes (a forged row) is refused instead of sizing buffers from it."""
    c = case("hgb_multiclass")
    with psycopg.connect(scoring_url, autocommit=True) as conn:
        good = register_test_model(
            conn,
            c.estimator,
            classes=c.classes,
            n_features=N_FEATURES,
            model="forged",
            artifact=c.artifact,
        )
        forged = register_test_model(
            conn,
            case("rf_binary").estimator,
            classes=["a", "b"],
            n_features=N_FEATURES,
            model="forged_binary",
        )
        # Binary layout (1 output, binary_expand) claimed for the 3-output library's bytes.
        conn.execute(
            "INSERT INTO skyclass.model_artifact (model_version_id, sha256, library, n_features, "
            "n_outputs, output_transform, treelite_version, tl2cgen_version, compiler, "
            "compiler_flags) VALUES (%s, %s, %s, %s, 1, 'binary_expand', '4.8.1', '1.0.0', "
            "'gcc', '')",
            (forged, c.artifact.sha256, c.artifact.library, N_FEATURES),
        )
    with psycopg.connect(scoring_url) as conn:
        conn.execute("SELECT skyclass.predict(%s, %s::real[])", (good, ROW))
        with pytest.raises(psycopg.errors.DataCorrupted, match="but its library has"):
            conn.execute("SELECT skyclass.predict(%s, %s::real[])", (forged, ROW))
        conn.rollback()
    # Loaded from its own row first, the forged layout is caught the same way.
    with (
        psycopg.connect(scoring_url) as conn,
        pytest.raises(psycopg.errors.DataCorrupted, match="but its library has"),
    ):
        conn.execute("SELECT skyclass.predict(%s, %s::real[])", (forged, ROW))
