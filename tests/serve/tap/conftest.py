"""Fixtures of the TAP tests: a database with real catalogs and classifications, and the
TAP application served by uvicorn in a thread, connecting as ``skyclass_portal``.

The database holds the VizieR pulsar catalog (VII/189, 706 rows, with units,
UCDs and descriptions) ingested as ``pulsars``, and ``sdss17`` (1,500 objects
with SDSS17 photometry as features, positions spread over the sky) scored by
the client-side scorer with a real compiled model and deployed as
``sgq_current`` (the demo's names, which docs/tap.md uses), so
``skyclass.current_classification`` has rows.
The TAP application is mounted at ``/tap`` of an outer Starlette app, as the
service mounts it.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from skyclass.ingest.load import ingest_file
from skyclass.score.deploy import deploy
from skyclass.score.jobs import score_catalog
from skyclass.serve.tap import create_tap_app
from tests.conftest import TEMPLATE, drop_database, new_database
from tests.score.jobs_support import add_objects, object_features
from tests.score.models import N_FEATURES, case
from tests.support.registry import register_test_model

PULSARS = "fits_votable_samples/catalog_of_pulsars_vizier_VII_189.vot"
MAX_ROWS = 5000
TIMEOUT = 5.0


@dataclass(frozen=True)
class Tap:
    """The running service: its base URL and the database URLs (admin and portal)."""

    url: str
    admin_url: str
    portal_url: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def portal_conninfo(admin_url: str) -> str:
    """The admin URL's server and database as ``skyclass_portal`` (a fresh password)."""
    password = secrets.token_urlsafe(16)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL("ALTER ROLE skyclass_portal PASSWORD {}").format(
                psycopg.sql.Literal(password)
            )
        )
    info = psycopg.conninfo.conninfo_to_dict(admin_url)
    info.pop("passfile", None)
    info.update(user="skyclass_portal", password=password)
    return psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]


@pytest.fixture(scope="package")
def tap_database(server_url: str, template_url: str, shared_data) -> Iterator[str]:  # type: ignore[no-untyped-def]
    url = new_database(server_url, TEMPLATE)
    try:
        ingest_file(
            shared_data / PULSARS, "pulsars", ra_column="RAJ2000", dec_column="DEJ2000", url=url
        )
        with psycopg.connect(url, autocommit=True) as conn:
            model = case("hgb_multiclass")
            version = register_test_model(
                conn,
                model.estimator,
                classes=model.classes,
                n_features=N_FEATURES,
                calibration=model.calibrations["identity"],
                catalog="sdss17",
                model="sgq",
                artifact=model.artifact,
            )
            add_objects(conn, version, object_features(1500, seed=7))
        score_catalog(str(version), "sdss17", url=url, workers=1, scorer="client")
        deploy("sgq_current", str(version), url=url)
        yield url
    finally:
        drop_database(server_url, url)


@pytest.fixture(scope="package")
def tap(tap_database: str) -> Iterator[Tap]:
    port = _free_port()
    base = f"http://127.0.0.1:{port}/tap"
    portal = portal_conninfo(tap_database)
    tap_app = create_tap_app(portal, base_url=base, max_rows=MAX_ROWS, statement_timeout=TIMEOUT)
    outer = Starlette(routes=[Mount("/tap", app=tap_app)])
    server = uvicorn.Server(
        uvicorn.Config(outer, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the TAP test server did not start")
        time.sleep(0.05)
    try:
        yield Tap(base, tap_database, portal)
    finally:
        server.should_exit = True
        thread.join(10)
        tap_app.state.tap_close()
