"""Random requests to every TAP endpoint: no 5xx, nothing written, the service keeps serving.

Queries are built from ADQL fragments (valid, refused and broken ones, hostile
text, random bytes), cut and spliced at random; parameters, methods, job ids and
bodies are random too. Seeded: a failure names its request and reproduces.
"""

from __future__ import annotations

import random

import httpx
import psycopg
import pytest

from tests.serve.tap.conftest import Tap

# pyvo (requests) keeps its HTTP connections alive and leaves them to the garbage collector,
# which may close one during a later test: not a leak of ours.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

SEED = 20261202
REQUESTS = 1500
FRAGMENTS = [
    "SELECT",
    "TOP 5",
    "*",
    "object_id",
    "ra, dec",
    "FROM",
    "catalogs.pulsars",
    "catalogs.sdss17",
    "skyclass.current_classification",
    "TAP_SCHEMA.columns",
    "skyclass.model_artifact",
    "pg_catalog.pg_authid",
    "WHERE",
    "ORDER BY 1",
    "GROUP BY",
    "AND",
    "OR",
    "NOT",
    "=",
    "<",
    "CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', 280, -5, 3)) = 1",
    "DISTANCE(POINT(ra, dec), POINT(1, 2))",
    "CIRCLE(1, 2, 1e9)",
    "POINT(NaN, 1)",
    "BOX('', 1, 2, 3, 4)",
    "POLYGON(1)",
    "COUNT(*)",
    "pg_sleep(1)",
    "'x''y'",
    '"size"',
    "1e308 * 1e308",
    "1/0",
    "CAST(ra AS VARCHAR(3))",
    "(",
    ")",
    ";",
    "DROP TABLE x",
    "-- c",
    "/* */",
    "\x00",
    "\u00e9\u00e8",
    "$$",
    "OFFSET 3",
    "UNION SELECT 1",
    "IN (SELECT object_id FROM catalogs.pulsars)",
    "LOWER(jname) ILIKE 'j%'",
    "@v",
    "[x]",
]
PATHS = [
    "/sync",
    "/async",
    "/capabilities",
    "/availability",
    "/tables",
    "/",
    "/async/{job}",
    "/async/{job}/phase",
    "/async/{job}/results/result",
    "/async/{job}/error",
    "/async/{job}/parameters",
    "/async/{job}/destruction",
    "/async/{job}/quote",
    "/async/{job}/executionduration",
    "/async/{job}/owner",
    "/async/{job}/nosuch",
]
NAMES = [
    "LANG",
    "QUERY",
    "MAXREC",
    "RESPONSEFORMAT",
    "FORMAT",
    "REQUEST",
    "PHASE",
    "WAIT",
    "DESTRUCTION",
    "EXECUTIONDURATION",
    "ACTION",
    "RUNID",
    "UPLOAD",
    "lang",
    "Query",
    "x",
]


def random_query(rng: random.Random) -> str:
    words = [rng.choice(FRAGMENTS) for _ in range(rng.randint(0, 14))]
    text = " ".join(words)
    if rng.random() < 0.2 and text:
        cut = rng.randrange(len(text))
        text = text[:cut] + text[cut + rng.randint(0, 5) :]
    if rng.random() < 0.05:
        text += "".join(chr(rng.randint(1, 0x2FF)) for _ in range(rng.randint(1, 30)))
    return text


def random_value(rng: random.Random, name: str) -> str:
    options = {
        "LANG": ["ADQL", "ADQL-2.1", "SQL", "", "adql"],
        "MAXREC": ["0", "1", "10", "-1", "1e3", "99999999999999999999", "x", ""],
        "RESPONSEFORMAT": ["votable", "csv", "json", "fits", "", "text/csv"],
        "FORMAT": ["csv", "x"],
        "REQUEST": ["doQuery", "getCapabilities"],
        "PHASE": ["RUN", "ABORT", "PENDING", "EXECUTING", "x", ""],
        "WAIT": ["0", "0.2", "x"],  # negative: up to a minute, too slow here
        "DESTRUCTION": ["2030-01-01T00:00:00Z", "2000-01-01", "x", ""],
        "EXECUTIONDURATION": ["1", "0", "-3", "x", "99999999999999999999"],
        "ACTION": ["DELETE", "x"],
    }.get(name.upper())
    if name.upper() == "QUERY" or options is None:
        return random_query(rng)
    return rng.choice(options)


def test_random_requests_never_get_a_5xx(tap: Tap) -> None:
    rng = random.Random(SEED)
    jobs: list[str] = ["0123456789abcdef", "zz", "../../etc", "a" * 80]
    statuses: dict[int, int] = {}
    with httpx.Client(base_url=tap.url, timeout=30, follow_redirects=False) as client:
        for i in range(REQUESTS):
            path = rng.choice(PATHS).replace("{job}", rng.choice(jobs))
            method = rng.choice(["GET", "POST"])
            if path.count("/") == 2 and path.startswith("/async/") and rng.random() < 0.3:
                method = "DELETE"
            params = {}
            for _ in range(rng.randint(0, 5)):
                name = rng.choice(NAMES)
                params[name] = random_value(rng, name)
            if rng.random() < 0.7:
                params.setdefault("LANG", "ADQL")
                params.setdefault("QUERY", random_query(rng))
            if method == "POST" and rng.random() < 0.05:
                body = bytes(rng.randrange(256) for _ in range(rng.randint(1, 200)))
                reply = client.post(path, content=body)
            elif method == "POST":
                reply = client.post(path, data=params)
            elif method == "GET":
                reply = client.get(path, params=params)
            else:
                reply = client.delete(path)
            statuses[reply.status_code] = statuses.get(reply.status_code, 0) + 1
            assert reply.status_code < 500, f"request {i}: {method} {path} {params!r}: {reply.text}"
            location = reply.headers.get("location", "")
            if reply.status_code == 303 and "/async/" in location:
                jobs.append(location.rsplit("/", 1)[1])
    print(statuses)
    assert statuses.get(200, 0) > REQUESTS // 10  # many requests did succeed
    query = "SELECT TOP 1 * FROM catalogs.pulsars"
    ok = httpx.post(f"{tap.url}/sync", data={"LANG": "ADQL", "QUERY": query})
    assert ok.status_code == 200
    with psycopg.connect(tap.admin_url) as conn:
        assert conn.execute("SELECT count(*) FROM catalogs.pulsars").fetchone() == (706,)
