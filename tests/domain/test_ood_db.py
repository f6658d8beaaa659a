"""OOD scores in the database on real SDSS17 rows with a known shift.

Catalogs from one SDSS17 slice cut at u = 20.5: ``sdss_faint`` (u > 20.5, 80%
of the faint rows; the training side), ``sdss_held`` (the other faint rows:
in-distribution objects the model never saw) and ``sdss_bright`` (u <= 20.5:
shifted). A small model is trained on the faint catalog, its OOD forest
fitted, compiled and scored inside PostgreSQL by the chunked OOD job.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest
from click.testing import CliRunner

from skyclass.cli import main
from skyclass.compile import compile_model_version
from skyclass.domain.errors import DomainError
from skyclass.domain.ood import IN_DOMAIN_PERCENTILE
from skyclass.domain.ood_job import OodJobInterrupted, run_ood_job
from skyclass.domain.ood_store import OodFit, fit_version_ood
from skyclass.score.deploy import deploy
from skyclass.score.jobs import score_catalog
from skyclass.train.pipeline import train_model
from skyclass.train.snapshot import create_snapshot
from tests.conftest import drop_database, new_database
from tests.train.pipeline_data import SDSS_SPEC, build_features, ingest_sdss, sdss_slice

ROWS = 6_000
CUT = 20.5


@pytest.fixture(scope="module")
def ood_db(
    server_url: str, template_url: str, shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, OodFit]]:
    """Three catalogs with sdss_ugriz builds, model ``faint`` v1 and its compiled OOD forest."""
    url = new_database(server_url)
    try:
        tmp = tmp_path_factory.mktemp("ood")
        frame = pd.read_csv(sdss_slice(shared_data, tmp / "all.csv", ROWS), dtype=str)
        u = frame["u"].astype(float).to_numpy()
        held = np.random.default_rng(2).random(u.size) < 0.2
        parts = {
            "sdss_faint": (u > CUT) & ~held,
            "sdss_held": (u > CUT) & held,
            "sdss_bright": u <= CUT,
        }
        built = {}
        for name, rows in parts.items():
            frame[rows].to_csv(tmp / f"{name}.csv", index=False)
            ingest_sdss(tmp / f"{name}.csv", url, name=name)
            built[name] = build_features(SDSS_SPEC.read_text(), url, catalog=name)
        snap = create_snapshot(built["sdss_faint"], "class", n_folds=3, seed=0, url=url)
        train_model(
            "faint",
            snap.snapshot_id,
            params={"max_iter": 20},
            baselines=(),
            importance=False,
            url=url,
        )
        compile_model_version("faint", url=url)
        with psycopg.connect(url, autocommit=True) as conn:
            fit = fit_version_ood(conn, "faint")
        yield url, fit
    finally:
        drop_database(server_url, url)


def _features(conn: psycopg.Connection[Any], catalog: str) -> tuple[np.ndarray, np.ndarray]:
    row = conn.execute(
        "SELECT 'features.' || f.table_name FROM skyclass.feature_set AS f "
        "JOIN skyclass.catalog AS c USING (catalog_id) WHERE c.name = %s",
        (catalog,),
    ).fetchone()
    assert row is not None
    rows = conn.execute(f"SELECT object_id, x FROM {row[0]} ORDER BY object_id").fetchall()
    return (
        np.array([r[0] for r in rows], dtype=np.int64),
        np.array([r[1] for r in rows], dtype=np.float32),
    )


def _scores(conn: psycopg.Connection[Any], catalog: str) -> dict[str, np.ndarray]:
    rows = conn.execute(
        "SELECT object_id, ood_percentile, in_domain, out_of_range FROM skyclass.ood_object "
        "WHERE catalog = %s ORDER BY object_id",
        (catalog,),
    ).fetchall()
    return {
        "object_id": np.array([r[0] for r in rows], dtype=np.int64),
        "percentile": np.array([r[1] for r in rows], dtype=np.float64),
        "in_domain": np.array([r[2] for r in rows], dtype=bool),
        "out_of_range": np.array([r[3] for r in rows], dtype=bool),
    }


def test_the_forest_is_an_anomaly_version_compiled_as_raw_score(
    ood_db: tuple[str, OodFit],
) -> None:
    url, fit = ood_db
    assert fit.created and fit.compile_error is None and fit.model.compiled
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT m.name, v.task, v.classes, a.output_transform, a.n_outputs, "
            "o.reference_rows, o.threshold FROM skyclass.ood_model AS o "
            "JOIN skyclass.model_version AS v ON v.model_version_id = o.ood_version_id "
            "JOIN skyclass.model AS m USING (model_id) "
            "JOIN skyclass.model_artifact AS a ON a.model_version_id = v.model_version_id"
        ).fetchone()
        assert row == (
            "faint_ood",
            "anomaly",
            [],
            "raw_score",
            1,
            "calibration split (fold -1)",
            IN_DOMAIN_PERCENTILE,
        )
        # A raw-score version is no classifier.
        with pytest.raises(psycopg.errors.WrongObjectType, match="predict_raw"):
            conn.execute(
                "SELECT skyclass.predict(%s, array_fill(20::real, ARRAY[9]))",
                (fit.model.ood_version_id,),
            )
    with psycopg.connect(url, autocommit=True) as conn:
        again = fit_version_ood(conn, "faint")
    assert not again.created and again.model == fit.model


def test_in_database_percentiles_equal_the_python_scorer(ood_db: tuple[str, OodFit]) -> None:
    url, fit = ood_db
    assert fit.scorer is not None
    with psycopg.connect(url, autocommit=True) as conn:
        for catalog in ("sdss_bright", "sdss_held"):
            run = run_ood_job(conn, "faint", catalog, chunk_size=700, workers=2)
            assert run.status == "done" and run.chunks_done == run.chunks_total > 1
            ids, X = _features(conn, catalog)
            got = _scores(conn, catalog)
            assert np.array_equal(got["object_id"], ids)
            expected = fit.scorer.percentile(X)
            assert np.max(np.abs(got["percentile"] - expected)) <= 0.1
            assert np.array_equal(got["out_of_range"], fit.scorer.out_of_range(X))
            near = np.abs(expected - IN_DOMAIN_PERCENTILE) <= 0.1
            assert np.array_equal(got["in_domain"][~near], fit.scorer.in_domain(X)[~near])
            # The on-demand SQL function gives the stored percentile.
            pct = conn.execute(
                "SELECT skyclass.ood_percentile(%s, %s::real[])",
                (fit.model.model_version_id, [float(v) for v in X[0]]),
            ).fetchone()
            assert pct is not None and abs(float(pct[0]) - got["percentile"][0]) <= 1e-6


def test_shifted_objects_are_flagged_far_more_often_than_held_out_ones(
    ood_db: tuple[str, OodFit],
) -> None:
    url, _ = ood_db
    with psycopg.connect(url, autocommit=True) as conn:
        rates = {}
        for catalog in ("sdss_bright", "sdss_held"):
            run_ood_job(conn, "faint", catalog)
            s = _scores(conn, catalog)
            rates[catalog] = (
                float(np.mean(~s["in_domain"])),
                float(np.mean(s["percentile"] >= IN_DOMAIN_PERCENTILE)),
                float(np.mean(s["percentile"])),
            )
    out_shifted, strange_shifted, mean_shifted = rates["sdss_bright"]
    out_held, strange_held, mean_held = rates["sdss_held"]
    # u <= 20.5 lies outside the training u range: every shifted object is out of domain.
    assert out_shifted >= 0.95
    assert out_held <= 0.05
    # The forest's percentile alone ranks them apart (held-out rows read as uniform),
    # though a cut inside the training range's edge gives few extreme scores
    # (docs/results.md: the range flags do the flagging there).
    assert abs(mean_held - 50) < 5 and strange_held <= 0.03
    assert mean_shifted > mean_held + 15
    assert strange_shifted > strange_held


def test_an_interrupted_job_resumes_without_gaps_or_duplicates(
    ood_db: tuple[str, OodFit],
) -> None:
    url, _ = ood_db
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "DELETE FROM skyclass.ood_score WHERE catalog_id = "
            "(SELECT catalog_id FROM skyclass.catalog WHERE name = 'sdss_held')"
        )
        with pytest.raises(OodJobInterrupted):
            run_ood_job(conn, "faint", "sdss_held", chunk_size=100, stop_after_chunks=2)
        half = _scores(conn, "sdss_held")
        ids, _ = _features(conn, "sdss_held")
        assert 0 < half["object_id"].size < ids.size
        run = run_ood_job(conn, "faint", "sdss_held", chunk_size=100)
        assert run.status == "done" and run.attempts == 2
        assert run.rows_scored == ids.size and run.chunks_done == run.chunks_total
        full = _scores(conn, "sdss_held")
        assert np.array_equal(full["object_id"], ids)
        # A new run replaces the scores exactly (same forest, same features).
        again = run_ood_job(conn, "faint", "sdss_held", chunk_size=333)
        assert again.ood_run_id != run.ood_run_id and again.attempts == 1
        assert np.array_equal(_scores(conn, "sdss_held")["percentile"], full["percentile"])


def test_qso_candidates_in_domain_are_one_where_clause(ood_db: tuple[str, OodFit]) -> None:
    url, _ = ood_db
    deploy("faint_current", "faint", url=url)
    score_catalog("faint_current", "sdss_held", url=url, workers=1)
    with psycopg.connect(url, autocommit=True) as conn:
        run_ood_job(conn, "faint", "sdss_held")
        rows = conn.execute(
            "SELECT object_id FROM skyclass.current_classification "
            "WHERE deployment = 'faint_current' AND catalog = 'sdss_held' "
            "AND top_label = 'QSO' AND top_probability >= 0.9 AND in_domain"
        ).fetchall()
        expected = conn.execute(
            "SELECT p.object_id FROM skyclass.prediction AS p "
            "JOIN skyclass.ood_score AS o USING (model_version_id, catalog_id, object_id) "
            "JOIN skyclass.deployment AS d USING (model_version_id) "
            "WHERE d.name = 'faint_current' AND p.top_label = 'QSO' "
            "AND p.top_probability >= 0.9 AND o.in_domain"
        ).fetchall()
        assert sorted(rows) == sorted(expected) and len(rows) > 0
        missing = conn.execute(
            "SELECT count(*) FROM skyclass.current_classification "
            "WHERE deployment = 'faint_current' AND ood_percentile IS NULL"
        ).fetchone()
        assert missing == (0,)


def test_the_job_refuses_a_version_without_forest_and_a_catalog_without_build(
    ood_db: tuple[str, OodFit],
) -> None:
    url, _ = ood_db
    with psycopg.connect(url, autocommit=True) as conn:
        ood_version = conn.execute("SELECT ood_version_id FROM skyclass.ood_model").fetchone()
        assert ood_version is not None
        with pytest.raises(DomainError, match="no OOD forest"):
            run_ood_job(conn, int(ood_version[0]), "sdss_held")
        with pytest.raises(DomainError, match="chunk_size"):
            run_ood_job(conn, "faint", "sdss_held", chunk_size=0)
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="no OOD forest"):
            conn.execute(
                "SELECT skyclass.ood_percentile(%s, array_fill(1::real, ARRAY[9]))",
                (int(ood_version[0]),),
            )


def test_ood_cli_scores_and_reports_the_in_domain_share(
    ood_db: tuple[str, OodFit], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = ood_db
    monkeypatch.setenv("SKYCLASS_DATABASE_URL", url)
    result = CliRunner().invoke(
        main, ["ood", "score", "faint", "--catalog", "sdss_bright", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert "sdss_bright: done" in result.output and "out of domain 100.0%" in result.output


def test_refresh_ood_procedure_keeps_scores_current_from_sql(ood_db: tuple[str, OodFit]) -> None:
    url, _ = ood_db
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "DELETE FROM skyclass.ood_score WHERE catalog_id = "
            "(SELECT catalog_id FROM skyclass.catalog WHERE name = 'sdss_held')"
        )
        conn.execute("CALL skyclass.refresh_ood('faint:1', 'sdss_held', 250)")
        ids, _ = _features(conn, "sdss_held")
        assert np.array_equal(_scores(conn, "sdss_held")["object_id"], ids)
        run = conn.execute(
            "SELECT status, trigger, chunks_done = chunks_total FROM skyclass.ood_run "
            "ORDER BY ood_run_id DESC LIMIT 1"
        ).fetchone()
        assert run == ("done", "schedule", True)
        # The forest itself has no forest: a notice, nothing done, no error.
        ood_version = conn.execute("SELECT ood_version_id FROM skyclass.ood_model").fetchone()
        assert ood_version is not None
        notices: list[str] = []
        conn.add_notice_handler(lambda d: notices.append(str(d.message_primary)))
        conn.execute("CALL skyclass.refresh_ood(%s, 'sdss_held')", (str(ood_version[0]),))
        assert any("no OOD forest" in n for n in notices)
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="no catalog"):
            conn.execute("CALL skyclass.refresh_ood('faint:1', 'nope')")


def test_skyclass_score_refreshes_the_ood_scores_of_the_version(
    ood_db: tuple[str, OodFit], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = ood_db
    monkeypatch.setenv("SKYCLASS_DATABASE_URL", url)
    deploy("faint_bright", "faint", url=url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "DELETE FROM skyclass.ood_score WHERE catalog_id = "
            "(SELECT catalog_id FROM skyclass.catalog WHERE name = 'sdss_bright')"
        )
    result = CliRunner().invoke(
        main,
        ["score", "faint_bright", "--catalog", "sdss_bright", "--workers", "1", "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    assert "OOD scores of sdss_bright refreshed" in result.output
    assert "100.0% out of domain" in result.output
    with psycopg.connect(url) as conn:
        ids, _ = _features(conn, "sdss_bright")
        missing = conn.execute(
            "SELECT count(*) FROM skyclass.current_classification "
            "WHERE deployment = 'faint_bright' AND catalog = 'sdss_bright' "
            "AND ood_percentile IS NULL"
        ).fetchone()
    assert missing == (0,) and _scores_count(url, "sdss_bright") == ids.size
    result = CliRunner().invoke(
        main,
        [
            "score",
            "faint_bright",
            "--catalog",
            "sdss_bright",
            "--workers",
            "1",
            "--no-progress",
            "--no-ood",
        ],
    )
    assert result.exit_code == 0 and "OOD scores" not in result.output


def _scores_count(url: str, catalog: str) -> int:
    with psycopg.connect(url) as conn:
        return int(_scores(conn, catalog)["object_id"].size)


def test_dropping_a_catalog_removes_its_ood_scores_and_runs(ood_db: tuple[str, OodFit]) -> None:
    """Last in this module: it drops sdss_bright."""
    from skyclass.registry.drop import drop_catalog

    url, _ = ood_db
    with psycopg.connect(url, autocommit=True) as conn:
        run_ood_job(conn, "faint", "sdss_bright")
        catalog_id = conn.execute(
            "SELECT catalog_id FROM skyclass.catalog WHERE name = 'sdss_bright'"
        ).fetchone()
        assert catalog_id is not None
    drop_catalog("sdss_bright", cascade=True, url=url)
    with psycopg.connect(url) as conn:
        left = conn.execute(
            "SELECT (SELECT count(*) FROM skyclass.ood_score WHERE catalog_id = %s), "
            "(SELECT count(*) FROM skyclass.ood_run WHERE catalog_id = %s)",
            (catalog_id[0], catalog_id[0]),
        ).fetchone()
        assert left == (0, 0)
        # The other catalogs keep theirs.
        assert _scores(conn, "sdss_held")["object_id"].size > 0
