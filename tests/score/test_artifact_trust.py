"""Forged native code never runs: not in the client scorer (as root), not in a backend.

The attack of issue 9, item 3: a member of ``skyclass_model_admin`` (not a
superuser) registers a library of its own whose constructor runs on load,
with its own sha256, as the artifact of a model version. Here the
constructor appends to a marker file. The registration is refused; a row
forged past the trigger (as the owner of the table could, or as a superuser
with ``session_replication_role = replica``) is refused by the extension
before ``dlopen``, with an error naming the registrar; ``skyclass score
--scorer client`` scores from the Treelite checkpoint and never loads the
bytes. At the end a positive control loads the forged library directly and
sees the marker appear, so the test would see the constructor run.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from skyclass.db.migrate import downgrade
from tests.conftest import drop_database
from tests.score.jobs_support import add_objects, jobs_database, object_features, register

CATALOG = "test_catalog"
ROW = [20.0, 19.0, 18.5, 18.2, 18.0, 1.0, 0.5, 0.3, 0.2]
SKYCLASS = Path(sys.executable).with_name("skyclass")
FORGED_C = r"""
#include <stdio.h>
__attribute__((constructor)) static void forged_constructor(void)
{
    FILE *f = fopen(MARKER, "a");
    if (f != NULL) { fputs("constructor ran\n", f); fclose(f); }
}
int get_num_feature(void) { return 9; }
"""


@pytest.fixture(scope="module")
def forged(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, Path]:
    """A 64-bit shared library whose constructor appends to a marker file (the postgres
    user may write the marker's directory), and that marker's path."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.fail("no C compiler to build the forged library")
    marker_dir = Path(tempfile.mkdtemp(prefix="skyclass-marker-"))
    os.chmod(marker_dir, 0o1777)
    marker = marker_dir / "constructor-ran"
    build = tmp_path_factory.mktemp("forged")
    source = build / "forged.c"
    source.write_text(FORGED_C)
    library = build / "forged.so"
    subprocess.run(
        [compiler, "-shared", "-fPIC", f'-DMARKER="{marker}"', "-o", str(library), str(source)],
        check=True,
    )
    return library.read_bytes(), marker


@pytest.fixture(scope="module")
def victim(
    skyclass_extension: None, server_url: str, template_url: str
) -> Iterator[tuple[str, int, str]]:
    """A database with model ``victim:1`` (its artifact removed), objects, and a member of
    skyclass_model_admin who is not a superuser."""
    url = jobs_database(server_url)
    admin = f"model_admin_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            version = register(conn, model="victim")
            add_objects(conn, version, object_features(300, seed=7))
            conn.execute(
                "DELETE FROM skyclass.model_artifact WHERE model_version_id = %s", (version,)
            )
            conn.execute(
                sql.SQL("CREATE ROLE {} IN ROLE skyclass_model_admin").format(sql.Identifier(admin))
            )
        yield url, version, admin
    finally:
        drop_database(server_url, url)
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(admin)))


def _insert(conn: psycopg.Connection[Any], version: int, library: bytes) -> Any:
    return conn.execute(
        "INSERT INTO skyclass.model_artifact (model_version_id, sha256, library, n_features, "
        "n_outputs, output_transform, treelite_version, tl2cgen_version, compiler, "
        "compiler_flags) VALUES (%s, %s, %s, 9, 3, 'identity', '4.8.1', '1.0.0', 'gcc', '') "
        "RETURNING artifact_id",
        (version, hashlib.sha256(library).digest(), library),
    ).fetchone()


def _forge_row(url: str, version: int, library: bytes, registrar: str | None) -> int:
    """Insert ``library`` past the registration trigger, claiming ``registrar`` registered it."""
    with psycopg.connect(url) as conn:
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute("DELETE FROM skyclass.model_artifact WHERE model_version_id = %s", (version,))
        row = _insert(conn, version, library)
        conn.execute(
            "UPDATE skyclass.model_artifact SET registered_by = %s WHERE artifact_id = %s",
            (registrar, row[0]),
        )
    return int(row[0])


def _predict_refused(url: str, version: int, error: type[Exception], match: str) -> None:
    with psycopg.connect(url) as conn, pytest.raises(error, match=match):
        conn.execute("SELECT skyclass.predict(%s, %s::real[])", (version, ROW))


def _score_cli(url: str, version: int, scorer: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SKYCLASS), "score", "victim:1", "--catalog", CATALOG, "--scorer", scorer],
        env={**os.environ, "SKYCLASS_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_forged_library_never_runs(
    victim: tuple[str, int, str], forged: tuple[bytes, Path]
) -> None:
    url, version, admin = victim
    library, marker = forged

    # 1. The model admin cannot register it (no INSERT, and the trigger refuses non-superusers).
    with psycopg.connect(url) as conn:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(admin)))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            _insert(conn, version, library)

    # 2. A row forged past the trigger: the backend refuses it before dlopen, naming the role.
    artifact_id = _forge_row(url, version, library, admin)
    with (
        psycopg.connect(url) as conn,
        pytest.raises(
            psycopg.errors.InsufficientPrivilege,
            match=f'artifact {artifact_id} was not loaded: it was registered by role "{admin}", '
            "which is not a superuser",
        ),
    ):
        conn.execute("SELECT skyclass.predict(%s, %s::real[])", (version, ROW))
    database = _score_cli(url, version, "database")
    assert database.returncode != 0
    errors = [line for line in database.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: "), database.stderr
    assert "not a superuser" in errors[0]

    # 3. The client scorer, as the invoking (root) user, scores from the checkpoint.
    client = _score_cli(url, version, "client")
    assert client.returncode == 0, client.stderr
    assert "succeeded: 300 objects" in client.stdout

    # 4. A row that records no registrar (registered before revision 0008) is refused too.
    _forge_row(url, version, library, None)
    _predict_refused(url, version, psycopg.errors.InsufficientPrivilege, "nothing records who")

    # 5. Registered by a superuser, but in a table a non-superuser owns (who could forge the
    #    stamp): refused as well.
    with psycopg.connect(url, autocommit=True) as conn:
        superuser = conn.execute("SELECT current_user").fetchone()
        assert superuser is not None
    _forge_row(url, version, library, str(superuser[0]))
    with psycopg.connect(url) as conn:
        conn.execute(
            sql.SQL("ALTER TABLE skyclass.model_artifact OWNER TO {}").format(sql.Identifier(admin))
        )
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="is owned by role"):
            conn.execute("SELECT skyclass.predict(%s, %s::real[])", (version, ROW))
        conn.rollback()

    assert not marker.exists(), marker.read_text()
    # Positive control: loading the library does run the constructor.
    control = Path(tempfile.mkdtemp()) / "forged.so"
    control.write_bytes(library)
    subprocess.run(
        [sys.executable, "-c", "import ctypes, sys; ctypes.CDLL(sys.argv[1])", str(control)],
        check=True,
    )
    assert marker.read_text() == "constructor ran\n"


def test_libraries_that_are_not_elf_shared_objects_are_refused_before_loading(
    victim: tuple[str, int, str],
) -> None:
    """Registered by a superuser with a matching sha256, but not a shared object of this
    machine: refused from its header, nothing mapped."""
    url, version, _ = victim
    with psycopg.connect(url, autocommit=True) as conn:
        superuser = conn.execute("SELECT current_user").fetchone()
        assert superuser is not None
    for library, message in [
        (b"#!/bin/sh\necho hello\n" * 10, "no ELF magic"),
        (b"\x7fELF\x01\x01\x01" + bytes(100), "not a 64-bit little-endian ELF file"),
    ]:
        _forge_row(url, version, library, str(superuser[0]))
        _predict_refused(url, version, psycopg.errors.DataCorrupted, message)


def test_a_schema_before_0008_still_scores_superuser_artifacts(
    skyclass_extension: None, server_url: str, template_url: str
) -> None:
    """The extension installed for 0008 keeps serving a database still at revision 0007 (its
    registrar is then created_by): superuser artifacts load, others do not."""
    url = jobs_database(server_url)
    try:
        # Registered at head (the test registry writes today's tables), then taken back.
        with psycopg.connect(url, autocommit=True) as conn:
            version = register(conn)
            other = register(conn, model="other")
        downgrade(url, "0007")
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute("SELECT skyclass.predict(%s, %s::real[])", (version, ROW)).fetchone()
            assert row is not None and len(row[0]) == 3
            # A row that names a non-superuser as its creator is refused there too.
            conn.execute("SET session_replication_role = replica")
            conn.execute(
                "UPDATE skyclass.model_artifact SET created_by = 'skyclass_model_admin' "
                "WHERE model_version_id = %s",
                (other,),
            )
        _predict_refused(url, other, psycopg.errors.InsufficientPrivilege, "not a superuser")
    finally:
        drop_database(server_url, url)
