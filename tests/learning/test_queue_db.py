"""The labelling queue and the simulated loop on real SDSS17 rows.

The module database of tests/explain (a 2,000-object SDSS17 slice, model
sgq:1 trained on half of it... here on all of it) is built again here with
the SQL queue on top: scores must be the Python formulas on the stored
predictions, states must only move forward, imported labels must reach the
next snapshot, and bad label files must change nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
from click.testing import CliRunner

from skyclass.cli import main
from skyclass.compile.store import compile_model_version
from skyclass.features.build import build_feature_set
from skyclass.ingest import ingest_file
from skyclass.learning.simulate import SimulationSettings, compare_with_random, simulate
from skyclass.learning.strategies import uncertainty
from skyclass.report.learning import read_learning
from skyclass.score.jobs import score_catalog
from skyclass.train.pipeline import train_model
from skyclass.train.snapshot import ColumnLabels, create_snapshot, load_snapshot
from tests.conftest import drop_database, new_database
from tests.docs.conftest import EXAMPLE_SPEC, _slice


@pytest.fixture(scope="module")
def queue_db(
    server_url: str, template_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """sdss17 (3,000 objects), a model trained on objects with even ids, scored everywhere."""
    url = new_database(server_url)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS skyclass")
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("SKYCLASS_DATABASE_URL", url)
            data = tmp_path_factory.mktemp("queue-data") / "sdss17_slice.csv"
            _slice(data, 3000, seed=13)
            ingest_file(
                data, "sdss17", id_column="orig_row", ra_column="alpha", dec_column="delta", url=url
            )
            # Labels only for half the objects: the rest are the survey to propose from.
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("ALTER TABLE catalogs.sdss17 ADD COLUMN known text")
                conn.execute("UPDATE catalogs.sdss17 SET known = class WHERE object_id % 2 = 0")
            fs = build_feature_set(EXAMPLE_SPEC, url=url).feature_set_id
            snap = create_snapshot(fs, "known", n_folds=2, seed=1, url=url)
            result = train_model(
                "sgq",
                snap.snapshot_id,
                params={"max_iter": 15, "max_leaf_nodes": 7},
                baselines=(),
                importance=False,
                url=url,
            )
            compile_model_version(result.model_version_id, url=url, opt_level="-O0")
            score_catalog("sgq:1", "sdss17", workers=1, scorer="database", url=url)
        yield url
    finally:
        drop_database(server_url, url)


def _invoke(url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env={"SKYCLASS_DATABASE_URL": url})
    return result.exit_code, result.output


@pytest.mark.parametrize("strategy", ["entropy", "margin", "least_confident"])
def test_the_queue_holds_the_most_uncertain_unlabelled_objects(
    queue_db: str, strategy: str
) -> None:
    with psycopg.connect(queue_db) as conn:
        conn.execute("DELETE FROM skyclass.label_queue")
        conn.commit()
        it = conn.execute(
            "SELECT skyclass.create_label_queue('sgq:1', 'sdss17', %s, 50)", (strategy,)
        ).fetchone()[0]  # type: ignore[index]
        conn.commit()
        queued = conn.execute(
            "SELECT object_id, score, rank FROM skyclass.label_queue WHERE iteration = %s "
            "ORDER BY rank",
            (it,),
        ).fetchall()
        preds = conn.execute(
            "SELECT object_id, probabilities FROM skyclass.prediction WHERE catalog_id = "
            "(SELECT catalog_id FROM skyclass.catalog WHERE name = 'sdss17') ORDER BY object_id"
        ).fetchall()
    ids = np.array([p[0] for p in preds])
    scores = uncertainty(np.array([p[1] for p in preds]), strategy, np.random.default_rng(0))
    unlabelled = ids % 2 == 1  # the training snapshot holds the even ids
    expected_order = ids[unlabelled][np.lexsort((ids[unlabelled], -scores[unlabelled]))][:50]
    assert [q[0] for q in queued] == expected_order.tolist()
    assert [q[2] for q in queued] == list(range(1, 51))
    by_id = dict(zip(ids.tolist(), scores.tolist(), strict=True))
    assert all(abs(q[1] - by_id[q[0]]) < 1e-5 for q in queued)  # float4 probabilities


def test_iterations_skip_queued_objects_and_random_is_seeded(queue_db: str) -> None:
    with psycopg.connect(queue_db, autocommit=True) as conn:
        conn.execute("DELETE FROM skyclass.label_queue")
        conn.execute(
            "SELECT skyclass.create_label_queue('sgq:1', 'sdss17', 'random', 30, false, 7)"
        )
        conn.execute("SELECT skyclass.create_label_queue('sgq:1', 'sdss17', 'entropy', 30)")
        rows = conn.execute(
            "SELECT iteration, count(*), count(DISTINCT object_id) FROM skyclass.label_queue "
            "GROUP BY iteration ORDER BY iteration"
        ).fetchall()
        assert rows == [(1, 30, 30), (2, 30, 30)]
        overlap = conn.execute(
            "SELECT count(*) FROM skyclass.label_queue AS a JOIN skyclass.label_queue AS b "
            "USING (object_id) WHERE a.iteration = 1 AND b.iteration = 2"
        ).fetchone()[0]  # type: ignore[index]
        assert overlap == 0
        first = [
            r[0]
            for r in conn.execute(
                "SELECT object_id FROM skyclass.label_queue WHERE iteration = 1 ORDER BY rank"
            )
        ]
        conn.execute("DELETE FROM skyclass.label_queue")
        conn.execute(
            "SELECT skyclass.create_label_queue('sgq:1', 'sdss17', 'random', 30, false, 7)"
        )
        again = [
            r[0]
            for r in conn.execute(
                "SELECT object_id FROM skyclass.label_queue WHERE iteration = 1 ORDER BY rank"
            )
        ]
        assert again == first
        # ood_weight needs a domain analysis first
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="domain analysis"):
            conn.execute(
                "SELECT skyclass.create_label_queue('sgq:1', 'sdss17', 'entropy', 5, true)"
            )


def test_labels_move_states_forward_and_feed_the_next_snapshot(
    queue_db: str, tmp_path: Path
) -> None:
    with psycopg.connect(queue_db, autocommit=True) as conn:
        conn.execute("DELETE FROM skyclass.label_queue")
    code, out = _invoke(
        queue_db,
        "queue",
        "create",
        "sgq:1",
        "--catalog",
        "sdss17",
        "--strategy",
        "margin",
        "--budget",
        "20",
    )
    assert code == 0, out
    with psycopg.connect(queue_db) as conn:
        rows = conn.execute(
            "SELECT q.object_id, c.class FROM skyclass.label_queue AS q "
            "JOIN catalogs.sdss17 AS c USING (object_id) ORDER BY q.rank"
        ).fetchall()
    ids = [r[0] for r in rows]
    code, out = _invoke(
        queue_db,
        "queue",
        "mark",
        "sgq:1",
        "--catalog",
        "sdss17",
        "--ids",
        ",".join(map(str, ids[:5])),
        "--state",
        "observed",
    )
    assert code == 0 and "5 queue entries" in out, out
    good = tmp_path / "spectra.csv"
    good.write_text("object_id,label\n" + "".join(f"{i},{c}\n" for i, c in rows[:10]))
    code, out = _invoke(queue_db, "queue", "label", "sgq:1", str(good), "--catalog", "sdss17")
    assert code == 0 and "labelled 10" in out, out
    # bad files: nothing changes, the line is named
    before = _queue_state(queue_db)
    cases = {
        "object_id,label\n" + f"{ids[12]},STAR\n{ids[13]},UFO\n": "line 3, column label: 'UFO'",
        "object_id,label\n" + f"{ids[12]},STAR\nabc,STAR\n": "line 3, column object_id",
        "object_id,label\n" + f"{ids[0]},STAR\n": "line 2: object",  # labelled already
        "object_id,label\n" + f"{ids[12]},STAR\n{ids[12]},QSO\n": "labelled twice",
        "id,class\n1,STAR\n": "must name object_id and label",
    }
    for text, message in cases.items():
        bad = tmp_path / "bad.csv"
        bad.write_text(text)
        code, out = _invoke(queue_db, "queue", "label", "sgq:1", str(bad), "--catalog", "sdss17")
        assert code != 0 and message in out, (text, out)
    assert _queue_state(queue_db) == before
    with psycopg.connect(queue_db, autocommit=True) as conn:
        states = dict(
            conn.execute(
                "SELECT state, count(*) FROM skyclass.label_queue GROUP BY state"
            ).fetchall()
        )
        assert states == {"labelled": 10, "proposed": 10}
        who = conn.execute(
            "SELECT bool_and(labelled_by = current_user AND labelled_at IS NOT NULL "
            "AND label_source = 'spectra.csv') FROM skyclass.label_queue WHERE state = 'labelled'"
        ).fetchone()[0]  # type: ignore[index]
        assert who is True
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="cannot change"):
            conn.execute(
                "UPDATE skyclass.label_queue SET state = 'expired' WHERE state = 'labelled'"
            )
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="immutable"):
            conn.execute("UPDATE skyclass.label_queue SET score = 0")
        fs = conn.execute("SELECT feature_set_id FROM skyclass.feature_set").fetchone()[0]  # type: ignore[index]
    # the next snapshot learns from them: odd ids had no label before
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SKYCLASS_DATABASE_URL", queue_db)
        plain = create_snapshot(fs, "known", n_folds=2, seed=1, url=queue_db)
        fed = create_snapshot(
            fs, ColumnLabels("known", queue=True), n_folds=2, seed=1, url=queue_db
        )
    assert fed.n_rows == plain.n_rows + sum(1 for i in ids[:10] if i % 2 == 1)
    with psycopg.connect(queue_db) as conn:
        assert load_snapshot(conn, fed.snapshot_id).label_source["queue_labels"] is True


def _queue_state(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT queue_id, state, label FROM skyclass.label_queue ORDER BY queue_id"
        ).fetchall()


def test_the_simulated_loop_stores_curves_for_every_strategy_and_seed(queue_db: str) -> None:
    settings = SimulationSettings(
        start=100, step=100, rounds=2, seeds=2, model_params={"max_iter": 10}
    )
    with psycopg.connect(queue_db) as conn:
        result = simulate(conn, "sdss_ugriz", "class", "QSO", settings)
        rows = conn.execute(
            "SELECT strategy, count(*), min(n_labels), max(n_labels) FROM skyclass.learning_curve "
            "WHERE simulation_id = %s GROUP BY strategy ORDER BY strategy",
            (result.simulation_id,),
        ).fetchall()
    assert rows == [(s, 6, 100, 300) for s in sorted(settings.strategies)]
    accuracy = result.curve("entropy", "accuracy")
    assert accuracy.shape == (3, 2) and (accuracy > 0.5).all()
    diffs = compare_with_random(result, "accuracy")
    assert set(diffs) == {"entropy", "margin", "least_confident"}
    code, out = _invoke(queue_db, "queue", "simulate", "sdss_ugriz", "--label", "nope")
    assert code != 0 and "no label column 'nope'" in out


def test_the_report_shows_explanations_curves_learning_curves_and_anomalies(
    queue_db: str, tmp_path: Path
) -> None:
    from skyclass.report import make_report

    empty = make_report("sgq:1", tmp_path / "before", url=queue_db)
    page = empty.html.read_text(encoding="utf-8")
    assert 'id="learning"' in page and "Not shown yet" in page
    code, out = _invoke(
        queue_db, "explain", "sgq:1", "--catalog", "sdss17", "--where", "true", "--limit", "30"
    )
    assert code == 0, out
    with psycopg.connect(queue_db, autocommit=True) as conn:
        conn.execute("SELECT skyclass.partial_dependence('sgq:1', 'sdss17', 'u_g', 8, 10)")
        for q in (0.1, 0.9):
            conn.execute(
                "SELECT skyclass.partial_dependence('sgq:1', 'sdss17', 'u_g', 6, 0, 'g_r', %s)",
                (q,),
            )
    with psycopg.connect(queue_db) as conn:
        simulate(
            conn,
            "sdss_ugriz",
            "class",
            "QSO",
            SimulationSettings(
                start=100, step=100, rounds=1, seeds=2, model_params={"max_iter": 5}
            ),
        )
    # The anomaly list: a feature-set anomaly model on the same definition, scored in SQL.
    code, out = _invoke(
        queue_db,
        "anomaly",
        "fit",
        "oddities",
        "--feature-set",
        "sdss_ugriz",
        "--catalog",
        "sdss17",
        "--sample",
        "800",
    )
    assert code == 0, out
    code, out = _invoke(queue_db, "anomaly", "score", "oddities", "--catalog", "sdss17")
    assert code == 0, out
    files = make_report("sgq:1", tmp_path / "after", url=queue_db)
    page = files.html.read_text(encoding="utf-8")
    names = {p.name for p in files.pngs}
    assert {"explanations.png", "dependence.png", "learning_curves.png"} <= names
    for anchor in ('id="fig-explanations"', 'id="fig-dependence"', 'id="fig-learning_curves"'):
        assert anchor in page
    assert "Not shown yet" not in page
    assert page.count("<tr><td>") >= 3  # the explained objects' table
    with psycopg.connect(queue_db) as conn:
        learning = read_learning(conn, 1, "sgq:1")
        top = conn.execute(
            "SELECT a.rank, a.object_id, a.raw_score, a.percentile, c.known "
            "FROM skyclass.anomaly_rank('oddities', 'sdss17') AS a "
            "JOIN catalogs.sdss17 AS c USING (object_id) WHERE a.rank <= 10 ORDER BY a.rank"
        ).fetchall()
        qso_top = conn.execute(
            "SELECT count(*) FROM skyclass.anomaly_rank('oddities', 'sdss17') AS a "
            "JOIN catalogs.sdss17 AS c USING (object_id) WHERE a.rank <= 30 AND c.known = 'QSO'"
        ).fetchone()
        stored = conn.execute(
            "SELECT contributions FROM skyclass.explanation WHERE explanation_run_id = "
            "(SELECT max(explanation_run_id) FROM skyclass.explanation_run)"
        ).fetchall()
    # Explanations: the mean |contribution| of every feature to every class, over the
    # 30 explained objects (a 15-tree model leaves a few feature/class pairs at 0).
    contributions = np.abs(np.asarray([r[0] for r in stored], dtype=np.float64))
    assert len(stored) == 30 and learning.n_explained == 30
    assert learning.mean_abs.shape == (9, 3) and (learning.mean_abs.sum(axis=0) > 0).all()
    assert np.allclose(learning.mean_abs, contributions.reshape(30, 9, 3).mean(axis=0))
    assert learning.objects and learning.curves and learning.simulation
    # The anomaly list: the ten strangest objects in rank order, with their class.
    assert 'id="anomalies"' in page and "the anomaly model oddities:1" in page
    last = -1
    for rank, oid, score, pct, known in top:
        row = (
            f"<tr><td>{rank}</td><td>{oid}</td><td>{score:.3f}</td><td>{pct:.2f}</td>"
            f"<td>{known or '-'}</td>"
        )
        assert row in page, row
        assert page.index(row) > last
        last = page.index(row)
    assert "Top 1% (30 objects) by known: " in page
    assert f"QSO {100 * qso_top[0] / 30:.0f}% (catalog " in page
