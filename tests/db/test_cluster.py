"""The embedded default cluster driven through the CLI, as a newcomer would."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest

from skyclass.db.cluster import port_is_free
from tests.conftest import _free_port


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "skyclass.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=180,
    )


@pytest.fixture
def embedded_env() -> dict[str, str]:
    home = Path(tempfile.mkdtemp(prefix="skyclass-home-"))
    os.chmod(home, 0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYCLASS_")}
    env["SKYCLASS_HOME"] = str(home / "db")
    env["SKYCLASS_PORT"] = str(_free_port(57000))
    yield env  # type: ignore[misc]
    _cli("db", "stop", env=env)
    subprocess.run(["rm", "-rf", str(home)], check=False)


def test_db_start_status_url_stop(embedded_env: dict[str, str]) -> None:
    port = int(embedded_env["SKYCLASS_PORT"])
    status = _cli("db", "status", env=embedded_env)
    assert status.returncode == 3, status.stdout + status.stderr
    assert "stopped" in status.stdout

    started = _cli("db", "start", env=embedded_env)
    assert started.returncode == 0, started.stderr
    assert not port_is_free(port)

    url = _cli("db", "url", env=embedded_env).stdout.strip()
    with psycopg.connect(url) as conn:
        exts = {r[0] for r in conn.execute("SELECT extname FROM pg_extension")}
        preload = conn.execute("SHOW shared_preload_libraries").fetchone()
    assert {"q3c", "vector", "pg_cron"} <= exts
    assert preload is not None and "pg_cron" in preload[0]
    tcp = _cli("db", "url", "--tcp", env=embedded_env).stdout.strip()
    assert f"@127.0.0.1:{port}/skyclass?passfile=" in tcp
    with psycopg.connect(tcp) as conn:
        assert conn.execute("SELECT host(inet_server_addr())").fetchone() == ("127.0.0.1",)

    status = _cli("db", "status", env=embedded_env)
    assert status.returncode == 0 and "current" in status.stdout, status.stdout

    assert _cli("db", "start", env=embedded_env).returncode == 0  # harmless when running

    stopped = _cli("db", "stop", env=embedded_env)
    assert stopped.returncode == 0, stopped.stderr
    assert port_is_free(port)


def test_refuses_system_port(embedded_env: dict[str, str]) -> None:
    embedded_env["SKYCLASS_PORT"] = "5432"
    result = _cli("db", "start", env=embedded_env)
    assert result.returncode == 1
    assert "5432" in result.stderr and "SKYCLASS_PORT" in result.stderr


def test_external_server_without_extension_is_named(server_url: str) -> None:
    # A database whose server lacks nothing, but whose user is not allowed to create
    # extensions, must name the CREATE EXTENSION command; we simulate the missing
    # package case by asking about an extension name the server does not have.
    from skyclass.db import migrate
    from skyclass.errors import MissingExtensionError

    fake = migrate.Extension("no_such_ext", "postgresql-{major}-nosuch", True, "testing")
    original = migrate.EXTENSIONS
    migrate.EXTENSIONS = (*original, fake)
    try:
        with pytest.raises(MissingExtensionError, match=r"apt-get install postgresql-\d+-nosuch"):
            migrate.check_extensions(server_url)
    finally:
        migrate.EXTENSIONS = original
