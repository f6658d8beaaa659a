"""Photo-z PDFs trained in the database on real BOSS DR10 rows (no ids, no sky positions).

A 6,000-row BOSS slice is loaded as a catalog without positions, a feature set
of magnitudes, errors and colours is built, redshifts are binned on a 0.05
grid, and a small random forest is trained with one augmented copy per
training row. The metric and curve rows are then checked for sanity.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest

from skyclass.train.augment import AugmentConfig
from skyclass.train.errors import TrainError
from skyclass.train.pipeline import TrainResult, _augmenter, train_model
from skyclass.train.snapshot import (
    Snapshot,
    bin_labels,
    create_snapshot,
    load_feature_set_info,
    parse_bins,
)
from tests.conftest import drop_database, new_database
from tests.train.pipeline_data import BOSS_SPEC, boss_slice, build_features, ingest_boss

ROWS = 6000
NULLED = 60  # every 100th object loses its redshift


@pytest.fixture(scope="module")
def boss_db(
    server_url: str, template_url: str, shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A database with catalog boss (no positions) and feature set boss_ugriz."""
    url = new_database(server_url)
    try:
        ingest_boss(boss_slice(shared_data, tmp_path_factory.mktemp("boss") / "b.csv", ROWS), url)
        with psycopg.connect(url) as conn:
            conn.execute("UPDATE catalogs.boss SET z_spec = NULL WHERE object_id % 100 = 0")
        build_features(BOSS_SPEC, url)
        yield url
    finally:
        drop_database(server_url, url)


@pytest.fixture(scope="module")
def snapshot(boss_db: str) -> Snapshot:
    """Redshift bins of width 0.05 from 0 to 1."""
    return create_snapshot("boss_ugriz", "z_spec", task="photoz", bin_edges="0:1:0.05", url=boss_db)


@pytest.fixture(scope="module")
def trained(boss_db: str, snapshot: Snapshot) -> TrainResult:
    """A 20-tree random forest over the bins, one augmented copy per training row."""
    return train_model(
        "photoz",
        snapshot.snapshot_id,
        estimator="random_forest",
        params={"n_estimators": 20, "min_samples_leaf": 10},
        augment=1,
        url=boss_db,
    )


def test_bins_parse_and_label() -> None:
    edges = parse_bins("0:1:0.05")
    assert len(edges) == 21 and edges[3] == 0.15 and edges[-1] == 1.0
    assert parse_bins("0, 0.1,0.3 ,1") == (0.0, 0.1, 0.3, 1.0)
    assert bin_labels(parse_bins("0:1:0.04"))[:2] == ("0.00-0.04", "0.04-0.08")
    assert bin_labels((0.0, 0.125, 0.25)) == ("0.000-0.125", "0.125-0.250")
    for bad in ("0:1:0.3", "1:0:0.1", "0:1", "a,b", "0,0.5,0.4", "0"):
        with pytest.raises(TrainError):
            parse_bins(bad)


def test_snapshot_bins_redshifts_and_counts_missing_labels(
    boss_db: str, snapshot: Snapshot
) -> None:
    assert snapshot.task == "photoz"
    assert snapshot.n_rows == ROWS - NULLED
    assert snapshot.label_source["excluded"]["no_label"] == NULLED
    assert snapshot.classes[0] == "0.00-0.05" and len(snapshot.classes) == 20
    assert snapshot.bin_edges is not None and len(snapshot.bin_edges) == 21
    with psycopg.connect(boss_db) as conn:
        wrong = conn.execute(
            f"SELECT count(*) FROM snapshots.{snapshot.table_name} "
            "WHERE z_true >= 0 AND z_true < 1 AND label_index <> floor(z_true / 0.05)"
        ).fetchone()[0]  # type: ignore[index]
        below = conn.execute(
            f"SELECT count(*) FROM snapshots.{snapshot.table_name} WHERE z_true < 0"
        ).fetchone()[0]  # type: ignore[index]
    assert wrong == 0
    assert snapshot.label_source["outside_grid"]["below"] == below


def test_photoz_metrics_are_sane_and_beat_the_prior(boss_db: str, trained: TrainResult) -> None:
    with psycopg.connect(boss_db) as conn:
        rows = conn.execute(
            """
            SELECT e.estimator, m.name, m.mean, m.std
            FROM skyclass.metric m JOIN skyclass.evaluation e USING (evaluation_id)
            WHERE e.training_run_id = %s AND m.stage = 'raw' AND m.class_name = ''
            """,
            (trained.training_run_id,),
        ).fetchall()
        version = conn.execute(
            "SELECT task, classes, bin_edges, estimator FROM skyclass.model_version "
            "WHERE model_version_id = %s",
            (trained.model_version_id,),
        ).fetchone()
    metrics = {(r[0], r[1]): (r[2], r[3]) for r in rows}
    sigma, sigma_std = metrics[("random_forest", "sigma_nmad")]
    assert 0.01 < sigma < 0.05 and sigma_std < 0.01
    assert metrics[("random_forest", "outlier_fraction")][0] < 0.08
    assert 0.55 < metrics[("random_forest", "coverage_68")][0] < 0.92
    assert 0.85 < metrics[("random_forest", "coverage_95")][0] <= 1.0
    assert metrics[("random_forest", "pit_ks")][0] < 0.2
    assert sigma + sigma_std < metrics[("dummy", "sigma_nmad")][0]
    assert metrics[("random_forest", "log_loss")][0] < metrics[("dummy", "log_loss")][0]
    assert version is not None
    assert version[0] == "photoz" and len(version[1]) == 20 and len(version[2]) == 21
    assert version[3] == "random_forest"


def test_photoz_curves(boss_db: str, trained: TrainResult, snapshot: Snapshot) -> None:
    with psycopg.connect(boss_db) as conn:
        curves = {
            (r[0], r[1]): r[2]
            for r in conn.execute(
                """
                SELECT c.name, c.stage, c.data FROM skyclass.evaluation_curve c
                JOIN skyclass.model_version v USING (evaluation_id)
                WHERE v.model_version_id = %s
                """,
                (trained.model_version_id,),
            )
        }
    n_train = snapshot.n_rows - snapshot.label_source["split"]["calibration_size"]
    for stage in ("raw", "calibrated"):
        pit = curves[("pit_histogram", stage)]
        assert len(pit["count"]) == 20 and sum(pit["count"]) == n_train
        coverage = curves[("coverage", stage)]
        nominal = np.asarray(coverage["nominal"])
        observed = np.asarray(coverage["observed"])
        assert np.all(np.diff(observed) >= 0)  # wider intervals cover more
        assert np.abs(observed - nominal).max() < 0.25
        sample = curves[("zphot_zspec", stage)]
        assert len(sample["z_spec"]) == len(sample["z_phot"]) == min(n_train, 5000)
        dz = (np.asarray(sample["z_phot"]) - sample["z_spec"]) / (1 + np.asarray(sample["z_spec"]))
        assert np.median(np.abs(dz)) < 0.05


def test_augmentation_setting_and_effect_are_stored(boss_db: str, trained: TrainResult) -> None:
    with psycopg.connect(boss_db) as conn:
        settings = conn.execute(
            "SELECT settings FROM skyclass.training_run WHERE training_run_id = %s",
            (trained.training_run_id,),
        ).fetchone()[0]  # type: ignore[index]
        estimators = {
            r[0]: r[1]
            for r in conn.execute(
                "SELECT estimator, role FROM skyclass.evaluation WHERE training_run_id = %s",
                (trained.training_run_id,),
            )
        }
    augment = settings["augment"]
    assert augment["n_copies"] == 1 and augment["policy"] == "cap"
    assert augment["magnitudes"] == [f"mag_{b}" for b in "ugriz"]
    assert augment["errors"] == [f"magerr_{b}" for b in "ugriz"]
    assert augment["colours_recomputed"] == ["u_g", "g_r", "r_i", "i_z"]
    effect = augment["effect"]["sigma_nmad"]
    assert len(effect["per_fold_difference"]) == 5
    assert effect["difference"]["mean"] == pytest.approx(
        effect["augmented"]["mean"] - effect["baseline"]["mean"], abs=1e-12
    )
    assert estimators == {
        "random_forest": "candidate",
        "random_forest (no augmentation)": "baseline",
        "dummy": "baseline",
        "logistic": "baseline",
    }
    assert any("colour_cut skipped" in n for n in settings["notes"])


def test_augmented_copies_keep_colours_consistent(boss_db: str, snapshot: Snapshot) -> None:
    with psycopg.connect(boss_db) as conn:
        info = load_feature_set_info(conn, "boss_ugriz")
    rng = np.random.default_rng(0)
    X = np.abs(rng.normal(20, 1, size=(50, 14))).astype(np.float32)
    y = np.arange(50)
    train_data, _ = _augmenter(info, X, y, AugmentConfig(2, seed=1))
    out, labels = train_data(np.arange(10, 30))
    names = list(info.feature_names)
    assert out.shape == (60, 14) and labels.tolist() == list(range(10, 30)) * 3
    assert np.array_equal(out[:20], X[10:30])  # originals untouched
    mags = [names.index(f"mag_{b}") for b in "ugriz"]
    assert not np.array_equal(out[20:, mags], out[:20, mags][np.r_[0:20, 0:20]])
    for k, (a, b) in enumerate(("ug", "gr", "ri", "iz")):
        colour = out[20:, names.index(f"{a}_{b}")]
        diff = out[20:, mags[k]].astype(np.float64) - out[20:, mags[k + 1]]
        np.testing.assert_allclose(colour, diff, atol=1e-5)
    errs = [names.index(f"magerr_{b}") for b in "ugriz"]
    assert np.array_equal(out[20:, errs], np.vstack([X[10:30, errs]] * 2))


def test_photoz_needs_a_redshift_column_and_filled_bins(boss_db: str) -> None:
    with pytest.raises(TrainError, match="text"):
        create_snapshot(
            "boss_ugriz", "annz_source_files", task="photoz", bin_edges="0:1:0.05", url=boss_db
        )
    with pytest.raises(TrainError, match="no training objects"):
        create_snapshot("boss_ugriz", "z_spec", task="photoz", bin_edges="0:3:0.5", url=boss_db)
    with pytest.raises(TrainError, match="bins"):
        create_snapshot("boss_ugriz", "z_spec", task="photoz", url=boss_db)
