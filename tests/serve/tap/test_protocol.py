"""The TAP and UWS protocol over HTTP: parameters, formats, errors, job life cycle.

Requests go to the service running in uvicorn; the job list is checked in
``skyclass.tap_job`` as well, since it lives in the database.
"""

from __future__ import annotations

import csv
import io
import json
import time
import xml.etree.ElementTree as ET

import httpx
import psycopg
import pytest

from tests.serve.tap.conftest import TIMEOUT, Tap

UWS = "{http://www.ivoa.net/xml/UWS/v1.0}"
VOT = "{http://www.ivoa.net/xml/VOTable/v1.3}"
SLOW = (
    "SELECT COUNT(*) AS n FROM catalogs.sdss17 AS a, catalogs.sdss17 AS b, "
    "catalogs.pulsars AS c WHERE a.ra + b.ra > c.ra"
)


def status_of(body: bytes) -> list[tuple[str, str]]:
    root = ET.fromstring(body)
    return [
        (info.get("value", ""), (info.text or "").strip())
        for info in root.iter(f"{VOT}INFO")
        if info.get("name") == "QUERY_STATUS"
    ]


def query(tap: Tap, **params: str) -> httpx.Response:
    return httpx.post(f"{tap.url}/sync", data=params, timeout=60)


def test_csv_and_json_carry_the_rows_of_the_votable(tap: Tap) -> None:
    adql = "SELECT TOP 5 object_id, jname, p, age FROM catalogs.pulsars ORDER BY object_id"
    as_csv = query(tap, LANG="ADQL", QUERY=adql, RESPONSEFORMAT="csv")
    assert as_csv.status_code == 200
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(as_csv.text)))
    assert rows[0] == ["object_id", "jname", "p", "age"]
    as_json = query(tap, LANG="ADQL", QUERY=adql, RESPONSEFORMAT="application/json")
    doc = json.loads(as_json.content)
    assert [m["name"] for m in doc["metadata"]] == rows[0]
    assert doc["status"] == "OK"
    with psycopg.connect(tap.admin_url) as conn:
        expected = conn.execute(
            "SELECT object_id, jname, p, age FROM catalogs.pulsars ORDER BY object_id LIMIT 5"
        ).fetchall()
    assert [tuple(r[:2]) for r in doc["data"]] == [tuple(r[:2]) for r in expected]
    assert [float(r[2]) for r in rows[1:]] == [r[2] for r in expected]
    assert [r[3] for r in doc["data"]] == [r[3] for r in expected]  # NULL ages stay null


def test_votable_result_has_a_results_resource_and_status_ok(tap: Tap) -> None:
    reply = httpx.get(
        f"{tap.url}/sync",
        params={"lang": "ADQL", "query": "SELECT TOP 1 * FROM TAP_SCHEMA.schemas"},
    )
    assert reply.status_code == 200
    root = ET.fromstring(reply.content)
    resource = root.find(f"{VOT}RESOURCE")
    assert resource is not None and resource.get("type") == "results"
    assert status_of(reply.content) == [("OK", "")]


def test_maxrec_zero_returns_the_columns_only(tap: Tap) -> None:
    reply = query(tap, LANG="ADQL", QUERY="SELECT object_id FROM catalogs.pulsars", MAXREC="0")
    assert reply.status_code == 200
    root = ET.fromstring(reply.content)
    assert [f.get("name") for f in root.iter(f"{VOT}FIELD")] == ["object_id"]
    assert list(root.iter(f"{VOT}TR")) == []
    assert status_of(reply.content)[-1][0] == "OVERFLOW"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"QUERY": "SELECT 1 FROM catalogs.pulsars"}, "LANG is missing"),
        ({"LANG": "SQL", "QUERY": "SELECT 1 FROM catalogs.pulsars"}, "LANG='SQL'"),
        ({"LANG": "ADQL"}, "QUERY is missing"),
        ({"LANG": "ADQL", "QUERY": "SELECT 1", "MAXREC": "many"}, "MAXREC='many'"),
        ({"LANG": "ADQL", "QUERY": "SELECT 1", "MAXREC": "-1"}, "negative"),
        ({"LANG": "ADQL", "QUERY": "SELECT 1", "RESPONSEFORMAT": "fits"}, "RESPONSEFORMAT"),
        ({"LANG": "ADQL", "QUERY": "SELECT 1", "REQUEST": "getCapabilities"}, "REQUEST"),
        ({"LANG": "ADQL", "QUERY": "SELECT 1", "UPLOAD": "t,http://x/t.vot"}, "UPLOAD"),
    ],
)
def test_bad_parameters_give_an_error_votable(
    tap: Tap, params: dict[str, str], message: str
) -> None:
    reply = query(tap, **params)
    assert reply.status_code == 400
    [(status, text)] = status_of(reply.content)
    assert status == "ERROR"
    assert message in text


def test_a_query_past_the_statement_timeout_is_an_error(tap: Tap) -> None:
    started = time.monotonic()
    reply = query(tap, LANG="ADQL", QUERY=SLOW)
    assert reply.status_code == 400
    [(status, text)] = status_of(reply.content)
    assert status == "ERROR" and "statement timeout" in text
    assert time.monotonic() - started < TIMEOUT + 5


def _job(reply: httpx.Response) -> ET.Element:
    assert reply.status_code == 200, reply.text
    return ET.fromstring(reply.content)


def _phase(tap: Tap, job_url: str) -> str:
    return httpx.get(f"{job_url}/phase").text


def test_an_async_job_runs_to_completion_and_is_deleted(tap: Tap) -> None:
    created = httpx.post(
        f"{tap.url}/async",
        data={
            "LANG": "ADQL",
            "QUERY": "SELECT TOP 3 object_id FROM catalogs.pulsars",
            "RESPONSEFORMAT": "csv",
            "RUNID": "mine",
        },
    )
    assert created.status_code == 303
    job_url = created.headers["location"]
    job_id = job_url.rsplit("/", 1)[1]
    assert _phase(tap, job_url) == "PENDING"
    listed = _job(httpx.get(f"{tap.url}/async", params={"PHASE": "PENDING"}))
    assert job_id in [ref.get("id") for ref in listed.iter(f"{UWS}jobref")]
    assert httpx.post(f"{job_url}/phase", data={"PHASE": "RUN"}).status_code == 303
    job = _job(httpx.get(job_url, params={"WAIT": "20"}))
    deadline = time.monotonic() + 20
    while job.findtext(f"{UWS}phase") != "COMPLETED" and time.monotonic() < deadline:
        job = _job(httpx.get(job_url, params={"WAIT": "5"}))
    assert job.findtext(f"{UWS}phase") == "COMPLETED"
    assert job.findtext(f"{UWS}runId") == "mine"
    result = httpx.get(f"{job_url}/results/result")
    assert result.headers["content-type"].startswith("text/csv")
    assert result.text.splitlines()[0] == "object_id"
    assert len(result.text.splitlines()) == 4
    with psycopg.connect(tap.admin_url) as conn:
        row = conn.execute(
            "SELECT phase, result_rows FROM skyclass.tap_job WHERE job_id = %s", (job_id,)
        ).fetchone()
        assert row == ("COMPLETED", 3)
        deleted = httpx.delete(job_url)
        assert deleted.status_code == 303
        assert conn.execute(
            "SELECT count(*) FROM skyclass.tap_job WHERE job_id = %s", (job_id,)
        ).fetchone() == (0,)
    assert httpx.get(job_url).status_code == 404


def test_a_failing_job_is_in_error_with_the_message(tap: Tap) -> None:
    created = httpx.post(
        f"{tap.url}/async",
        data={"LANG": "ADQL", "QUERY": "SELECT * FROM skyclass.model_artifact", "PHASE": "RUN"},
    )
    job_url = created.headers["location"]
    job = _job(httpx.get(job_url, params={"WAIT": "20"}))
    deadline = time.monotonic() + 20
    while job.findtext(f"{UWS}phase") != "ERROR" and time.monotonic() < deadline:
        job = _job(httpx.get(job_url, params={"WAIT": "5"}))
    assert job.findtext(f"{UWS}phase") == "ERROR"
    assert "not published" in (job.findtext(f"{UWS}errorSummary/{UWS}message") or "")
    error = httpx.get(f"{job_url}/error")
    assert status_of(error.content)[0][0] == "ERROR"
    assert httpx.get(f"{job_url}/results/result").status_code == 404
    httpx.post(job_url, data={"ACTION": "DELETE"})
    assert httpx.get(job_url).status_code == 404


def test_abort_cancels_a_running_query(tap: Tap) -> None:
    created = httpx.post(f"{tap.url}/async", data={"LANG": "ADQL", "QUERY": SLOW, "PHASE": "RUN"})
    job_url = created.headers["location"]
    job_id = job_url.rsplit("/", 1)[1]
    deadline = time.monotonic() + 10
    while _phase(tap, job_url) != "EXECUTING" and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    started = time.monotonic()
    assert httpx.post(f"{job_url}/phase", data={"PHASE": "ABORT"}).status_code == 303
    assert _phase(tap, job_url) == "ABORTED"
    with psycopg.connect(tap.admin_url, autocommit=True) as conn:
        while time.monotonic() - started < TIMEOUT:
            running = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s AND state = 'active'",
                ("%a.ra + b.ra%",),
            ).fetchone()
            if running == (0,):
                break
            time.sleep(0.05)
        assert running == (0,)
        assert time.monotonic() - started < TIMEOUT - 1  # cancelled, not timed out
        time.sleep(0.3)
        row = conn.execute(
            "SELECT phase, result FROM skyclass.tap_job WHERE job_id = %s", (job_id,)
        ).fetchone()
    assert row == ("ABORTED", None)


def test_destruction_and_execution_duration_can_be_lowered(tap: Tap) -> None:
    created = httpx.post(f"{tap.url}/async", data={"LANG": "ADQL", "QUERY": "SELECT 1"})
    job_url = created.headers["location"]
    httpx.post(f"{job_url}/executionduration", data={"EXECUTIONDURATION": "2"})
    assert httpx.get(f"{job_url}/executionduration").text == "2"
    httpx.post(f"{job_url}/destruction", data={"DESTRUCTION": "2000-01-01T00:00:00Z"})
    assert httpx.get(f"{job_url}/destruction").text.startswith("2000-01-01T00:00:00")
    httpx.get(f"{tap.url}/async")  # listing deletes the jobs past their destruction time
    assert httpx.get(job_url).status_code == 404
    bad = httpx.post(f"{tap.url}/async/0123456789abcdef/destruction", data={"DESTRUCTION": "x"})
    assert bad.status_code == 404


def test_a_lowered_execution_duration_is_the_jobs_timeout(tap: Tap) -> None:
    created = httpx.post(f"{tap.url}/async", data={"LANG": "ADQL", "QUERY": SLOW})
    job_url = created.headers["location"]
    httpx.post(f"{job_url}/executionduration", data={"EXECUTIONDURATION": "1"})
    started = time.monotonic()
    httpx.post(f"{job_url}/phase", data={"PHASE": "RUN"})
    job = _job(httpx.get(job_url, params={"WAIT": "10"}))
    while job.findtext(f"{UWS}phase") not in ("ERROR", "COMPLETED"):
        assert time.monotonic() - started < TIMEOUT + 5
        job = _job(httpx.get(job_url, params={"WAIT": "2"}))
    assert job.findtext(f"{UWS}phase") == "ERROR"
    assert "(1 s)" in (job.findtext(f"{UWS}errorSummary/{UWS}message") or "")
    httpx.delete(job_url)


def test_a_job_left_executing_by_a_stopped_process_becomes_an_error(tap: Tap) -> None:
    with psycopg.connect(tap.admin_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO skyclass.tap_job (job_id, phase, parameters, destruction, "
            "execution_duration, started_at, backend_pid) VALUES ('deadbeef00000001', "
            "'EXECUTING', '{}', now() + interval '1 day', 5, now(), 2147483647)"
        )
    job = _job(httpx.get(f"{tap.url}/async/deadbeef00000001"))
    assert job.findtext(f"{UWS}phase") == "ERROR"
    assert "process running the job stopped" in (
        job.findtext(f"{UWS}errorSummary/{UWS}message") or ""
    )
    httpx.delete(f"{tap.url}/async/deadbeef00000001")


def test_a_body_over_the_limit_is_refused_without_being_kept(tap: Tap) -> None:
    body = b"QUERY=" + b"x" * 2_000_000
    reply = httpx.post(
        f"{tap.url}/sync",
        content=body,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert reply.status_code == 400
    assert "larger than" in status_of(reply.content)[0][1]
    multipart = httpx.post(f"{tap.url}/sync", files={"t": ("t.vot", b"<VOTABLE/>")})
    assert multipart.status_code == 400
    assert "UPLOAD" in status_of(multipart.content)[0][1]
