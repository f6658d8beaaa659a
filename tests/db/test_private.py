"""The embedded cluster is private: another OS user cannot connect to it, as any role.

These tests create throwaway OS users (we run as root), so they run only as root.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from skyclass.db.cluster import EmbeddedCluster, find_pg_bindir
from skyclass.errors import DatabaseError
from tests.conftest import _free_port

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.skipif(os.geteuid() != 0, reason="creates OS users: needs root"),
]


def _os_user(prefix: str) -> Iterator[str]:
    name = f"{prefix}{secrets.token_hex(3)}"
    subprocess.run(
        ["useradd", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/bin/sh", name],
        check=True,
    )
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], check=True)


@pytest.fixture
def stranger() -> Iterator[str]:
    """A throwaway OS user that has nothing to do with skyclass (removed afterwards)."""
    yield from _os_user("skyprobe")


def _as_user(
    user: str, argv: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "LC_ALL": "C.UTF-8", **(env or {})}
    return subprocess.run(
        ["runuser", "-u", user, "--", "env", "-i", *(f"{k}={v}" for k, v in clean.items()), *argv],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def _psql_as(
    user: str, cluster: EmbeddedCluster, conninfo: str
) -> subprocess.CompletedProcess[str]:
    """``SELECT current_user`` through psql run as OS user ``user``, never prompting."""
    return _as_user(
        user,
        [
            str(cluster.bindir / "psql"),
            "-X",
            "-w",
            "-At",
            "-d",
            conninfo,
            "-c",
            "SELECT current_user",
        ],
    )


def _roles(cluster: EmbeddedCluster) -> list[str]:
    with psycopg.connect(cluster.url) as conn:
        return [r[0] for r in conn.execute("SELECT rolname FROM pg_roles ORDER BY 1")]


def assert_private(cluster: EmbeddedCluster, stranger: str) -> None:
    """``stranger`` is refused as any role over socket and TCP; root and the owner get in."""
    roles = _roles(cluster)
    assert {"postgres", "skyclass_reader", "skyclass_model_admin"} <= set(roles)
    for role in [*roles, stranger]:
        for conninfo, refusal in (
            (
                f"host={cluster.socket_dir} port={cluster.port} dbname=skyclass user={role}",
                "Permission denied",
            ),
            (f"host=127.0.0.1 port={cluster.port} dbname=skyclass user={role}", "password"),
        ):
            result = _psql_as(stranger, cluster, conninfo)
            assert result.returncode != 0 and result.stdout == "", (role, conninfo, result.stdout)
            assert refusal in result.stderr, (role, conninfo, result.stderr)
    # The files tell nothing either.
    for path in (
        cluster.log_file,
        cluster.data_dir / "PG_VERSION",
        cluster.data_dir / "pg_hba.conf",
        cluster.password_file,
    ):
        assert _as_user(stranger, ["cat", str(path)]).returncode != 0, path
    assert stat.S_IMODE(cluster.data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(cluster.socket_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(cluster.log_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(cluster.password_file.stat().st_mode) == 0o600

    # Root connects over the socket and, with the password file, over TCP.
    with psycopg.connect(cluster.url) as conn:
        conn.execute("SET ROLE skyclass_reader")
        assert conn.execute("SELECT current_user").fetchone() == ("skyclass_reader",)
    with psycopg.connect(cluster.tcp_url()) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
    # The cluster's own OS user connects over the socket (as postgres_fdw does).
    socket = f"host={cluster.socket_dir} port={cluster.port} dbname=skyclass user=postgres"
    result = _psql_as(cluster.run_as, cluster, socket)
    assert result.returncode == 0 and result.stdout.strip() == "postgres", result.stderr


def _as_os_user(user: str, action: Callable[[], None]) -> None:
    """Run ``action`` in a child process that has become OS user ``user``.

    A fork rather than a new interpreter: this Python may live where only root reads.
    """
    entry = pwd.getpwnam(user)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        code = 1
        try:
            os.setgroups([])
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
            action()
            code = 0
        except BaseException as exc:
            print(f"as {user}: {exc!r}", file=sys.stderr)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, f"{action} failed as {user}"


@pytest.fixture
def login_role(server_url: str) -> Iterator[str]:
    """A LOGIN role on the test cluster, dropped afterwards."""
    name = f"skyclass_login_{secrets.token_hex(3)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_another_os_user_cannot_connect_to_the_test_cluster(
    pg_cluster: EmbeddedCluster | None, template_url: str, login_role: str, stranger: str
) -> None:
    if pg_cluster is None:
        pytest.skip("SKYCLASS_TEST_DATABASE_URL names an external server")
    assert_private(pg_cluster, stranger)
    # Root connects by name as a LOGIN role, as tests/compile does.
    info = psycopg.conninfo.conninfo_to_dict(pg_cluster.url)
    info["user"] = login_role
    with psycopg.connect(psycopg.conninfo.make_conninfo(**info)) as conn:  # type: ignore[arg-type]
        assert conn.execute("SELECT session_user").fetchone() == (login_role,)


def test_another_os_user_cannot_take_the_cluster_over(
    pg_cluster: EmbeddedCluster | None, stranger: str
) -> None:
    if pg_cluster is None:
        pytest.skip("SKYCLASS_TEST_DATABASE_URL names an external server")

    def make_private() -> None:
        with pytest.raises(DatabaseError, match="Run skyclass as the OS user that owns it"):
            pg_cluster.make_private()

    _as_os_user(stranger, make_private)


# -- a cluster made before it was private (trust, 0755 directories, world-readable log) ------


def _as_postgres(argv: list[str]) -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True)


def _make_old_cluster(cluster: EmbeddedCluster) -> None:
    """Create and start ``cluster`` the way skyclass did before the cluster was private."""
    for directory in (cluster.home, cluster.socket_dir):
        directory.mkdir(parents=True, exist_ok=True)
        shutil.chown(directory, "postgres", "postgres")
        os.chmod(directory, 0o755)
    _as_postgres(
        [
            str(cluster.bindir / "initdb"),
            "-D",
            str(cluster.data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
        ]
    )
    with (cluster.data_dir / "postgresql.conf").open("a") as fh:
        fh.write(
            "\n# added by skyclass\nlisten_addresses = '127.0.0.1'\n"
            f"port = {cluster.port}\nunix_socket_directories = '{cluster.socket_dir}'\n"
            "shared_preload_libraries = 'pg_cron'\ncron.database_name = 'skyclass'\nfsync = off\n"
        )
    cluster.log_file.touch(mode=0o644)
    os.chmod(cluster.log_file, 0o644)
    shutil.chown(cluster.log_file, "postgres", "postgres")
    _as_postgres(
        [
            str(cluster.bindir / "pg_ctl"),
            "start",
            "-w",
            "-D",
            str(cluster.data_dir),
            "-l",
            str(cluster.log_file),
        ]
    )
    _as_postgres(
        [
            str(cluster.bindir / "psql"),
            "-X",
            "-h",
            str(cluster.socket_dir),
            "-p",
            str(cluster.port),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
            "CREATE DATABASE skyclass",
        ]
    )
    with psycopg.connect(cluster.url, autocommit=True) as conn:  # a schedule made back then
        conn.execute("CREATE EXTENSION pg_cron")
        conn.execute("SELECT cron.schedule('nightly', '0 3 * * *', 'SELECT 1')")


@pytest.fixture
def old_cluster() -> Iterator[EmbeddedCluster]:
    home = Path(tempfile.mkdtemp(prefix="skyclass-old-"))
    os.chmod(home, 0o755)
    cluster = EmbeddedCluster(home=home / "db", port=_free_port(57500), bindir=find_pg_bindir())
    _make_old_cluster(cluster)
    try:
        yield cluster
    finally:
        cluster.destroy()
        shutil.rmtree(home, ignore_errors=True)


def test_an_old_cluster_is_made_private_on_its_next_start(
    old_cluster: EmbeddedCluster, stranger: str
) -> None:
    from skyclass.db.migrate import upgrade

    # The hole as it was: the stranger is superuser, over the socket and over TCP.
    for host in (old_cluster.socket_dir, "127.0.0.1"):
        conninfo = f"host={host} port={old_cluster.port} dbname=skyclass user=postgres"
        assert _psql_as(stranger, old_cluster, conninfo).stdout.strip() == "postgres"

    # `skyclass db start` while the old cluster still runs: closed as soon as it returns.
    old_cluster.start()
    for host, refusal in ((old_cluster.socket_dir, "Permission denied"), ("127.0.0.1", "password")):
        conninfo = f"host={host} port={old_cluster.port} dbname=skyclass user=postgres"
        assert refusal in _psql_as(stranger, old_cluster, conninfo).stderr
    upgrade(old_cluster.url)
    assert_private(old_cluster, stranger)
    # ... and after a restart the socket file itself is the owner's only.
    old_cluster.stop()
    old_cluster.start()
    socket_file = old_cluster.socket_dir / f".s.PGSQL.{old_cluster.port}"
    assert stat.S_IMODE(socket_file.stat().st_mode) == 0o700
    assert_private(old_cluster, stranger)
    assert "trust" in (old_cluster.data_dir / "pg_hba.conf.old").read_text()
    # pg_cron's jobs, old and new, connect over the socket now that TCP asks for a password.
    with psycopg.connect(old_cluster.url) as conn:
        assert conn.execute("SHOW cron.host").fetchone() == (str(old_cluster.socket_dir),)
        nodes = conn.execute("SELECT jobname, nodename FROM cron.job").fetchall()
    assert nodes == [("nightly", str(old_cluster.socket_dir))]


# -- skyclass run by an ordinary user: the cluster is that user's ----------------------------


@pytest.fixture
def owner() -> Iterator[str]:
    """A throwaway OS user who runs skyclass itself."""
    yield from _os_user("skyowner")


def _start_and_migrate(cluster: EmbeddedCluster) -> None:
    """What ``skyclass db start`` does."""
    from skyclass.db.migrate import upgrade

    cluster.start()
    upgrade(cluster.url)


def test_a_users_own_cluster_admits_that_user_and_root_only(owner: str, stranger: str) -> None:
    home = Path(tempfile.mkdtemp(prefix="skyclass-user-"))
    os.chmod(home, 0o755)
    shutil.chown(home, owner)
    cluster = EmbeddedCluster(
        home=home / "db", port=_free_port(57800), bindir=find_pg_bindir(), run_as=owner
    )
    try:
        _as_os_user(owner, lambda: _start_and_migrate(cluster))
        assert cluster.data_dir.stat().st_uid == pwd.getpwnam(owner).pw_uid
        assert cluster.password_file.stat().st_uid == pwd.getpwnam(owner).pw_uid
        assert_private(cluster, stranger)
        # The owner's TCP URL works for the owner: the password file is theirs.
        result = _psql_as(owner, cluster, cluster.tcp_url())
        assert result.returncode == 0 and result.stdout.strip() == "postgres", result.stderr
        # The stranger cannot use it: the password file is not readable.
        result = _psql_as(stranger, cluster, cluster.tcp_url())
        assert result.returncode != 0 and "password" in result.stderr, result.stderr
    finally:
        _as_os_user(owner, cluster.stop)
        shutil.rmtree(home, ignore_errors=True)


# -- postgres_fdw between two local clusters ---------------------------------------------------


@pytest.fixture
def second_cluster() -> Iterator[EmbeddedCluster]:
    """Another embedded cluster of the same OS user."""
    cluster = EmbeddedCluster(
        home=Path(tempfile.mkdtemp(prefix="skyclass-b-")),
        port=_free_port(58100),
        bindir=find_pg_bindir(),
        extra_conf={"fsync": "off"},
    )
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()


def test_postgres_fdw_reaches_a_sibling_cluster_over_its_socket(
    conn: psycopg.Connection[tuple[object, ...]], second_cluster: EmbeddedCluster
) -> None:
    with psycopg.connect(second_cluster.url, autocommit=True) as other:
        other.execute("CREATE TABLE far (x int)")
        other.execute("INSERT INTO far VALUES (7)")
    conn.execute("CREATE EXTENSION postgres_fdw")
    conn.execute(
        sql.SQL(
            "CREATE SERVER sibling FOREIGN DATA WRAPPER postgres_fdw "
            "OPTIONS (host {}, port {}, dbname 'skyclass')"
        ).format(sql.Literal(str(second_cluster.socket_dir)), sql.Literal(str(second_cluster.port)))
    )
    conn.execute("CREATE USER MAPPING FOR postgres SERVER sibling OPTIONS (user 'postgres')")
    conn.execute("CREATE FOREIGN TABLE far (x int) SERVER sibling")
    assert conn.execute("SELECT x FROM far").fetchall() == [(7,)]
