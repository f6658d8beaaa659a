"""``skyclass catalog drop`` of an ingested, featured, trained and scored catalog: no orphans."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import psycopg

from skyclass.report.data import load_report_data
from tests.ingest.corpus import write_csv
from tests.registry.conftest import relations, run

SPEC = """\
name = "two_colours"
catalog = "alpha"

[[feature]]
name = "g_r"
expr = "g - r"

[[feature]]
name = "r"
expr = "r"
"""


def _state(url: str) -> tuple[int, ...]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM skyclass.catalog), "
            "(SELECT count(*) FROM skyclass.feature_set), "
            "(SELECT count(*) FROM skyclass.scoring_run), "
            "(SELECT count(*) FROM skyclass.scoring_schedule), "
            "(SELECT count(*) FROM skyclass.model_version), "
            "(SELECT count(*) FROM skyclass.prediction)"
        ).fetchone()
    assert row is not None
    return tuple(int(v) for v in row)


def test_drop_lists_dependents_refuses_and_cascades_without_orphans(
    skyclass_extension: None, db_url: str, tmp_path: Path
) -> None:
    rng = np.random.default_rng(5)
    n = 600
    kind = rng.integers(0, 2, n)
    r = rng.uniform(16, 20, n)
    columns = {
        "id": list(range(1, n + 1)),
        "ra": [float(v) for v in rng.uniform(0, 360, n)],
        "dec": [float(v) for v in rng.uniform(-60, 60, n)],
        "g": [float(v) for v in r + 0.3 + 0.8 * kind + rng.normal(0, 0.05, n)],
        "r": [float(v) for v in r],
        "class": ["star" if k else "galaxy" for k in kind],
    }
    spec = tmp_path / "two_colours.toml"
    spec.write_text(SPEC)
    before = relations(db_url)

    assert run(db_url, "ingest", str(write_csv(tmp_path / "a.csv", columns)), "-c", "alpha")[0] == 0
    code, out = run(
        db_url, "train", str(spec), "--model", "gal", "--label", "class", "--param", "max_iter=5",
        "--folds", "2", "--baselines", "dummy", "--no-importance", "--no-progress",
    )  # fmt: skip
    assert code == 0, out
    assert run(db_url, "compile", "gal:1")[0] == 0
    code, out = run(db_url, "score", "gal:1", "--catalog", "alpha")
    assert code == 0 and "600 objects of alpha scored" in out, out
    with psycopg.connect(db_url) as conn:
        conn.execute("SELECT skyclass.deploy('gal_current', 1)")
        # A schedule whose pg_cron job lives in another database (none runs here).
        conn.execute(
            "INSERT INTO skyclass.scoring_schedule (name, target, catalog_id, cron, "
            "cron_database, cron_jobname, cron_jobid, command) SELECT 'nightly', 'gal:1', "
            "catalog_id, '0 3 * * *', 'elsewhere', 'skyclass:x:nightly', 42, 'CALL ...' "
            "FROM skyclass.catalog WHERE name = 'alpha'"
        )
    scored = _state(db_url)
    # Two model versions: gal:1 and its OOD forest (gal_ood:1, fitted by `skyclass train`).
    assert scored == (1, 1, 1, 1, 2, 600)
    tables = relations(db_url)

    code, out = run(db_url, "catalog", "drop", "alpha")
    assert code == 1 and "add --yes --cascade to confirm" in out
    for expected in ("feature builds: two_colours:", "scoring runs: 1", "schedules: nightly",
                     "prediction tables: predictions.mv_1_c1_r1",
                     "deployments with predictions of it (they stay): gal_current",
                     "used by model versions (row kept, table dropped)"):  # fmt: skip
        assert expected in out, out
    code, out = run(db_url, "catalog", "drop", "alpha", "--yes")
    assert code == 1 and "has dependents" in out and "Add --cascade" in out
    # pg_cron's job elsewhere cannot be removed in this transaction: nothing changes.
    code, out = run(db_url, "catalog", "drop", "alpha", "--yes", "--cascade")
    assert code == 1 and "skyclass schedule remove NAME" in out
    assert _state(db_url) == scored and relations(db_url) == tables

    with psycopg.connect(db_url) as conn:
        conn.execute("DELETE FROM skyclass.scoring_schedule")
    code, out = run(db_url, "catalog", "drop", "alpha", "--yes", "--cascade")
    assert code == 0, out
    assert "dropped scoring runs: 1" in out and "dropped catalog alpha (catalogs.alpha)" in out
    # The model version, its snapshot and its feature build's row stay; nothing else does.
    assert _state(db_url) == (0, 1, 0, 0, 2, 0)
    with psycopg.connect(db_url) as conn:
        snapshot = conn.execute(
            "SELECT 'snapshots.' || table_name FROM skyclass.training_snapshot"
        ).fetchone()
        deployed = conn.execute("SELECT skyclass.deployed_version('gal_current')").fetchone()
    assert snapshot is not None and relations(db_url) == before | {snapshot[0]}
    assert deployed == (1,)
    code, out = run(db_url, "models", "show", "gal:1")
    assert code == 0, out
    report = load_report_data("gal:1", db_url)
    assert report.catalog["name"] == "alpha (dropped)" and report.loads == ()
