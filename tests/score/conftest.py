"""Fixtures for the in-database scoring tests.

The skyclass extension must be installed into the test server's lib dir
before a backend loads it; ``skyclass_extension`` builds and installs it
(``make -C src/pg_skyclass install``) when it is missing or older than its
sources, and fails with the command to run when that is not possible.
"""

from __future__ import annotations

import fcntl
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from threadpoolctl import threadpool_limits

from skyclass.compile import artifact_of
from skyclass.db.cluster import EmbeddedCluster, find_pg_bindir
from tests.conftest import TEMPLATE, drop_database, new_database
from tests.score.models import CASES, case
from tests.support.registry import register_test_model

REPO = Path(__file__).resolve().parents[2]
EXTENSION_DIR = REPO / "src" / "pg_skyclass"
INSTALL_LOCK = Path(tempfile.gettempdir()) / "skyclass-extension-install.lock"


def pg_config() -> str:
    """pg_config of the server binaries the test cluster runs."""
    return str(find_pg_bindir() / "pg_config")


def _pg_config_value(option: str) -> Path:
    out = subprocess.run([pg_config(), option], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def _extension_sources() -> list[Path]:
    return [
        *EXTENSION_DIR.glob("*.[ch]"),
        EXTENSION_DIR / "Makefile",
        EXTENSION_DIR / "install-atomic.sh",
        EXTENSION_DIR / "skyclass.control",
        *(EXTENSION_DIR / "sql").glob("skyclass--*.sql"),
    ]


def _installed_files() -> list[Path]:
    libdir = _pg_config_value("--pkglibdir")
    extdir = _pg_config_value("--sharedir") / "extension"
    return [
        libdir / "skyclass.so",
        extdir / "skyclass.control",
        *(extdir / p.name for p in (EXTENSION_DIR / "sql").glob("skyclass--*.sql")),
    ]


def _installed_is_current() -> bool:
    newest_source = max(p.stat().st_mtime for p in _extension_sources())
    return all(p.exists() and p.stat().st_mtime >= newest_source for p in _installed_files())


def ensure_extension_installed() -> None:
    """Build and install the extension when missing or stale; fail with the fix otherwise.

    Several test sessions may share the machine's PostgreSQL installation: a lock
    keeps their builds apart, and the Makefile replaces skyclass.so by rename, so
    backends of another session that have the old library mapped keep running.
    """
    if _installed_is_current():
        return
    with open(INSTALL_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _installed_is_current():
            return
        result = subprocess.run(
            ["make", "-s", "-C", str(EXTENSION_DIR), "install", f"PG_CONFIG={pg_config()}"],
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        pytest.fail(
            "the skyclass extension is not installed in the test server (or is older than "
            f"its sources) and installing it failed:\n{result.stderr[-2000:]}\n"
            "Run `make extension` (as root, or with sudo) and start the tests again."
        )


@pytest.fixture(scope="session")
def skyclass_extension(pg_cluster: EmbeddedCluster | None, server_url: str) -> None:
    """The extension is installed (and current) where the test server can load it."""
    if pg_cluster is not None:
        ensure_extension_installed()
    with psycopg.connect(server_url) as conn:
        row = conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'skyclass'"
        ).fetchone()
    if row is None:
        pytest.fail("the test server has no skyclass extension: run `make extension` there")


def prepare_scoring_database(url: str) -> None:
    """Make sure a migrated database has the extension.

    Migration 0003 creates it when the server has it installed; the session's
    template may have been migrated before ``skyclass_extension`` installed it.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS skyclass")


@pytest.fixture(scope="module")
def scoring_url(skyclass_extension: None, server_url: str, template_url: str) -> Iterator[str]:
    """A migrated database (registry of migration 0003 + the extension), shared by one module."""
    url = new_database(server_url, TEMPLATE)
    try:
        prepare_scoring_database(url)
        yield url
    finally:
        drop_database(server_url, url)


@pytest.fixture(scope="session", autouse=True)
def one_thread() -> Iterator[None]:
    """Single-threaded OpenMP: a shared 2-core machine makes spinning threads very slow."""
    with threadpool_limits(limits=1):
        yield


@dataclass(frozen=True)
class Registered:
    """Compiled model versions of each case, one per calibration method.

    ``versions[case][method] -> model_version_id`` and
    ``artifacts[case][method] -> artifact_id`` (each version has its own
    artifact row; the libraries of one case are byte-identical).
    """

    versions: dict[str, dict[str, int]]
    artifacts: dict[str, dict[str, int]]


def register_case(conn: psycopg.Connection, name: str, method: str) -> int:
    """Register case ``name`` with one calibration as a compiled model version (model = case)."""
    c = case(name)
    return register_test_model(
        conn,
        c.estimator,
        classes=c.classes,
        n_features=c.artifact.n_features,
        calibration=c.calibrations[method],
        task="photoz" if c.bin_edges is not None else "classification",
        bin_edges=c.bin_edges,
        model=name,
        artifact=c.artifact,
    )


def register_cases(url: str, names: tuple[str, ...] = CASES) -> Registered:
    """Register every case with each calibration method, compiled from the case's artifact."""
    versions: dict[str, dict[str, int]] = {}
    artifacts: dict[str, dict[str, int]] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for name in names:
            versions[name] = {
                method: register_case(conn, name, method) for method in case(name).calibrations
            }
            artifacts[name] = {}
            for method, version in versions[name].items():
                info = artifact_of(conn, version)
                assert info is not None
                artifacts[name][method] = info.artifact_id
    return Registered(versions, artifacts)


@pytest.fixture(scope="module")
def registered(scoring_url: str) -> Registered:
    """Every case of tests/score/models.py registered in the module's database."""
    return register_cases(scoring_url)


def postmaster_log(cluster: EmbeddedCluster | None) -> str:
    """The test cluster's server log ('' for an external server)."""
    if cluster is None or not cluster.log_file.exists():
        return ""
    return cluster.log_file.read_text(errors="replace")
