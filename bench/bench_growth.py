"""Cost growth: ingest, features, scoring, cone search and cross-match at 1M, 10M and 100M rows.

For each catalog size N (default 1M, 10M, 100M) the product's own entry points
run one after the other on one synthetic SDSS-like catalog
(:func:`bench.common.synthetic_chunks`, 36,000 objects/deg², ids, RA/Dec and
ugriz), and every step is measured by wall time, CPU seconds (this process
plus every server process, :class:`bench.bench_scoring.CpuMeter`), WAL bytes
and the bytes of what it leaves on disk:

- ``ingest``: :func:`skyclass.ingest.ingest_file` (what ``skyclass ingest``
  runs) of a FITS file of N rows, written beforehand in chunks (never N rows
  in memory) and deleted afterwards; bytes = table + indexes;
- ``features``: :func:`skyclass.features.build_feature_set` (``skyclass
  features build``) of the shipped ``sdss_ugriz`` definition (5 magnitudes and
  4 colours, the demo's model's features) on the catalog; bytes = the
  feature table with its key;
- ``score``: :func:`skyclass.score.jobs.score_catalog` (``skyclass score``,
  the durable job, one session per core) of a model trained once per database
  on the bundled SDSS17 sample (real labels: the demo's path, snapshot ->
  ``train_model`` HistGradientBoosting 100 iterations -> ``compile``) and
  applied to the synthetic catalog through the same feature definition (its
  hash): the labels of a synthetic catalog would be made up, the speed of the
  model does not depend on them; bytes = published prediction tables (heap,
  indexes);
- ``cone``: ``skyclass.cone_search`` at 10″, p50/p99 over ``--queries``
  random cones after a warm-up, beside the bare ``q3c_radial_query`` and the
  ``q3c_ranges`` formulation (:func:`bench.bench_cone.measure`; the variants
  must return the same objects); the catalog and its Q3C index are read into
  the OS page cache first (``pg_prewarm`` mode ``read``), as on a dedicated
  server;
- ``xmatch``: ``skyclass.crossmatch(catalog, partner, 1″, best, 'sweep')``
  counted in the server, against a partner catalog of min(N, 1M) rows (90%
  objects of the catalog moved by 0.5″, 10% unrelated, spread over the whole
  patch); the share of pairs that are true counterparts is checked.

Before each step the free disk space of the cluster's directory is checked
against the bytes the step needs (the previous size's measured bytes per row,
else :data:`BYTES_PER_ROW`, times N, with a margin); the step is refused with
a message when it is short.

A run prints the table step x size (seconds, CPU seconds, bytes, µs per row by
wall and CPU, bytes and WAL bytes per row, load average) and the per-row cost
ratios 10M/1M and 100M/10M, with the CPU model, RAM and free disk.

Phases: on a shared machine the 100M run is split into phases, each its own
process, on a kept cluster (``--home DIR --keep``) whose results accumulate in
``DIR/growth.json``::

    bench/bench_growth.py --sizes 100000000 --home /srv/g --keep --phase ingest
    bench/bench_growth.py --sizes 100000000 --home /srv/g --keep --phase features
    ... score, cone, xmatch; then --phase report prints the table of everything recorded.

Usage: ``.venv/bin/python bench/bench_growth.py [--sizes 1000000,10000000,100000000]
[--phase all|ingest|features|score|cone|xmatch|report] [--home DIR] [--keep]
[--json FILE] [--smoke]``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_cone import measure as measure_cones
from bench.bench_scoring import SDSS_FILE, CpuMeter
from bench.bench_xmatch import count_crossmatch
from bench.common import (
    ID_BASE,
    SyntheticCatalog,
    drop_catalog,
    format_table,
    load_average,
    load_catalog,
    patch_for,
    say,
    size_suffix,
    synthetic_chunks,
    synthetic_mags,
    wall,
    write_fits_chunks,
)

SEED = 20261202
STEPS = ("ingest", "features", "score", "cone", "xmatch")
PHASES = ("all", *STEPS, "report")
DEFAULT_SIZES = (1_000_000, 10_000_000, 100_000_000)
SMOKE_ROWS = 10_000
MODEL = "bench_growth_sgq"
TRAIN_CATALOG = "bench_growth_sdss17"
SPEC = "sdss_ugriz"
RADIUS_ARCSEC = 10.0
XMATCH_RADIUS_ARCSEC = 1.0
XMATCH_SIGMA_ARCSEC = 0.5
XMATCH_UNRELATED = 0.1
XMATCH_MAX_ROWS = 1_000_000
CHUNK_SIZE = 50_000
TARGET_CONE_P50_MS = 1.5
TARGET_CONE_ROWS = 100_000_000
# Bytes a step needs on disk per catalog row before anything was measured (main,
# November 2026): the FITS file (44 B/row) while it exists, the table and its two
# indexes (~125 B/row) twice over (CLUSTER of a file too big to sort in memory writes
# a second copy before it drops the first), features (~170 B/row), predictions
# (~160 B/row), the cross-match partner (at most 1M rows). WAL is bounded by
# max_wal_size and counted in FIXED_BYTES.
BYTES_PER_ROW = {"ingest": 44 + 2 * 125, "features": 170, "score": 160, "cone": 0, "xmatch": 0}
# Transient bytes beyond the kept result, as a multiple of it (the ingest's sort and
# CLUSTER, the scoring job's chunk tables before the swap): applied to measured figures.
TRANSIENT = {"ingest": 2.5, "features": 1.0, "score": 1.0, "cone": 0.0, "xmatch": 0.0}
FIXED_BYTES = 4 * 2**30  # WAL (max_wal_size 2GB plus what a checkpoint keeps), temp files
MARGIN = 1.25
STATS_DELAY = 1.2
DEFAULT_PORT = 58431


def catalog_name(rows: int) -> str:
    """The benchmark catalog for a size (bench_growth_1m, bench_growth_10k)."""
    return f"bench_growth_{size_suffix(rows)}"


def partner_name(rows: int) -> str:
    """The cross-match partner of the catalog of ``rows`` rows."""
    return catalog_name(rows) + "_x"


@dataclass
class StepResult:
    """One step at one size: wall and CPU seconds, bytes kept, WAL, load, and what it found."""

    step: str
    rows: int
    seconds: float
    client_cpu: float
    server_cpu: float | None
    wal_bytes: int
    bytes: int
    load_before: list[float]
    load_after: list[float]
    details: dict[str, Any] = field(default_factory=dict)
    # Differences of pg_stat_database / pg_stat_bgwriter counters over the step.
    server_stats: dict[str, int] = field(default_factory=dict)
    # Peak resident memory of this process so far (its own phase when run with --phase).
    client_peak_rss: int = 0

    @property
    def cpu(self) -> float:
        """CPU seconds of client and server together (client only if the server is remote)."""
        return self.client_cpu + (self.server_cpu or 0.0)

    def per_row(self) -> dict[str, float]:
        """µs per row by wall and CPU, bytes and WAL bytes per row."""
        n = max(self.details.get("work_rows", self.rows), 1)
        return {
            "us_per_row": self.seconds / n * 1e6,
            "cpu_us_per_row": self.cpu / n * 1e6,
            "bytes_per_row": self.bytes / self.rows if self.rows else 0.0,
            "wal_bytes_per_row": self.wal_bytes / n,
        }

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with the per-row figures."""
        return asdict(self) | {"cpu": self.cpu} | self.per_row()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepResult:
        """The inverse of :meth:`as_dict` (extra keys ignored)."""
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})


class DiskShortError(RuntimeError):
    """Free disk is short of what a step needs (nothing was started)."""


# -- measuring ----------------------------------------------------------------------------------
class Meter:
    """Wall, CPU (client + server processes) and WAL of a block, on database ``url``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.cpu = CpuMeter(url)

    @contextlib.contextmanager
    def measure(self, step: str, rows: int) -> Iterator[StepResult]:
        """Yield a :class:`StepResult` whose times and WAL are filled in when the block ends."""
        result = StepResult(step, rows, 0.0, 0.0, None, 0, 0, load_average(), [])
        lsn = self._scalar("SELECT pg_current_wal_lsn()::text")
        stats = self.stats()
        server, client = self.cpu.server(), self.cpu.client()
        clock = wall()
        yield result
        result.seconds = wall() - clock
        result.client_cpu = self.cpu.client() - client
        after = self.cpu.server()
        result.server_cpu = None if server is None or after is None else after - server
        result.wal_bytes = int(
            self._scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)::bigint", lsn)
        )
        result.load_after = load_average()
        result.client_peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        time.sleep(STATS_DELAY)  # backends report their statistics within a second of idling
        after_stats = self.stats()
        result.server_stats = {k: after_stats[k] - stats[k] for k in stats}

    def stats(self) -> dict[str, int]:
        """Counters that explain a cost: temp files, blocks read and hit, checkpoints."""
        with psycopg.connect(self.url) as conn:
            row = conn.execute(
                "SELECT d.temp_files, d.temp_bytes, d.blks_read, d.blks_hit, "
                "b.checkpoints_timed + b.checkpoints_req, b.buffers_checkpoint, "
                "b.buffers_backend FROM pg_stat_database AS d, pg_stat_bgwriter AS b "
                "WHERE d.datname = current_database()"
            ).fetchone()
        assert row is not None
        names = (
            "temp_files",
            "temp_bytes",
            "blocks_read",
            "blocks_hit",
            "checkpoints",
            "buffers_checkpoint",
            "buffers_backend",
        )
        return dict(zip(names, (int(v) for v in row), strict=True))

    def _scalar(self, query: str, *params: Any) -> Any:
        with psycopg.connect(self.url) as conn:
            row = conn.execute(query, params or None).fetchone()  # type: ignore[arg-type]
        assert row is not None
        return row[0]


def relation_bytes(url: str, table: str) -> tuple[int, int]:
    """(heap bytes, index bytes) of ``table`` (a qualified name)."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT pg_relation_size(%s::regclass), pg_indexes_size(%s::regclass)", (table, table)
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def run_phases(url: str, run_id: int) -> dict[str, float]:
    """Where a scoring run's time went, from its own timestamps.

    ``head_seconds``: start to the first chunk done (planning the chunks, the
    first chunk); ``chunk_seconds``: first to last chunk done (the steady
    state, ``steady_us_per_row`` over the rows of those chunks); ``tail_seconds``:
    last chunk done to the run's end (the swap into the published table).
    """
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM min(c.done_at) - r.started_at), "
            "extract(epoch FROM max(c.done_at) - min(c.done_at)), "
            "extract(epoch FROM r.finished_at - max(c.done_at)), "
            "sum(c.rows) - (array_agg(c.rows ORDER BY c.done_at))[1], count(*) "
            "FROM skyclass.scoring_run AS r JOIN skyclass.scoring_chunk AS c USING (run_id) "
            "WHERE r.run_id = %s GROUP BY r.run_id",
            (run_id,),
        ).fetchone()
    if row is None:
        return {}
    head, chunks, tail, steady_rows, count = (float(v or 0) for v in row)
    return {
        "head_seconds": head,
        "chunk_seconds": chunks,
        "tail_seconds": tail,
        "chunks": count,
        "steady_us_per_row": chunks / steady_rows * 1e6 if steady_rows else 0.0,
    }


def index_levels(url: str, name: str) -> dict[str, int]:
    """B-tree levels below the root of the catalog's primary key and Q3C index (pgstattuple)."""
    levels: dict[str, int] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
        for kind, index in (("primary_key", f"_{name}_pkey"), ("q3c", f"_{name}_q3c")):
            row = conn.execute(
                "SELECT tree_level FROM pgstatindex(%s::regclass)", (f"catalogs.{index}",)
            ).fetchone()
            if row is not None:
                levels[kind] = int(row[0])
    return levels


def data_directory(url: str) -> Path | None:
    """The server's data directory when this process can see it (a local cluster)."""
    with contextlib.suppress(psycopg.Error):
        with psycopg.connect(url) as conn:
            row = conn.execute("SHOW data_directory").fetchone()
        if row is not None and Path(str(row[0])).exists():
            return Path(str(row[0]))
    return None


def free_disk(path: Path) -> int:
    """Free bytes on the file system holding ``path``."""
    return shutil.disk_usage(path).free


def bytes_needed(step: str, rows: int, measured: dict[str, StepResult]) -> int:
    """Disk bytes ``step`` needs at ``rows`` rows, from a smaller size's figure when there is one.

    ``measured`` holds this step's result at the largest size measured so far.
    """
    previous = measured.get(step)
    if previous is not None and previous.rows:
        per_row = previous.bytes / previous.rows * (1 + TRANSIENT[step])
        if step == "ingest":
            per_row += 44  # the FITS file, deleted before the result is measured
    else:
        per_row = BYTES_PER_ROW[step]
    return int(rows * per_row * MARGIN) + FIXED_BYTES


def check_disk(step: str, rows: int, where: Path, measured: dict[str, StepResult]) -> int:
    """Raise :class:`DiskShortError` unless ``where`` has room for ``step`` at ``rows`` rows."""
    needed = bytes_needed(step, rows, measured)
    free = free_disk(where)
    say(
        f"  disk: {step} at {rows:,} rows needs about {needed / 1e9:.1f} GB, "
        f"{free / 1e9:.1f} GB free in {where}"
    )
    if free < needed:
        raise DiskShortError(
            f"not enough free disk for {step} at {rows:,} rows: about {needed / 1e9:.1f} GB "
            f"needed (with a {MARGIN:g}x margin), {free / 1e9:.1f} GB free in {where}; "
            "free some space or run a smaller size"
        )
    return free


# -- the catalogs -------------------------------------------------------------------------------
def partner_catalog(rows: int, seed: int = SEED) -> SyntheticCatalog:
    """The cross-match partner: min(rows, 1M) objects over the catalog's patch.

    90% are objects of the catalog (drawn evenly from every chunk) moved by
    Gaussian offsets of :data:`XMATCH_SIGMA_ARCSEC` per axis, 10% unrelated
    objects of the same patch; ids below the catalog's. The catalog is drawn
    again chunk by chunk, so at 100M rows it is never whole in memory.
    """
    patch = patch_for(rows)
    size = min(rows, XMATCH_MAX_ROWS)
    related = round(size * (1 - XMATCH_UNRELATED))
    rng = np.random.default_rng([seed, 7])
    chosen = np.sort(rng.choice(rows, related, replace=False))
    parts_ra, parts_dec, parts_mags = [], [], []
    start = 0
    for chunk in synthetic_chunks(rows, patch, seed):
        stop = start + len(chunk)
        lo, hi = np.searchsorted(chosen, [start, stop])
        index = chosen[lo:hi] - start
        parts_ra.append(chunk.ra[index])
        parts_dec.append(chunk.dec[index])
        parts_mags.append(chunk.mags[index])
        start = stop
    ra, dec = np.concatenate(parts_ra), np.concatenate(parts_dec)
    sigma = XMATCH_SIGMA_ARCSEC / 3600
    cos_dec = np.maximum(np.cos(np.radians(dec)), 1e-6)
    moved_dec = np.clip(dec + rng.normal(0, sigma, related), -90, 90)
    moved_ra = np.mod(ra + rng.normal(0, sigma, related) / cos_dec, 360.0)
    extra_ra, extra_dec = patch.random_positions(size - related, rng)
    return SyntheticCatalog(
        object_id=np.int64(ID_BASE // 2) + np.arange(size, dtype=np.int64) * 16,
        ra=np.concatenate([moved_ra, extra_ra]),
        dec=np.concatenate([moved_dec, extra_dec]),
        mags=np.concatenate([np.concatenate(parts_mags), synthetic_mags(size - related, rng)]),
    )


def registered(url: str, name: str) -> bool:
    """True when catalog ``name`` is registered."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT 1 FROM skyclass.catalog WHERE name = %s", (name,)).fetchone()
    return row is not None


def count_rows(url: str, table: sql.Composable) -> int:
    """``count(*)`` of ``table``."""
    with psycopg.connect(url) as conn:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
    return int(row[0]) if row else 0


# -- the model ----------------------------------------------------------------------------------
def model_version(url: str) -> int | None:
    """The compiled version of :data:`MODEL` in this database, if trained already."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT v.model_version_id FROM skyclass.model_version AS v "
            "JOIN skyclass.model AS m USING (model_id) "
            "JOIN skyclass.model_artifact AS a USING (model_version_id) "
            "WHERE m.name = %s ORDER BY v.version DESC LIMIT 1",
            (MODEL,),
        ).fetchone()
    return None if row is None else int(row[0])


def ensure_model(url: str, *, iterations: int = 100) -> tuple[int, dict[str, Any]]:
    """Train :data:`MODEL` on SDSS17 once (the demo's path) and compile it; its version id.

    SDSS17 ingested as :data:`TRAIN_CATALOG`, the ``sdss_ugriz`` features
    built on it, a 2-fold snapshot labelled by ``class``, HistGradientBoosting
    with ``iterations`` iterations and temperature calibration, no baselines,
    compiled at -O2. Timed, but outside the growth table (it does not grow
    with N).
    """
    found = model_version(url)
    if found is not None:
        return found, {}
    from skyclass.compile.store import compile_model_version
    from skyclass.features import build_feature_set, example_spec_path
    from skyclass.ingest import ingest_file
    from skyclass.score.jobs import default_workers
    from skyclass.train.pipeline import train_model
    from skyclass.train.snapshot import create_snapshot

    say(f"  training {MODEL} on SDSS17 (once per database) ...")
    clock = wall()
    if not registered(url, TRAIN_CATALOG):
        ingest_file(
            SDSS_FILE,
            TRAIN_CATALOG,
            id_column="orig_row",
            ra_column="alpha",
            dec_column="delta",
            description="bench_growth: the SDSS17 sample the model is trained on",
            url=url,
        )
    fs = build_feature_set(example_spec_path(SPEC), catalog=TRAIN_CATALOG, url=url)
    snap = create_snapshot(fs.feature_set_id, "class", n_folds=2, seed=SEED % 1000, url=url)
    trained = train_model(
        MODEL,
        snap.snapshot_id,
        params={"max_iter": iterations},
        baselines=(),
        importance=False,
        description="bench_growth: star/galaxy/QSO on SDSS17 ugriz",
        n_jobs=default_workers(),
        url=url,
    )
    info = compile_model_version(trained.model_version_id, url=url)
    seconds = wall() - clock
    say(f"  model version {trained.model_version_id} trained and compiled in {seconds:.1f} s")
    return trained.model_version_id, {
        "train_rows": snap.n_rows,
        "estimator": f"HistGradientBoostingClassifier(max_iter={iterations})",
        "train_and_compile_seconds": seconds,
        "library_bytes": info.library_bytes,
    }


# -- the steps ----------------------------------------------------------------------------------
class GrowthBench:
    """The steps at one size on database ``url``; files go to ``workdir``."""

    def __init__(
        self, url: str, rows: int, workdir: Path, queries: int, warmup: int, iterations: int = 100
    ) -> None:
        self.url = url
        self.iterations = iterations
        self.rows = rows
        self.name = catalog_name(rows)
        self.patch = patch_for(rows)
        self.workdir = workdir
        self.queries = queries
        self.warmup = warmup
        self.meter = Meter(url)

    def run(self, step: str) -> StepResult:
        """Run ``step`` (one of :data:`STEPS`) and return its figures."""
        result: StepResult = getattr(self, f"_{step}")()
        per = result.per_row()
        say(
            f"  {step} at {self.rows:,} rows: {result.seconds:.1f} s wall, {result.cpu:.1f} s CPU, "
            f"{per['us_per_row']:.2f} us/row, {per['bytes_per_row']:.1f} B/row, "
            f"load {result.load_before} -> {result.load_after}"
        )
        return result

    def _ingest(self) -> StepResult:
        from skyclass.ingest import ingest_file

        if registered(self.url, self.name):
            raise RuntimeError(
                f"catalog {self.name} exists already: drop it (skyclass catalog drop "
                f"{self.name}) or use another database"
            )
        path = self.workdir / f"{self.name}.fits"
        clock = wall()
        write_fits_chunks(synthetic_chunks(self.rows, self.patch, SEED), self.rows, path)
        fits_seconds, fits_bytes = wall() - clock, path.stat().st_size
        say(f"  wrote {path.name}: {fits_bytes / 1e9:.2f} GB in {fits_seconds:.1f} s")
        try:
            with self.meter.measure("ingest", self.rows) as result:
                report = ingest_file(path, self.name, url=self.url)
        finally:
            path.unlink(missing_ok=True)
        if report.rows_accepted != self.rows:
            raise RuntimeError(f"ingest accepted {report.rows_accepted} of {self.rows} rows")
        heap, index = relation_bytes(self.url, f"catalogs.{self.name}")
        result.bytes = heap + index
        result.details = {
            "rows_counted": count_rows(self.url, sql.Identifier("catalogs", self.name)),
            "heap_bytes": heap,
            "index_bytes": index,
            "fits_bytes": fits_bytes,
            "fits_write_seconds": fits_seconds,
            "rows_per_second": self.rows / result.seconds,
            "btree_levels": index_levels(self.url, self.name),
        }
        return result

    def _features(self) -> StepResult:
        from skyclass.features import build_feature_set, example_spec_path

        with self.meter.measure("features", self.rows) as result:
            fs = build_feature_set(example_spec_path(SPEC), catalog=self.name, url=self.url)
        assert fs.build is not None
        table = fs.table_identifier()
        with psycopg.connect(self.url) as conn:
            qualified = table.as_string(conn)
        heap, index = relation_bytes(self.url, qualified)
        result.bytes = heap + index
        result.details = {
            "rows_counted": count_rows(self.url, table),
            "rows_written": fs.build.rows_added,
            "action": fs.build.action,
            "heap_bytes": heap,
            "index_bytes": index,
            "features": fs.n_features,
        }
        return result

    def _score(self) -> StepResult:
        from skyclass.score.jobs import default_workers, score_catalog

        version, model = ensure_model(self.url, iterations=self.iterations)
        workers = default_workers()
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")  # the features' dirty pages are not the job's to flush
        with self.meter.measure("score", self.rows) as result:
            run = score_catalog(
                str(version), self.name, workers=workers, chunk_size=CHUNK_SIZE, url=self.url
            )
        if run.status != "succeeded" or run.rows_scored != self.rows:
            raise RuntimeError(f"scoring run {run.run_id}: {run.status}, {run.rows_scored} rows")
        heap, index, count = self._prediction_bytes(version)
        result.bytes = heap + index
        result.details = (
            model
            | run_phases(self.url, run.run_id)
            | {
                "model_version_id": version,
                "workers": workers,
                "chunk_size": CHUNK_SIZE,
                "rows_counted": count,
                "rows_scored": run.rows_scored,
                "heap_bytes": heap,
                "index_bytes": index,
            }
        )
        return result

    def _prediction_bytes(self, version: int) -> tuple[int, int, int]:
        """Heap and index bytes of the version's published predictions of this catalog, rows."""
        with psycopg.connect(self.url) as conn:
            row = conn.execute(
                "SELECT coalesce(sum(pg_relation_size(t.relid)), 0), "
                "coalesce(sum(pg_indexes_size(t.relid)), 0) "
                "FROM skyclass.prediction_table AS p "
                "JOIN skyclass.catalog AS c USING (catalog_id), "
                "pg_partition_tree(p.table_name::regclass) AS t "
                "WHERE p.model_version_id = %s AND c.name = %s AND t.isleaf",
                (version, self.name),
            ).fetchone()
            count = conn.execute(
                "SELECT count(*) FROM skyclass.prediction AS p "
                "JOIN skyclass.catalog AS c USING (catalog_id) "
                "WHERE p.model_version_id = %s AND c.name = %s",
                (version, self.name),
            ).fetchone()
        assert row is not None and count is not None
        return int(row[0]), int(row[1]), int(count[0])

    def _cone(self) -> StepResult:
        self._prewarm()
        names = {self.rows: self.name}
        with self.meter.measure("cone", self.rows) as result:
            latency, mismatches = measure_cones(
                self.url,
                names,
                {self.rows: self.patch},
                (RADIUS_ARCSEC,),
                self.queries,
                self.warmup,
            )
        result.details = {
            "queries": self.queries,
            "warmup": self.warmup,
            "radius_arcsec": RADIUS_ARCSEC,
            "mismatched_cones": mismatches,
            "work_rows": 3 * (self.queries + self.warmup),  # per query, not per row
            "latency": {key.rsplit("/", 1)[1]: value for key, value in latency.items()},
        }
        return result

    def _prewarm(self) -> None:
        """Read the catalog's table and Q3C index into the OS page cache (pg_prewarm 'read')."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
            clock = wall()
            blocks = 0
            for relation in (f"catalogs.{self.name}", f"catalogs._{self.name}_q3c"):
                row = conn.execute(
                    "SELECT pg_prewarm(%s::regclass, 'read')", (relation,)
                ).fetchone()
                blocks += int(row[0]) if row else 0
        say(f"  prewarm: {blocks:,} blocks read into the page cache in {wall() - clock:.1f} s")

    def _xmatch(self) -> StepResult:
        partner = partner_name(self.rows)
        if registered(self.url, partner):
            drop_catalog(self.url, partner)
        clock = wall()
        b = partner_catalog(self.rows)
        load_catalog(self.url, partner, [b], description="bench_growth cross-match partner")
        say(f"  partner {partner}: {len(b):,} rows loaded in {wall() - clock:.1f} s")
        try:
            with self.meter.measure("xmatch", self.rows) as result:
                pairs = count_crossmatch(
                    self.url, XMATCH_RADIUS_ARCSEC, "sweep", a=self.name, b=partner
                )
        finally:
            drop_catalog(self.url, partner)
        related = round(len(b) * (1 - XMATCH_UNRELATED))
        result.details = {
            "partner_rows": len(b),
            "related_rows": related,
            "pairs": pairs,
            "method": "sweep",
            "radius_arcsec": XMATCH_RADIUS_ARCSEC,
            "work_rows": self.rows + len(b),
        }
        return result


# -- running ------------------------------------------------------------------------------------
@dataclass
class GrowthState:
    """Every result recorded so far (by size and step), the machine, and where they are kept."""

    results: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @classmethod
    def load(cls, path: Path | None) -> GrowthState:
        """The state kept in ``path`` (empty when there is none)."""
        if path is not None and path.exists():
            data = json.loads(path.read_text())
            return cls(data.get("results", {}), data.get("machine", {}), path)
        return cls(path=path)

    def record(self, result: StepResult) -> None:
        """Add ``result`` and save."""
        self.results.setdefault(str(result.rows), {})[result.step] = result.as_dict()
        self.save()

    def get(self, rows: int, step: str) -> StepResult | None:
        """The recorded result of ``step`` at ``rows`` rows."""
        data = self.results.get(str(rows), {}).get(step)
        return None if data is None else StepResult.from_dict(data)

    def largest_below(self, rows: int) -> dict[str, StepResult]:
        """Per step, the result at the largest size below ``rows`` (for the disk estimate)."""
        out: dict[str, StepResult] = {}
        for size in sorted((int(s) for s in self.results), reverse=True):
            if size >= rows:
                continue
            for step in STEPS:
                found = self.get(size, step)
                if found is not None and step not in out:
                    out[step] = found
        return out

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"machine": self.machine, "results": self.results, "summary": summary(self)}

    def save(self) -> None:
        """Write to :attr:`path` (if any)."""
        if self.path is not None:
            self.path.write_text(json.dumps(self.as_dict(), indent=2))


def run(
    url: str,
    sizes: tuple[int, ...],
    *,
    steps: tuple[str, ...] = STEPS,
    state: GrowthState | None = None,
    keep: bool = False,
    workdir: Path | None = None,
    queries: int = 1000,
    warmup: int = 200,
    iterations: int = 100,
) -> GrowthState:
    """Run ``steps`` at every size of ``sizes`` on ``url``; results go into ``state``.

    Steps need the ones before them at that size (run now or recorded in a kept
    database). Unless ``keep``, a size's catalogs are dropped when its steps are
    done (and the SDSS17 training catalog at the end), so the next size has the
    disk; the model version stays. ``iterations`` sizes the model (trained once
    per database). Raises :class:`DiskShortError` before a step
    the free disk cannot hold.
    """
    state = state or GrowthState()
    where = workdir or data_directory(url) or Path(tempfile.gettempdir())
    for rows in sizes:
        say(f"\n== {rows:,} rows ({catalog_name(rows)}, {patch_for(rows).area_deg2:,.1f} deg2)")
        with tempfile.TemporaryDirectory(dir=workdir, prefix="skyclass-growth-") as tmp:
            bench = GrowthBench(url, rows, Path(tmp), queries, warmup, iterations)
            try:
                for step in steps:
                    check_disk(step, rows, where, state.largest_below(rows))
                    state.record(bench.run(step))
            finally:
                if not keep:
                    drop_catalog(url, partner_name(rows))
                    drop_size(url, rows)
    if not keep and registered(url, TRAIN_CATALOG):
        drop_size(url, None)
    return state


def drop_size(url: str, rows: int | None) -> None:
    """Drop a size's catalog (``None``: the training catalog) with its features and predictions."""
    name = TRAIN_CATALOG if rows is None else catalog_name(rows)
    from skyclass.ingest import drop_catalog as drop_registered

    if registered(url, name):
        drop_registered(name, url=url, cascade=True)
    drop_catalog(url, name)


# -- the table ------------------------------------------------------------------------------------
def summary(state: GrowthState) -> dict[str, Any]:
    """Per step, the per-row figures at each size and the ratios between successive sizes."""
    out: dict[str, Any] = {}
    sizes = sorted(int(s) for s in state.results)
    for step in STEPS:
        per_size = {n: r for n in sizes if (r := state.get(n, step)) is not None}
        ratios: dict[str, dict[str, float]] = {}
        ordered = sorted(per_size)
        for small, large in itertools.pairwise(ordered):
            a, b = per_size[small].per_row(), per_size[large].per_row()
            key = f"{large // 10**6 or large}M/{small // 10**6 or small}M"
            if step == "cone":
                pa = per_size[small].details["latency"]["cone_search"]["p50_ms"]
                pb = per_size[large].details["latency"]["cone_search"]["p50_ms"]
                ratios[key] = {"p50": pb / pa}
            else:
                ratios[key] = {
                    name: (b[name] / a[name] if a[name] else math.nan)
                    for name in ("us_per_row", "cpu_us_per_row", "bytes_per_row")
                }
        out[step] = {"sizes": ordered, "ratios": ratios}
    cone = state.get(TARGET_CONE_ROWS, "cone")
    if cone is not None:
        p50 = cone.details["latency"]["cone_search"]["p50_ms"]
        out["target_cone_p50_ms_at_100m"] = {"p50_ms": p50, "met": p50 <= TARGET_CONE_P50_MS}
    return out


def _size_label(rows: int) -> str:
    return size_suffix(rows).replace("m", "M")


def print_table(state: GrowthState) -> None:
    """The step x size table, the cone latencies and the ratios between sizes."""
    rows = []
    sizes = sorted(int(s) for s in state.results)
    for step in STEPS:
        for n in sizes:
            r = state.get(n, step)
            if r is None:
                continue
            per = r.per_row()
            rows.append(
                (
                    step,
                    _size_label(n),
                    f"{r.seconds:,.1f}",
                    f"{r.cpu:,.1f}",
                    f"{r.bytes / 1e6:,.1f}" if r.bytes else "-",
                    f"{per['us_per_row']:.3f}" if step != "cone" else "-",
                    f"{per['cpu_us_per_row']:.3f}" if step != "cone" else "-",
                    f"{per['bytes_per_row']:.1f}" if r.bytes else "-",
                    f"{per['wal_bytes_per_row']:.1f}" if step != "cone" else "-",
                    f"{r.load_before[0]:.2f}/{r.load_after[0]:.2f}",
                )
            )
    say("\ncost growth: wall and CPU seconds (client + server processes), MB kept on disk")
    say(
        format_table(
            (
                "step",
                "rows",
                "wall s",
                "CPU s",
                "MB",
                "us/row",
                "CPU us/row",
                "B/row",
                "WAL B/row",
                "load 1m",
            ),
            rows,
        )
    )
    cones = []
    for n in sizes:
        r = state.get(n, "cone")
        if r is None:
            continue
        for variant, figures in r.details["latency"].items():
            cones.append(
                (
                    _size_label(n),
                    variant,
                    f"{figures['p50_ms']:.3f}",
                    f"{figures['p99_ms']:.3f}",
                    f"{figures['mean_rows']:.2f}",
                )
            )
        cones.append(
            (_size_label(n), "mismatched cones", str(r.details["mismatched_cones"]), "", "")
        )
    if cones:
        say(f'\ncone search at {RADIUS_ARCSEC:g}": latency per query (ms)')
        say(format_table(("rows", "variant", "p50 ms", "p99 ms", "objects"), cones))
    details = []
    for n in sizes:
        x = state.get(n, "xmatch")
        if x is not None:
            d = x.details
            details.append(
                (
                    _size_label(n),
                    f"{d['partner_rows']:,}",
                    f"{d['pairs']:,}",
                    f"{d['related_rows']:,}",
                )
            )
    counters = []
    for step in STEPS:
        for n in sizes:
            r = state.get(n, step)
            if r is None or not r.server_stats:
                continue
            c = r.server_stats
            counters.append(
                (
                    step,
                    _size_label(n),
                    f"{c['temp_bytes'] / 1e6:,.0f}",
                    f"{c['blocks_read'] / n:.3f}",
                    f"{c['blocks_hit'] / n:.2f}",
                    str(c["checkpoints"]),
                    f"{c['buffers_checkpoint'] / n:.4f}",
                    f"{r.client_peak_rss / 1e6:,.0f}",
                )
            )
    if counters:
        say("\nserver counters over each step (pg_stat_database, pg_stat_bgwriter), per row")
        say(
            format_table(
                (
                    "step",
                    "rows",
                    "temp MB",
                    "blks read",
                    "blks hit",
                    "checkpoints",
                    "ckpt bufs",
                    "client peak MB",
                ),
                counters,
            )
        )
    phases = [
        (
            _size_label(n),
            f"{d['head_seconds']:.1f}",
            f"{d['chunk_seconds']:.1f}",
            f"{d['tail_seconds']:.1f}",
            f"{d['steady_us_per_row']:.2f}",
        )
        for n in sizes
        if (r := state.get(n, "score")) is not None and "head_seconds" in (d := r.details)
    ]
    if phases:
        say("\nscoring run by its own timestamps: start, chunks, swap (seconds)")
        say(format_table(("rows", "head s", "chunks s", "tail s", "steady us/row"), phases))
    levels = [
        (_size_label(n), str(r.details["btree_levels"]))
        for n in sizes
        if (r := state.get(n, "ingest")) is not None and "btree_levels" in r.details
    ]
    if levels:
        say("\nB-tree levels below the root (pgstatindex)")
        say(format_table(("rows", "levels"), levels))
    if details:
        say("\ncross-match (sweep, 1 arcsec, best only): pairs against the moved objects")
        say(format_table(("rows", "partner rows", "pairs", "moved objects"), details))
    ratio_rows = []
    for step, figures in summary(state).items():
        if step not in STEPS:
            continue
        for key, ratio in figures["ratios"].items():
            ratio_rows.append(
                (
                    step,
                    key,
                    *(
                        f"{ratio[m]:.2f}" if math.isfinite(ratio.get(m, math.nan)) else "-"
                        for m in ("us_per_row", "cpu_us_per_row", "bytes_per_row", "p50")
                    ),
                )
            )
    if ratio_rows:
        say("\nper-row cost ratios (larger size / smaller size; 1.00 = flat, < 1 = falling)")
        say(format_table(("step", "sizes", "wall", "CPU", "bytes", "cone p50"), ratio_rows))
    target = summary(state).get("target_cone_p50_ms_at_100m")
    if target is not None:
        verdict = "MET" if target["met"] else "NOT MET"
        say(
            f"\n{verdict}: cone_search p50 {target['p50_ms']:.3f} ms "
            f"<= {TARGET_CONE_P50_MS} ms at 100M rows"
        )


# -- the command line -----------------------------------------------------------------------------
@contextlib.contextmanager
def database(home: Path | None, port: int, keep: bool) -> Iterator[str]:
    """A migrated database: a cluster in ``home`` (kept with ``keep``) or :func:`bench_database`."""
    from bench.common import bench_database

    if home is None:
        with bench_database() as url:
            yield url
        return
    from skyclass.db.cluster import EmbeddedCluster, find_pg_bindir, port_is_free
    from skyclass.db.migrate import upgrade

    if not port_is_free(port):
        raise SystemExit(f"port {port} is in use: pass another with --port")
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o755)  # the cluster's OS user must reach it when we run as root
    cluster = EmbeddedCluster(home=home, port=port, bindir=find_pg_bindir())
    say(f"cluster in {home} (port {cluster.port}, {'kept' if keep else 'removed afterwards'})")
    cluster.start()
    try:
        upgrade(cluster.url)
        yield cluster.url
    finally:
        if keep:
            cluster.stop()
        else:
            cluster.destroy()
            shutil.rmtree(home, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    """Command line: run the growth benchmark (or one phase of it) and print the table."""
    from bench.common import machine_info, print_machine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        default=None,
        help="comma-separated catalog sizes (default 1000000,10000000,100000000)",
    )
    parser.add_argument(
        "--phase", choices=PHASES, default="all", help="one step, or all, or report"
    )
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        help="run a cluster in this directory (kept with --keep; results in DIR/growth.json)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"TCP port of the --home cluster ({DEFAULT_PORT})",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep catalogs (and the --home cluster) afterwards"
    )
    parser.add_argument("--queries", type=int, default=1000, help="cones per variant (1000)")
    parser.add_argument("--warmup", type=int, default=200, help="unrecorded cones first (200)")
    parser.add_argument(
        "--smoke", "--quick", action="store_true", help=f"{SMOKE_ROWS:,} rows, 100 cones"
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="results accumulate in this JSON file across runs and phases "
        "(default with --home: DIR/growth.json)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.home is not None and args.phase not in ("all", "report") and not args.keep:
        parser.error("--phase with --home needs --keep (the next phase needs this one's catalogs)")
    if args.smoke:
        sizes: tuple[int, ...] = (SMOKE_ROWS,)
        queries, warmup = 100, 20
    else:
        sizes = tuple(int(s) for s in args.sizes.split(",")) if args.sizes else DEFAULT_SIZES
        queries, warmup = args.queries, args.warmup
    results = args.results or (args.home / "growth.json" if args.home and args.keep else None)
    state = GrowthState.load(results)
    if args.phase == "report":
        if results is None:
            parser.error("--phase report needs --results FILE (or --home DIR --keep)")
        if state.machine.get("settings"):
            print_machine(state.machine)  # of the last run recorded
            say(f"free disk then: {state.machine.get('free_disk_bytes', 0) / 1e9:.1f} GB")
        print_table(state)
        if args.json:
            args.json.write_text(json.dumps(state.as_dict(), indent=2))
        return
    steps = STEPS if args.phase == "all" else (args.phase,)
    with database(args.home, args.port, args.keep) as url:
        info = machine_info(url)
        info["free_disk_bytes"] = free_disk(args.home or data_directory(url) or Path("."))
        print_machine(info)
        say(f"free disk: {info['free_disk_bytes'] / 1e9:.1f} GB")
        state.machine.setdefault("runs", []).append(info | {"phase": args.phase, "sizes": sizes})
        state.machine.update({k: v for k, v in info.items() if k != "runs"})
        try:
            run(
                url,
                sizes,
                steps=steps,
                state=state,
                keep=args.keep or args.phase != "all",
                workdir=args.home,
                queries=queries,
                warmup=warmup,
            )
        finally:
            state.save()
    print_table(state)
    if args.json:
        args.json.write_text(json.dumps(state.as_dict(), indent=2))


if __name__ == "__main__":
    main()
