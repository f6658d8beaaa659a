"""Drift by sky region and magnitude on real SDSS17 data with a shift injected in one sky box.

A quarter of the bundled SDSS17 objects (chosen at random) is the training
catalog of a small star/galaxy/QSO model; the other three quarters, with
their real positions, are the catalog ``sky`` that the deployment scores.
Run 1 scores it, run 2 scores it again unchanged, then the u magnitude (and
so the u-g colour) of every object in the box RA 120-150, Dec 20-42 is made
0.5 mag fainter in the feature table, as a photometric calibration error in
one area would, and run 3 scores it. Every run must have drift rows; run 2
must show no drift against run 1; run 3 must raise alerts against run 2 in
the regions of the box and nowhere else.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest
from click.testing import CliRunner

from skyclass.cli import main
from skyclass.compile.store import compile_model_version
from skyclass.domain.drift import drift_report
from skyclass.domain.errors import DomainError
from skyclass.score.deploy import deploy
from skyclass.score.jobs import score_catalog
from skyclass.train.pipeline import train_model
from skyclass.train.snapshot import create_snapshot
from tests.conftest import drop_database, new_database
from tests.score.conftest import ensure_extension_installed
from tests.train.pipeline_data import SDSS_SPEC, build_features, ingest_sdss

BOX = (120.0, 150.0, 20.0, 42.0)  # RA min, RA max, Dec min, Dec max
SHIFT = 0.5  # mag added to u (and so to u - g)


@dataclass(frozen=True)
class Scored:
    """The database and its three runs: unshifted, unshifted again, shifted."""

    url: str
    runs: tuple[int, int, int]
    box_share: dict[int, float]  # HEALPix region -> share of its objects in the box
    region_size: dict[int, int]


def _in_box(alias: str = "c") -> str:
    ra0, ra1, dec0, dec1 = BOX
    return f"{alias}.ra BETWEEN {ra0} AND {ra1} AND {alias}.dec BETWEEN {dec0} AND {dec1}"


@pytest.fixture(scope="module")
def scored(
    server_url: str, template_url: str, shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scored]:
    ensure_extension_installed()
    url = new_database(server_url)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS skyclass")
        tmp = tmp_path_factory.mktemp("drift")
        path = (
            shared_data
            / "sdss17_stellar_classification"
            / "sdss17_star_classification_99999.csv.gz"
        )
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        train = np.random.default_rng(7).random(len(frame)) < 0.25
        frame[train].to_csv(tmp / "train.csv", index=False)
        frame[~train].to_csv(tmp / "sky.csv", index=False)
        ingest_sdss(tmp / "train.csv", url, name="sdss_train")
        ingest_sdss(tmp / "sky.csv", url, name="sky")
        built = build_features(SDSS_SPEC.read_text(), url, catalog="sdss_train")
        build_features(SDSS_SPEC.read_text(), url, catalog="sky")
        snap = create_snapshot(built, "class", n_folds=3, seed=0, url=url)
        train_model(
            "sgq",
            snap.snapshot_id,
            params={"max_iter": 30},
            baselines=(),
            importance=False,
            url=url,
        )
        compile_model_version("sgq:1", url=url)
        deploy("sgq_current", "sgq:1", url=url)
        first = score_catalog("sgq_current", "sky", workers=1, url=url).run_id
        second = score_catalog("sgq_current", "sky", workers=1, url=url).run_id
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT f.table_name FROM skyclass.feature_set AS f WHERE f.catalog_name = 'sky'"
            ).fetchone()
            assert row is not None
            shifted = conn.execute(
                f"UPDATE features.{row[0]} AS f SET x[1] = f.x[1] + {SHIFT}, "
                f"x[6] = f.x[6] + {SHIFT} FROM catalogs.sky AS c "
                f"WHERE c.object_id = f.object_id AND {_in_box()}"
            ).rowcount
            assert shifted > 1000
            share = conn.execute(
                f"SELECT skyclass.healpix_ring(4, c.ra, c.dec), avg(({_in_box()})::int), count(*) "
                "FROM catalogs.sky AS c GROUP BY 1"
            ).fetchall()
        third = score_catalog("sgq_current", "sky", workers=1, url=url).run_id
        yield Scored(
            url,
            (first, second, third),
            {int(r[0]): float(r[1]) for r in share},
            {int(r[0]): int(r[2]) for r in share},
        )
    finally:
        drop_database(server_url, url)


def _rows(url: str, run: int, where: str = "true") -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT reference, scope, bin, quantity, metric, value, level, n_objects "
            f"FROM skyclass.drift WHERE run_id = %s AND {where}",
            (run,),
        ).fetchall()


def test_every_run_has_drift_rows(scored: Scored) -> None:
    with psycopg.connect(scored.url) as conn:
        runs = conn.execute(
            "SELECT d.run_id, d.previous_run_id, d.nside, d.n_objects, d.sample_fraction, "
            "(SELECT count(*) FROM skyclass.drift AS x WHERE x.run_id = d.run_id), "
            "(SELECT count(*) FROM skyclass.drift_summary AS s WHERE s.run_id = d.run_id "
            " AND s.scope = 'region') "
            "FROM skyclass.drift_run AS d ORDER BY d.run_id"
        ).fetchall()
        scored_objects = conn.execute("SELECT count(*) FROM catalogs.sky").fetchone()
    first, second, third = scored.runs
    assert [r[0] for r in runs] == [first, second, third]
    assert [r[1] for r in runs] == [None, first, second]
    assert scored_objects is not None
    for _, _, nside, n, fraction, n_drift, n_regions in runs:
        assert nside == 4 and n == scored_objects[0] and fraction == 1.0
        assert n_drift > 0
        assert n_regions == len(scored.region_size)
    # the first run has only the training comparison; the others both
    assert {r[0] for r in _rows(scored.url, first)} == {"training"}
    assert {r[0] for r in _rows(scored.url, second)} == {"training", "previous_run"}


def test_summaries_add_up(scored: Scored) -> None:
    """Regions and magnitude bins each partition the run's objects; class counts add up."""
    with psycopg.connect(scored.url) as conn:
        sums = conn.execute(
            "SELECT scope, sum(n_objects), sum((SELECT sum(c) FROM unnest(class_counts) AS c)), "
            "sum(n_sampled) FROM skyclass.drift_summary WHERE run_id = %s GROUP BY scope",
            (scored.runs[0],),
        ).fetchall()
        sizes = dict(
            conn.execute(
                "SELECT bin, n_objects FROM skyclass.drift_summary "
                "WHERE run_id = %s AND scope = 'region'",
                (scored.runs[0],),
            ).fetchall()
        )
    total = {s: (int(n), int(c), int(m)) for s, n, c, m in sums}
    n_all = total["all"][0]
    for scope in ("all", "region", "magnitude"):
        assert total[scope] == (n_all, n_all, n_all), scope
    assert sizes == scored.region_size


def test_an_unchanged_rerun_shows_no_drift_against_the_previous_run(scored: Scored) -> None:
    rows = _rows(scored.url, scored.runs[1], "reference = 'previous_run'")
    assert len(rows) > 100
    # histograms of the same objects are equal; a mean differs by float summation order only
    moved = [r for r in rows if (r[5] > 1e-6 if r[4] == "abs_change" else r[5] != 0.0)]
    assert not moved, moved[:5]
    assert {r[6] for r in rows} <= {"ok", "low_count"}


def test_a_shift_in_one_box_alerts_its_regions_and_no_other(scored: Scored) -> None:
    rows = _rows(scored.url, scored.runs[2], "reference = 'previous_run' AND scope = 'region'")
    flagged = {r[2] for r in rows if r[6] in ("warn", "alert")}
    alerted_u = {r[2] for r in rows if r[6] == "alert" and r[3] in ("u", "u_g")}
    mostly_in_box = {
        k for k, share in scored.box_share.items() if share >= 0.5 and scored.region_size[k] >= 500
    }
    assert mostly_in_box, scored.box_share
    # every region mostly inside the box alerts on u or u - g ...
    assert mostly_in_box <= alerted_u, (mostly_in_box, alerted_u)
    # ... and nothing is flagged in a region without shifted objects
    untouched = {k for k, share in scored.box_share.items() if share == 0}
    assert not flagged & untouched, sorted(flagged & untouched)
    assert all(r[5] == 0.0 for r in rows if r[2] in untouched and r[4] == "psi")
    # the other features did not move where nothing was shifted, nor g, r, i, z anywhere
    assert all(r[5] == 0.0 for r in rows if r[3] in ("g", "r", "i", "z", "g_r", "r_i", "i_z"))


def test_the_shift_moves_the_box_away_from_the_training_data(scored: Scored) -> None:
    before = {
        (r[2], r[4]): r[5]
        for r in _rows(
            scored.url,
            scored.runs[1],
            "reference = 'training' AND quantity = 'u' AND scope = 'region'",
        )
    }
    after = {
        (r[2], r[4]): r[5]
        for r in _rows(
            scored.url,
            scored.runs[2],
            "reference = 'training' AND quantity = 'u' AND scope = 'region'",
        )
    }
    for (region, metric), value in after.items():
        share = scored.box_share[region]
        if share == 0:
            assert value == before[(region, metric)]
        elif share >= 0.5 and scored.region_size[region] >= 500 and metric == "psi":
            # from no drift to at least a warning (PSI >= 0.1) against the training data
            assert before[(region, metric)] < 0.1 <= value, (region, before, value)


def test_the_cli_and_the_sql_function_report_the_box(scored: Scored) -> None:
    runner = CliRunner()
    env = {"SKYCLASS_DATABASE_URL": scored.url}
    out = runner.invoke(
        main, ["drift", "sgq_current", "--catalog", "sky", "--format", "json"], env=env
    )
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["run_id"] == scored.runs[2]
    assert data["counts"].get("alert", 0) > 0
    assert all(r["level"] in ("warn", "alert") for r in data["rows"])
    # worst region against the previous run lies in the box
    previous = [
        r for r in data["rows"] if r["reference"] == "previous_run" and r["scope"] == "region"
    ]
    assert previous and scored.box_share[previous[0]["bin"]] > 0
    with psycopg.connect(scored.url) as conn:
        sql_rows = conn.execute(
            "SELECT reference, scope, bin, quantity, metric, level FROM "
            "skyclass.drift_alerts('sgq_current', 'sky')"
        ).fetchall()
    assert [tuple(r) for r in sql_rows] == [
        (r["reference"], r["scope"], r["bin"], r["quantity"], r["metric"], r["level"])
        for r in data["rows"]
    ]
    table = runner.invoke(
        main, ["drift", "sgq_current", "--catalog", "sky", "--run", str(scored.runs[1])], env=env
    )
    assert table.exit_code == 0, table.output
    assert f"scoring run {scored.runs[1]}" in table.output and "worst regions" in table.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sgq_current", "--catalog", "nowhere"], "no catalog named 'nowhere'"),
        (["nobody", "--catalog", "sky"], "no deployment named 'nobody'"),
        (["sgq_current", "--catalog", "sky", "--run", "999999"], "is not a run of sgq_current"),
        (["sgq_current", "--catalog", "sdss_train"], "has no scoring run with drift"),
    ],
)
def test_the_cli_names_what_is_missing(scored: Scored, args: list[str], message: str) -> None:
    out = CliRunner().invoke(main, ["drift", *args], env={"SKYCLASS_DATABASE_URL": scored.url})
    assert out.exit_code == 1 and message in out.output, out.output


def test_recording_again_gives_the_same_rows_and_bad_calls_change_nothing(scored: Scored) -> None:
    run = scored.runs[2]
    before = sorted(_rows(scored.url, run))
    with psycopg.connect(scored.url, autocommit=True) as conn:
        n = conn.execute("SELECT skyclass.record_run_drift(%s)", (run,)).fetchone()
        assert n == (len(before),)
        for call, state in (
            ("SELECT skyclass.record_run_drift(NULL)", psycopg.errors.InvalidParameterValue),
            ("SELECT skyclass.record_run_drift(-5)", psycopg.errors.UndefinedObject),
            (f"SELECT skyclass.record_run_drift({run}, 10)", psycopg.errors.InvalidParameterValue),
        ):
            with pytest.raises(state):
                conn.execute(call)
    assert sorted(_rows(scored.url, run)) == before
    with psycopg.connect(scored.url) as conn, pytest.raises(DomainError, match="min_level"):
        drift_report(conn, "sgq_current", "sky", min_level="loud")


def test_the_report_shows_a_sky_map_and_a_magnitude_plot(scored: Scored, tmp_path: Path) -> None:
    from skyclass.report import make_report

    files = make_report("sgq:1", tmp_path / "report", url=scored.url)
    names = {p.name for p in files.pngs}
    assert {"drift_sky.png", "drift_magnitude.png"} <= names
    page = files.html.read_text(encoding="utf-8")
    assert "Drift by sky region" in page and "Drift by magnitude" in page
    drift = files.data.drift
    assert drift is not None and drift.run_id == scored.runs[2]
    assert drift.previous_run_id == scored.runs[1]
    assert sum(r.n_objects for r in drift.regions) == sum(scored.region_size.values())
    # the box's regions carry the largest change against the previous run
    worst = max((r for r in drift.regions if r.previous is not None), key=lambda r: r.previous or 0)
    assert scored.box_share[worst.bin] > 0


def test_a_sample_summarises_the_same_objects_every_time(scored: Scored) -> None:
    """With sample_size below the run's size: a fixed hash sample, exact overall count."""
    run = scored.runs[2]

    def summary() -> list[tuple]:
        with psycopg.connect(scored.url) as conn:
            return conn.execute(
                "SELECT scope, bin, n_objects, n_sampled, feature_counts, class_counts "
                "FROM skyclass.drift_summary WHERE run_id = %s ORDER BY scope, bin",
                (run,),
            ).fetchall()

    try:
        with psycopg.connect(scored.url, autocommit=True) as conn:
            conn.execute("SELECT skyclass.record_run_drift(%s, 10000)", (run,))
            fraction = conn.execute(
                "SELECT sample_fraction, n_objects FROM skyclass.drift_run WHERE run_id = %s",
                (run,),
            ).fetchone()
        first = summary()
        with psycopg.connect(scored.url, autocommit=True) as conn:
            conn.execute("SELECT skyclass.record_run_drift(%s, 10000)", (run,))
        assert summary() == first
        assert fraction is not None and fraction[0] == pytest.approx(10_000 / fraction[1])
        overall = next(r for r in first if r[0] == "all")
        assert overall[2] == fraction[1]  # the whole run's count, exact
        assert abs(overall[3] - 10_000) < 400  # the sample: 10,000 +- 4 sigma
        regions = [r for r in first if r[0] == "region"]
        assert sum(r[3] for r in regions) == overall[3]
        # estimated region counts scale the sample back up to the run
        assert abs(sum(r[2] for r in regions) - fraction[1]) < 0.01 * fraction[1]
    finally:
        with psycopg.connect(scored.url, autocommit=True) as conn:
            conn.execute("SELECT skyclass.record_run_drift(%s)", (run,))
