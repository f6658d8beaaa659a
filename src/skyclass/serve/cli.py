"""``skyclass serve``: run the portal service with uvicorn."""

from __future__ import annotations

import os

import click

from skyclass.serve.config import load_serve_config


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=8080,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="TCP port to listen on.",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Worker processes (each with its own connection pool).",
)
@click.option(
    "--pool-size",
    type=click.IntRange(1, 100),
    default=None,
    help="Database connections per worker [default: 8].",
)
@click.option(
    "--statement-timeout",
    "statement_timeout_ms",
    type=click.IntRange(1),
    default=None,
    help="Longest query in milliseconds [default: 5000].",
)
@click.option(
    "--max-rows",
    type=click.IntRange(1),
    default=None,
    help="Most rows of one cone search or SCS answer [default: 10000].",
)
@click.option(
    "--max-radius",
    "max_radius_deg",
    type=click.FloatRange(0, 10, min_open=True),
    default=None,
    help="Largest SCS SR / cone radius in degrees [default: 1].",
)
@click.option(
    "--portal-url",
    default=None,
    help="libpq URL to log in with (default: the configured database as role "
    "skyclass_portal, over the socket on the embedded cluster).",
)
@click.option("--no-access-log", is_flag=True, help="Do not log every request.")
def serve(
    host: str,
    port: int,
    workers: int,
    pool_size: int | None,
    statement_timeout_ms: int | None,
    max_rows: int | None,
    max_radius_deg: float | None,
    portal_url: str | None,
    no_access_log: bool,
) -> None:
    """Serve catalogs and classifications over HTTP, read-only, for portals and VO tools.

    IVOA Simple Cone Search at /scs/CATALOG, a JSON API at /api (OpenAPI at
    /api/openapi.json), object pages at /objects/CATALOG/ID and model cards at
    /models/MODEL:VERSION. The service logs in as the read-only role
    skyclass_portal and refuses to start as a role that can write. Settings
    also come from SKYCLASS_SERVE_* variables (see docs/portal.md). Stop it
    with Ctrl-C or SIGTERM: requests in flight finish first.
    """
    import uvicorn

    from skyclass.serve.pool import check_role
    from skyclass.serve.pool import portal_url as default_portal_url

    config = load_serve_config(
        pool_size=pool_size,
        statement_timeout_ms=statement_timeout_ms,
        max_rows=max_rows,
        max_radius_deg=max_radius_deg,
        portal_url=portal_url,
    )
    url = config.portal_url or default_portal_url(config)
    role = check_role(url, config)  # refuse before binding the port
    from dataclasses import replace

    public = config.public_url or f"http://{host}:{port}"
    os.environ.update(replace(config, portal_url=url, public_url=public).to_environ())
    click.echo(f"skyclass serve: http://{host}:{port}/ as role {role}, {workers} worker(s)")
    uvicorn.run(
        "skyclass.serve.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=not no_access_log,
        timeout_graceful_shutdown=10,
        log_level="info",
    )
