"""Run the extension's pg_regress suite (src/pg_skyclass/test) against the test server.

The regression SQL needs real compiled models: this module registers them and
writes the fixture tables ``regress_model`` and ``regress_expected`` first.
To run the suite by hand (``make -C src/pg_skyclass installcheck``), prepare a
database with ``python -m tests.score.test_regress URL`` (see docs/extension.md).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import psycopg
import pytest

from skyclass.compile import compile_model_version
from skyclass.domain.ood import fit_ood_scorer
from skyclass.domain.ood_store import register_ood_forest
from skyclass.registry.models import resolve_version
from tests.score.conftest import (
    EXTENSION_DIR,
    _pg_config_value,
    prepare_scoring_database,
    register_cases,
)
from tests.score.models import N_FEATURES, case, sdss17
from tests.support.registry import register_test_model

REGRESS_DIR = EXTENSION_DIR / "test"
N_ROWS = 200
# fixture name -> (case, calibration method)
FIXTURE_MODELS = {
    "multiclass": ("hgb_multiclass", "identity"),
    "multiclass_temperature": ("hgb_multiclass", "temperature"),
    "multiclass_isotonic": ("hgb_multiclass", "isotonic"),
    "binary": ("hgb_binary", "isotonic"),
    "pdf": ("rf_pdf", "identity"),
}


def write_regress_fixture(url: str) -> None:
    """Register the fixture models and write regress_model and regress_expected at ``url``."""
    registered = register_cases(url, tuple(sorted({c for c, _ in FIXTURE_MODELS.values()})))
    x = sdss17().x_eval[:N_ROWS]
    with psycopg.connect(url, autocommit=True) as conn:
        uncompiled = register_test_model(
            conn,
            case("hgb_multiclass").estimator,
            classes=case("hgb_multiclass").classes,
            n_features=N_FEATURES,
            model="regress_uncompiled",
        )
        conn.execute(
            "CREATE TABLE regress_model (name text PRIMARY KEY, model_version bigint NOT NULL)"
        )
        conn.execute(
            "CREATE TABLE regress_expected (name text NOT NULL, row_id int NOT NULL, "
            "features real[] NOT NULL, proba float8[] NOT NULL, top_label text NOT NULL, "
            "PRIMARY KEY (name, row_id))"
        )
        conn.execute("INSERT INTO regress_model VALUES ('uncompiled', %s)", (uncompiled,))
        for name, (case_name, method) in FIXTURE_MODELS.items():
            c = case(case_name)
            conn.execute(
                "INSERT INTO regress_model VALUES (%s, %s)",
                (name, registered.versions[case_name][method]),
            )
            reference = c.reference(x, method)
            with conn.cursor().copy("COPY regress_expected FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["text", "int4", "float4[]", "float8[]", "text"])
                for i, (row, proba) in enumerate(zip(x, reference, strict=True)):
                    copy.write_row(
                        (
                            name,
                            i,
                            [float(v) for v in row],
                            [float(p) for p in proba],
                            c.classes[int(proba.argmax())],
                        )
                    )
    write_ood_fixture(url, registered.versions["hgb_multiclass"]["identity"])


def write_ood_fixture(url: str, parent: int) -> None:
    """The OOD forest of version ``parent`` (compiled) and table regress_raw of its outputs."""
    data = sdss17()
    x = data.x_eval[:N_ROWS].astype(np.float32)
    x[::17, 0] = np.nan  # NaN takes the training median (fill_missing)
    x[::23, 1] = 99.0  # beyond every training value: out of range
    with psycopg.connect(url, autocommit=True) as conn:
        version = resolve_version(conn, parent)
        names = tuple(f"x{i + 1}" for i in range(N_FEATURES))
        train = data.x_train[:2000].astype(np.float64)
        scorer = fit_ood_scorer(train, names, reference=data.x_train[2000:3000], seed=3)
        ood_version = register_ood_forest(conn, version, scorer, 2000, 1000, "regress", 0.0)
        compile_model_version(ood_version, conn=conn, opt_level="-O0")
        conn.execute(
            "CREATE TABLE regress_raw (row_id int PRIMARY KEY, features real[] NOT NULL, "
            "score float8 NOT NULL, percentile float8 NOT NULL, out_of_range boolean[] NOT NULL)"
        )
        scores = scorer.raw_score(x)
        percentiles = scorer.percentile(x)
        flags = scorer.out_of_range(x)
        with conn.cursor().copy("COPY regress_raw FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int4", "float4[]", "float8", "float8", "bool[]"])
            for i in range(len(x)):
                copy.write_row(
                    (
                        i,
                        [float(v) for v in x[i]],
                        float(scores[i]),
                        float(percentiles[i]),
                        [bool(f) for f in flags[i]],
                    )
                )


def pg_regress() -> Path:
    """The pg_regress program of the server's PGXS installation."""
    path = _pg_config_value("--pkglibdir") / "pgxs" / "src" / "test" / "regress" / "pg_regress"
    if not path.exists():
        pytest.fail(f"pg_regress not found at {path}: install postgresql-server-dev-15")
    return path


def run_pg_regress(url: str, outputdir: Path) -> subprocess.CompletedProcess[str]:
    """Run the suite against the database at ``url`` (with --use-existing)."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    argv = [
        str(pg_regress()),
        f"--inputdir={REGRESS_DIR}",
        f"--outputdir={outputdir}",
        f"--bindir={_pg_config_value('--bindir')}",
        "--use-existing",
        f"--dbname={info['dbname']}",
        f"--host={info.get('host', 'localhost')}",
        f"--port={info.get('port', 5432)}",
        f"--user={info.get('user', 'postgres')}",
        "skyclass",
    ]
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def test_pg_regress_suite(scoring_url: str, tmp_path: Path) -> None:
    write_regress_fixture(scoring_url)
    result = run_pg_regress(scoring_url, tmp_path)
    diffs = tmp_path / "regression.diffs"
    detail = diffs.read_text() if diffs.exists() else result.stdout + result.stderr
    assert result.returncode == 0, f"pg_regress failed:\n{detail[-6000:]}"


if __name__ == "__main__":
    # python -m tests.score.test_regress URL: prepare a database for `make installcheck`.
    from skyclass.db.migrate import upgrade

    target = sys.argv[1]
    upgrade(target)
    prepare_scoring_database(target)
    write_regress_fixture(target)
    print(f"prepared {psycopg.conninfo.conninfo_to_dict(target)['dbname']} for pg_regress")
