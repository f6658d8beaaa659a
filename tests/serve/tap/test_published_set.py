"""What TAP serves follows the registry and the reader's grants, with no restart.

A catalog ingested while the service runs is listed in TAP_SCHEMA and
queryable; a catalog ``skyclass_reader`` may not read is neither listed nor
reachable; a dropped catalog is gone. (The service caches the published set
for :data:`~skyclass.serve.tap.db.METADATA_SECONDS`.)
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import psycopg

from skyclass.ingest.load import ingest_file
from skyclass.registry.drop import drop_catalog
from skyclass.serve.tap.db import METADATA_SECONDS
from tests.serve.tap.conftest import Tap


def sync(tap: Tap, query: str) -> httpx.Response:
    return httpx.post(
        f"{tap.url}/sync", data={"LANG": "ADQL", "QUERY": query, "RESPONSEFORMAT": "csv"}
    )


def listed(tap: Tap) -> set[str]:
    reply = sync(tap, "SELECT table_name FROM TAP_SCHEMA.tables")
    assert reply.status_code == 200, reply.text
    return set(reply.text.split()[1:])


def test_catalogs_enter_and_leave_tap_with_the_registry_and_the_grants(
    tap: Tap, tmp_path: Path
) -> None:
    source = tmp_path / "extra.csv"
    source.write_text("id,ra,dec,mag\n1,10.0,-5.0,17.5\n2,10.001,-5.001,18.25\n3,200.0,40.0,\n")
    ingest_file(source, "tap_extra", id_column="id", url=tap.admin_url)
    try:
        assert "catalogs.tap_extra" in listed(tap)  # TAP_SCHEMA is live views
        time.sleep(METADATA_SECONDS + 0.5)  # the service's cache of the published set
        reply = sync(
            tap,
            "SELECT object_id, mag FROM catalogs.tap_extra "
            "WHERE CONTAINS(POINT(ra, dec), CIRCLE(10, -5, 0.01)) = 1 ORDER BY object_id",
        )
        assert reply.status_code == 200, reply.text
        assert reply.text.splitlines() == ["object_id,mag", "1,17.5", "2,18.25"]
        with psycopg.connect(tap.admin_url, autocommit=True) as conn:
            conn.execute("REVOKE SELECT ON catalogs.tap_extra FROM skyclass_reader")
        assert "catalogs.tap_extra" not in listed(tap)
        time.sleep(METADATA_SECONDS + 0.5)
        refused = sync(tap, "SELECT * FROM catalogs.tap_extra")
        assert refused.status_code == 400 and "not published" in refused.text
    finally:
        drop_catalog("tap_extra", url=tap.admin_url)
    assert "catalogs.tap_extra" not in listed(tap)
