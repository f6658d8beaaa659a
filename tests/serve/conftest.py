"""A scored catalog and the portal service running on it, for the serve tests.

One database per test session of this folder: an SDSS17 slice is ingested,
its ugriz features are built in the database, two star/galaxy/QSO versions
and a photo-z version (SDSS spectroscopic redshift as the label) are trained
small, compiled and deployed (``sgq_current`` -> version 2, ``photoz_current``),
and the catalog is scored by all three, so objects have a history. The service
is the real one: uvicorn serving :func:`skyclass.serve.app.create_app` on a
free port, logging in as ``skyclass_portal``.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import uvicorn

from skyclass.serve.app import create_app
from skyclass.serve.config import ServeConfig
from skyclass.serve.pool import portal_url
from tests.conftest import drop_database, new_database
from tests.report.conftest import DEMO_CSV, EXAMPLE_SPEC, _slice

ROWS = 3000
SMALL = {"max_iter": 20, "max_leaf_nodes": 15}
CATALOG = "sdss17"


@dataclass(frozen=True)
class Scored:
    """The database (admin URL) and what is in it."""

    url: str
    sgq_v1: int
    sgq_v2: int
    photoz: int


@dataclass(frozen=True)
class Service:
    """The running service: its base URL, config and the admin database URL."""

    base: str
    config: ServeConfig
    db: Scored


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def scored(
    server_url: str, template_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scored]:
    """A database with catalog sdss17 scored by two sgq versions and a photo-z version."""
    from skyclass.compile.store import compile_model_version
    from skyclass.features.build import build_feature_set
    from skyclass.ingest import ingest_file
    from skyclass.score.deploy import deploy
    from skyclass.score.jobs import score_catalog
    from skyclass.train.pipeline import train_model
    from skyclass.train.snapshot import create_snapshot

    url = new_database(server_url)
    work = tmp_path_factory.mktemp("serve-data")
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("SKYCLASS_DATABASE_URL", url)
            csv_path = work / "sdss17_slice.csv"
            _slice(DEMO_CSV, csv_path, ROWS, seed=17, opener=gzip.open)
            ingest_file(
                csv_path,
                CATALOG,
                id_column="orig_row",
                ra_column="alpha",
                dec_column="delta",
                url=url,
            )
            fs = build_feature_set(EXAMPLE_SPEC, url=url).feature_set_id
            snap = create_snapshot(fs, "class", n_folds=3, seed=3, url=url)
            versions = []
            for seed in (0, 1):
                result = train_model(
                    "sgq",
                    snap.snapshot_id,
                    params=SMALL,
                    seed=seed,
                    baselines=("dummy", "logistic"),
                    importance=False,
                    description="star/galaxy/QSO (serve tests)",
                    url=url,
                )
                versions.append(result.model_version_id)
            zsnap = create_snapshot(
                fs, "redshift", task="photoz", bin_edges="0:3:0.25", n_folds=3, seed=5, url=url
            )
            photoz = train_model(
                "photoz",
                zsnap.snapshot_id,
                params=SMALL,
                baselines=("dummy",),
                importance=False,
                url=url,
            )
            for version in (*versions, photoz.model_version_id):
                compile_model_version(version, url=url, opt_level="-O0")
            deploy("sgq_current", versions[0], url=url)
            score_catalog("sgq_current", CATALOG, url=url)
            score_catalog(str(versions[1]), CATALOG, url=url)
            deploy("sgq_current", versions[1], url=url)
            deploy("photoz_current", photoz.model_version_id, url=url)
            score_catalog("photoz_current", CATALOG, url=url)
        yield Scored(url, versions[0], versions[1], photoz.model_version_id)
    finally:
        drop_database(server_url, url)


def start_server(app: object, port: int) -> tuple[uvicorn.Server, threading.Thread]:
    """uvicorn serving ``app`` on 127.0.0.1:``port`` in a thread, once it accepts requests."""
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",  # type: ignore[arg-type]
            access_log=False,
            lifespan="on",
        )
    )
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the portal service did not start")
        time.sleep(0.05)
    return server, thread


@pytest.fixture(scope="session")
def service(scored: Scored) -> Iterator[Service]:
    """The portal service on the scored database, as role skyclass_portal."""
    config = ServeConfig(max_radius_deg=5.0, max_rows=2000, pool_size=4, statement_timeout_ms=3000)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SKYCLASS_DATABASE_URL", scored.url)
        target = portal_url(config)
    app = create_app(config, url=target)
    port = _free_port()
    server, thread = start_server(app, port)
    try:
        yield Service(f"http://127.0.0.1:{port}", config, scored)
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture
def admin(scored: Scored) -> Iterator[psycopg.Connection]:
    """An autocommit admin connection to the scored database."""
    with psycopg.connect(scored.url, autocommit=True) as conn:
        yield conn


__all__ = ["CATALOG", "Path", "Scored", "Service"]
