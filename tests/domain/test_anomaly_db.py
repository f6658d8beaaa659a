"""Anomaly models of a feature set on real SDSS17 rows, scored and ranked in the database.

A 3,000-object SDSS17 slice with the sdss_ugriz build; the anomaly model
``oddities`` is an IsolationForest fitted on 1,500 of them (no labels), compiled
at -O0 (the tests' compile time) and scored by the OOD job for every object.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import psycopg
import pytest
from click.testing import CliRunner
from scipy.stats import spearmanr

from skyclass.cli import main
from skyclass.domain.anomaly import AnomalyFit, anomaly_top, fit_anomaly_model
from skyclass.domain.errors import DomainError
from skyclass.features.build import build_feature_set
from skyclass.ingest import ingest_file
from tests.conftest import drop_database, new_database
from tests.docs.conftest import EXAMPLE_SPEC, _slice

ROWS = 3000
SAMPLE = 1500


@pytest.fixture(scope="module")
def anomaly_db(
    server_url: str, template_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, AnomalyFit]]:
    url = new_database(server_url)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS skyclass")
        data = tmp_path_factory.mktemp("anomaly-data") / "sdss17_slice.csv"
        _slice(data, ROWS, seed=21)
        ingest_file(
            data, "sdss17", id_column="orig_row", ra_column="alpha", dec_column="delta", url=url
        )
        build_feature_set(EXAMPLE_SPEC, url=url)
        with psycopg.connect(url, autocommit=True) as conn:
            fit = fit_anomaly_model(
                conn, "oddities", "sdss_ugriz", "sdss17", sample=SAMPLE, opt_level="-O0"
            )
        yield url, fit
    finally:
        drop_database(server_url, url)


def _invoke(url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env={"SKYCLASS_DATABASE_URL": url})
    return result.exit_code, result.output


def _features(conn: psycopg.Connection) -> tuple[np.ndarray, np.ndarray]:
    row = conn.execute(
        "SELECT table_name FROM skyclass.feature_set WHERE name = 'sdss_ugriz'"
    ).fetchone()
    assert row is not None
    data = conn.execute(f"SELECT object_id, x FROM features.{row[0]} ORDER BY object_id").fetchall()
    ids = np.array([r[0] for r in data], dtype=np.int64)
    X = np.array([[np.nan if v is None else v for v in r[1]] for r in data], dtype=np.float64)
    return ids, X


def test_the_forest_is_registered_with_an_unlabelled_sample_snapshot(
    anomaly_db: tuple[str, AnomalyFit],
) -> None:
    url, fit = anomaly_db
    assert fit.compile_error is None and fit.model.compiled and fit.label == "oddities:1"
    # The version is its own OOD forest.
    assert fit.model.model_version_id == fit.model.ood_version_id
    assert fit.model.n_fit + fit.model.n_reference == SAMPLE
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT m.task, v.task, s.task, s.classes, s.n_rows, s.label_source->>'sample', "
            "e.estimator, a.output_transform FROM skyclass.model_version AS v "
            "JOIN skyclass.model AS m USING (model_id) "
            "JOIN skyclass.training_snapshot AS s USING (snapshot_id) "
            "JOIN skyclass.evaluation AS e USING (evaluation_id) "
            "JOIN skyclass.model_artifact AS a USING (model_version_id) "
            "WHERE v.model_version_id = %s",
            (fit.model.ood_version_id,),
        ).fetchone()
        assert row == (
            "anomaly",
            "anomaly",
            "anomaly",
            [],
            SAMPLE,
            str(SAMPLE),
            "isolation_forest",
            "raw_score",
        )
        labels = conn.execute(
            f"SELECT count(*), count(label), count(*) FILTER (WHERE fold = -1) "
            f"FROM snapshots.snapshot_{fit.snapshot_id}"
        ).fetchone()
        assert labels == (SAMPLE, 0, fit.model.n_reference)


def test_database_scores_and_ranks_equal_sklearn(anomaly_db: tuple[str, AnomalyFit]) -> None:
    url, fit = anomaly_db
    code, out = _invoke(
        url, "anomaly", "score", "oddities", "--catalog", "sdss17", "--chunk-size", "700"
    )
    assert code == 0, out
    assert f"{ROWS:,} objects" in out and "done" in out
    with psycopg.connect(url) as conn:
        ids, X = _features(conn)
        ranked = conn.execute(
            "SELECT rank, object_id, raw_score, percentile FROM "
            "skyclass.anomaly_rank('oddities', 'sdss17') ORDER BY rank"
        ).fetchall()
    rank = np.array([r[0] for r in ranked])
    # Ranks 1..N, no gaps, no ties, every object of the build once.
    assert rank.tolist() == list(range(1, ids.size + 1))
    got_ids = np.array([r[1] for r in ranked])
    assert sorted(got_ids.tolist()) == ids.tolist()
    db = dict(zip(got_ids.tolist(), (r[2] for r in ranked), strict=True))
    expected = -fit.scorer.forest.score_samples(np.where(np.isnan(X), fit.scorer.fill, X))
    got = np.array([db[i] for i in ids.tolist()])
    # The compiled forest reads float32 features as sklearn's trees do, so every object takes
    # the same path; only the float arithmetic of averaging path lengths differs (~1e-7).
    assert np.max(np.abs(got - expected)) < 1e-5
    assert spearmanr(got, expected).statistic > 0.99999
    # Rank 1 is sklearn's strangest object.
    assert got_ids[0] == ids[int(np.argmax(expected))]
    scores = np.array([r[2] for r in ranked])
    assert np.all(np.diff(scores) <= 0)
    pct = dict(zip(got_ids.tolist(), (r[3] for r in ranked), strict=True))
    got_pct = np.array([pct[i] for i in ids.tolist()])
    assert np.max(np.abs(got_pct - fit.scorer.percentile(X))) <= 0.1


def test_top_lists_the_strangest_objects_with_their_features(
    anomaly_db: tuple[str, AnomalyFit],
) -> None:
    url, _ = anomaly_db
    code, out = _invoke(url, "anomaly", "score", "oddities", "--catalog", "sdss17")
    assert code == 0, out
    code, out = _invoke(
        url, "anomaly", "top", "oddities", "--catalog", "sdss17", "--limit", "5", "--format", "json"
    )
    assert code == 0, out
    doc = json.loads(out)
    rows = doc["rows"] if "rows" in doc else doc["data"]
    assert len(rows) == 5
    with psycopg.connect(url) as conn:
        best = conn.execute(
            "SELECT object_id, raw_score FROM skyclass.anomaly_rank('oddities', 'sdss17') "
            "WHERE rank = 1"
        ).fetchone()
    assert best is not None
    assert str(best[0]) in out and "u_g" in out
    code, out = _invoke(url, "anomaly", "top", "oddities", "--catalog", "sdss17", "--limit", "3")
    assert code == 0 and "rank" in out and str(best[0]) in out


def test_bad_names_feature_sets_and_catalogs_give_clear_errors(
    anomaly_db: tuple[str, AnomalyFit],
) -> None:
    url, _ = anomaly_db
    with psycopg.connect(url) as conn:
        before = conn.execute(
            "SELECT (SELECT count(*) FROM skyclass.training_snapshot), "
            "(SELECT count(*) FROM skyclass.model_version)"
        ).fetchone()
    cases = [
        (("oddities2", "--feature-set", "nope", "--catalog", "sdss17"), "nope"),
        (("Bad-Name", "--feature-set", "sdss_ugriz", "--catalog", "sdss17"), "a model name of a-z"),
        (("sgq_ood", "--feature-set", "sdss_ugriz", "--catalog", "sdss17"), "'_ood'"),
        (("oddities2", "--feature-set", "sdss_ugriz", "--catalog", "gaia"), "gaia"),
    ]
    for args, message in cases:
        code, out = _invoke(url, "anomaly", "fit", *args)
        assert code == 1 and message in out, out
    with psycopg.connect(url) as conn:
        after = conn.execute(
            "SELECT (SELECT count(*) FROM skyclass.training_snapshot), "
            "(SELECT count(*) FROM skyclass.model_version)"
        ).fetchone()
        assert after == before
    code, out = _invoke(url, "anomaly", "top", "nothing", "--catalog", "sdss17")
    assert code == 1 and "no anomaly model, model version or deployment named 'nothing'" in out
    code, out = _invoke(url, "anomaly", "top", "oddities", "--catalog", "gaia")
    assert code == 1 and "no catalog named 'gaia'" in out
    code, out = _invoke(url, "anomaly", "score", "nothing", "--catalog", "sdss17")
    assert code == 1 and "nothing" in out
    with psycopg.connect(url) as conn, pytest.raises(psycopg.errors.InvalidParameterValue):
        conn.execute("SELECT * FROM skyclass.anomaly_rank(NULL, 'sdss17')")
    with psycopg.connect(url, autocommit=True) as conn:
        # A second version, not scored yet: ranking it says what to run.
        fit2 = fit_anomaly_model(
            conn, "oddities", "sdss_ugriz", "sdss17", sample=100, compile_forest=False
        )
        assert fit2.label == "oddities:2" and not fit2.model.compiled
        with pytest.raises(
            DomainError, match=r"no finished anomaly scores.*skyclass anomaly score"
        ):
            anomaly_top(conn, "oddities:2", "sdss17")
        code, out = _invoke(url, "anomaly", "score", "oddities:2", "--catalog", "sdss17")
        assert code == 1 and "not compiled" in out
