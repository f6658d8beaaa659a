"""Where the database is and how to reach it.

With ``SKYCLASS_DATABASE_URL`` set, skyclass uses that server. Without it, it
uses the embedded default cluster, starting it (and bringing its schema up to
date) on first use.
"""

from __future__ import annotations

from functools import lru_cache

import psycopg
import sqlalchemy as sa

from skyclass.config import Settings, load_settings
from skyclass.db.cluster import EmbeddedCluster
from skyclass.errors import DatabaseError


def database_url(settings: Settings | None = None, *, start: bool = True) -> str:
    """The libpq URL of the database to use, starting the embedded default if needed."""
    settings = settings or load_settings()
    if settings.database_url:
        return settings.database_url
    cluster = EmbeddedCluster.from_settings(settings)
    if start:
        _start_embedded(cluster)
    return cluster.url


@lru_cache(maxsize=4)
def _start_embedded(cluster: EmbeddedCluster) -> None:
    from skyclass.db.migrate import upgrade

    cluster.start()
    upgrade(cluster.url)


def connect(url: str | None = None, *, autocommit: bool = False) -> psycopg.Connection:
    """Open a psycopg connection to ``url`` (default: :func:`database_url`)."""
    target = url or database_url()
    try:
        return psycopg.connect(target, autocommit=autocommit, application_name="skyclass")
    except psycopg.OperationalError as exc:
        raise DatabaseError(
            f"cannot connect to the database: {exc}".strip()
            + "\nCheck SKYCLASS_DATABASE_URL, or unset it to use the embedded default."
        ) from exc


def engine(url: str | None = None) -> sa.Engine:
    """A SQLAlchemy engine on ``url`` (a libpq URL or ``key=value`` string).

    psycopg opens the connections itself, so every form libpq accepts works.
    """
    target = url or database_url()
    return sa.create_engine(
        "postgresql+psycopg://",
        creator=lambda: psycopg.connect(target, application_name="skyclass"),
        poolclass=sa.NullPool,
    )
