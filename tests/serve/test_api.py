"""The JSON API: objects, candidates (purity thresholds), cone, model cards, paging, formats."""

from __future__ import annotations

import csv
import io
import math

import httpx
import psycopg
import pytest
from astropy.io.votable import parse

from tests.serve.conftest import CATALOG, Service


def _get(service: Service, path: str, **params: object) -> httpx.Response:
    return httpx.get(service.base + path, params=params, timeout=30)  # type: ignore[arg-type]


def _an_object(admin: psycopg.Connection) -> int:
    row = admin.execute(f"SELECT min(object_id) FROM catalogs.{CATALOG}").fetchone()
    assert row is not None
    return int(row[0])


def test_object_has_row_current_classifications_pdf_and_history(
    service: Service, admin: psycopg.Connection
) -> None:
    oid = _an_object(admin)
    doc = _get(service, f"/api/objects/{CATALOG}/{oid}").json()
    row = admin.execute(
        f"SELECT class, u FROM catalogs.{CATALOG} WHERE object_id = %s", (oid,)
    ).fetchone()
    assert row is not None
    assert doc["row"]["object_id"] == oid and doc["row"]["class"] == row[0]
    assert math.isclose(doc["row"]["u"], row[1])
    assert set(doc["current"]) == {"sgq_current", "photoz_current"}
    sgq = doc["current"]["sgq_current"]
    assert sgq["model_version_id"] == service.db.sgq_v2
    expected = admin.execute(
        "SELECT probabilities, top_label FROM skyclass.current_classification "
        "WHERE deployment = 'sgq_current' AND catalog = %s AND object_id = %s",
        (CATALOG, oid),
    ).fetchone()
    assert expected is not None
    assert sgq["top_label"] == expected[1]
    assert list(sgq["probabilities"]) == ["GALAXY", "QSO", "STAR"]
    assert [round(p, 6) for p in sgq["probabilities"].values()] == [
        round(p, 6) for p in expected[0]
    ]
    z = doc["current"]["photoz_current"]
    assert len(z["pdf"]["bin_edges"]) == len(z["pdf"]["probabilities"]) + 1 == 13
    assert math.isclose(sum(z["pdf"]["probabilities"]), 1.0, rel_tol=1e-5)
    assert z["summary"]["z_lo68"] <= z["summary"]["z_median"] <= z["summary"]["z_hi68"]
    # history: every version that scored the object, the older sgq version included
    versions = [h["model_version_id"] for h in doc["history"]]
    assert sorted(versions) == sorted([service.db.sgq_v1, service.db.sgq_v2, service.db.photoz])
    old = next(h for h in doc["history"] if h["model_version_id"] == service.db.sgq_v1)
    assert old["deployments"] == [] and old["model_version"] == "sgq:1"


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        (f"/api/objects/{CATALOG}/999999999", 404, "has no object 999999999"),
        (f"/api/objects/{CATALOG}/abc", 400, "'id' must be an integer"),
        (f"/api/objects/{CATALOG}/99999999999999999999", 400, "'id' must be an integer"),
        ("/api/objects/nosuch/1", 404, "catalog 'nosuch' is not published"),
        ("/api/objects/Robert');DROP/1", 404, "not a valid name"),
    ],
)
def test_object_errors_name_what_was_wrong(
    service: Service, path: str, status: int, message: str
) -> None:
    answer = _get(service, path)
    assert answer.status_code == status
    assert message in answer.json()["error"]["message"]


def _threshold_sql(admin: psycopg.Connection, version: int, purity: float) -> float:
    """The demo's SQL for the QSO purity threshold, run as the administrator."""
    table, k = admin.execute(
        "SELECT t.table_name, array_position(v.classes, 'QSO') FROM skyclass.model_version AS v "
        "JOIN skyclass.training_snapshot AS t USING (snapshot_id) WHERE v.model_version_id = %s",
        (version,),
    ).fetchone()  # type: ignore[misc]
    row = admin.execute(
        f"""WITH cal AS (
  SELECT s.label = 'QSO' AS is_qso, p.probabilities[{k}] AS p_qso
    FROM snapshots.{table} AS s JOIN skyclass.prediction AS p
      ON p.model_version_id = {version} AND p.object_id = s.object_id
     AND p.catalog_id = (SELECT catalog_id FROM skyclass.catalog WHERE name = '{CATALOG}')
   WHERE s.fold = -1),
ranked AS (
  SELECT p_qso, count(*) FILTER (WHERE is_qso) OVER w AS true_qso, count(*) OVER w AS selected
    FROM cal WINDOW w AS (ORDER BY p_qso DESC))
SELECT p_qso FROM ranked WHERE true_qso >= {purity} * selected ORDER BY p_qso LIMIT 1"""
    ).fetchone()
    assert row is not None
    return float(row[0])


def test_candidates_by_purity_use_the_calibration_split_threshold_and_page_by_keyset(
    service: Service, admin: psycopg.Connection
) -> None:
    threshold = _threshold_sql(admin, service.db.sgq_v2, 0.9)
    first = _get(
        service,
        "/api/candidates",
        catalog=CATALOG,
        deployment="sgq_current",
        **{"class": "QSO"},
        purity=0.9,
        limit=25,
    ).json()
    assert math.isclose(
        first["selection"]["purity_threshold"]
        if isinstance(first["selection"]["purity_threshold"], float)
        else float(first["selection"]["purity_threshold"]),
        threshold,
        rel_tol=1e-6,
    )
    rows = list(first["rows"])
    url = first["next"]
    while url:
        page = httpx.get(service.base + url, timeout=30).json()
        assert len(page["rows"]) <= 25
        rows += page["rows"]
        url = page["next"]
    k = admin.execute(
        "SELECT array_position(classes, 'QSO') FROM skyclass.model_version "
        "WHERE model_version_id = %s",
        (service.db.sgq_v2,),
    ).fetchone()[0]  # type: ignore[index]
    expected = admin.execute(
        "SELECT object_id FROM skyclass.current_classification WHERE deployment = 'sgq_current' "
        f"AND catalog = %s AND probabilities[{k}] >= %s::real "
        f"ORDER BY probabilities[{k}] DESC, object_id",
        (CATALOG, threshold),
    ).fetchall()
    assert len(expected) > 25  # several pages
    assert [r["object_id"] for r in rows] == [r[0] for r in expected]


def test_candidates_by_min_probability_as_csv_and_votable(
    service: Service, admin: psycopg.Connection
) -> None:
    answer = _get(
        service,
        "/api/candidates",
        catalog=CATALOG,
        **{"class": "STAR"},
        deployment="sgq_current",
        min_probability=0.8,
        limit=10,
        format="csv",
    )
    assert answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert len(rows) == 10 and all(float(r["probability"]) >= 0.8 for r in rows)
    assert 'rel="next"' in answer.headers["link"]
    vot = httpx.get(
        service.base + "/api/candidates",
        params={
            "catalog": CATALOG,
            "class": "STAR",
            "deployment": "sgq_current",
            "min_probability": 0.8,
            "limit": 10,
        },
        headers={"Accept": "application/x-votable+xml"},
    )
    table = parse(io.BytesIO(vot.content)).get_first_table().to_table()
    assert [int(x) for x in table["object_id"]] == [int(r["object_id"]) for r in rows]


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"catalog": CATALOG, "class": "QSO"}, 400, "give min_probability"),
        ({"catalog": CATALOG, "class": "QSO", "min_probability": 2}, 400, "[0, 1]"),
        ({"catalog": CATALOG, "class": "QSO", "purity": 0}, 400, "(0, 1]"),
        (
            {"catalog": CATALOG, "class": "ELF", "deployment": "sgq_current", "purity": 0.9},
            400,
            "class 'ELF' is not a class of sgq:2",
        ),
        (
            {"catalog": CATALOG, "class": "QSO", "deployment": "nope", "purity": 0.9},
            404,
            "deployment 'nope' has no classification predictions",
        ),
        (
            {
                "catalog": CATALOG,
                "class": "QSO",
                "deployment": "sgq_current",
                "purity": 0.9,
                "after": "garbage",
            },
            400,
            "'after' is not a cursor",
        ),
        (
            {"catalog": CATALOG, "class": "QSO", "min_probability": 0.5, "x": 1},
            400,
            "unknown parameter 'x'",
        ),
    ],
)
def test_candidate_errors(
    service: Service, params: dict[str, object], status: int, message: str
) -> None:
    answer = _get(service, "/api/candidates", **params)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"]["message"]


def test_cone_pages_cover_the_sql_cone_search(service: Service, admin: psycopg.Connection) -> None:
    ra, dec = admin.execute(
        f"SELECT ra, dec FROM catalogs.{CATALOG} ORDER BY object_id LIMIT 1"
    ).fetchone()  # type: ignore[misc]
    rows: list[dict[str, object]] = []
    url: str | None = f"/api/cone?catalog={CATALOG}&ra={ra}&dec={dec}&radius=5&limit=7"
    while url:
        page = httpx.get(service.base + url, timeout=30).json()
        rows += page["rows"]
        url = page["next"]
    expected = admin.execute(
        "SELECT object_id FROM skyclass.cone_search(%s, %s, %s, 5)", (CATALOG, ra, dec)
    ).fetchall()
    assert len(expected) > 7
    assert [r["object_id"] for r in rows] == [e[0] for e in expected]


def test_models_and_model_card(service: Service) -> None:
    listing = _get(service, "/api/models", limit=2).json()
    assert [r["label"] for r in listing["rows"]] == ["sgq:1", "sgq:2"]
    rest = httpx.get(service.base + listing["next"]).json()
    assert [r["label"] for r in rest["rows"]] == ["photoz:1"] and rest["next"] is None
    card = _get(service, "/api/models/sgq:2").json()
    assert card["model_version"]["model_version_id"] == service.db.sgq_v2
    assert card["deployments"] == ["sgq_current"]
    by = {(m["estimator"], m["name"], m["stage"]) for m in card["metrics"] if not m["class_name"]}
    roles = {m["role"] for m in card["metrics"]}
    assert "baseline" in roles and len(roles) >= 2
    accuracy = [m for m in card["metrics"] if m["name"] == "accuracy" and not m["class_name"]]
    assert {m["estimator"] for m in accuracy} >= {"dummy", "logistic"}
    assert all(m["std"] is not None and m["n_folds"] == 3 for m in accuracy)
    assert any(c["name"] == "reliability" for c in card["calibration"])
    assert card["model_version"]["library_versions"] and by
    assert _get(service, "/api/models/sgq").json()["model_version"]["version"] == 2
    assert _get(service, "/api/models/nosuch:3").status_code == 404
    assert _get(service, "/api/models/a;b").status_code == 400


def test_openapi_describes_every_api_route(service: Service) -> None:
    spec = _get(service, "/api/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    for path in (
        "/scs/{catalog}",
        "/api/cone",
        "/api/objects/{catalog}/{id}",
        "/api/candidates",
        "/api/models",
        "/api/models/{version}",
        "/objects/{catalog}/{id}",
    ):
        assert path in spec["paths"]


@pytest.mark.parametrize("min_probability", [0.3, 0.5, 0.75])
def test_candidate_pages_by_probability_equal_sql_on_both_query_paths(
    service: Service, admin: psycopg.Connection, min_probability: float
) -> None:
    rows: list[dict[str, object]] = []
    url: str | None = (
        f"/api/candidates?catalog={CATALOG}&deployment=sgq_current&class=GALAXY"
        f"&min_probability={min_probability}&limit=40"
    )
    while url:
        page = httpx.get(service.base + url, timeout=30).json()
        rows += page["rows"]
        url = page["next"]
    k = admin.execute(
        "SELECT array_position(classes, 'GALAXY') FROM skyclass.model_version "
        "WHERE model_version_id = %s",
        (service.db.sgq_v2,),
    ).fetchone()[0]  # type: ignore[index]
    expected = admin.execute(
        "SELECT object_id, probabilities[%s] FROM skyclass.current_classification "
        "WHERE deployment = 'sgq_current' AND catalog = %s AND probabilities[%s] >= %s::real "
        "ORDER BY probabilities[%s] DESC, object_id",
        (k, CATALOG, k, min_probability, k),
    ).fetchall()
    assert len(expected) > 80
    assert [(r["object_id"], r["probability"]) for r in rows] == [tuple(e) for e in expected]
