"""Training in the database on real SDSS17 rows: snapshot, cross-validation, registry rows.

One database per module: a 15,000-row SDSS17 slice is ingested, the
``sdss_ugriz`` feature set is built, a snapshot is frozen and a small
HistGradientBoosting candidate (50 iterations) is trained next to the three
baselines. The tests then read the registry the way a user would, with SQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from skyclass.errors import ModelNotFoundError
from skyclass.train.errors import LeakageError, TrainError
from skyclass.train.pipeline import TrainResult, ablate_model, train_model
from skyclass.train.registry import describe_version, format_version
from skyclass.train.snapshot import CrossmatchLabels, Snapshot, create_snapshot
from tests.conftest import drop_database, new_database
from tests.train.pipeline_data import SDSS_SPEC, build_features, ingest_sdss, sdss_slice

ROWS = 15_000
REGISTRY_TABLES = (
    "model",
    "training_run",
    "evaluation",
    "metric",
    "evaluation_curve",
    "feature_importance",
    "model_version",
)


@pytest.fixture(scope="module")
def sdss_db(
    server_url: str, template_url: str, shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A database with catalog sdss17 (15k rows) and feature set sdss_ugriz."""
    url = new_database(server_url)
    try:
        csv = sdss_slice(shared_data, tmp_path_factory.mktemp("sdss") / "sdss.csv", ROWS)
        ingest_sdss(csv, url)
        build_features(SDSS_SPEC.read_text(), url)
        yield url
    finally:
        drop_database(server_url, url)


@pytest.fixture(scope="module")
def snapshot(sdss_db: str) -> Snapshot:
    """A 5-fold snapshot with a 20% calibration split, labels from column ``class``."""
    return create_snapshot("sdss_ugriz", "class", n_folds=5, seed=0, url=sdss_db)


@pytest.fixture(scope="module")
def trained(sdss_db: str, snapshot: Snapshot) -> TrainResult:
    """Model ``sgq`` version 1: HGB with 50 iterations, temperature calibration."""
    return train_model(
        "sgq", snapshot.snapshot_id, params={"max_iter": 50}, url=sdss_db, description="test"
    )


def _counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {
            t: conn.execute(f"SELECT count(*) FROM skyclass.{t}").fetchone()[0]  # type: ignore[index]
            for t in REGISTRY_TABLES
        }


def test_snapshot_is_frozen_with_folds_and_calibration_split(
    sdss_db: str, snapshot: Snapshot
) -> None:
    assert snapshot.n_rows == ROWS
    assert snapshot.classes == ("GALAXY", "QSO", "STAR")
    assert sum(snapshot.class_counts.values()) == ROWS
    assert snapshot.leakage_forced == ()
    with psycopg.connect(sdss_db) as conn:
        folds = dict(
            conn.execute(
                f"SELECT fold, count(*) FROM snapshots.{snapshot.table_name} GROUP BY fold"
            ).fetchall()
        )
        assert set(folds) == {-1, 0, 1, 2, 3, 4}
        assert folds[-1] == pytest.approx(0.2 * ROWS, abs=2)
        assert max(folds.values()) - min(v for k, v in folds.items() if k >= 0) < 0.3 * ROWS
        # the frozen features equal the feature table's, and labels the catalog's
        mismatches = conn.execute(
            f"SELECT count(*) FROM snapshots.{snapshot.table_name} s "
            "JOIN catalogs.sdss17 c USING (object_id) "
            "JOIN skyclass.feature_set fs ON fs.name = 'sdss_ugriz' "
            "WHERE s.label <> c.class OR s.label_index <> array_position((SELECT classes "
            "FROM skyclass.training_snapshot WHERE snapshot_id = %s), s.label) - 1",
            (snapshot.snapshot_id,),
        ).fetchone()[0]  # type: ignore[index]
        assert mismatches == 0
        table = conn.execute(
            "SELECT table_name FROM skyclass.feature_set WHERE name = 'sdss_ugriz'"
        ).fetchone()[0]  # type: ignore[index]
        differ = conn.execute(
            f"SELECT count(*) FROM snapshots.{snapshot.table_name} s "
            f"JOIN features.{table} f USING (object_id) WHERE s.x IS DISTINCT FROM f.x"
        ).fetchone()[0]  # type: ignore[index]
        assert differ == 0
        # immutable registry row
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
            conn.execute("UPDATE skyclass.training_snapshot SET seed = 1")


def test_candidate_beats_every_baseline_by_more_than_the_error_bars(
    sdss_db: str, trained: TrainResult
) -> None:
    with psycopg.connect(sdss_db) as conn:
        rows = conn.execute(
            """
            SELECT e.estimator, e.role, m.mean, m.std, cardinality(m.fold_values)
            FROM skyclass.model mo
            JOIN skyclass.model_version v USING (model_id)
            JOIN skyclass.evaluation e ON e.training_run_id = v.training_run_id
            JOIN skyclass.metric m ON m.evaluation_id = e.evaluation_id
            WHERE mo.name = 'sgq' AND v.version = 1
              AND m.name = 'accuracy' AND m.class_name = '' AND m.stage = 'raw'
            """
        ).fetchall()
    accuracy = {r[0]: (r[2], r[3]) for r in rows}
    assert {r[0]: r[1] for r in rows} == {
        "hist_gradient_boosting": "candidate",
        "dummy": "baseline",
        "colour_cut": "baseline",
        "logistic": "baseline",
    }
    assert all(r[4] == 5 for r in rows)
    mean, std = accuracy["hist_gradient_boosting"]
    assert mean > 0.85
    for name in ("dummy", "colour_cut", "logistic"):
        base_mean, base_std = accuracy[name]
        assert mean - std > base_mean + base_std, (name, accuracy)
    assert accuracy["dummy"][0] == pytest.approx(0.594, abs=0.02)


def test_every_metric_per_class_and_stage_is_a_row(sdss_db: str, trained: TrainResult) -> None:
    with psycopg.connect(sdss_db) as conn:
        per_class = conn.execute(
            """
            SELECT m.stage, m.class_name, count(*)
            FROM skyclass.metric m JOIN skyclass.evaluation e USING (evaluation_id)
            WHERE e.training_run_id = %s AND e.role = 'candidate'
            GROUP BY 1, 2 ORDER BY 1, 2
            """,
            (trained.training_run_id,),
        ).fetchall()
        purity = conn.execute(
            """
            SELECT m.class_name, m.mean, m.std, m.fold_values
            FROM skyclass.metric m JOIN skyclass.model_version v USING (evaluation_id)
            WHERE v.model_version_id = %s AND m.name = 'purity' AND m.stage = 'raw'
            ORDER BY 1
            """,
            (trained.model_version_id,),
        ).fetchall()
        calibrated = conn.execute(
            """
            SELECT m.stage, m.mean FROM skyclass.metric m
            JOIN skyclass.model_version v USING (evaluation_id)
            WHERE v.model_version_id = %s AND m.name = 'log_loss' AND m.class_name = ''
            """,
            (trained.model_version_id,),
        ).fetchall()
    # 6 overall metrics, 6 per class, both stages
    assert per_class == [
        (stage, c, 6) for stage in ("calibrated", "raw") for c in ("", "GALAXY", "QSO", "STAR")
    ]
    assert [p[0] for p in purity] == ["GALAXY", "QSO", "STAR"]
    for _, mean, std, folds in purity:
        assert 0.8 < mean <= 1.0 and 0 < std < 0.05 and len(folds) == 5
    stages = dict(calibrated)
    assert stages["calibrated"] <= stages["raw"] + 0.01


def test_curves_confusion_and_importance(sdss_db: str, trained: TrainResult) -> None:
    with psycopg.connect(sdss_db) as conn:
        curves = conn.execute(
            """
            SELECT c.name, c.class_name, c.stage, c.data
            FROM skyclass.evaluation_curve c JOIN skyclass.model_version v USING (evaluation_id)
            WHERE v.model_version_id = %s ORDER BY 1, 2, 3
            """,
            (trained.model_version_id,),
        ).fetchall()
        confusion, fold_sizes = conn.execute(
            "SELECT e.confusion, r.settings -> 'fold_sizes' FROM skyclass.evaluation e "
            "JOIN skyclass.training_run r USING (training_run_id) "
            "WHERE e.evaluation_id = (SELECT evaluation_id FROM skyclass.model_version "
            "WHERE model_version_id = %s)",
            (trained.model_version_id,),
        ).fetchone()  # type: ignore[misc]
        importance = conn.execute(
            "SELECT feature, mean, std FROM skyclass.feature_importance i "
            "JOIN skyclass.model_version v USING (evaluation_id) WHERE v.model_version_id = %s "
            "ORDER BY mean DESC",
            (trained.model_version_id,),
        ).fetchall()
    names = {(c[0], c[1], c[2]) for c in curves}
    for stage in ("raw", "calibrated"):
        assert ("reliability", "", stage) in names
        for c in ("GALAXY", "QSO", "STAR"):
            assert ("roc", c, stage) in names
    for name, _, _, data in curves:
        if name == "roc":
            assert 2 <= len(data["fpr"]) <= 200
            assert data["fpr"][0] == 0 and data["tpr"][-1] == 1
            assert data["auc"] > 0.9
        else:
            assert sum(data["count"]) == sum(fold_sizes)
    matrix = confusion["matrix"]
    assert confusion["classes"] == ["GALAXY", "QSO", "STAR"]
    assert sum(map(sum, matrix)) == sum(fold_sizes)
    assert len(importance) == 9
    assert importance[0][1] > 0.05  # some feature matters a lot


def test_model_version_row_holds_checkpoint_and_calibration(
    sdss_db: str, trained: TrainResult
) -> None:
    from skyclass.compile.checkpoint import load_checkpoint, model_layout

    assert trained.version == 1
    with psycopg.connect(sdss_db) as conn:
        row = conn.execute(
            """
            SELECT v.estimator, v.params, v.n_features, v.classes, v.checkpoint,
                   v.calibration_kind, v.calibration_params, v.task, r.library_versions,
                   r.git_commit, r.os_user, r.settings
            FROM skyclass.model_version v JOIN skyclass.training_run r USING (training_run_id)
            WHERE v.model_version_id = %s
            """,
            (trained.model_version_id,),
        ).fetchone()
        assert row is not None
        estimator, params, n_features, classes, checkpoint, kind, cal, task = row[:8]
        versions, commit, os_user, settings = row[8:]
        assert (estimator, n_features, classes, kind, task) == (
            "hist_gradient_boosting",
            9,
            ["GALAXY", "QSO", "STAR"],
            "temperature",
            "classification",
        )
        assert params["max_iter"] == 50 and len(cal) == 1 and 0.3 < cal[0] < 3
        layout = model_layout(load_checkpoint(bytes(checkpoint)))
        assert (layout.n_features, layout.n_classes) == (9, 3)
        for lib in ("scikit-learn", "numpy", "treelite", "tl2cgen", "astropy"):
            assert versions[lib] != "not installed"
        assert commit is None or len(commit) >= 40
        assert os_user
        assert settings["calibration_fit"]["diagnostics"]["log_loss_after"] <= (
            settings["calibration_fit"]["diagnostics"]["log_loss_before"] + 1e-9
        )
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
            conn.execute(
                "UPDATE skyclass.model_version SET estimator = 'random_forest' "
                "WHERE model_version_id = %s",
                (trained.model_version_id,),
            )
        conn.rollback()
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
            conn.execute("UPDATE skyclass.metric SET mean = 1")


def test_show_formats_the_summary(sdss_db: str, trained: TrainResult) -> None:
    text = format_version(describe_version("sgq", url=sdss_db))
    assert "sgq:1" in text and "candidate" in text and "colour_cut" in text
    assert "purity" in text and "±" in text and "permutation importance" in text
    with pytest.raises(ModelNotFoundError, match="unknown model 'nope'"):
        describe_version("nope", url=sdss_db)
    with pytest.raises(ModelNotFoundError, match="its versions are 1"):
        describe_version("sgq:7", url=sdss_db)


def test_failed_training_leaves_nothing(
    sdss_db: str, snapshot: Snapshot, trained: TrainResult
) -> None:
    with psycopg.connect(sdss_db) as conn:
        conn.execute("INSERT INTO skyclass.model (name, task) VALUES ('pz_only', 'photoz')")
    before = _counts(sdss_db)
    # max_bins > 255 passes the registry's declared bounds but scikit-learn
    # refuses it when the candidate is fitted, after the baselines ran.
    with pytest.raises(TrainError, match="max_bins"):
        train_model("broken", snapshot.snapshot_id, params={"max_bins": 300}, url=sdss_db)
    # a task clash is found before any work
    with pytest.raises(TrainError, match="'pz_only' is a photoz model"):
        train_model("pz_only", snapshot.snapshot_id, url=sdss_db)
    with pytest.raises(TrainError, match="only tree ensembles"):
        train_model("sgq", snapshot.snapshot_id, estimator="logistic", url=sdss_db)
    assert _counts(sdss_db) == before


def test_second_version_and_ablation(
    sdss_db: str, snapshot: Snapshot, trained: TrainResult
) -> None:
    second = train_model(
        "sgq",
        snapshot.snapshot_id,
        params={"max_iter": 10},
        baselines=("dummy",),
        calibration="isotonic",
        importance=False,
        url=sdss_db,
    )
    assert (second.model, second.version) == ("sgq", 2)
    rows = ablate_model("sgq:2", url=sdss_db)
    groups = {r["group"] for r in rows}
    assert groups == {"magnitudes", "colours"}
    with psycopg.connect(sdss_db) as conn:
        stored = conn.execute(
            """
            SELECT a.dropped_group, a.metric, a.delta_mean, a.delta_std, a.fold_deltas
            FROM skyclass.ablation a JOIN skyclass.model_version v USING (training_run_id)
            JOIN skyclass.model m USING (model_id)
            WHERE m.name = 'sgq' AND v.version = 2 ORDER BY 1, 2
            """
        ).fetchall()
        kind, offsets = conn.execute(
            "SELECT calibration_kind, calibration_offsets FROM skyclass.model_version "
            "WHERE model_version_id = %s",
            (second.model_version_id,),
        ).fetchone()  # type: ignore[misc]
    assert kind == "isotonic" and len(offsets) == 4
    assert len(stored) == 6
    for _, _, mean, std, folds in stored:
        assert len(folds) == 5 and std >= 0
        assert mean == pytest.approx(sum(folds) / 5)


def test_leakage_guard_refuses_redshift_unless_forced(sdss_db: str) -> None:
    leaky = SDSS_SPEC.read_text().replace('name = "sdss_ugriz"', 'name = "sdss_leaky"')
    leaky += '\n[[feature]]\nname = "zred"\nexpr = "log10(1 + redshift)"\n'
    build_features(leaky, sdss_db)
    before = _counts(sdss_db)
    with psycopg.connect(sdss_db) as conn:
        snapshots = conn.execute("SELECT count(*) FROM skyclass.training_snapshot").fetchone()
    with pytest.raises(LeakageError, match="--force-feature redshift") as info:
        create_snapshot("sdss_leaky", "class", url=sdss_db)
    message = str(info.value)
    assert "'redshift'" in message and "zred" in message and "label source" in message
    with psycopg.connect(sdss_db) as conn:
        assert conn.execute("SELECT count(*) FROM skyclass.training_snapshot").fetchone() == (
            snapshots
        )
    forced = create_snapshot("sdss_leaky", "class", force_features=["zred"], url=sdss_db)
    assert [f["name"] for f in forced.leakage_forced] == ["redshift"]
    with psycopg.connect(sdss_db) as conn:
        stored = conn.execute(
            "SELECT leakage_forced FROM skyclass.training_snapshot WHERE snapshot_id = %s",
            (forced.snapshot_id,),
        ).fetchone()[0]  # type: ignore[index]
    assert stored[0]["name"] == "redshift" and "label source" in stored[0]["reason"]
    assert _counts(sdss_db) == before
    with pytest.raises(TrainError, match="not a feature"):
        create_snapshot("sdss_leaky", "class", force_features=["nonsense"], url=sdss_db)


def test_labels_by_crossmatch_with_a_labelled_catalog(
    sdss_db: str, shared_data: Path, tmp_path: Path
) -> None:
    import pandas as pd

    frame = pd.read_csv(sdss_slice(shared_data, tmp_path / "all.csv", 3000, seed=9))
    frame[["orig_row", "alpha", "delta", "u", "g", "r", "i", "z"]].to_csv(
        tmp_path / "phot.csv", index=False
    )
    # the labelled catalog: other ids, the same positions
    spec = frame[["orig_row", "alpha", "delta", "class"]].assign(orig_row=frame.orig_row + 10**6)
    spec.to_csv(tmp_path / "spec.csv", index=False)
    ingest_sdss(tmp_path / "phot.csv", sdss_db, name="sdss_phot")
    ingest_sdss(tmp_path / "spec.csv", sdss_db, name="sdss_spec")
    build_features(SDSS_SPEC.read_text(), sdss_db, name="phot_ugriz", catalog="sdss_phot")
    snap = create_snapshot(
        "phot_ugriz", CrossmatchLabels("sdss_spec", "class", "1arcsec"), url=sdss_db
    )
    assert snap.n_rows == 3000
    assert snap.label_source["kind"] == "crossmatch"
    assert snap.label_source["radius_arcsec"] == pytest.approx(1.0)
    with psycopg.connect(sdss_db) as conn:
        wrong = conn.execute(
            f"SELECT count(*) FROM snapshots.{snap.table_name} s "
            "JOIN catalogs.sdss_spec l ON l.object_id = s.object_id + 1000000 "
            "WHERE l.class <> s.label"
        ).fetchone()[0]  # type: ignore[index]
    assert wrong == 0
