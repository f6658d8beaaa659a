"""Settings read from the environment.

``SKYCLASS_DATABASE_URL``
    Use this PostgreSQL server instead of the embedded default.
``SKYCLASS_HOME``
    Directory of the embedded default cluster (data, socket, log, and the
    superuser's password for TCP connections).
    Default: ``/var/lib/skyclass`` when run as root (the ``postgres`` user must
    reach it), otherwise ``$XDG_DATA_HOME/skyclass`` (``~/.local/share/skyclass``).
``SKYCLASS_PORT``
    Port of the embedded cluster (default 55433; never the system's 5432).
``SKYCLASS_PG_BINDIR``
    Directory holding ``initdb``, ``pg_ctl`` and ``postgres``.
``SKYCLASS_PG_USER``
    Unprivileged OS user that runs the embedded cluster when skyclass runs as
    root (default ``postgres``). Only this user and root can connect to it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from skyclass.errors import ConfigError

DEFAULT_PORT = 55433
DATABASE_NAME = "skyclass"
SUPERUSER = "postgres"


@dataclass(frozen=True)
class Settings:
    """Resolved settings; build one with :func:`load_settings`."""

    database_url: str | None
    home: Path
    port: int
    pg_bindir: Path | None
    pg_user: str


def _default_home() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/skyclass")
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "skyclass"


def load_settings() -> Settings:
    """Read the ``SKYCLASS_*`` environment variables into a :class:`Settings`."""
    port_text = os.environ.get("SKYCLASS_PORT", str(DEFAULT_PORT))
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"SKYCLASS_PORT must be an integer, not {port_text!r}") from None
    if not 1024 <= port <= 65535 or port == 5432:
        raise ConfigError(
            f"SKYCLASS_PORT={port} is not allowed: pick a port in 1024..65535 other than 5432"
        )
    bindir = os.environ.get("SKYCLASS_PG_BINDIR")
    return Settings(
        database_url=os.environ.get("SKYCLASS_DATABASE_URL") or None,
        home=Path(os.environ.get("SKYCLASS_HOME") or _default_home()).absolute(),
        port=port,
        pg_bindir=Path(bindir) if bindir else None,
        pg_user=os.environ.get("SKYCLASS_PG_USER", "postgres"),
    )
