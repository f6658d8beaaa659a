"""Bring a PostgreSQL server to the current skyclass schema with Alembic.

Before migrating, the server is checked for the extensions skyclass needs; a
missing one is reported with the exact command that installs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from skyclass.errors import DatabaseError, MissingExtensionError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# The current text of every SQL function, one file per area (docs/architecture.md).
HEAD_SQL_DIR = Path(__file__).resolve().parent / "sql"


@dataclass(frozen=True)
class Extension:
    """A PostgreSQL extension skyclass uses and how to install it."""

    name: str
    debian_package: str  # with {major} for the server's major version
    required: bool
    purpose: str


EXTENSIONS = (
    Extension("q3c", "postgresql-{major}-q3c", True, "sky index, cone search and cross-match"),
    Extension("vector", "postgresql-{major}-pgvector", True, "feature vectors (pgvector)"),
    Extension("pg_cron", "postgresql-{major}-cron", False, "scheduled rescoring jobs"),
)


def alembic_config(url: str) -> Config:
    """Alembic configuration for ``url`` using the migrations shipped in the package."""
    if not (MIGRATIONS_DIR / "env.py").exists():
        raise DatabaseError(f"migrations not found in {MIGRATIONS_DIR}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["libpq_url"] = url
    return config


def check_extensions(url: str) -> list[str]:
    """Raise :class:`MissingExtensionError` for missing required extensions.

    Returns warnings about missing optional extensions.
    """
    with psycopg.connect(url) as conn:
        major = int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000  # type: ignore[index]
        available = {
            row[0]: row[1]
            for row in conn.execute("SELECT name, installed_version FROM pg_available_extensions")
        }
        dbname = conn.info.dbname
        superuser = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        is_superuser = bool(superuser.fetchone()[0])  # type: ignore[index]
    problems: list[str] = []
    warnings: list[str] = []
    for ext in EXTENSIONS:
        if ext.name in available:
            if available[ext.name] is None and not is_superuser and ext.required:
                problems.append(
                    f"extension {ext.name} ({ext.purpose}) is installed on the server but not "
                    f"created in database {dbname!r}: ask a superuser to run "
                    f'psql -d {dbname} -c "CREATE EXTENSION {ext.name}"'
                )
            continue
        package = ext.debian_package.format(major=major)
        hint = f"apt-get install {package} (Debian/Ubuntu, PostgreSQL {major})"
        if ext.name == "vector":
            hint += " or build pgvector from source (see docs/operations.md)"
        message = f"extension {ext.name} ({ext.purpose}) is not installed on the server: {hint}"
        (problems if ext.required else warnings).append(message)
    if problems:
        raise MissingExtensionError("\n".join(problems))
    return warnings


def upgrade(url: str, revision: str = "head") -> list[str]:
    """Check extensions, then migrate the database at ``url`` to ``revision``."""
    warnings = check_extensions(url)
    command.upgrade(alembic_config(url), revision)
    return warnings


def downgrade(url: str, revision: str) -> None:
    """Migrate the database at ``url`` down to ``revision`` (``base`` removes everything)."""
    command.downgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    """The Alembic revision the database is at, or None when never migrated."""
    with psycopg.connect(url) as conn:
        exists = conn.execute("SELECT to_regclass('skyclass.alembic_version')").fetchone()
        if not exists or exists[0] is None:
            return None
        row = conn.execute("SELECT version_num FROM skyclass.alembic_version").fetchone()
        return row[0] if row else None


def head_revision() -> str:
    """The newest revision of the shipped migrations."""
    script = ScriptDirectory.from_config(alembic_config(""))
    head = script.get_current_head()
    if head is None:
        raise DatabaseError("no migrations found")
    return head


def head_sql_files() -> list[Path]:
    """The head SQL files in the order they are read (``NN_area.sql``)."""
    files = sorted(HEAD_SQL_DIR.glob("*.sql"))
    if not files:
        raise DatabaseError(f"head SQL files not found in {HEAD_SQL_DIR}")
    return files
