"""Scoring throughput: the model alone, SQL, the durable job, the client fallback, scikit-learn.

The catalog is the bundled SDSS17 sample (99,999 objects) replicated inside
PostgreSQL to about ``rows`` objects (copy k gets ids shifted by k * 10^6 and
its ugriz jittered by up to 0.01 mag, so that no two rows are identical); its
features are the shipped ``sdss_ugriz`` feature set (5 magnitudes and 4
colours) built in the database. The model is a realistic one: scikit-learn's
HistGradientBoostingClassifier, 100 iterations, 3 classes (GALAXY, QSO,
STAR), trained on 60,000 original objects, with an isotonic calibration
fitted on 20,000 others, compiled by ``skyclass.compile`` (-O2, its default)
and registered as a model version with its artifact. Variants, run side by
side in interleaved rounds (medians):

- ``a_raw_c``: the compiled library's ``predict`` in a tight C loop on every
  core (``bench/scoring_driver.c``, built here with gcc -O2): the physical
  limit, no calibration, no database;
- ``b_select``: ``SELECT sum((skyclass.predict(v, x))[1])`` over the feature
  table, with the server's default parallel settings: in-database scoring
  with nothing written;
- ``c_job``: ``skyclass score`` (:func:`skyclass.score.jobs.score_catalog`)
  with one session per core: a full scoring job with durable writes (fsync
  and synchronous commit on), chunk tables with their primary key, the
  partition swap and the run bookkeeping;
- ``c_call``: the same job as ``CALL skyclass.rescore(...)`` in one session
  (what pg_cron runs; ``CREATE TABLE AS`` per chunk may use parallel workers);
- ``d_client``: the same job with the client-side fallback scorer (binary COPY
  out, Treelite's interpreter GTIL on the version's checkpoint, one thread per
  session, numpy calibration, binary COPY in), one session per core; it
  never loads the artifact's library (issue 9, item 3);
- ``e_sklearn``: the rows exported with binary COPY, scikit-learn's
  ``predict_proba`` (all cores) and the same calibration in numpy, and the
  predictions written back with binary COPY into a new table with the same
  columns and primary key, in one transaction;
- ``f_ood_select``: the OOD percentile of every row (the version's OOD forest, an
  IsolationForest of 100 trees compiled like the model, through
  ``skyclass.predict_raw``, ``fill_missing`` and ``score_percentile``), nothing
  written: the OOD score's read path beside ``b_select``;
- ``g_ood_call``: ``CALL skyclass.refresh_ood(...)`` in one session: the durable
  OOD job (percentile, range flags, in_domain into ``skyclass.ood_score``) that
  follows a rescoring, beside ``c_call``.

Targets (issue 4): b >= 0.8 a; c >= 3 e; c >= 1.5 d. Also measured: compile
time and single-thread speed versus model size, and the model alone on one
client thread: GTIL (what ``d_client`` runs now) against TL2cgen's Python
predictor on the compiled library (what it ran before). Usage: ``.venv/bin/python
bench/bench_scoring.py [--quick] [--rows N] [--repeats N] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import format_table, interleaved, load_average, median, say, wall
from skyclass.features import build_feature_set, example_spec_path, feature_matrix, load_spec
from skyclass.ingest import ingest_file
from skyclass.ingest.copy_binary import (
    BIGINT,
    COPY_SIGNATURE,
    COPY_TRAILER,
    INTEGER,
    REAL,
    array_field,
    encode_rows,
    fixed_field,
    text_field,
)

CATALOG = "bench_scoring_sdss17"
SDSS_FILE = (
    Path(__file__).resolve().parents[1]
    / "src/skyclass/demo/data/sdss17_star_classification_99999.csv.gz"
)
DRIVER_SOURCE = Path(__file__).with_name("scoring_driver.c")
ID_STRIDE = 1_000_000
BANDS = ("u", "g", "r", "i", "z")
SEED = 20261121
CHUNK_SIZE = 50_000


@dataclass
class ScoringResult:
    """Medians, rates and ratios of one run, and the compile-size table."""

    rows: int
    repeats: int
    workers: int
    model: dict[str, Any]
    seconds: dict[str, float]
    rates: dict[str, float]
    ratios: dict[str, float]
    targets: dict[str, bool]
    all_seconds: dict[str, list[float]] = field(default_factory=dict)
    compile_sizes: list[dict[str, Any]] = field(default_factory=list)
    load_average: dict[str, list[float]] = field(default_factory=dict)
    # Median CPU seconds per variant: {"client": .., "server": .. or None, "total": ..}
    cpu: dict[str, dict[str, float | None]] = field(default_factory=dict)
    cpu_ratios: dict[str, float] = field(default_factory=dict)
    # The model alone on one client thread, rows/s: {"tl2cgen": .., "gtil": ..}
    client_predictors: dict[str, float] = field(default_factory=dict)
    # Bytes per prediction of the published run table and WAL per prediction of the jobs.
    storage: dict[str, float] = field(default_factory=dict)
    cpu_model: str = ""


# -- data -------------------------------------------------------------------------------------
def make_catalog(url: str, copies: int) -> int:
    """Ingest SDSS17 as :data:`CATALOG` and add ``copies - 1`` jittered copies; returns rows."""
    ingest_file(
        SDSS_FILE,
        CATALOG,
        id_column="orig_row",
        ra_column="alpha",
        dec_column="delta",
        description="bench_scoring: SDSS17 replicated with jittered photometry",
        url=url,
    )
    table = sql.Identifier("catalogs", CATALOG)
    with psycopg.connect(url, autocommit=True) as conn:
        if copies > 1:
            columns = conn.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = %s::regclass AND attnum > 1 AND NOT attisdropped ORDER BY attnum",
                (f"catalogs.{CATALOG}",),
            ).fetchall()
            values = [
                sql.SQL("(c.{0} + (random() - 0.5) * 0.02)::{1}").format(
                    sql.Identifier(name), sql.SQL(pg_type)
                )
                if name in BANDS
                else sql.SQL("c.{}").format(sql.Identifier(name))
                for name, pg_type in columns
            ]
            conn.execute(
                sql.SQL(
                    "INSERT INTO {t} SELECT c.object_id + k * {stride}, {values} FROM {t} AS c, "
                    "generate_series(1, {last}) AS k"
                ).format(
                    t=table,
                    stride=sql.Literal(ID_STRIDE),
                    values=sql.SQL(", ").join(values),
                    last=sql.Literal(copies - 1),
                )
            )
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(table))
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
    return int(row[0]) if row else 0


def train_model(url: str, feature_set: Any, iterations: int = 100) -> tuple[Any, Any, Any, Any]:
    """The HistGradientBoosting model, its isotonic calibration, classes and training rows."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from skyclass.train.calibration import fit_calibration

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT object_id, class FROM {} WHERE object_id < %s ORDER BY object_id"
            ).format(sql.Identifier("catalogs", CATALOG)),
            (ID_STRIDE,),
        ).fetchall()
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    labels = np.array([r[1] for r in rows])
    _, x = feature_matrix(feature_set, ids, url=url)
    rng = np.random.default_rng(SEED)
    order = rng.permutation(len(ids))
    train, calib = order[:60_000], order[60_000:80_000]
    model = HistGradientBoostingClassifier(
        max_iter=iterations, early_stopping=False, random_state=SEED
    ).fit(x[train], labels[train])
    calibration = fit_calibration(
        "isotonic", model.predict_proba(x[calib]), labels[calib], model.classes_
    )
    return model, calibration, [str(c) for c in model.classes_], x[train]


def register(
    url: str, model: Any, calibration: Any, classes: list[str], feature_set_id: int
) -> tuple[int, dict[str, Any]]:
    """Register and compile the model version (the test registry's minimal provenance rows)."""
    from tests.support.registry import register_test_model

    with psycopg.connect(url, autocommit=True) as conn:
        version = register_test_model(
            conn,
            model,
            classes=classes,
            n_features=9,
            calibration=calibration,
            feature_set=feature_set_id,
            model="bench_sgq",
            compiled=True,
        )
        row = conn.execute(
            "SELECT compile_seconds, length(library), compiler_flags FROM skyclass.model_artifact "
            "WHERE model_version_id = %s",
            (version,),
        ).fetchone()
    assert row is not None
    return version, {
        "estimator": "HistGradientBoostingClassifier(max_iter=100, early_stopping=False)",
        "classes": classes,
        "calibration": "isotonic",
        "compile_seconds": float(row[0]),
        "library_bytes": int(row[1]),
        "compiler_flags": str(row[2]),
    }


# -- the raw model in C -------------------------------------------------------------------------
def register_ood(url: str, version: int, x_train: Any) -> dict[str, Any]:
    """Fit the version's OOD forest on the training rows, register and compile it (-O2)."""
    from skyclass.compile import compile_model_version
    from skyclass.domain.ood import fit_ood_scorer
    from skyclass.domain.ood_store import register_ood_forest
    from skyclass.registry.models import resolve_version

    x = np.asarray(x_train, dtype=np.float64)
    half = len(x) * 3 // 4
    names = tuple(f"f{i}" for i in range(x.shape[1]))
    scorer = fit_ood_scorer(x[:half], names, reference=x[half:])
    with psycopg.connect(url, autocommit=True) as conn:
        ood_version = register_ood_forest(
            conn, resolve_version(conn, version), scorer, half, len(x) - half, "bench", 0.0
        )
        clock = time.perf_counter()
        compile_model_version(ood_version, conn=conn)
        return {"ood_version": ood_version, "compile_seconds": time.perf_counter() - clock}


def build_driver(directory: Path) -> Path:
    """Compile bench/scoring_driver.c (gcc -O2 -pthread)."""
    binary = directory / "scoring_driver"
    subprocess.run(
        [
            "gcc",
            "-O2",
            "-std=c99",
            "-pthread",
            "-o",
            str(binary),
            str(DRIVER_SOURCE),
            "-ldl",
            "-lm",
        ],
        check=True,
    )
    return binary


def library_file(url: str, version: int, directory: Path) -> Path:
    """The artifact's library bytes in a file (the driver dlopens it)."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT library FROM skyclass.model_artifact WHERE model_version_id = %s", (version,)
        ).fetchone()
    assert row is not None
    path = directory / f"model_{version}.so"
    path.write_bytes(bytes(row[0]))
    return path


def run_driver(driver: Path, library: Path, features: Path, rows: int, threads: int) -> float:
    """Seconds the driver took to score ``rows`` rows on ``threads`` threads."""
    out = subprocess.run(
        [str(driver), str(library), str(features), str(rows), "9", str(threads)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.split()[0])


def client_predictors(
    model: Any, library: Path, x: npt.NDArray[np.float32], repeats: int
) -> dict[str, float]:
    """Rows/s of the model alone on one client thread, raw outputs, best of ``repeats``.

    ``gtil``: Treelite's interpreter on the model's Treelite form plus the
    softmax of :class:`skyclass.score.fallback.ClientScorer` (the client scorer
    since issue 9); ``tl2cgen``: TL2cgen's Python predictor on the compiled
    library (the client scorer before).
    """
    import tl2cgen
    import treelite.gtil

    from skyclass.compile.checkpoint import import_estimator
    from skyclass.score.fallback import softmax

    data = np.ascontiguousarray(x, dtype=np.float64)
    tree_model = import_estimator(model)
    predictor = tl2cgen.Predictor(str(library), nthread=1)
    matrix = tl2cgen.DMatrix(data, missing=np.nan)

    def best(run: Any) -> float:
        times = []
        for _ in range(repeats):
            clock = wall()
            run()
            times.append(wall() - clock)
        return len(data) / min(times)

    return {
        "tl2cgen": best(lambda: predictor.predict(matrix)),
        "gtil": best(
            lambda: softmax(treelite.gtil.predict(tree_model, data, nthread=1, pred_margin=True))
        ),
    }


# -- CPU accounting ------------------------------------------------------------------------------
def _ticks(stat_line: str) -> tuple[int, int, int]:
    """(ppid, own utime+stime, reaped children's cutime+cstime) of a /proc/PID/stat line."""
    fields = stat_line.rsplit(")", 1)[1].split()
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


class CpuMeter:
    """CPU seconds used by the benchmark process and by the PostgreSQL server.

    Wall time on a shared 2-core machine depends on what else runs; CPU seconds
    much less so. The server's figure sums its live processes (backends,
    parallel workers, checkpointer, WAL writer) and the CPU the postmaster
    collected from those that exited. Needs the server on this machine (its
    ``postmaster.pid`` readable); otherwise only the client side is counted.
    """

    def __init__(self, url: str) -> None:
        self.postmaster: int | None = None
        try:
            with psycopg.connect(url) as conn:
                row = conn.execute("SHOW data_directory").fetchone()
            pid_file = Path(str(row[0]) if row else "") / "postmaster.pid"
            self.postmaster = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError, psycopg.Error):
            self.postmaster = None
        self.hz = os.sysconf("SC_CLK_TCK")

    def server(self) -> float | None:
        """The server's CPU seconds so far (None when it is not on this machine)."""
        if self.postmaster is None:
            return None
        total = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                ppid, own, children = _ticks((entry / "stat").read_text())
            except (OSError, IndexError, ValueError):
                continue  # exited meanwhile
            if int(entry.name) == self.postmaster:
                total += children
            elif ppid == self.postmaster:
                total += own
        return total / self.hz

    @staticmethod
    def client() -> float:
        """This process's CPU seconds so far, with its finished subprocesses."""
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system


@dataclass
class Measure:
    """Wall and CPU seconds of one measured stretch (see :meth:`ScoringBench.measure`)."""

    wall: float = 0.0
    client_cpu: float = 0.0
    server_cpu: float | None = None
    wal_bytes: int | None = None


# -- the variants -------------------------------------------------------------------------------
class ScoringBench:
    """The variants; each returns the seconds it measured."""

    def __init__(
        self,
        url: str,
        version: int,
        feature_set: Any,
        rows: int,
        workers: int,
        model: Any,
        calibration: Any,
        classes: list[str],
        tools: tuple[Path, Path, Path],
    ) -> None:
        self.url = url
        self.version = version
        self.feature_set = feature_set
        self.rows = rows
        self.workers = workers
        self.model = model
        self.calibration = calibration
        self.classes = classes
        self.driver, self.library, self.features = tools
        self.meter = CpuMeter(url)
        self.measures: dict[str, list[Measure]] = {}

    @contextlib.contextmanager
    def measure(self, name: str) -> Iterator[Measure]:
        """Wall and CPU seconds of the block, recorded under ``name``."""
        m = Measure()
        lsn = self._lsn()
        server, client = self.meter.server(), self.meter.client()
        clock = wall()
        yield m
        m.wall = wall() - clock
        m.client_cpu = self.meter.client() - client
        after = self.meter.server()
        m.server_cpu = None if server is None or after is None else after - server
        m.wal_bytes = self._wal_since(lsn)
        self.measures.setdefault(name, []).append(m)

    def _lsn(self) -> str:
        with psycopg.connect(self.url) as conn:
            row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        return str(row[0]) if row else "0/0"

    def _wal_since(self, lsn: str) -> int:
        with psycopg.connect(self.url) as conn:
            row = conn.execute(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)::bigint", (lsn,)
            ).fetchone()
        return int(row[0]) if row else 0

    def variants(self) -> dict[str, Any]:
        return {
            "a_raw_c": self._raw,
            "b_select": self._select,
            "c_job": lambda: self._job("database"),
            "c_job_sql": self._job_sql,
            "c_call": self._call,
            "d_client": lambda: self._job("client"),
            "e_sklearn": self._sklearn,
            "f_ood_select": self._ood_select,
            "g_ood_call": self._ood_call,
        }

    def _ood_select(self) -> float:
        query = sql.SQL(
            "SELECT count(*), sum(skyclass.score_percentile((skyclass.predict_raw(o.ood_version_id,"
            " skyclass.fill_missing(f.x, o.fill)))[1], o.reference)) "
            "FROM {} AS f, skyclass.ood_model AS o WHERE o.model_version_id = %s"
        ).format(self.feature_set.table_identifier())
        with psycopg.connect(self.url) as conn, self.measure("f_ood_select") as m:
            row = conn.execute(query, (self.version,)).fetchone()
        assert row is not None and row[0] == self.rows
        return m.wall

    def _ood_call(self) -> float:
        self._checkpoint()
        with psycopg.connect(self.url, autocommit=True) as conn, self.measure("g_ood_call") as m:
            conn.execute(
                "CALL skyclass.refresh_ood(%s, %s, chunk_size => %s)",
                (str(self.version), CATALOG, CHUNK_SIZE),
            )
        return m.wall

    def _raw(self) -> float:
        with self.measure("a_raw_c") as m:
            seconds = run_driver(self.driver, self.library, self.features, self.rows, self.workers)
        m.wall = seconds  # the scoring loop alone, as the driver timed it
        return seconds

    def _select(self) -> float:
        query = sql.SQL("SELECT count(*), sum((skyclass.predict(%s, x))[1]) FROM {}").format(
            self.feature_set.table_identifier()
        )
        with psycopg.connect(self.url) as conn, self.measure("b_select") as m:
            row = conn.execute(query, (self.version,)).fetchone()
        assert row is not None and row[0] == self.rows
        return m.wall

    def _job(self, scorer: str) -> float:
        from skyclass.score.jobs import score_catalog

        self._checkpoint()
        with self.measure("c_job" if scorer == "database" else "d_client") as m:
            run = score_catalog(
                str(self.version),
                CATALOG,
                scorer=scorer,
                workers=self.workers,
                chunk_size=CHUNK_SIZE,
                url=self.url,
            )
        assert run.status == "succeeded" and run.rows_scored == self.rows, run
        if scorer == "database":
            self._drift(run.run_id)
        return m.wall

    def _drift(self, run_id: int) -> None:
        """The drift summaries that finishing c_job's run computed, once more on their own
        (``skyclass.record_run_drift`` replaces the run's rows): their share of the job."""
        self._checkpoint()
        with (
            psycopg.connect(self.url, autocommit=True) as conn,
            self.measure("c_job_drift"),
        ):
            conn.execute("SELECT skyclass.record_run_drift(%s)", (run_id,))

    def _job_sql(self) -> float:
        """c_job with the chunks written by SQL (``skyclass.chunk_writer = sql``), not 0.4.0's
        bulk writer ``skyclass.score_chunk_into``: the two side by side."""
        from skyclass.score.jobs import score_catalog

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("SELECT set_config('skyclass.chunk_writer', 'sql', false)")
            database = sql.Identifier(conn.info.dbname)
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET skyclass.chunk_writer = 'sql'").format(database)
            )
        try:
            self._checkpoint()
            with self.measure("c_job_sql") as m:
                run = score_catalog(
                    str(self.version),
                    CATALOG,
                    workers=self.workers,
                    chunk_size=CHUNK_SIZE,
                    url=self.url,
                )
        finally:
            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("ALTER DATABASE {} RESET skyclass.chunk_writer").format(database)
                )
        assert run.status == "succeeded" and run.rows_scored == self.rows, run
        return m.wall

    def _call(self) -> float:
        self._checkpoint()
        with psycopg.connect(self.url, autocommit=True) as conn, self.measure("c_call") as m:
            conn.execute(
                "CALL skyclass.rescore(%s, %s, chunk_size => %s)",
                (str(self.version), CATALOG, CHUNK_SIZE),
            )
        return m.wall

    def _sklearn(self) -> float:
        from threadpoolctl import threadpool_limits

        from skyclass.train.calibration import apply_calibration

        self._checkpoint()
        table = sql.Identifier("public", "bench_sklearn_predictions")
        with psycopg.connect(self.url) as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
            conn.commit()
            with self.measure("e_sklearn") as m:
                ids, x = feature_matrix(self.feature_set, url=self.url)
                with threadpool_limits(self.workers):
                    proba = apply_calibration(self.calibration, self.model.predict_proba(x))
                p32 = proba.astype(np.float32)
                top = np.argmax(p32, axis=1)
                n = len(ids)
                conn.execute(
                    sql.SQL(
                        "CREATE TABLE {} (model_version_id bigint NOT NULL, "
                        "object_id bigint NOT NULL, run_id bigint NOT NULL, "
                        "catalog_id integer NOT NULL, top_probability real NOT NULL, "
                        "scored_at timestamptz NOT NULL DEFAULT now(), top_label text "
                        'COLLATE "C" NOT NULL, probabilities real[] NOT NULL)'
                    ).format(table)
                )
                fields = [
                    fixed_field(np.full(n, self.version, dtype=np.int64), BIGINT),
                    fixed_field(ids, BIGINT),
                    fixed_field(np.zeros(n, dtype=np.int64), BIGINT),
                    fixed_field(np.ones(n, dtype=np.int32), INTEGER),
                    fixed_field(p32[np.arange(n), top], REAL),
                    text_field(np.asarray(self.classes)[top], None),
                    array_field(p32, REAL, None),
                ]
                with conn.cursor().copy(
                    sql.SQL(
                        "COPY {} (model_version_id, object_id, run_id, catalog_id, "
                        "top_probability, top_label, probabilities) FROM STDIN (FORMAT BINARY)"
                    ).format(table)
                ) as copy:
                    copy.write(COPY_SIGNATURE)
                    for start in range(0, n, 200_000):
                        stop = min(n, start + 200_000)
                        copy.write(
                            encode_rows(
                                [f.take(slice(start, stop)) for f in fields], stop - start
                            ).data
                        )
                    copy.write(COPY_TRAILER)
                conn.execute(
                    sql.SQL(
                        "ALTER TABLE {} ADD PRIMARY KEY (model_version_id, catalog_id, object_id)"
                    ).format(table)
                )
                conn.commit()
            conn.execute(sql.SQL("DROP TABLE {}").format(table))
            conn.commit()
        return m.wall

    def _checkpoint(self) -> None:
        # The previous variant's dirty pages must not be flushed on this one's time.
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")


# -- compile time versus model size -------------------------------------------------------------
def compile_sizes(
    x: npt.NDArray[np.float32], y: npt.NDArray[Any], driver: Path, directory: Path, rows: int
) -> list[dict[str, Any]]:
    """Compile models of growing size; time the build and their single-thread speed."""
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

    from skyclass.compile import compile_estimator

    rows = min(rows, len(x))
    features = directory / "compile_rows.f32"
    np.ascontiguousarray(x[:rows], dtype=np.float32).tofile(features)
    models = [
        ("HGB 10 iterations", HistGradientBoostingClassifier(max_iter=10, early_stopping=False)),
        ("HGB 30 iterations", HistGradientBoostingClassifier(max_iter=30, early_stopping=False)),
        ("HGB 100 iterations", HistGradientBoostingClassifier(max_iter=100, early_stopping=False)),
        ("RF 20 trees, depth 8", RandomForestClassifier(n_estimators=20, max_depth=8, n_jobs=2)),
        ("RF 50 trees, depth 12", RandomForestClassifier(n_estimators=50, max_depth=12, n_jobs=2)),
    ]
    out = []
    for label, estimator in models:
        estimator.set_params(random_state=SEED)
        estimator.fit(x, y)
        clock = wall()
        artifact = compile_estimator(estimator, n_features=9, parallel_comp=2)
        seconds = wall() - clock
        library = directory / f"size_{len(out)}.so"
        library.write_bytes(artifact.library)
        speed = rows / run_driver(driver, library, features, rows, 1)
        nodes = _nodes(estimator)
        out.append(
            {
                "model": label,
                "nodes": nodes,
                "compile_seconds": round(seconds, 2),
                "library_bytes": len(artifact.library),
                "rows_per_second_1_thread": round(speed),
            }
        )
        say(f"  {label}: {nodes:,} nodes, compiled in {seconds:.1f} s, {speed:,.0f} rows/s/thread")
    return out


def _nodes(estimator: Any) -> int:
    if hasattr(estimator, "_predictors"):
        return sum(int(p.nodes.shape[0]) for it in estimator._predictors for p in it)
    return sum(int(t.tree_.node_count) for t in estimator.estimators_)


# -- the run ------------------------------------------------------------------------------------
def run(
    url: str,
    *,
    rows: int = 1_000_000,
    repeats: int = 3,
    workers: int | None = None,
    sizes: bool = True,
    only: tuple[str, ...] = (),
) -> ScoringResult:
    """Run the scoring benchmark on database ``url`` (about ``rows`` objects) and print it."""
    from skyclass.score.jobs import default_workers

    n_workers = workers or default_workers()
    copies = max(1, round(rows / 99_999))
    say(f"scoring benchmark: SDSS17 x {copies}, {n_workers} sessions/threads, {repeats} rounds")
    before = load_average()
    directory = Path(tempfile.mkdtemp(prefix="skyclass-bench-scoring-"))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS skyclass")
    try:
        clock = wall()
        n = make_catalog(url, copies)
        spec = replace(load_spec(example_spec_path("sdss_ugriz")), catalog=CATALOG)
        feature_set = build_feature_set(spec, url=url)
        say(f"  catalog {CATALOG} and its features: {n:,} rows in {wall() - clock:.1f} s")
        clock = wall()
        model, calibration, classes, x_train = train_model(url, feature_set)
        version, model_info = register(url, model, calibration, classes, feature_set.feature_set_id)
        say(
            f"  model version {version}: trained and compiled in {wall() - clock:.1f} s "
            f"(compile {model_info['compile_seconds']:.1f} s, "
            f"{model_info['library_bytes']:,} bytes)"
        )
        clock = wall()
        ood_info = register_ood(url, version, x_train)
        say(
            f"  its OOD forest (model version {ood_info['ood_version']}): fitted and compiled in "
            f"{wall() - clock:.1f} s (compile {ood_info['compile_seconds']:.1f} s)"
        )
        driver = build_driver(directory)
        library = library_file(url, version, directory)
        features = directory / "features.f32"
        _, x_all = feature_matrix(feature_set, url=url)
        np.ascontiguousarray(x_all, dtype=np.float32).tofile(features)
        del x_all
        bench = ScoringBench(
            url,
            version,
            feature_set,
            n,
            n_workers,
            model,
            calibration,
            classes,
            (driver, library, features),
        )
        variants = bench.variants()
        if only:
            unknown = set(only) - set(variants)
            if unknown:
                raise SystemExit(f"unknown variants {sorted(unknown)}; known: {sorted(variants)}")
            variants = {k: v for k, v in variants.items() if k in only}
        seconds = interleaved(variants, repeats)
        result = _result(n, repeats, n_workers, model_info, seconds)
        _add_cpu(result, bench.measures)
        result.storage = storage(url, version, feature_set, bench.measures)
        result.cpu_model = cpu_model()
        result.load_average = {"before": before, "after": load_average()}
        if not only:
            result.client_predictors = client_predictors(model, library, x_train, repeats)
        print_result(result)
        if sizes:
            say("\ncompile time and single-thread speed versus model size")
            y = model.predict(x_train)  # labels the size models can learn quickly
            result.compile_sizes = compile_sizes(x_train, y, driver, directory, 200_000)
            print_sizes(result)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return result


def _result(
    n: int,
    repeats: int,
    n_workers: int,
    model_info: dict[str, Any],
    seconds: dict[str, list[float]],
) -> ScoringResult:
    medians = {name: median(values) for name, values in seconds.items()}
    rates = {name: n / s for name, s in medians.items()}
    if not {"a_raw_c", "b_select", "c_job", "c_call", "d_client", "e_sklearn"} <= set(rates):
        # --only: the ratios of the variants that ran
        pairs = [
            ("b_select", "a_raw_c"),
            ("c_job", "a_raw_c"),
            ("c_job_sql", "a_raw_c"),
            ("c_job", "c_job_sql"),
            ("c_call", "a_raw_c"),
            ("c_job", "b_select"),
            ("c_job", "e_sklearn"),
            ("c_job", "d_client"),
        ]
        some = {f"{a} / {b}": rates[a] / rates[b] for a, b in pairs if a in rates and b in rates}
        if {"f_ood_select", "b_select"} <= set(rates):
            some["f_ood_select / b_select"] = rates["f_ood_select"] / rates["b_select"]
        if {"g_ood_call", "c_call"} <= set(medians):
            some["(c_call + g_ood_call) / c_call time"] = (
                medians["c_call"] + medians["g_ood_call"]
            ) / medians["c_call"]
        met = {}
        if "c_job / a_raw_c" in some:
            met["c >= 0.7 a"] = some["c_job / a_raw_c"] >= 0.7
        if "c_job / e_sklearn" in some:
            met["c >= 3 e"] = some["c_job / e_sklearn"] >= 3.0
        return ScoringResult(n, repeats, n_workers, model_info, medians, rates, some, met, seconds)
    ratios = {
        "b_select / a_raw_c": rates["b_select"] / rates["a_raw_c"],
        "c_job / e_sklearn": rates["c_job"] / rates["e_sklearn"],
        "c_job / d_client": rates["c_job"] / rates["d_client"],
        "c_call / e_sklearn": rates["c_call"] / rates["e_sklearn"],
        "c_job / b_select": rates["c_job"] / rates["b_select"],
        # The OOD score: its read path against the model's, and the OOD job after a
        # one-session rescoring (rescore, then refresh_ood) against the rescoring alone.
        "f_ood_select / b_select": rates["f_ood_select"] / rates["b_select"],
        "(c_call + g_ood_call) / c_call time": (
            (medians["c_call"] + medians["g_ood_call"]) / medians["c_call"]
        ),
        "c_job / a_raw_c": rates["c_job"] / rates["a_raw_c"],
        "c_call / a_raw_c": rates["c_call"] / rates["a_raw_c"],
    }
    if "c_job_sql" in rates:
        ratios["c_job / c_job_sql"] = rates["c_job"] / rates["c_job_sql"]
    targets = {
        "b >= 0.8 a": ratios["b_select / a_raw_c"] >= 0.8,
        "c >= 0.7 a": ratios["c_job / a_raw_c"] >= 0.7,
        "c >= 3 e": ratios["c_job / e_sklearn"] >= 3.0,
        "c >= 1.5 d": ratios["c_job / d_client"] >= 1.5,
    }
    return ScoringResult(
        n, repeats, n_workers, model_info, medians, rates, ratios, targets, seconds
    )


def _add_cpu(result: ScoringResult, measures: dict[str, list[Measure]]) -> None:
    """Median CPU seconds per variant, and the job ratios by CPU seconds per row."""
    for name, ms in measures.items():
        client = median([m.client_cpu for m in ms])
        servers = [m.server_cpu for m in ms]
        server = None if None in servers else median([s for s in servers if s is not None])
        total = client + (server or 0.0)
        result.cpu[name] = {"client": client, "server": server, "total": total}
    if result.cpu.get("c_job", {}).get("server") is not None:
        cost = {k: v["total"] or 0.0 for k, v in result.cpu.items()}
        pairs = [
            ("c_job", "e_sklearn"),
            ("c_job", "d_client"),
            ("c_job", "a_raw_c"),
            ("c_job_sql", "a_raw_c"),
            ("c_job", "c_job_sql"),
            ("c_call", "a_raw_c"),
            ("b_select", "a_raw_c"),
        ]
        result.cpu_ratios = {
            f"{a} / {b}": cost[b] / cost[a] for a, b in pairs if a in cost and b in cost
        }


def cpu_model() -> str:
    """The CPU model of this machine, printed beside every ratio."""
    from bench.common import cpu_model

    return cpu_model()


def storage(
    url: str, version: int, feature_set: Any, measures: dict[str, list[Measure]]
) -> dict[str, float]:
    """Bytes per prediction of the version's published tables, WAL bytes per prediction."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT sum(pg_relation_size(t.relid)), sum(pg_indexes_size(t.relid)), "
            "sum(pg_total_relation_size(t.relid)) "
            "FROM skyclass.prediction_table AS p, pg_partition_tree(p.table_name::regclass) AS t "
            "WHERE p.model_version_id = %s AND t.isleaf",
            (version,),
        ).fetchone()
        count = conn.execute(
            "SELECT count(*) FROM skyclass.prediction WHERE model_version_id = %s", (version,)
        ).fetchone()
        feature = conn.execute(
            sql.SQL(
                "SELECT pg_total_relation_size(%s::regclass), pg_relation_size(%s::regclass), "
                "count(*) FROM {}"
            ).format(feature_set.table_identifier()),
            (feature_set.table_identifier().as_string(conn),) * 2,
        ).fetchone()
    rows = int(count[0]) if count else 0
    out: dict[str, float] = {"rows": float(rows)}
    if row and rows:
        out["heap_bytes_per_prediction"] = int(row[0] or 0) / rows
        out["index_bytes_per_prediction"] = int(row[1] or 0) / rows
        out["bytes_per_prediction"] = int(row[2] or 0) / rows
    if feature and feature[2]:
        out["feature_bytes_per_row"] = int(feature[0]) / int(feature[2])
        out["feature_heap_bytes_per_row"] = int(feature[1]) / int(feature[2])
    for name in ("c_job", "c_job_sql", "c_call", "d_client"):
        wal = [m.wal_bytes for m in measures.get(name, []) if m.wal_bytes is not None]
        if wal and rows:
            out[f"{name}_wal_bytes_per_prediction"] = median([float(w) for w in wal]) / rows
    return out


def print_result(result: ScoringResult) -> None:
    """Print the figures of ``result`` as tables."""
    say(
        f"\nscoring ({result.model['estimator']}, 3 classes, isotonic calibration, 9 features, "
        f"{result.workers} cores): medians of {result.repeats} interleaved rounds"
    )
    say(
        format_table(
            ("variant", "rows", "seconds", "rows/s", "CPU s client", "CPU s server", "cores busy"),
            [
                (
                    name,
                    f"{result.rows:,}",
                    f"{s:.3f}",
                    f"{result.rates[name]:,.0f}",
                    *_cpu_cells(result.cpu.get(name), s),
                )
                for name, s in result.seconds.items()
            ],
        )
    )
    say(f"\nratios (rows/s over rows/s) and targets, CPU: {result.cpu_model}")
    say(format_table(("ratio", "value"), [(k, f"{v:.2f}") for k, v in result.ratios.items()]))
    say(", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in result.targets.items()))
    if "f_ood_select" in result.seconds:
        ood, model = result.seconds["f_ood_select"], result.seconds["b_select"]
        job = result.seconds["g_ood_call"]
        say(
            f"\nOOD score per object: {1e6 * ood / result.rows:.2f} µs on the read path "
            f"(model {1e6 * model / result.rows:.2f} µs, ratio {ood / model:.2f}), "
            f"{1e6 * job / result.rows:.2f} µs in the durable OOD job (one session)"
        )
    drift, whole = result.cpu.get("c_job_drift"), result.cpu.get("c_job")
    if drift is not None and whole is not None and drift["total"] and whole["total"]:
        say(
            f"\nc_job's drift summaries (skyclass.record_run_drift at finish, run again on "
            f"their own): {1e6 * drift['total'] / result.rows:.2f} CPU µs per row, "
            f"{drift['total'] / whole['total']:.0%} of c_job's CPU"
        )
    if result.client_predictors:
        rates = result.client_predictors
        say(
            f"\nthe model alone on one client thread: GTIL {rates['gtil']:,.0f} rows/s, "
            f"TL2cgen {rates['tl2cgen']:,.0f} rows/s ({rates['tl2cgen'] / rates['gtil']:.1f}x)"
        )
    if result.storage:
        st = result.storage
        say(f"\nstorage of the published predictions ({st['rows']:,.0f} rows)")
        say(
            format_table(
                ("what", "bytes per row"),
                [(k, f"{v:.1f}") for k, v in st.items() if k != "rows"],
            )
        )
    if result.cpu_ratios:
        say(
            "\nthe same ratios by CPU seconds (client + server; less sensitive to other load), "
            f"CPU: {result.cpu_model}"
        )
        say(
            format_table(
                ("ratio", "value"), [(k, f"{v:.2f}") for k, v in result.cpu_ratios.items()]
            )
        )


def _cpu_cells(cpu: dict[str, float | None] | None, seconds: float) -> tuple[str, str, str]:
    if cpu is None:
        return "", "", ""
    server = cpu["server"]
    total = cpu["total"] or 0.0
    return (
        f"{cpu['client'] or 0.0:.2f}",
        "n/a" if server is None else f"{server:.2f}",
        f"{total / seconds:.2f}" if seconds > 0 else "",
    )


def print_sizes(result: ScoringResult) -> None:
    """Print the compile-size table of ``result``."""
    if result.compile_sizes:
        say(
            format_table(
                ("model", "nodes", "compile s", "library bytes", "rows/s (1 thread)"),
                [
                    (
                        s["model"],
                        f"{s['nodes']:,}",
                        f"{s['compile_seconds']:.1f}",
                        f"{s['library_bytes']:,}",
                        f"{s['rows_per_second_1_thread']:,}",
                    )
                    for s in result.compile_sizes
                ],
            )
        )


def main(argv: list[str] | None = None) -> None:
    """Command line: run the scoring benchmark on its own."""
    from bench.common import bench_database, machine_info, print_machine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="about 200k rows, 1 round")
    parser.add_argument("--rows", type=int, default=None, help="about this many objects (1M)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None, help="sessions/threads (cores)")
    parser.add_argument("--no-sizes", action="store_true", help="skip the compile-size table")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    parser.add_argument(
        "--only",
        "--variants",
        dest="only",
        default="",
        help="comma-separated variants to run (default: all), e.g. a_raw_c,b_select,c_job,c_call "
        "at 10M rows, or b_select,c_call,f_ood_select,g_ood_call for the OOD cost alone",
    )
    args = parser.parse_args(argv)
    rows = args.rows or (200_000 if args.quick else 1_000_000)
    repeats = args.repeats or (1 if args.quick else 3)
    started = time.time()
    with bench_database() as url:
        info = machine_info(url)
        print_machine(info)
        result = run(
            url,
            rows=rows,
            repeats=repeats,
            workers=args.workers,
            sizes=not args.no_sizes,
            only=tuple(v for v in args.only.split(",") if v),
        )
    say(f"\ntotal {time.time() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, **asdict(result)}, indent=2, default=str))
        say(f"wrote {args.json}")


if __name__ == "__main__":
    main()
