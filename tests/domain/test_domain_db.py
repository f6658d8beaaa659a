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
