"""``skyclass explain`` and ``skyclass.partial_dependence`` on real SDSS17 rows.

A module database holds a 2,000-object SDSS17 slice, its ugriz features and a
small compiled star/galaxy/QSO model, scored in the database. Stored
explanations must add up to the compiled model's margins and rank the classes
as the stored predictions do; the curves must be the compiled model's own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import psycopg
import pytest
from click.testing import CliRunner

from skyclass.cli import main
from skyclass.compile.store import compile_model_version
from skyclass.features.build import build_feature_set
from skyclass.ingest import ingest_file
from skyclass.score.jobs import score_catalog
from skyclass.train.pipeline import train_model
from skyclass.train.snapshot import create_snapshot
from tests.conftest import drop_database, new_database
from tests.docs.conftest import EXAMPLE_SPEC, _slice

TARGET = "sgq:1"
TABLES = ("explanation_run", "explanation", "dependence_run", "dependence_curve")


@pytest.fixture(scope="module")
def explain_db(
    server_url: str, template_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Catalog sdss17 (2,000 objects), features, model sgq:1 compiled and scored."""
    url = new_database(server_url)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS skyclass")
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("SKYCLASS_DATABASE_URL", url)
            data = tmp_path_factory.mktemp("explain-data") / "sdss17_slice.csv"
            _slice(data, 2000, seed=9)
            ingest_file(
                data, "sdss17", id_column="orig_row", ra_column="alpha", dec_column="delta", url=url
            )
            feature_set = build_feature_set(EXAMPLE_SPEC, url=url).feature_set_id
            snapshot = create_snapshot(feature_set, "class", n_folds=2, seed=1, url=url)
            result = train_model(
                "sgq",
                snapshot.snapshot_id,
                params={"max_iter": 20, "max_leaf_nodes": 7},
                baselines=(),
                importance=False,
                url=url,
            )
            compile_model_version(result.model_version_id, url=url, opt_level="-O0")
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("SELECT skyclass.deploy('sgq', %s)", (result.model_version_id,))
            score_catalog("sgq", "sdss17", workers=1, scorer="database", url=url)
        yield url
    finally:
        drop_database(server_url, url)


def _counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {
            t: int(conn.execute(f"SELECT count(*) FROM skyclass.{t}").fetchone()[0])  # type: ignore[index]
            for t in TABLES
        }


def _invoke(url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env={"SKYCLASS_DATABASE_URL": url})
    return result.exit_code, result.output


def test_stored_explanations_add_up_and_rank_classes_as_the_predictions(explain_db: str) -> None:
    code, out = _invoke(
        explain_db,
        "explain",
        TARGET,
        "--catalog",
        "sdss17",
        "--where",
        "r < 19",
        "--limit",
        "40",
        "--format",
        "json",
    )
    assert code == 0, out
    record = json.loads(out)
    assert len(record["objects"]) == 40
    run_id = record["explanation_run_id"]
    with psycopg.connect(explain_db) as conn:
        rows = conn.execute(
            "SELECT e.object_id, e.margin, e.contributions, r.base, r.output_names, "
            "r.feature_names, p.top_label, p.probabilities "
            "FROM skyclass.explanation AS e JOIN skyclass.explanation_run AS r "
            "USING (explanation_run_id) "
            "JOIN skyclass.current_classification AS p ON p.object_id = e.object_id "
            "AND p.model_version_id = r.model_version_id "
            "WHERE e.explanation_run_id = %s",
            (run_id,),
        ).fetchall()
        r_mags = conn.execute(
            "SELECT max(r) FROM catalogs.sdss17 WHERE object_id = ANY(%s)",
            ([row[0] for row in rows],),
        ).fetchone()
    assert len(rows) == 40 and r_mags is not None and r_mags[0] < 19
    for object_id, margin, contributions, base, outputs, features, top_label, proba in rows:
        c = np.asarray(contributions).reshape(len(features), len(outputs))
        # base + sum of contributions = margin (the sum test)
        assert np.abs(np.asarray(base) + c.sum(axis=0) - np.asarray(margin)).max() < 1e-4
        # the margins rank the classes as the stored (calibrated) prediction does
        assert outputs[int(np.argmax(margin))] == top_label, object_id
        assert np.argsort(margin).tolist() == np.argsort(proba).tolist(), object_id


def test_one_object_from_sql_and_a_clear_error_when_none_is_stored(explain_db: str) -> None:
    with psycopg.connect(explain_db) as conn:
        oid = int(conn.execute("SELECT min(object_id) FROM catalogs.sdss17").fetchone()[0])  # type: ignore[index]
    code, out = _invoke(explain_db, "explain", TARGET, "--catalog", "sdss17", "--ids", str(oid))
    assert code == 0, out
    assert f"object {oid}: top output" in out
    with psycopg.connect(explain_db) as conn:
        rows = conn.execute(
            "SELECT class_name, feature, feature_value, contribution, base, margin "
            "FROM skyclass.explain_object(%s, 'sdss17', %s)",
            (TARGET, oid),
        ).fetchall()
        features = conn.execute(
            "SELECT u, g FROM catalogs.sdss17 WHERE object_id = %s", (oid,)
        ).fetchone()
        assert features is not None
        by_class: dict[str, list[tuple]] = {}
        for row in rows:
            by_class.setdefault(row[0], []).append(row)
        assert sorted(by_class) == ["GALAXY", "QSO", "STAR"]
        for class_rows in by_class.values():
            assert len(class_rows) == 9
            total = class_rows[0][4] + sum(r[3] for r in class_rows)
            assert abs(total - class_rows[0][5]) < 1e-4
            # largest contribution first
            sizes = [abs(r[3]) for r in class_rows]
            assert sizes == sorted(sizes, reverse=True)
        values = {r[1]: r[2] for r in rows}
        assert values["u"] == pytest.approx(features[0], abs=1e-4)
        with pytest.raises(psycopg.errors.NoDataFound, match="no stored explanation") as info:
            conn.execute("SELECT * FROM skyclass.explain_object(%s, 'sdss17', -5)", (TARGET,))
        assert "skyclass explain" in (info.value.diag.message_hint or "")


def test_bad_requests_name_the_problem_and_store_nothing(explain_db: str) -> None:
    before = _counts(explain_db)
    cases = [
        (("--ids", "1,2,x"), "Invalid value for '--ids': object ids separated"),
        (("--ids", "-77"), "have no features in catalog 'sdss17': -77"),
        (("--where", "no_such_column > 1"), "cannot select objects"),
        (("--where", "r > 99"), "no object of catalog"),
    ]
    for extra, message in cases:
        code, out = _invoke(explain_db, "explain", TARGET, "--catalog", "sdss17", *extra)
        assert code != 0 and message in out, (extra, out)
    code, out = _invoke(explain_db, "explain", TARGET, "--catalog", "nope", "--ids", "1")
    assert code != 0 and "catalog 'nope' is not registered" in out
    code, out = _invoke(explain_db, "explain", "nomodel:3", "--catalog", "sdss17", "--ids", "1")
    assert code != 0 and "no version 3" in out
    # the WHERE clause runs read-only: it cannot write
    code, out = _invoke(
        explain_db,
        "explain",
        TARGET,
        "--catalog",
        "sdss17",
        "--where",
        "(SELECT count(*) FROM (SELECT nextval('skyclass.no_such_seq')) AS s) > 0",
    )
    assert code != 0
    assert _counts(explain_db) == before


def test_partial_dependence_in_the_database_is_the_compiled_models_own(explain_db: str) -> None:
    with psycopg.connect(explain_db) as conn:
        run = conn.execute(
            "SELECT skyclass.partial_dependence(%s, 'sdss17', 'u_g', 11, 30)", (TARGET,)
        ).fetchone()[0]  # type: ignore[index]
        meta = conn.execute(
            "SELECT grid, median_object, n_ice FROM skyclass.dependence_run "
            "WHERE dependence_run_id = %s",
            (run,),
        ).fetchone()
        assert meta is not None
        grid, median, n_ice = meta
        assert len(grid) == 11 and n_ice == 30 and grid == sorted(grid)
        counts = dict(
            conn.execute(
                "SELECT curve, count(*) FROM skyclass.dependence_curve "
                "WHERE dependence_run_id = %s GROUP BY curve",
                (run,),
            ).fetchall()
        )
        assert counts == {"pd": 33, "median": 33, "ice": 30 * 33}
        # The median curve is the compiled model on the median object with u_g on the grid.
        u_g = 5  # 0-based position of u_g in the sdss_ugriz features
        x = list(median)
        x[u_g] = grid[3]
        direct = conn.execute(
            "SELECT skyclass.predict((SELECT model_version_id FROM skyclass.dependence_run "
            "WHERE dependence_run_id = %s), %s::real[])",
            (run, x),
        ).fetchone()[0]  # type: ignore[index]
        stored = dict(
            conn.execute(
                "SELECT class_name, probability FROM skyclass.dependence_curve "
                "WHERE dependence_run_id = %s AND curve = 'median' AND grid_index = 4",
                (run,),
            ).fetchall()
        )
        classes = conn.execute(
            "SELECT classes FROM skyclass.model_version AS v JOIN skyclass.dependence_run AS d "
            "USING (model_version_id) WHERE d.dependence_run_id = %s",
            (run,),
        ).fetchone()[0]  # type: ignore[index]
        for k, name in enumerate(classes):
            assert stored[name] == pytest.approx(direct[k], abs=1e-6)
        # pd = the mean of the ICE curves; probabilities sum to one along every curve
        gap = conn.execute(
            "SELECT max(abs(p.probability - i.mean)) FROM skyclass.dependence_curve AS p "
            "JOIN (SELECT class_name, grid_index, avg(probability) AS mean "
            "      FROM skyclass.dependence_curve WHERE dependence_run_id = %s AND curve = 'ice' "
            "      GROUP BY 1, 2) AS i USING (class_name, grid_index) "
            "WHERE p.dependence_run_id = %s AND p.curve = 'pd'",
            (run, run),
        ).fetchone()[0]  # type: ignore[index]
        assert gap < 1e-9
        sums = conn.execute(
            "SELECT min(s), max(s) FROM (SELECT sum(probability) AS s FROM "
            "skyclass.dependence_curve WHERE dependence_run_id = %s "
            "GROUP BY curve, object_id, grid_index) AS t",
            (run,),
        ).fetchone()
        assert sums is not None and abs(sums[0] - 1) < 1e-5 and abs(sums[1] - 1) < 1e-5
        # u - g separates quasars from stars: the QSO probability moves along the grid
        spread = conn.execute(
            "SELECT max(probability) - min(probability) FROM skyclass.dependence_curve "
            "WHERE dependence_run_id = %s AND curve = 'pd' AND class_name = 'QSO'",
            (run,),
        ).fetchone()[0]  # type: ignore[index]
        assert spread > 0.05
        # a second feature held at its 90th percentile
        run2 = conn.execute(
            "SELECT skyclass.partial_dependence(%s, 'sdss17', 'u_g', 5, 0, 'g_r', 0.9)",
            (TARGET,),
        ).fetchone()[0]  # type: ignore[index]
        held = conn.execute(
            "SELECT second_value, median_object[7], (SELECT percentile_cont(0.9) WITHIN GROUP "
            "(ORDER BY g - r) FROM catalogs.sdss17) FROM skyclass.dependence_run "
            "WHERE dependence_run_id = %s",
            (run2,),
        ).fetchone()
        assert held is not None and held[0] == held[1]
        assert held[0] == pytest.approx(held[2], abs=0.02)


def test_partial_dependence_refuses_bad_arguments_and_writes_nothing(explain_db: str) -> None:
    before = _counts(explain_db)
    bad = [
        ("('sgq:1', 'sdss17', 'colour', 10, 10)", "has no feature 'colour'"),
        ("('sgq:1', 'sdss17', 'u_g', 1, 10)", "grid_points must be between 2 and 200"),
        ("('sgq:1', 'sdss17', 'u_g', 10, -1)", "ice_objects must be between 0 and 1000"),
        ("('sgq:1', 'sdss17', 'u_g', 10, 10, 'g_r')", "go together"),
        ("('sgq:1', 'sdss17', 'u_g', 10, 10, 'u_g', 0.5)", "is not another feature"),
        ("('sgq:1', 'sdss17', 'u_g', 10, 10, 'g_r', 1.5)", "strictly between 0 and 1"),
        ("('sgq:1', 'nowhere', 'u_g')", "catalog 'nowhere' is not registered"),
    ]
    with psycopg.connect(explain_db, autocommit=True) as conn:
        for args, message in bad:
            with pytest.raises(psycopg.Error, match=message) as info:
                conn.execute(f"SELECT skyclass.partial_dependence{args}")
            if "not registered" not in message:
                assert info.value.sqlstate == "22023", args
    assert _counts(explain_db) == before
