"""IVOA Simple Cone Search with pyvo's SCSService: the same rows as SQL's cone search."""

from __future__ import annotations

import io
import math

import httpx
import numpy as np
import psycopg
import pytest
import pyvo
from astropy.io.votable import parse

from tests.serve.conftest import CATALOG, Service

# pyvo (requests) keeps its HTTP connections alive and leaves them to the garbage collector,
# which may close one during a later test: not a leak of ours.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _centre(admin: psycopg.Connection) -> tuple[float, float]:
    """The position of a real object, so cones around it hold several objects."""
    row = admin.execute(
        f"SELECT ra, dec FROM catalogs.{CATALOG} ORDER BY object_id LIMIT 1 OFFSET 100"
    ).fetchone()
    assert row is not None
    return float(row[0]), float(row[1])


@pytest.mark.parametrize("radius", [1.0, 3.0, 5.0])
def test_pyvo_scs_returns_the_rows_of_sql_cone_search(
    service: Service, admin: psycopg.Connection, radius: float
) -> None:
    ra, dec = _centre(admin)
    scs = pyvo.dal.SCSService(f"{service.base}/scs/{CATALOG}")
    result = scs.search(pos=(ra, dec), radius=radius)
    table = result.to_table()
    expected = admin.execute(
        "SELECT object_id, distance_arcsec FROM skyclass.cone_search(%s, %s, %s, %s)",
        (CATALOG, ra, dec, radius),
    ).fetchall()
    assert len(expected) > 0
    assert [int(x) for x in table["object_id"]] == [r[0] for r in expected]
    assert np.allclose(
        np.asarray(table["distance_arcsec"], float), [r[1] for r in expected], rtol=1e-9, atol=1e-9
    )
    # pyvo finds the SCS 1.03 UCDs
    n = min(3, len(expected))
    assert [int(result[i].id) for i in range(n)] == [r[0] for r in expected[:n]]
    assert math.isclose(float(result[0].pos.ra.deg), float(table["ra"][0]))
    # classification columns carry the current classification of each deployment
    rows = admin.execute(
        "SELECT cc.object_id, cc.top_label, cc.probabilities FROM skyclass.current_classification"
        " AS cc JOIN skyclass.cone_search(%s, %s, %s, %s) AS s USING (object_id)"
        " WHERE cc.deployment = 'sgq_current' AND cc.catalog = %s",
        (CATALOG, ra, dec, radius, CATALOG),
    ).fetchall()
    current = {r[0]: (r[1], r[2]) for r in rows}
    classes = admin.execute(
        "SELECT v.classes FROM skyclass.deployment JOIN skyclass.model_version AS v "
        "USING (model_version_id) WHERE name = 'sgq_current'"
    ).fetchone()[0]  # type: ignore[index]
    for row in table:
        label, probabilities = current[int(row["object_id"])]
        assert row["sgq_current_class"] == label
        for k, cls in enumerate(classes):
            assert math.isclose(
                float(row[f"sgq_current_p_{cls.lower()}"]), probabilities[k], rel_tol=1e-6
            )
    assert "photoz_current_z_median" in table.colnames


def test_scs_fields_have_one_ucd1_each_and_sr_0_is_metadata(service: Service) -> None:
    answer = httpx.get(f"{service.base}/scs/{CATALOG}", params={"RA": 10, "DEC": 0, "SR": 0})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/x-votable+xml")
    table = parse(io.BytesIO(answer.content)).get_first_table()
    ucds = [f.ucd for f in table.fields]
    for word in ("ID_MAIN", "POS_EQ_RA_MAIN", "POS_EQ_DEC_MAIN"):
        assert ucds.count(word) == 1
    ident = next(f for f in table.fields if f.ucd == "ID_MAIN")
    assert ident.datatype == "char"
    assert len(table.array) == 0 and len(table.fields) > 10


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"RA": 10, "DEC": 0}, "'SR' is required"),
        ({"RA": "ten", "DEC": 0, "SR": 1}, "'RA' must be a number"),
        ({"RA": 10, "DEC": 91, "SR": 1}, "'DEC' must be in [-90, 90]"),
        ({"RA": 10, "DEC": 0, "SR": 50}, "'SR' must be in [0, 5]"),
        ({"RA": "nan", "DEC": 0, "SR": 1}, "'RA' must be in [0, 360]"),
        ({"RA": 10, "DEC": 0, "SR": 1, "VERB": 7}, "'VERB' must be in [1, 3]"),
        ({"RA": 10, "DEC": 0, "SR": 1, "BOGUS": 1}, "unknown parameter 'BOGUS'"),
    ],
)
def test_bad_scs_parameters_answer_an_error_votable(
    service: Service, query: dict[str, object], message: str
) -> None:
    answer = httpx.get(f"{service.base}/scs/{CATALOG}", params=query)  # type: ignore[arg-type]
    assert answer.status_code == 200
    assert 'INFO name="Error"' in answer.text and message in answer.text
    with pytest.raises(pyvo.dal.DALQueryError, match=r"must|required|unknown"):
        pyvo.dal.SCSService(f"{service.base}/scs/{CATALOG}").search(
            pos=(10, 0), radius=1, BOGUS=1
        ) if "BOGUS" in query else pyvo.dal.scs.SCSQuery(
            f"{service.base}/scs/{CATALOG}", **{k.lower(): v for k, v in query.items()}
        ).execute()


def test_unknown_catalog_is_an_error_votable(service: Service) -> None:
    answer = httpx.get(f"{service.base}/scs/nosuch", params={"RA": 1, "DEC": 1, "SR": 1})
    assert 'INFO name="Error"' in answer.text and "sdss17" in answer.text


def test_verb_1_keeps_id_position_distance_and_top_class(service: Service) -> None:
    answer = httpx.get(
        f"{service.base}/scs/{CATALOG}", params={"RA": 180, "DEC": 20, "SR": 1, "VERB": 1}
    )
    table = parse(io.BytesIO(answer.content)).get_first_table()
    assert [f.name for f in table.fields] == [
        "object_id",
        "ra",
        "dec",
        "distance_arcsec",
        "photoz_current_z_median",
        "sgq_current_class",
    ]
