"""A private PostgreSQL cluster that skyclass runs for itself (the embedded default).

The cluster has its own data directory, socket directory and port, never the
system's 5432. PostgreSQL refuses to run as root, so when skyclass runs as root
the cluster belongs to an unprivileged OS user (``postgres`` by default) and is
driven through ``runuser``.

Only the cluster's OS user and root can connect: the socket directory and the
socket are theirs alone (mode 0700) and trusted, TCP on 127.0.0.1 asks for a
password (the superuser's is in a 0600 password file), and the log is 0600.
Every start rewrites an older cluster to these settings.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from skyclass.config import DATABASE_NAME, SUPERUSER, Settings
from skyclass.errors import DatabaseError

# Settings written into postgresql.conf at initdb time.
BASE_CONF = {
    "shared_preload_libraries": "'pg_cron'",
    "cron.database_name": f"'{DATABASE_NAME}'",
    "max_connections": "100",
    "shared_buffers": "'256MB'",
    "work_mem": "'32MB'",
    "maintenance_work_mem": "'256MB'",
    "max_wal_size": "'2GB'",
    "logging_collector": "off",
    "log_min_messages": "warning",
}

# Settings that keep the cluster private; ensured at every start, so a cluster
# made before they existed is rewritten on its next start.
PRIVATE_CONF = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_permissions": "0700",
    "password_encryption": "'scram-sha-256'",
    "log_file_mode": "0600",
}

# Whoever reaches the socket (the cluster's OS user and root: the socket
# directory is 0700) may be any role; TCP needs a password.
HBA_CONF = """\
# Written by skyclass at every start: changes here are replaced (the previous
# file is kept as pg_hba.conf.old). See "The embedded default" in docs/operations.md.
# The socket directory and the socket are mode 0700: only the cluster's OS user and
# root reach them, and they may connect as any role. TCP asks for a password.
# TYPE  DATABASE     USER  ADDRESS       METHOD
local   all          all                 trust
local   replication  all                 trust
host    all          all   127.0.0.1/32  scram-sha-256
host    replication  all   127.0.0.1/32  scram-sha-256
host    all          all   ::1/128       scram-sha-256
host    replication  all   ::1/128       scram-sha-256
"""


def find_pg_bindir(preferred: Path | None = None) -> Path:
    """Return the directory holding ``initdb``/``pg_ctl``/``postgres``, newest version first."""
    candidates: list[Path] = []
    if preferred is not None:
        candidates.append(preferred)
    on_path = shutil.which("pg_config")
    if on_path:
        out = subprocess.run([on_path, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates.extend(Path(p) for p in versions)
    for directory in candidates:
        if (directory / "initdb").exists() and (directory / "pg_ctl").exists():
            return directory
    raise DatabaseError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found. Install them "
        "(Debian/Ubuntu: apt-get install postgresql-15) or set SKYCLASS_PG_BINDIR."
    )


def port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class EmbeddedCluster:
    """One private PostgreSQL cluster under ``home``.

    Parameters
    ----------
    home
        Directory holding ``pgdata/`` (the data directory), ``run/`` (the
        socket directory), ``postgres.log`` and ``pgpass`` (the superuser's
        password for TCP connections).
    port
        TCP port on 127.0.0.1; also names the Unix socket.
    bindir
        PostgreSQL server binaries.
    run_as
        OS user that owns and runs the cluster when the caller is root.
    extra_conf
        Settings appended to ``postgresql.conf`` at creation (tests turn off
        ``fsync`` this way).
    """

    home: Path
    port: int
    bindir: Path
    run_as: str = "postgres"
    extra_conf: dict[str, str] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> EmbeddedCluster:
        """The embedded default cluster described by ``settings``."""
        return cls(
            home=settings.home,
            port=settings.port,
            bindir=find_pg_bindir(settings.pg_bindir),
            run_as=settings.pg_user,
        )

    @property
    def data_dir(self) -> Path:
        return self.home / "pgdata"

    @property
    def socket_dir(self) -> Path:
        return self.home / "run"

    @property
    def log_file(self) -> Path:
        return self.home / "postgres.log"

    @property
    def password_file(self) -> Path:
        return self.home / "pgpass"

    @property
    def url(self) -> str:
        """libpq URL that connects through the Unix socket as the cluster superuser."""
        host = quote(str(self.socket_dir), safe="")
        return f"postgresql://{SUPERUSER}@/{DATABASE_NAME}?host={host}&port={self.port}"

    @property
    def _admin_url(self) -> str:
        """Like :attr:`url`, to database ``postgres`` (which always exists)."""
        return self.url.replace(f"/{DATABASE_NAME}?", "/postgres?")

    def tcp_url(self) -> str:
        """libpq URL over TCP on 127.0.0.1, for tools that do not take a socket directory.

        The password comes from :attr:`password_file` (``passfile``), which only
        the cluster's OS user and root can read.
        """
        passfile = quote(str(self.password_file), safe="")
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{DATABASE_NAME}?passfile={passfile}"

    # -- running commands as the cluster owner --------------------------------
    def _as_owner(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        try:
            pwd.getpwnam(self.run_as)
        except KeyError:
            raise DatabaseError(
                f"PostgreSQL refuses to run as root and the user {self.run_as!r} does not exist: "
                f"create it (useradd --system {self.run_as}) or set SKYCLASS_PG_USER"
            ) from None
        return ["runuser", "-u", self.run_as, "--", *argv]

    def _run(self, argv: list[str], what: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(self._as_owner(argv), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip()
            log_tail = self._log_tail()
            raise DatabaseError(
                f"{what} failed (exit {result.returncode}): {detail}"
                + (f"\nlast lines of {self.log_file}:\n{log_tail}" if log_tail else "")
            )
        return result

    def _log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            entry = pwd.getpwnam(self.run_as)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    # -- life cycle -------------------------------------------------------------
    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> None:
        """Create the cluster (``initdb``) if it does not exist yet."""
        if self.initialized:
            return
        self.home.mkdir(parents=True, exist_ok=True)
        for directory in (self.home, self.socket_dir):
            directory.mkdir(parents=True, exist_ok=True)
            self._chown(directory)
        if os.geteuid() == 0:
            # The cluster owner must be able to reach its directories.
            for parent in self.home.parents:
                if parent.exists() and not os.stat(parent).st_mode & 0o001:
                    raise DatabaseError(
                        f"{parent} is not reachable by user {self.run_as!r} (mode "
                        f"{oct(os.stat(parent).st_mode & 0o777)}): set SKYCLASS_HOME to a "
                        "directory outside it, e.g. /var/lib/skyclass"
                    )
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ],
            "initdb",
        )
        settings = {
            **BASE_CONF,
            **self._private_conf(),
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            **(self.extra_conf or {}),
        }
        conf = "".join(f"{key} = {value}\n" for key, value in settings.items())
        with (self.data_dir / "postgresql.conf").open("a") as fh:
            fh.write("\n# added by skyclass\n" + conf)
        self._write_private(self.data_dir / "pg_hba.conf", HBA_CONF.encode())

    def running(self) -> bool:
        """True when the cluster's postmaster is up."""
        if not self.initialized:
            return False
        result = subprocess.run(
            self._as_owner([str(self.bindir / "pg_ctl"), "status", "-D", str(self.data_dir)]),
            capture_output=True,
            text=True,
            check=False,
        )
        return result.returncode == 0

    def start(self, timeout: float = 60.0) -> None:
        """Create (if needed) and start the cluster, then create its database.

        Also makes the cluster private (see :meth:`make_private`); a cluster that
        already runs reloads its settings.
        """
        self.init()
        changed = self.make_private()
        if self.running():
            if changed:
                self._reload(timeout)
        else:
            if not port_is_free(self.port):
                raise DatabaseError(
                    f"port {self.port} on 127.0.0.1 is in use by another program: "
                    "set SKYCLASS_PORT to a free port"
                )
            self._run(
                [
                    str(self.bindir / "pg_ctl"),
                    "start",
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_file),
                    "-w",
                    "-t",
                    str(int(timeout)),
                ],
                "starting PostgreSQL",
            )
        self._wait_ready(timeout)
        self._ensure_database()
        self._ensure_password()
        self._move_cron_jobs_to_socket()

    def make_private(self) -> bool:
        """Restrict the cluster to its OS user and root (idempotent).

        Socket directory 0700, data directory 0700, log file 0600, the
        :data:`HBA_CONF` rules in ``pg_hba.conf`` (a different file is kept as
        ``pg_hba.conf.old``), :data:`PRIVATE_CONF` and ``cron.host`` in
        ``postgresql.conf``.
        This is how a cluster made before these rules is migrated. Returns
        whether a configuration file changed (a running server must reload).
        """
        try:
            return self._make_private()
        except OSError as exc:
            raise DatabaseError(
                f"cannot make the embedded cluster in {self.home} private: {exc}. "
                "Run skyclass as the OS user that owns it (or as root), or set SKYCLASS_HOME"
            ) from exc

    def _make_private(self) -> bool:
        self.socket_dir.mkdir(exist_ok=True)
        self._chown(self.socket_dir)
        self.socket_dir.chmod(0o700)
        self.data_dir.chmod(0o700)
        # The server appends to the log: change its mode in place, never replace it.
        os.close(os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        self.log_file.chmod(0o600)
        self._chown(self.log_file)
        hba = self.data_dir / "pg_hba.conf"
        current = hba.read_text() if hba.exists() else ""
        hba_changed = current != HBA_CONF
        if hba_changed:
            if current:
                self._write_private(self.data_dir / "pg_hba.conf.old", current.encode())
            self._write_private(hba, HBA_CONF.encode())
        conf = self.data_dir / "postgresql.conf"
        active = conf_settings(conf.read_text())
        missing = {k: v for k, v in self._private_conf().items() if active.get(k) != v}
        if missing:
            with conf.open("a") as fh:
                fh.write(
                    "\n# added by skyclass: a private cluster\n"
                    + "".join(f"{key} = {value}\n" for key, value in missing.items())
                )
        return hba_changed or bool(missing)

    def _private_conf(self) -> dict[str, str]:
        """:data:`PRIVATE_CONF`, and pg_cron connecting over the socket (TCP needs a password)."""
        return {**PRIVATE_CONF, "cron.host": f"'{self.socket_dir}'"}

    def _reload(self, timeout: float) -> None:
        """Make the running server read its configuration files, and wait until it has.

        ``pg_reload_conf()`` only signals the postmaster; a new session sees the
        new ``pg_conf_load_time()`` once the postmaster has reloaded.
        """
        import psycopg

        def load_time() -> object:
            with psycopg.connect(self._admin_url) as conn:
                row = conn.execute("SELECT pg_conf_load_time()").fetchone()
            return row[0] if row else None

        before = load_time()
        with psycopg.connect(self._admin_url, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
        deadline = time.monotonic() + timeout
        while load_time() == before:
            if time.monotonic() > deadline:
                raise DatabaseError(f"PostgreSQL did not reload its settings: see {self.log_file}")
            time.sleep(0.05)

    def _write_private(self, path: Path, content: bytes) -> None:
        """Replace ``path`` by ``content`` atomically, mode 0600, owned by the cluster's user."""
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(content)
            self._chown(tmp)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _ensure_password(self) -> None:
        """Give the superuser a password for TCP, kept in :attr:`password_file`.

        Kept when the file's password still logs in; otherwise a new random one
        is set (sent as a SCRAM verifier, never in clear) and written.
        """
        import psycopg
        from psycopg import sql

        if self.password_file.exists():
            try:
                with psycopg.connect(self.tcp_url(), connect_timeout=10):
                    return
            except psycopg.OperationalError:
                pass
        password = secrets.token_urlsafe(32)
        with psycopg.connect(self.url, autocommit=True) as conn:
            verifier = conn.pgconn.encrypt_password(
                password.encode(), SUPERUSER.encode(), b"scram-sha-256"
            )
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(SUPERUSER), sql.Literal(verifier.decode())
                )
            )
        self._write_private(self.password_file, f"*:*:*:{SUPERUSER}:{password}\n".encode())

    def _move_cron_jobs_to_socket(self) -> None:
        """Point pg_cron jobs made for ``localhost`` at the socket.

        pg_cron stores ``cron.host`` in each job when it is scheduled; jobs of a
        cluster made before it was private connect over TCP, which now asks for
        a password they do not have.
        """
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute("SELECT to_regclass('cron.job')").fetchone()
            if row is None or row[0] is None:
                return
            conn.execute(
                "UPDATE cron.job SET nodename = %s"
                " WHERE nodename IN ('localhost', '127.0.0.1', '::1') AND nodeport = %s",
                (str(self.socket_dir), self.port),
            )

    def stop(self, mode: str = "fast") -> None:
        """Stop the cluster if it runs."""
        if self.running():
            self._run(
                [str(self.bindir / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m", mode, "-w"],
                "stopping PostgreSQL",
            )

    def destroy(self) -> None:
        """Stop the cluster and delete its directory (used by tests)."""
        with contextlib.suppress(DatabaseError):
            self.stop("immediate")
        shutil.rmtree(self.home, ignore_errors=True)

    def _wait_ready(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self._admin_url):
                    return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise DatabaseError(f"PostgreSQL did not accept connections: {exc}") from exc
                time.sleep(0.1)

    def _ensure_database(self) -> None:
        import psycopg

        with psycopg.connect(self._admin_url, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')


def conf_settings(text: str) -> dict[str, str]:
    """The settings a ``postgresql.conf`` text makes (the last one of a name wins)."""
    settings: dict[str, str] = {}
    for line in text.splitlines():
        body = line.split("#", 1)[0].strip()
        if "=" in body:
            key, value = body.split("=", 1)
            settings[key.strip().lower()] = value.strip()
    return settings
