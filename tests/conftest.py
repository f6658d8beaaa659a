"""Test fixtures: a throwaway PostgreSQL cluster with the real extensions.

One cluster per test session (or the server in SKYCLASS_TEST_DATABASE_URL);
the schema is migrated once into a template database, and every test that asks
for ``db_url`` gets a fresh database cloned from it.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from skyclass.db.cluster import EmbeddedCluster, find_pg_bindir, port_is_free
from skyclass.db.migrate import upgrade

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if not SHARED_DATA.exists():
    SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TEMPLATE = "skyclass_test_template"
_counter = itertools.count()


def _free_port(start: int = 56000) -> int:
    """A free TCP port; the start depends on the process id so parallel runs differ."""
    start += (os.getpid() * 7) % 3000
    for port in range(start, start + 500):
        if port_is_free(port):
            return port
    raise RuntimeError("no free port for the test cluster")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data sets in ../shared/data."""
    if not SHARED_DATA.exists():
        pytest.fail(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[EmbeddedCluster | None]:
    """A throwaway cluster (None when SKYCLASS_TEST_DATABASE_URL names a server)."""
    if os.environ.get("SKYCLASS_TEST_DATABASE_URL"):
        yield None
        return
    home = Path(tempfile.mkdtemp(prefix="skyclass-test-"))  # private: EmbeddedCluster chowns it
    cluster = EmbeddedCluster(
        home=home,
        port=_free_port(),
        bindir=find_pg_bindir(),
        extra_conf={
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "'128MB'",
        },
    )
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def server_url(pg_cluster: EmbeddedCluster | None) -> str:
    """URL of the ``skyclass`` database on the test server (admin connection)."""
    if pg_cluster is None:
        return os.environ["SKYCLASS_TEST_DATABASE_URL"]
    return pg_cluster.url


def _with_dbname(url: str, dbname: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = dbname
    return psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def template_url(server_url: str) -> str:
    """A template database migrated to the newest revision."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
        conn.execute(f"CREATE DATABASE {TEMPLATE}")
    url = _with_dbname(server_url, TEMPLATE)
    upgrade(url)
    return url


def new_database(server_url: str, template: str = TEMPLATE) -> str:
    """Create an empty database cloned from ``template`` and return its URL."""
    name = f"t{os.getpid()}_{next(_counter)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
    return _with_dbname(server_url, name)


def drop_database(server_url: str, url: str) -> None:
    """Drop the database at ``url``, disconnecting its sessions."""
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def db_url(server_url: str, template_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh migrated database for one test; SKYCLASS_DATABASE_URL points at it."""
    url = new_database(server_url)
    monkeypatch.setenv("SKYCLASS_DATABASE_URL", url)
    try:
        yield url
    finally:
        drop_database(server_url, url)


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the test's own database."""
    with psycopg.connect(db_url, autocommit=True) as connection:
        yield connection
