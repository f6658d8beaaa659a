"""Safety of the service: random and hostile requests, overload, and the role it logs in as.

The HTTP fuzz test sends random requests to every route (valid values mixed
with hostile text, huge and non-finite numbers, NUL bytes, unknown parameters,
bad cursors, odd Accept headers): no answer may be a 5xx other than a
deliberate 503, every error must say what was wrong in the format asked for,
the service must answer a valid request afterwards, and the database must be
unchanged. ``SKYCLASS_RELIABILITY=full`` sends 5,000 requests.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import psycopg
import pytest

from skyclass.errors import ConfigError
from skyclass.serve.app import create_app
from skyclass.serve.config import ServeConfig
from skyclass.serve.pool import check_role, portal_url
from tests.reliability.tier import count
from tests.serve.conftest import CATALOG, Service, _free_port, start_server

HOSTILE = (
    "",
    "x'; DROP TABLE skyclass.catalog; --",
    '"',
    "$$",
    "a" * 300,
    "../etc/passwd",
    "$(touch /tmp/skyclass-fuzz)",
    "NULL",
    "sgq:1",
    "Upper",
    "\x00",
    "%00",
    "nan",
    "-inf",
    "1e400",
    "-1",
    "0",
    "99999999999999999999999",
    "\u202e\u0000x",
    "😀",
    "<script>alert(1)</script>",
)
ROUTES = (
    "/scs/{c}",
    "/api/cone",
    "/api/objects/{c}/{i}",
    "/api/candidates",
    "/api/models",
    "/api/models/{m}",
    "/objects/{c}/{i}",
    "/models/{m}",
    "/api/catalogs",
    "/",
    "/api/openapi.json",
    "/nosuch/{c}",
)
PARAMS = {
    "/scs/{c}": ("RA", "DEC", "SR", "VERB", "ra", "RESPONSEFORMAT"),
    "/api/cone": ("catalog", "ra", "dec", "radius", "limit", "after", "format"),
    "/api/candidates": (
        "catalog",
        "deployment",
        "class",
        "min_probability",
        "purity",
        "limit",
        "after",
        "format",
    ),
    "/api/models": ("limit", "after", "format"),
}
ACCEPT = (
    None,
    "application/json",
    "text/csv",
    "application/x-votable+xml",
    "text/html",
    "*/*",
    "text/xml;q=0.5, text/csv;q=0.9",
    "garbage;q=x",
    "",
)


def _value(rng: random.Random, param: str) -> str:
    if rng.random() < 0.35:
        return rng.choice(HOSTILE)
    lower = param.lower()
    if lower in ("ra",):
        return repr(rng.uniform(-10, 370))
    if lower == "dec":
        return repr(rng.uniform(-95, 95))
    if lower in ("sr", "radius"):
        return repr(rng.choice([0, rng.uniform(0, 6), 1e-7, 10, 11]))
    if lower in ("min_probability", "purity"):
        return repr(rng.uniform(-0.2, 1.2))
    if lower in ("limit", "verb"):
        return str(rng.choice([0, 1, 2, 3, 10, 1000, 1001, -5]))
    if lower == "catalog":
        return rng.choice([CATALOG, CATALOG, "nosuch", "SDSS17"])
    if lower == "deployment":
        return rng.choice(["sgq_current", "photoz_current", "nope"])
    if lower == "class":
        return rng.choice(["QSO", "STAR", "GALAXY", "qso"])
    if lower == "format":
        return rng.choice(["json", "csv", "votable", "xml", "parquet"])
    if lower == "after":
        return rng.choice(["WzAuOSwgMTBd", "WzEwXQ", "e30", "!!"])
    return rng.choice(HOSTILE)


def _request(rng: random.Random, ids: list[int]) -> tuple[str, dict[str, str]]:
    route = rng.choice(ROUTES)
    path = route.format(
        c=quote(rng.choice([CATALOG, CATALOG, "nosuch", *HOSTILE[1:6]]), safe=""),
        i=quote(rng.choice([*map(str, ids), "0", "-1", "x", "9" * 25, "1.5", "%00"]), safe=""),
        m=quote(
            rng.choice(["sgq:2", "sgq", "photoz:1", "1", "0", "nosuch:1", *HOSTILE[1:4]]), safe=""
        ),
    )
    names = PARAMS.get(route, ())
    query: dict[str, str] = {}
    for name in names:
        if rng.random() < 0.7:
            query[name] = _value(rng, name)
    if rng.random() < 0.1:
        query[rng.choice(HOSTILE[1:]) or "x"] = "1"
    headers = {}
    accept = rng.choice(ACCEPT)
    if accept is not None:
        headers["Accept"] = accept
    return f"{path}?{urlencode(query)}" if query else path, headers


def _fingerprint(conn: psycopg.Connection) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT (SELECT count(*) FROM skyclass.prediction), "
        "(SELECT sum(hashtext(p::text)) FROM skyclass.prediction AS p), "
        "(SELECT count(*) FROM skyclass.catalog), (SELECT count(*) FROM skyclass.deployment), "
        f"(SELECT count(*) FROM catalogs.{CATALOG}), "
        "(SELECT count(*) FROM pg_class), (SELECT count(*) FROM pg_proc)"
    ).fetchone()
    assert row is not None
    return tuple(row)


@pytest.mark.reliability
def test_random_requests_get_no_5xx_and_change_nothing(
    service: Service, admin: psycopg.Connection
) -> None:
    n = count(600, 5000)
    rng = random.Random(2026)
    ids = [
        r[0]
        for r in admin.execute(
            f"SELECT object_id FROM catalogs.{CATALOG} ORDER BY object_id LIMIT 20"
        )
    ]
    before = _fingerprint(admin)
    statuses: Counter[int] = Counter()
    problems: list[str] = []
    with httpx.Client(base_url=service.base, timeout=30) as client:
        for _ in range(n):
            target, headers = _request(rng, ids)
            answer = client.get(target, headers=headers)
            statuses[answer.status_code] += 1
            kind = answer.headers.get("content-type", "")
            if answer.status_code >= 500 and answer.status_code != 503:
                problems.append(f"{answer.status_code} for {target}: {answer.text[:200]}")
            elif answer.status_code >= 400 and not (
                ("json" in kind and "message" in answer.json()["error"])
                or ("votable" in kind and 'name="Error"' in answer.text)
                or ("html" in kind and "What went wrong" in answer.text)
            ):
                problems.append(f"{answer.status_code} without a clear error for {target}")
        assert client.get(f"/api/objects/{CATALOG}/{ids[0]}").status_code == 200
    assert not problems, "\n".join(problems[:20])
    assert _fingerprint(admin) == before
    assert statuses[200] > n * 0.15 and sum(v for k, v in statuses.items() if k >= 400) > n * 0.2


def test_overload_is_a_deliberate_503_and_the_service_recovers(service: Service) -> None:
    config = ServeConfig(pool_size=1, max_waiting=1, pool_timeout_s=0.5, max_radius_deg=5)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SKYCLASS_DATABASE_URL", service.db.url)
        app = create_app(config, url=portal_url(config))
    port = _free_port()
    server, thread = start_server(app, port)
    statuses: Counter[int] = Counter()
    retry_after: list[str | None] = []
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(timeout=30) as http:
            for _ in range(10):
                answer = http.get(
                    f"http://127.0.0.1:{port}/api/cone",
                    params={"catalog": CATALOG, "ra": 180, "dec": 30, "radius": 5, "limit": 1000},
                )
                with lock:
                    statuses[answer.status_code] += 1
                    if answer.status_code == 503:
                        retry_after.append(answer.headers.get("retry-after"))

    try:
        threads = [threading.Thread(target=client) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert set(statuses) <= {200, 503}, statuses
        assert statuses[503] > 0 and statuses[200] > 0, statuses
        assert set(retry_after) == {"1"}
        recovered = httpx.get(f"http://127.0.0.1:{port}/api/models")
        assert recovered.status_code == 200
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def test_the_service_refuses_to_log_in_as_a_role_that_can_write(
    service: Service,
) -> None:
    with pytest.raises(ConfigError, match=r"refusing to serve as role .*superuser"):
        check_role(service.db.url, service.config)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SKYCLASS_DATABASE_URL", service.db.url)
        assert check_role(portal_url(service.config), service.config) == "skyclass_portal"


def test_portal_sessions_are_read_only_and_time_limited(service: Service) -> None:
    from skyclass.serve.pool import session_options

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SKYCLASS_DATABASE_URL", service.db.url)
        url = portal_url(service.config)
    with psycopg.connect(url, options=session_options(service.config)) as conn:
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
        assert conn.execute("SHOW statement_timeout").fetchone() == ("3s",)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("CREATE TEMP TABLE t (x int)")
        conn.rollback()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(5)")
