"""The connection pool of the service and the role it logs in as.

The service connects as ``skyclass_portal`` (made by migration 0019: LOGIN,
member of ``skyclass_reader``). On the embedded cluster it logs in over the
private Unix socket; with ``SKYCLASS_DATABASE_URL`` it uses that URL with the
user replaced, unless ``SKYCLASS_SERVE_PORTAL_URL`` (``--portal-url``) names
the URL to use as it is (a server that asks the role for a password). Before
serving, :func:`check_role` refuses a role that could write anything or read
model artifacts: a misconfigured URL fails at start, not in production.
"""

from __future__ import annotations

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool

from skyclass.errors import ConfigError, DatabaseError
from skyclass.serve.config import ServeConfig

PORTAL_ROLE = "skyclass_portal"
APPLICATION_NAME = "skyclass-serve"

# One row: what the role could do that a portal must not.
ROLE_CHECK = """
SELECT r.rolname, r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolbypassrls,
       pg_has_role(current_user, 'skyclass_reader', 'MEMBER') AS reader,
       (SELECT array_agg(format('%I.%I', n.nspname, c.relname) ORDER BY 1)
          FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
           -- pg_cron grants its run log to PUBLIC; row security keeps each role to its own rows
           AND NOT (n.nspname = 'cron' AND c.relrowsecurity)
           -- the TAP service keeps its UWS job list (revision 0020), nothing else
           AND NOT (n.nspname = 'skyclass' AND c.relname = 'tap_job')
           AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
           AND has_table_privilege(c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')) AS writable,
       has_table_privilege('skyclass.model_artifact', 'SELECT') AS artifacts
  FROM pg_roles AS r WHERE r.rolname = current_user
"""


def portal_url(config: ServeConfig) -> str:
    """The libpq URL the service logs in with (see the module docstring)."""
    if config.portal_url:
        return config.portal_url
    from skyclass.db.connect import database_url

    try:
        info = conninfo_to_dict(database_url())
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"SKYCLASS_DATABASE_URL is not a valid libpq URL: {exc}") from exc
    info["user"] = PORTAL_ROLE
    info.pop("password", None)
    info.pop("passfile", None)
    return make_conninfo(**info)  # type: ignore[arg-type]


def session_options(config: ServeConfig) -> str:
    """libpq ``options``: every transaction read-only, every statement bounded in time."""
    return (
        "-c default_transaction_read_only=on "
        f"-c statement_timeout={config.statement_timeout_ms} "
        "-c idle_in_transaction_session_timeout=60000 "
        # Many small concurrent queries: parallel workers and JIT add latency, not speed.
        "-c max_parallel_workers_per_gather=0 -c jit=off"
    )


def check_role(url: str, config: ServeConfig) -> str:
    """Log in at ``url`` once and refuse a role a portal must not use; return its name."""
    try:
        with psycopg.connect(
            url, options=session_options(config), application_name=APPLICATION_NAME
        ) as conn:
            row = conn.execute(ROLE_CHECK).fetchone()
    except psycopg.OperationalError as exc:
        raise DatabaseError(
            f"the portal service cannot log in: {exc}".strip()
            + f"\nIt logs in as role {PORTAL_ROLE!r} (made by `skyclass db migrate`); on a server "
            "that asks it for a password give the whole URL with --portal-url or "
            "SKYCLASS_SERVE_PORTAL_URL."
        ) from exc
    assert row is not None
    name, superuser, createrole, createdb, bypassrls, reader, writable, artifacts = row
    problems = []
    if superuser or createrole or createdb or bypassrls:
        problems.append("it is a superuser or may create roles or databases or bypass RLS")
    if not reader:
        problems.append("it is not a member of skyclass_reader")
    if writable:
        problems.append(f"it can write {', '.join(writable[:5])}")
    if artifacts:
        problems.append("it can read skyclass.model_artifact")
    if problems:
        raise ConfigError(
            f"refusing to serve as role {name!r}: " + "; ".join(problems) + ". The service "
            f"must log in as a read-only role such as {PORTAL_ROLE!r}."
        )
    return str(name)


def make_pool(url: str, config: ServeConfig) -> AsyncConnectionPool:
    """A closed pool of ``config.pool_size`` connections; open it in the app's lifespan."""
    return AsyncConnectionPool(
        url,
        min_size=config.pool_size,
        max_size=config.pool_size,
        max_waiting=config.max_waiting,
        timeout=config.pool_timeout_s,
        kwargs={
            "options": session_options(config),
            "application_name": APPLICATION_NAME,
            # One statement per answer where possible: no BEGIN/COMMIT round trips.
            "autocommit": True,
        },
        name="skyclass-serve",
        open=False,
    )
