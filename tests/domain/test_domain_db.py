"""``skyclass domain`` in the database on real SDSS17 rows with a known shift.

Two catalogs from one SDSS17 slice: ``sdss_faint`` (rows drawn with
P = sigmoid(u - 20.5), the training side) and ``sdss_bright`` (the rest, the
application side). A small model is trained on the faint catalog; the
domain run must store one pair row, one row per catalog object and the
expected metrics, and bad input must leave the database unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest
from click.testing import CliRunner

from skyclass.cli import main
from skyclass.domain.run import format_result, run_domain
from skyclass.train.pipeline import train_model
from skyclass.train.snapshot import create_snapshot
from tests.conftest import drop_database, new_database
from tests.train.pipeline_data import (
    BOSS_SPEC,
    SDSS_SPEC,
    boss_slice,
    build_features,
    ingest_boss,
    ingest_sdss,
    sdss_slice,
)

ROWS = 5_000
TABLES = ("domain_shift", "domain_object", "domain_metric")


@pytest.fixture(scope="module")
def shift_db(
    server_url: str, template_url: str, shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Catalogs sdss_faint and sdss_bright with sdss_ugriz builds, model ``faint`` v1."""
    url = new_database(server_url)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS skyclass")
        tmp = tmp_path_factory.mktemp("shift")
        frame = pd.read_csv(sdss_slice(shared_data, tmp / "all.csv", ROWS), dtype=str)
        u = frame["u"].astype(float).to_numpy()
        faint = np.random.default_rng(1).random(u.size) < 1 / (1 + np.exp(-(u - 20.5)))
        built = {}
        for name, rows in (("sdss_faint", faint), ("sdss_bright", ~faint)):
            frame[rows].to_csv(tmp / f"{name}.csv", index=False)
            ingest_sdss(tmp / f"{name}.csv", url, name=name)
            built[name] = build_features(SDSS_SPEC.read_text(), url, catalog=name)
        # a catalog without a build of the feature definition
        frame[:200].to_csv(tmp / "sdss_raw.csv", index=False)
        ingest_sdss(tmp / "sdss_raw.csv", url, name="sdss_raw")
        snap = create_snapshot(built["sdss_faint"], "class", n_folds=3, seed=0, url=url)
        train_model(
            "faint",
            snap.snapshot_id,
            params={"max_iter": 30},
            baselines=(),
            importance=False,
            url=url,
        )
        yield url
    finally:
        drop_database(server_url, url)


def _counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {
            t: int(conn.execute(f"SELECT count(*) FROM skyclass.{t}").fetchone()[0])  # type: ignore[index]
            for t in TABLES
        }


def test_domain_run_stores_pair_objects_and_metrics(shift_db: str) -> None:
    """AUC well above 0.5, one weight per catalog object, expected metrics beside CV ones."""
    with psycopg.connect(shift_db) as conn:
        result = run_domain(conn, "faint", "sdss_bright", n_bootstrap=50)
        n_bright = conn.execute("SELECT count(*) FROM catalogs.sdss_bright").fetchone()
        pair = conn.execute(
            "SELECT auc, auc_std, cardinality(fold_auc), n_catalog, reliable, uncovered_fraction "
            "FROM skyclass.domain_shift WHERE domain_shift_id = %s",
            (result.domain_shift_id,),
        ).fetchone()
        objects = conn.execute(
            "SELECT count(*), min(propensity), max(propensity), min(weight), "
            "avg(clipped::int)::float8 FROM skyclass.domain_object WHERE domain_shift_id = %s",
            (result.domain_shift_id,),
        ).fetchone()
        metrics = dict(
            conn.execute(
                "SELECT name || ':' || class_name, array[value, std, unweighted, n_effective] "
                "FROM skyclass.domain_metric WHERE domain_shift_id = %s",
                (result.domain_shift_id,),
            ).fetchall()
        )
        cv_accuracy = conn.execute(
            "SELECT m.mean FROM skyclass.metric m JOIN skyclass.model_version v "
            "USING (evaluation_id) WHERE m.name = 'accuracy' AND m.stage = 'raw'"
        ).fetchone()
    assert n_bright is not None and pair is not None and objects is not None
    auc, auc_std, n_folds, n_catalog, reliable, uncovered = pair
    assert 0.7 < auc <= 1 and 0 < auc_std < 0.1 and n_folds == 5
    assert n_catalog == n_bright[0] == objects[0]
    assert 0 <= objects[1] <= objects[2] <= 1 and objects[3] > 0
    assert abs(objects[4] - result.catalog_clipped) < 1e-9
    assert reliable == (not result.problems) and 0 <= uncovered <= 1
    accuracy = metrics["accuracy:"]
    assert accuracy[1] > 0 and accuracy[3] < result.n_train
    # the re-run cross-validation reproduces the training run's out-of-fold accuracy
    assert cv_accuracy is not None and abs(accuracy[2] - cv_accuracy[0]) < 0.01
    for key in ("balanced_accuracy:", "log_loss:", "ece:", "purity:QSO", "completeness:STAR"):
        assert key in metrics
    text = format_result(result)
    assert "AUC" in text and "expected" in text and "not covered" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["domain", "nosuch", "--catalog", "sdss_bright"], "unknown model 'nosuch'"),
        (["domain", "faint", "--catalog", "nosuch"], "catalog 'nosuch' is not registered"),
        (["domain", "faint:9", "--catalog", "sdss_bright"], "has no version 9"),
        (["domain", "faint", "--catalog", "sdss_raw"], "skyclass features build"),
        (["domain", "faint", "--catalog", "sdss_bright", "--w-max", "inf"], "clip bounds"),
        (
            ["domain", "faint", "--catalog", "sdss_bright", "--w-min", "5", "--w-max", "2"],
            "clip bounds",
        ),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    shift_db: str, args: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unknown model, catalog or version: a one-line error, no rows written."""
    monkeypatch.setenv("SKYCLASS_DATABASE_URL", shift_db)
    before = _counts(shift_db)
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output
    assert _counts(shift_db) == before


@pytest.fixture(scope="module")
def photoz_db(
    server_url: str, template_url: str, shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """BOSS catalogs boss_faint (P = sigmoid((r - 21) / 0.5)) and boss_bright; model ``pz`` v1."""
    url = new_database(server_url)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS skyclass")
        tmp = tmp_path_factory.mktemp("pz")
        frame = pd.read_csv(boss_slice(shared_data, tmp / "all.csv", 3_000), dtype=str)
        r = frame["mag_r"].astype(float).to_numpy()
        faint = np.random.default_rng(2).random(r.size) < 1 / (1 + np.exp(-(r - 21) / 0.5))
        built = {}
        for name, rows in (("boss_faint", faint), ("boss_bright", ~faint)):
            frame[rows].to_csv(tmp / f"{name}.csv", index=False)
            ingest_boss(tmp / f"{name}.csv", url, name=name)
            built[name] = build_features(BOSS_SPEC, url, catalog=name)
        snap = create_snapshot(
            built["boss_faint"], "z_spec", task="photoz", bin_edges="0:1:0.1", n_folds=3, url=url
        )
        train_model(
            "pz", snap.snapshot_id, params={"max_iter": 20}, baselines=(), importance=False, url=url
        )
        yield url
    finally:
        drop_database(server_url, url)


def test_photoz_domain_run_stores_expected_photoz_metrics(photoz_db: str) -> None:
    """Photo-z version: weighted sigma_NMAD, bias, outliers, coverage and PIT rows."""
    with psycopg.connect(photoz_db) as conn:
        result = run_domain(conn, "pz", "boss_bright", n_bootstrap=30)
        rows = conn.execute(
            "SELECT name, value, std, unweighted FROM skyclass.domain_metric "
            "WHERE domain_shift_id = %s",
            (result.domain_shift_id,),
        ).fetchall()
        cv = dict(
            conn.execute(
                "SELECT m.name, m.mean FROM skyclass.metric m JOIN skyclass.model_version v "
                "USING (evaluation_id) WHERE m.stage = 'raw'"
            ).fetchall()
        )
    metrics = {r[0]: r[1:] for r in rows}
    assert set(metrics) == {
        "sigma_nmad",
        "outlier_fraction",
        "bias_median",
        "pit_ks",
        "coverage_68",
        "coverage_95",
    }
    assert result.auc > 0.6
    for name, (value, std, unweighted) in metrics.items():
        assert value is not None and unweighted is not None and std is not None and std >= 0, name
    # pooled out-of-fold coverage of the re-run against the stored mean over folds
    assert metrics["coverage_68"][2] == pytest.approx(cv["coverage_68"], abs=0.02)
    assert 0 <= metrics["coverage_95"][0] <= 1


def test_cli_prints_auc_and_expected_metrics(
    shift_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``skyclass domain faint:1 --catalog sdss_bright`` prints and stores one more pair."""
    monkeypatch.setenv("SKYCLASS_DATABASE_URL", shift_db)
    before = _counts(shift_db)
    result = CliRunner().invoke(
        main, ["domain", "faint:1", "--catalog", "sdss_bright", "--bootstrap", "20"]
    )
    assert result.exit_code == 0, result.output
    assert "domain-classifier AUC" in result.output and "accuracy" in result.output
    after = _counts(shift_db)
    assert after["domain_shift"] == before["domain_shift"] + 1
    assert after["domain_metric"] > before["domain_metric"]


def test_domain_classifier_is_compiled_and_scored_in_the_database(shift_db: str) -> None:
    """The catalog is scored by skyclass.predict; client-side scikit-learn agrees within 1e-5.

    Two runs with one seed fit the same classifier (same checkpoint): one scored
    in the database, one by scikit-learn in the client. Propensities agree per
    object within 1e-5, weights within 1e-5 relative, the clipping flags and
    the pair's aggregates exactly.
    """
    with psycopg.connect(shift_db) as conn:
        db = run_domain(conn, "faint", "sdss_bright", n_bootstrap=20, seed=5)
        py = run_domain(conn, "faint", "sdss_bright", n_bootstrap=20, seed=5, in_database=False)
        versions = conn.execute(
            "SELECT v.model_version_id, m.name, v.classes, v.checkpoint, "
            "a.model_version_id IS NOT NULL FROM skyclass.model_version AS v "
            "JOIN skyclass.model AS m USING (model_id) LEFT JOIN skyclass.model_artifact AS a "
            "USING (model_version_id) WHERE v.model_version_id IN (%s, %s) "
            "ORDER BY v.model_version_id",
            (db.domain_version_id, py.domain_version_id),
        ).fetchall()
        pairs = conn.execute(
            "SELECT a.propensity, b.propensity, a.weight, b.weight, a.clipped, b.clipped "
            "FROM skyclass.domain_object AS a JOIN skyclass.domain_object AS b USING (object_id) "
            "WHERE a.domain_shift_id = %s AND b.domain_shift_id = %s",
            (db.domain_shift_id, py.domain_shift_id),
        ).fetchall()
        scorers = dict(
            conn.execute(
                "SELECT domain_shift_id, scorer FROM skyclass.domain_shift "
                "WHERE domain_shift_id IN (%s, %s)",
                (db.domain_shift_id, py.domain_shift_id),
            ).fetchall()
        )
        live = conn.execute(
            "SELECT count(*), max(abs(s.propensity - o.propensity)), "
            "bool_and(s.clipped = o.clipped), "
            "bool_and(s.uncovered = (s.propensity > d.uncovered_threshold)) "
            "FROM skyclass.domain_score(%s) AS s JOIN skyclass.domain_object AS o "
            "ON o.object_id = s.object_id AND o.domain_shift_id = %s "
            "JOIN skyclass.domain_shift AS d ON d.domain_shift_id = o.domain_shift_id",
            (db.domain_shift_id, db.domain_shift_id),
        ).fetchone()
    assert scorers == {db.domain_shift_id: "database", py.domain_shift_id: "python"}
    assert [v[1] for v in versions] == ["faint_domain", "faint_domain"]
    assert all(v[2] == ["training", "catalog"] for v in versions)
    assert versions[0][3] == versions[1][3]  # same fit, same checkpoint
    assert versions[0][4] and not versions[1][4]  # only the database run compiled it
    assert len(pairs) == db.n_catalog == py.n_catalog > 1000
    p = np.asarray(pairs, dtype=np.float64)
    assert np.max(np.abs(p[:, 0] - p[:, 1])) <= 1e-5
    assert np.max(np.abs(p[:, 2] - p[:, 3]) / p[:, 3]) <= 1e-5
    assert np.array_equal(p[:, 4], p[:, 5])
    assert 0.05 < p[:, 0].mean() < 0.95  # not a constant: the shift is visible
    assert db.catalog_clipped == pytest.approx(py.catalog_clipped, abs=1e-12)
    assert db.uncovered_fraction == pytest.approx(py.uncovered_fraction, abs=1e-12)
    assert [e.value for e in db.estimates] == [e.value for e in py.estimates]
    assert live is not None and live[0] == db.n_catalog and live[1] == 0 and live[2] and live[3]
    assert "in the database" in format_result(db) and "scikit-learn" in format_result(py)


def test_expected_metrics_from_sql(shift_db: str) -> None:
    """skyclass.expected_metrics returns the newest fit's rows with error bars and verdict."""
    with psycopg.connect(shift_db) as conn:
        result = run_domain(conn, "faint", "sdss_bright", n_bootstrap=20)
        conn.commit()
        for target in ("faint", "faint:1"):
            rows = conn.execute(
                "SELECT metric, class_name, expected, std, cv, n_effective, reliable, "
                "uncovered_fraction, problems, auc, domain_shift_id "
                "FROM skyclass.expected_metrics(%s, 'sdss_bright')",
                (target,),
            ).fetchall()
            assert {r[10] for r in rows} == {result.domain_shift_id}, target
            by_name = {(r[0], r[1]): r for r in rows}
            assert len(by_name) == len(result.estimates)
            for e in result.estimates:
                row = by_name[(e.name, e.class_name)]
                if np.isfinite(e.value):
                    assert row[2] == pytest.approx(e.value) and row[3] == pytest.approx(e.std)
                assert row[5] == pytest.approx(result.n_effective)
                assert row[6] == (not result.problems)
                assert row[9] == pytest.approx(result.auc)


@pytest.mark.parametrize(
    ("statement", "sqlstate", "message"),
    [
        (
            "SELECT * FROM skyclass.expected_metrics('faint', 'nosuch')",
            "42P01",
            "catalog 'nosuch' is not registered",
        ),
        (
            "SELECT * FROM skyclass.expected_metrics('faint', 'sdss_raw')",
            "55000",
            "has no domain fit on catalog sdss_raw",
        ),
        (
            "SELECT * FROM skyclass.expected_metrics('nosuch', 'sdss_bright')",
            "42704",
            "no deployment named",
        ),
        (
            "SELECT * FROM skyclass.expected_metrics(NULL, 'sdss_bright')",
            "22023",
            "must not be NULL",
        ),
        (
            "SELECT * FROM skyclass.domain_propensity("
            "(SELECT min(model_version_id) FROM skyclass.model_version), 'sdss_bright')",
            "22023",
            "is not a domain classifier",
        ),
        (
            "SELECT * FROM skyclass.domain_score(-1)",
            "42704",
            "domain shift -1 does not exist",
        ),
        (
            "SELECT * FROM skyclass.importance_weight('NaN', 10, 10, 0.01, 100)",
            "22023",
            "propensity must be in [0, 1]",
        ),
        (
            "SELECT * FROM skyclass.importance_weight(0.5, 0, 10, 0.01, 100)",
            "22023",
            "n_train and n_sample must be positive",
        ),
        (
            "SELECT * FROM skyclass.importance_weight(0.5, 10, 10, 1, 1)",
            "22023",
            "clip bounds",
        ),
    ],
)
def test_sql_entry_points_refuse_bad_input(
    shift_db: str, statement: str, sqlstate: str, message: str
) -> None:
    """Validated arguments: the SQLSTATE and a message that says what is wrong."""
    with psycopg.connect(shift_db) as conn, pytest.raises(psycopg.Error) as info:
        conn.execute(statement)
    assert info.value.sqlstate == sqlstate
    assert message in str(info.value)


def test_importance_weight_matches_python(shift_db: str) -> None:
    """skyclass.importance_weight gives the Python weights and clip flags bit for bit."""
    from skyclass.domain.weights import importance_weights

    p = np.r_[0.0, 1e-7, np.linspace(0.001, 0.999, 201), 0.9999999, 1.0]
    expected = importance_weights(p, 700, 300, w_min=0.05, w_max=20)
    with psycopg.connect(shift_db) as conn:
        rows = conn.execute(
            "SELECT w.weight, w.clipped FROM unnest(%s::float8[]) WITH ORDINALITY AS t(p, i) "
            "CROSS JOIN LATERAL skyclass.importance_weight(t.p, 700, 300, 0.05, 20) AS w "
            "ORDER BY t.i",
            (p.tolist(),),
        ).fetchall()
    assert [r[0] for r in rows] == expected.w.tolist()
    assert [r[1] for r in rows] == expected.clipped.tolist()
    assert 0 < expected.clipped.sum() < p.size


def test_report_has_a_domain_section(shift_db: str, tmp_path: Path) -> None:
    """The model report shows the newest fit per catalog: table, distributions, weights, sky."""
    from skyclass.report import make_report

    with psycopg.connect(shift_db) as conn:
        result = run_domain(conn, "faint", "sdss_bright", n_bootstrap=20)
        conn.commit()
    files = make_report("faint:1", tmp_path / "report", url=shift_db)
    page = files.html.read_text(encoding="utf-8")
    names = {p.name for p in files.pngs}
    assert {"domain-features.png", "domain-weights.png", "domain-sky.png"} <= names, names
    assert 'id="domain"' in page and "Where the model can be trusted" in page
    assert f'id="domain-{result.domain_shift_id}"' in page
    assert f"{result.auc:.3f}" in page and "expected on sdss_bright" in page
    (view,) = files.data.domain
    assert view.domain_shift_id == result.domain_shift_id and view.scorer == "database"
    assert sum(view.propensity_counts) == sum(view.weight_counts) == result.n_catalog
    assert view.sky is not None and view.sky.shape == (result.n_catalog, 3)
    # the catalog sample really is brighter in u than the training snapshot
    u = view.feature_names.index("u")
    assert np.nanmedian(view.catalog_x[:, u]) < np.nanmedian(view.train_x[:, u]) - 0.3
