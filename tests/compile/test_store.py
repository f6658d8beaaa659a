"""Compiling registered model versions: references, provenance, idempotence, roles, CLI."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

from skyclass.cli import main
from skyclass.compile import (
    CompileError,
    artifact_of,
    compile_estimator,
    compile_model_version,
    list_artifacts,
    parse_model_ref,
    resolve_model_version,
    store_artifact,
    uncompiled_versions,
)
from skyclass.errors import InvalidModelRef, RegistryAccessError, UnknownModel, UnknownVersion
from tests.support.registry import register_test_model

N_FEATURES = 4
CLASSES = ("GALAXY", "QSO", "STAR")


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(300, N_FEATURES)).astype(np.float32)
    y = np.array(CLASSES)[(x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5).astype(int)]
    return x, y


@pytest.fixture(scope="module")
def forest() -> RandomForestClassifier:
    """A tiny 3-class forest: compiles in well under a second."""
    x, y = _data()
    return RandomForestClassifier(n_estimators=3, max_depth=3, random_state=0).fit(x, y)


def _register(conn: psycopg.Connection[Any], estimator: Any, model: str = "tiny") -> int:
    return register_test_model(
        conn,
        estimator,
        classes=CLASSES,
        n_features=N_FEATURES,
        model=model,
        training_data=_data(),
    )


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        (7, 7),
        ("7", 7),
        (" 12 ", 12),
        ("sdss17_rf", ("sdss17_rf", None)),
        ("sdss17_rf:3", ("sdss17_rf", 3)),
    ],
)
def test_model_references(ref: int | str, expected: object) -> None:
    assert parse_model_ref(ref) == expected


@pytest.mark.parametrize("ref", [0, -3, "Bad", "a:b", "a:", ":3", "x;drop", "a" * 64, True])
def test_bad_model_references_are_refused(ref: Any) -> None:
    with pytest.raises(InvalidModelRef):
        parse_model_ref(ref)


def test_compile_by_name_records_the_build(
    conn: psycopg.Connection[Any], db_url: str, forest: RandomForestClassifier
) -> None:
    first = _register(conn, forest)
    second = _register(conn, forest)
    assert resolve_model_version(conn, "tiny").model_version_id == second
    assert resolve_model_version(conn, "tiny:1").model_version_id == first
    assert [v.model_version_id for v in uncompiled_versions(conn)] == [first, second]

    info = compile_model_version("tiny:1", url=db_url)
    assert info.created and info.model_version_id == first and info.label == "tiny:1"
    row = conn.execute(
        "SELECT library, sha256, n_features, n_outputs, output_transform, created_by = "
        "current_user FROM skyclass.model_artifact WHERE artifact_id = %s",
        (info.artifact_id,),
    ).fetchone()
    assert row is not None
    library, sha, n_features, n_outputs, transform, by_me = row
    assert hashlib.sha256(library).digest() == bytes(sha) and sha.hex() == info.sha256_hex
    assert (n_features, n_outputs, transform, by_me) == (N_FEATURES, 3, "identity", True)
    assert info.library_bytes == len(library) and library[:4] == b"\x7fELF"
    assert "-O2" in info.compiler_flags and info.compiler.startswith("gcc")
    assert '"quantize": 1' in info.compiler_flags  # the default
    assert (info.treelite_version, info.tl2cgen_version) == ("4.8.1", "1.0.0")
    assert info.compile_seconds is not None and info.compile_seconds > 0
    # The same checkpoint and options give the same bytes as compiling the estimator.
    direct = compile_estimator(forest, n_features=N_FEATURES)
    assert direct.sha256_hex == info.sha256_hex
    assert [v.model_version_id for v in uncompiled_versions(conn)] == [second]
    assert [a.artifact_id for a in list_artifacts(conn)] == [info.artifact_id]


def test_a_second_compile_returns_the_artifact_or_refuses(
    conn: psycopg.Connection[Any], db_url: str, forest: RandomForestClassifier
) -> None:
    version = _register(conn, forest)
    info = compile_model_version(version, url=db_url)
    again = compile_model_version(str(version), url=db_url)
    assert not again.created and again.artifact_id == info.artifact_id
    with pytest.raises(CompileError, match=r"already compiled .* register a new model version"):
        compile_model_version(version, url=db_url, opt_level="-O1")
    # A prebuilt library with other bytes is refused as well.
    other = compile_estimator(forest, n_features=N_FEATURES, parallel_comp=1)
    with pytest.raises(CompileError, match="already compiled"):
        store_artifact(conn, version, other)
    count = conn.execute("SELECT count(*) FROM skyclass.model_artifact").fetchone()
    assert count == (1,)


def test_unknown_versions_are_named(
    conn: psycopg.Connection[Any], db_url: str, forest: RandomForestClassifier
) -> None:
    _register(conn, forest)
    with pytest.raises(UnknownModel, match=r"unknown model 'nosuch' \(known models: tiny;"):
        compile_model_version("nosuch", url=db_url)
    with pytest.raises(UnknownVersion, match="model 'tiny' has no version 9; its versions are 1"):
        compile_model_version("tiny:9", url=db_url)
    with pytest.raises(UnknownVersion, match="model version id 999999 does not exist"):
        compile_model_version(999999, url=db_url)


def test_store_artifact_needs_the_versions_own_checkpoint(
    conn: psycopg.Connection[Any], forest: RandomForestClassifier
) -> None:
    x, y = _data()
    other = ExtraTreesClassifier(n_estimators=2, max_depth=2, random_state=0).fit(x, y)
    version = _register(conn, forest)
    with pytest.raises(CompileError, match="not built from the checkpoint of tiny:1"):
        store_artifact(conn, version, compile_estimator(other, n_features=N_FEATURES))
    assert artifact_of(conn, version) is None


@pytest.fixture
def login_role(db_url: str) -> Iterator[tuple[str, str]]:
    """A LOGIN role that can read model versions (not artifacts), and its connection URL."""
    name = f"skyclass_test_{secrets.token_hex(4)}"
    ident = sql.Identifier(name)
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident))
        admin.execute(sql.SQL("GRANT USAGE ON SCHEMA skyclass TO {}").format(ident))
        admin.execute(sql.SQL("GRANT SELECT ON skyclass.model_version TO {}").format(ident))
    info = psycopg.conninfo.conninfo_to_dict(db_url)
    info["user"] = name
    try:
        yield name, psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]
    finally:
        with psycopg.connect(db_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP OWNED BY {}").format(ident))
            admin.execute(sql.SQL("DROP ROLE {}").format(ident))


def test_only_superusers_register_artifacts(
    conn: psycopg.Connection[Any],
    db_url: str,
    forest: RandomForestClassifier,
    login_role: tuple[str, str],
) -> None:
    name, url = login_role
    version = _register(conn, forest)
    # Refused before the build, saying who may do it.
    with pytest.raises(CompileError, match="only a superuser may register it"):
        compile_model_version(version, url=url)
    with pytest.raises(
        RegistryAccessError, match=r"may not read skyclass\.model to look up 'tiny'"
    ):
        compile_model_version("tiny:1", url=url)
    # Membership of skyclass_model_admin no longer makes a registrar.
    conn.execute(sql.SQL("GRANT skyclass_model_admin TO {}").format(sql.Identifier(name)))
    with pytest.raises(CompileError, match="only a superuser may register it"):
        compile_model_version(version, url=url)
    assert artifact_of(conn, version) is None

    info = compile_model_version(version, url=db_url)  # the test's superuser
    assert info.created and info.model == "tiny" and info.version == 1
    row = conn.execute(
        "SELECT created_by = current_user, registered_by = current_user "
        "FROM skyclass.model_artifact WHERE model_version_id = %s",
        (version,),
    ).fetchone()
    assert row == (True, True)


def _cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def test_cli_compile_and_list(
    conn: psycopg.Connection[Any], db_url: str, forest: RandomForestClassifier
) -> None:
    """`skyclass compile` then `skyclass artifacts list` (db_url sets SKYCLASS_DATABASE_URL)."""
    _register(conn, forest)
    pending = _register(conn, forest)
    empty = _cli("artifacts", "list")
    assert empty.exit_code == 0, empty.output
    assert "no compiled artifacts" in empty.output and "2 model versions are not" in empty.output

    result = _cli("compile", "tiny:1", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "compiled tiny:1 (model_version_id" in result.output
    assert "flags      cc -O2" in result.output and "toolchain  gcc" in result.output

    again = _cli("compile", "tiny:1", "--opt-level", "-O2")
    assert again.exit_code == 0 and "already compiled" in again.output

    refused = _cli("compile", "tiny:1", "--opt-level=-O1")
    assert refused.exit_code == 1
    assert "error: tiny:1 is already compiled" in refused.stderr

    unknown = _cli("compile", "nosuch:1")
    assert (
        unknown.exit_code == 1 and "unknown model 'nosuch' (known models: tiny;" in unknown.stderr
    )

    listed = _cli("artifacts", "list")
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[0].split()[:3] == ["artifact", "model:version", "version_id"]
    assert lines[1].split()[1] == "tiny:1" and "-O2" in lines[1]
    assert f"tiny:2 (id {pending})" in lines[-1] and "1 model version is not" in lines[-1]
