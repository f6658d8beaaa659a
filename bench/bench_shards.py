"""A catalog over three shards (postgres_fdw) against the same catalog on one server.

Four local clusters on this one machine: ``single`` holds the whole synthetic
catalog (``rows`` SDSS-like objects over a patch of sky, bench/common.py) and
is also the coordinator; three shard clusters each hold a third of it, split
at Q3C pixel quantiles (contiguous sky regions), attached on the coordinator
with ``skyclass shard attach``. Every database builds the shipped
``sdss_ugriz`` features and registers the same compiled model (a small
HistGradientBoosting trained on random labels of the synthetic magnitudes:
the benchmark is about placement, not accuracy), deployed as ``bench``.

Measured:

- rescoring: ``skyclass score`` on the single server (one session per core)
  against ``skyclass shard rescore`` (the three shards' jobs at once, one
  session each); both durable (fsync on);
- cone search, p50 of ``queries`` cones of 10 arcsec inside the patch: on the
  single server, through the coordinator (``skyclass.cone_search`` on the
  attached catalog: run-time pruning to one shard), and on a shard directly;
- the classification of a cone (1 arcmin) through the coordinator
  (``shards.NAME_classification`` with ``q3c_radial_query``, pruned at plan
  time) against ``current_classification`` joined with the catalog on the
  single server;
- ``count(*)`` of the whole catalog through the coordinator with and without
  ``enable_partitionwise_aggregate`` (the aggregate pushed to each shard or
  every row fetched), against the single server.

All clusters share the machine's cores, so the shards cannot be faster than
one server here: the figures show what the coordination costs, not a
scale-out speed-up. Usage: ``.venv/bin/python bench/bench_shards.py [--rows N]
[--queries N] [--json F]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    SyntheticCatalog,
    _free_port,
    format_table,
    load_average,
    load_catalog,
    machine_info,
    median,
    patch_for,
    percentile,
    print_machine,
    say,
    synthetic_catalog,
    wall,
)
from skyclass.db.cluster import EmbeddedCluster, find_pg_bindir
from skyclass.db.migrate import upgrade
from skyclass.features import build_feature_set, example_spec_path, load_spec
from skyclass.ingest.q3c import ang2ipix
from skyclass.score.jobs import score_catalog
from skyclass.shard import add_shard, attach_catalog, rescore_shards

SEED = 20261202
SINGLE = "bench_single"
SHARDED = "bench_sharded"
SHARDS = ("s1", "s2", "s3")
DEPLOYMENT = "bench"
CONE_ARCSEC = 10.0
CLASS_CONE_ARCSEC = 60.0


@dataclass
class ShardBenchResult:
    """Seconds and latencies (ms) of the single server and the sharded catalog."""

    rows: int
    queries: int
    seconds: dict[str, float]
    latency_ms: dict[str, dict[str, float]]
    aggregate_pushed_down: dict[str, bool]
    shard_rows: dict[str, int]
    load_average: dict[str, list[float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The result as plain JSON-ready data."""
        return asdict(self)


@contextmanager
def _cluster(prefix: str) -> Iterator[EmbeddedCluster]:
    home = Path(tempfile.mkdtemp(prefix=f"skyclass-bench-{prefix}-"))
    os.chmod(home, 0o755)
    cluster = EmbeddedCluster(home=home, port=_free_port(), bindir=find_pg_bindir())
    try:
        cluster.start()
        upgrade(cluster.url)
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS skyclass")
        yield cluster
    finally:
        cluster.destroy()
        shutil.rmtree(home, ignore_errors=True)


def _model(catalog: SyntheticCatalog) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(SEED)
    sample = rng.choice(len(catalog), 20_000, replace=False)
    x = catalog.mags[sample]
    colours = np.column_stack([x[:, i] - x[:, i + 1] for i in range(4)])
    features = np.column_stack([x, colours]).astype(np.float32)
    labels = np.where(colours[:, 1] + rng.normal(0, 0.2, len(sample)) > 0.5, "STAR", "GALAXY")
    labels[rng.random(len(sample)) < 0.1] = "QSO"
    return HistGradientBoostingClassifier(max_iter=30, random_state=SEED).fit(features, labels)


def _prepare(url: str, name: str, catalog: SyntheticCatalog, model: Any) -> None:
    """Load ``catalog`` as ``name``, build its features, register the model, deploy it."""
    from tests.support.registry import register_test_model

    load_catalog(url, name, [catalog])
    spec = replace(load_spec(example_spec_path("sdss_ugriz")), catalog=name)
    feature_set = build_feature_set(spec, url=url)
    with psycopg.connect(url, autocommit=True) as conn:
        version = register_test_model(
            conn,
            model,
            classes=model.classes_,
            n_features=9,
            feature_set=feature_set.feature_set_id,
            model="bench_shards",
            compiled=True,
        )
        conn.execute("SELECT skyclass.deploy(%s, %s)", (DEPLOYMENT, version))


def _latency(url: str, query: str, params: list[tuple[Any, ...]]) -> dict[str, float]:
    times = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET jit = off")
        for i, p in enumerate(params):
            clock = wall()
            conn.execute(query, p, prepare=True).fetchall()
            if i >= len(params) // 10:  # the first tenth warms up
                times.append((wall() - clock) * 1000)
    return {"p50_ms": percentile(times, 50), "p90_ms": percentile(times, 90)}


def run(url: str, shard_urls: list[str], *, rows: int, queries: int) -> ShardBenchResult:
    """Load, attach, rescore and query; ``url`` is the single server and coordinator."""
    before = load_average()
    patch = patch_for(rows)
    catalog = synthetic_catalog(rows, patch, SEED)
    order = np.argsort(ang2ipix(catalog.ra, catalog.dec), kind="stable")
    parts = np.array_split(order, len(shard_urls))
    model = _model(catalog)
    seconds: dict[str, float] = {}
    pushed: dict[str, bool] = {}
    clock = wall()
    _prepare(url, SINGLE, catalog, model)
    for name, shard_url, part in zip(SHARDS, shard_urls, parts, strict=True):
        _prepare(shard_url, SHARDED, catalog.take(part), model)
        add_shard(name, shard_url, url=url)
    attach_catalog(SHARDED, url=url)
    seconds["set-up (load, features, model, attach)"] = wall() - clock
    say(f"  set up in {seconds['set-up (load, features, model, attach)']:.0f} s")

    clock = wall()
    score_catalog(DEPLOYMENT, SINGLE, url=url)
    seconds["rescore, single server"] = wall() - clock
    clock = wall()
    results = rescore_shards(DEPLOYMENT, SHARDED, workers_per_shard=1, url=url)
    seconds["rescore, 3 shards at once"] = wall() - clock
    failed = [r for r in results if r.run is None]
    if failed:
        raise RuntimeError(f"shard rescoring failed: {failed}")
    for r in results:
        seconds[f"rescore, shard {r.shard} alone in that run"] = r.seconds
    say("  rescored")

    rng = np.random.default_rng(SEED + 1)
    inner = patch.shrunk(CLASS_CONE_ARCSEC / 3600)
    ra, dec = inner.random_positions(queries, rng)
    r = CONE_ARCSEC / 3600
    cones = [(float(a), float(d), r) for a, d in zip(ra, dec, strict=True)]
    cone = "SELECT * FROM skyclass.cone_search(%s, %s, %s, %s)"
    latency = {
        "cone_search, single server": _latency(url, cone, [(SINGLE, *c) for c in cones]),
        "cone_search through the coordinator": _latency(url, cone, [(SHARDED, *c) for c in cones]),
    }
    middle = shard_urls[len(shard_urls) // 2]
    with psycopg.connect(middle) as conn:
        lo, hi = conn.execute(
            "SELECT min(q3c_ang2ipix(ra, dec)), max(q3c_ang2ipix(ra, dec)) "
            "FROM catalogs.bench_sharded"
        ).fetchone() or (0, 0)
    own = [c for c in cones if lo <= int(ang2ipix([c[0]], [c[1]])[0]) <= hi]
    latency["cone_search on a shard directly"] = _latency(
        middle, cone, [(SHARDED, *c) for c in own]
    )
    rc = CLASS_CONE_ARCSEC / 3600
    classified = [(float(a), float(d), rc) for a, d in zip(ra, dec, strict=True)]
    latency["classification of a 1' cone, single server"] = _latency(
        url,
        "SELECT p.object_id, p.top_label FROM skyclass.current_classification AS p "
        "JOIN catalogs.bench_single AS t USING (object_id) WHERE p.deployment = 'bench' "
        "AND p.catalog = 'bench_single' AND q3c_radial_query(t.ra, t.dec, %s, %s, %s)",
        classified,
    )
    latency["classification of a 1' cone through the coordinator"] = _latency(
        url,
        "SELECT object_id, top_label FROM shards.bench_sharded_classification "
        "WHERE deployment = 'bench' AND q3c_radial_query(ra, dec, %s, %s, %s)",
        classified,
    )
    counts = {}
    per_shard = " UNION ALL ".join(
        f"SELECT count(*) AS n FROM shards.{SHARDED}__{name}" for name in SHARDS
    )
    for label, setting, query in (
        ("count(*), single server", "off", f"SELECT count(*) FROM catalogs.{SINGLE}"),
        (
            "count(*) through the coordinator",
            "off",
            f"SELECT count(*) FROM shards.{SHARDED}",
        ),
        (
            "count(*) through the coordinator, partitionwise aggregate on",
            "on",
            f"SELECT count(*) FROM shards.{SHARDED}",
        ),
        (
            "sum of the shards' count(*) (pushed down)",
            "off",
            f"SELECT sum(n) FROM ({per_shard}) AS c",
        ),
    ):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"SET enable_partitionwise_aggregate = {setting}")
            runs = []
            for _ in range(3):
                clock = wall()
                conn.execute(query).fetchone()
                runs.append(wall() - clock)
            plan = conn.execute("EXPLAIN (VERBOSE) " + query).fetchall()
            remote = [str(r[0]).strip() for r in plan if "Remote SQL" in str(r[0])]
        counts[label] = median(runs)
        pushed[label] = all("count(*)" in r for r in remote) if remote else False
    seconds.update(counts)
    with psycopg.connect(url) as conn:
        shard_rows = {
            str(s): int(n)
            for s, n in conn.execute(
                "SELECT shard_name, object_count FROM skyclass.shard_range ORDER BY 1"
            )
        }
    return ShardBenchResult(
        rows=rows,
        queries=queries,
        seconds=seconds,
        latency_ms=latency,
        aggregate_pushed_down=pushed,
        shard_rows=shard_rows,
        load_average={"before": before, "after": load_average()},
    )


def print_result(result: ShardBenchResult, cpu: str) -> None:
    """Print the timings and the ratios (with the CPU model beside them)."""
    say(f"\n{result.rows:,} rows; shards: {result.shard_rows}")
    say(format_table(("step", "seconds"), [(k, f"{v:.2f}") for k, v in result.seconds.items()]))
    say(
        format_table(
            ("query", "p50 ms", "p90 ms"),
            [(k, f"{v['p50_ms']:.3f}", f"{v['p90_ms']:.3f}") for k, v in result.latency_ms.items()],
        )
    )
    say(
        "count(*) computed on the shards (Remote SQL holds it): "
        + str(result.aggregate_pushed_down)
    )
    s = result.seconds
    lat = result.latency_ms
    say(f"ratios ({cpu}):")
    say(
        "  rescore 3 shards / single server: "
        f"{s['rescore, 3 shards at once'] / s['rescore, single server']:.2f}x"
    )
    say(
        "  cone_search through the coordinator / single server (p50): "
        f"{lat['cone_search through the coordinator']['p50_ms'] / lat['cone_search, single server']['p50_ms']:.2f}x"  # noqa: E501
    )


def main(argv: list[str] | None = None) -> None:
    """Command line: start four clusters, run the benchmark, destroy them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        say("starting four throwaway clusters (durable settings)")
        single = stack.enter_context(_cluster("single"))
        shards = [stack.enter_context(_cluster(name)).url for name in SHARDS]
        info = machine_info(single.url)
        print_machine(info)
        result = run(single.url, shards, rows=args.rows, queries=args.queries)
        print_result(result, str(info["cpu"]))
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "shards": result.as_dict()}, indent=2))


if __name__ == "__main__":
    main()
