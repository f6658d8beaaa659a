"""Load on the portal service: 50 concurrent clients, idle and while a rescoring job runs.

Set-up (on a throwaway cluster unless ``SKYCLASS_DATABASE_URL`` is set): the
bundled SDSS DR17 sample (99,999 objects) is ingested, its ugriz features are
built, two small star/galaxy/QSO versions are trained, compiled and the first
is deployed as ``sgq_current`` and scores the catalog. ``skyclass serve``
then runs as its own process (one uvicorn worker, 8 connections as
``skyclass_portal``).

The load generator is bounded: ``--clients`` asyncio tasks (default 50) share
one httpx client and each sends requests back to back until the phase has
lasted ``--seconds`` or ``--max-requests`` were sent. Requests are drawn with a
fixed seed: 50% 10-arcsec cone searches with classifications
(``/api/cone``) around real objects, 30% object lookups (``/api/objects``),
20% candidate pages (``/api/candidates`` by purity target 0.95 or by
probability, 100 rows). A request counts as an error when its status is not
200. Latency is the client's wall time for the whole response.

Phases: ``idle``, then ``rescoring``, during which the second version rescoring
the whole catalog (``skyclass.score.jobs.score_catalog``, all cores) runs in a
loop in another process. The generator, the service, PostgreSQL and the
rescoring job share the machine's cores, so the figures are what one small
box gives; print the CPU model beside them.

With ``--synthetic-rows N`` the load goes to a synthetic SDSS-like catalog of
N rows instead (``bench.common.load_catalog``: 36,000 objects per square
degree, so a 10-arcsec cone holds about 0.9 objects), which gets the same
feature definition (``sdss_ugriz``) and is scored by the deployed version;
the rescoring phase rescores that catalog.

Usage: ``.venv/bin/python bench/bench_serve.py [--seconds 30] [--clients 50]
[--synthetic-rows 10000000] [--json F]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    bench_database,
    format_table,
    load_catalog,
    machine_info,
    patch_for,
    percentile,
    print_machine,
    say,
    synthetic_chunks,
)

CATALOG = "sdss17"
SYNTHETIC = "bench_serve_big"
DEMO_CSV = (
    Path(__file__).resolve().parents[1]
    / "src/skyclass/demo/data/sdss17_star_classification_99999.csv.gz"
)
CONE_RADIUS_DEG = 10 / 3600
MIX = (("cone", 0.5), ("object", 0.3), ("candidates", 0.2))
# Transport errors (status 0) of the current phase, by exception class.
failures: Counter[str] = Counter()


@dataclass
class Phase:
    """What one phase measured."""

    name: str
    seconds: float
    requests: int
    errors: int
    throughput: float
    p50_ms: float
    p99_ms: float
    per_kind: dict[str, dict[str, float]] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    rescoring_runs: int = 0


@dataclass
class Setup:
    """The database, the two versions and the catalog the load goes to."""

    url: str
    v1: int
    v2: int
    rows: int
    catalog: str = CATALOG


def prepare(url: str, rows: int | None = None) -> Setup:
    """Load, featurise, train, compile, deploy and score (skipped when already there)."""
    from skyclass.compile.store import compile_model_version
    from skyclass.features.build import build_feature_set
    from skyclass.features.spec import example_spec_path
    from skyclass.ingest import ingest_file
    from skyclass.score.deploy import deploy
    from skyclass.score.jobs import score_catalog
    from skyclass.train.pipeline import train_model
    from skyclass.train.snapshot import create_snapshot

    os.environ["SKYCLASS_DATABASE_URL"] = url
    with psycopg.connect(url) as conn:
        found = conn.execute(
            "SELECT v.model_version_id FROM skyclass.model AS m JOIN skyclass.model_version AS v "
            "USING (model_id) WHERE m.name = 'bench_sgq' ORDER BY v.version"
        ).fetchall()
    if len(found) < 2:
        source = DEMO_CSV
        if rows is not None:
            source = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-serve-{rows}.csv"
            with gzip.open(DEMO_CSV, "rt") as handle, open(source, "w") as out:
                for i, line in enumerate(handle):
                    if i > rows:
                        break
                    out.write(line)
        t = time.perf_counter()
        ingest_file(
            source, CATALOG, id_column="orig_row", ra_column="alpha", dec_column="delta", url=url
        )
        fs = build_feature_set(example_spec_path("sdss_ugriz"), url=url).feature_set_id
        snap = create_snapshot(fs, "class", n_folds=3, seed=0, url=url)
        versions = []
        for seed in (0, 1):
            result = train_model(
                "bench_sgq",
                snap.snapshot_id,
                params={"max_iter": 40, "max_leaf_nodes": 15},
                seed=seed,
                baselines=("dummy",),
                importance=False,
                url=url,
            )
            compile_model_version(result.model_version_id, url=url, opt_level="-O1")
            versions.append(result.model_version_id)
        deploy("sgq_current", versions[0], url=url)
        score_catalog("sgq_current", CATALOG, url=url)
        say(f"set-up done in {time.perf_counter() - t:.0f} s")
        found = [(v,) for v in versions]
    with psycopg.connect(url) as conn:
        n = conn.execute(f"SELECT count(*) FROM catalogs.{CATALOG}").fetchone()[0]  # type: ignore[index]
    return Setup(url, int(found[0][0]), int(found[1][0]), int(n))


def prepare_synthetic(setup: Setup, rows: int) -> Setup:
    """A synthetic catalog of ``rows`` objects with sdss_ugriz features, scored by sgq_current."""
    from skyclass.features.build import build_feature_set
    from skyclass.features.spec import example_spec_path
    from skyclass.score.jobs import score_catalog

    url = setup.url
    with psycopg.connect(url) as conn:
        exists = conn.execute(
            "SELECT count(*) FROM skyclass.catalog WHERE name = %s", (SYNTHETIC,)
        ).fetchone()
    if not exists or not exists[0]:
        t = time.perf_counter()
        load_catalog(url, SYNTHETIC, synthetic_chunks(rows, patch_for(rows), seed=7))
        say(f"loaded {rows:,} synthetic objects in {time.perf_counter() - t:.0f} s")
        t = time.perf_counter()
        build_feature_set(example_spec_path("sdss_ugriz"), catalog=SYNTHETIC, url=url)
        say(f"built their features in {time.perf_counter() - t:.0f} s")
        t = time.perf_counter()
        score_catalog("sgq_current", SYNTHETIC, url=url)
        say(f"scored them in {time.perf_counter() - t:.0f} s")
    with psycopg.connect(url) as conn:
        n = conn.execute(f"SELECT count(*) FROM catalogs.{SYNTHETIC}").fetchone()[0]  # type: ignore[index]
    return Setup(url, setup.v1, setup.v2, int(n), SYNTHETIC)


def _rescore_loop(url: str, version: int, stop_file: str, catalog: str = CATALOG) -> None:
    """Rescore ``catalog`` with ``version`` again and again until ``stop_file`` exists."""
    from skyclass.score.jobs import score_catalog

    os.environ["SKYCLASS_DATABASE_URL"] = url
    runs = 0
    while not os.path.exists(stop_file):
        score_catalog(str(version), catalog, resume=False, url=url)
        runs += 1
    Path(stop_file).write_text(str(runs))


def _start_service(url: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SKYCLASS_DATABASE_URL": url}
    process = subprocess.Popen(
        [sys.executable, "-m", "skyclass.cli", "serve", "--port", str(port), "--no-access-log"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
        if process.poll() is not None:
            raise RuntimeError(f"skyclass serve exited: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
    process.kill()
    raise RuntimeError("skyclass serve did not answer within 60 s")


def _targets(url: str, catalog: str) -> tuple[list[tuple[float, float]], list[int]]:
    """2,000 objects of ``catalog``: cone centres (their positions) and ids to look up."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f"SELECT object_id, ra, dec FROM catalogs.{catalog} TABLESAMPLE SYSTEM (1) "
            "REPEATABLE (7) LIMIT 2000"
        ).fetchall()
        if len(rows) < 500:
            rows = conn.execute(
                f"SELECT object_id, ra, dec FROM catalogs.{catalog} ORDER BY object_id LIMIT 2000"
            ).fetchall()
    return [(float(r[1]), float(r[2])) for r in rows], [int(r[0]) for r in rows]


def _request(
    rng: random.Random,
    positions: list[tuple[float, float]],
    ids: list[int],
    catalog: str,
    only: str | None = None,
) -> tuple[str, str]:
    mix = [(k, w) for k, w in MIX if only in (None, k)]
    roll, acc = rng.random() * sum(w for _, w in mix), 0.0
    kind = mix[-1][0]
    for name, share in mix:
        acc += share
        if roll < acc:
            kind = name
            break
    if kind == "cone":
        ra, dec = rng.choice(positions)
        return kind, (
            f"/api/cone?catalog={catalog}&ra={ra!r}&dec={dec!r}&radius={CONE_RADIUS_DEG!r}"
        )
    if kind == "object":
        return kind, f"/api/objects/{catalog}/{rng.choice(ids)}"
    cls = rng.choice(["QSO", "STAR", "GALAXY"])
    if rng.random() < 0.5:
        return kind, (
            f"/api/candidates?catalog={catalog}&deployment=sgq_current&class={cls}"
            "&purity=0.95&limit=100"
        )
    return kind, (
        f"/api/candidates?catalog={catalog}&deployment=sgq_current&class={cls}"
        f"&min_probability={rng.choice([0.8, 0.9, 0.99])}&limit=100"
    )


async def _load(
    base: str,
    clients: int,
    seconds: float,
    max_requests: int,
    seed: int,
    positions: list[tuple[float, float]],
    ids: list[int],
    catalog: str = CATALOG,
    only: str | None = None,
) -> tuple[list[tuple[str, float, int]], float]:
    rng = random.Random(seed)
    plan = [_request(rng, positions, ids, catalog, only) for _ in range(max_requests)]
    results: list[tuple[str, float, int]] = []
    failures.clear()
    cursor = iter(plan)
    start = time.perf_counter()
    deadline = start + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:

        async def worker() -> None:
            for kind, path in cursor:
                if time.perf_counter() > deadline:
                    return
                t = time.perf_counter()
                try:
                    status = (await client.get(path)).status_code
                except httpx.HTTPError as exc:  # counted as an error, named in the figures
                    status = 0
                    failures[type(exc).__name__] += 1
                results.append((kind, time.perf_counter() - t, status))

        await asyncio.gather(*(worker() for _ in range(clients)))
    return results, time.perf_counter() - start


def summarise(name: str, results: list[tuple[str, float, int]], seconds: float) -> Phase:
    """Throughput, p50/p99 and errors of one phase, overall and per request kind."""
    ok = [r for r in results if r[2] == 200]
    latencies = [r[1] * 1000 for r in results]
    per_kind = {}
    for kind, _ in MIX:
        ms = [r[1] * 1000 for r in results if r[0] == kind]
        if ms:
            per_kind[kind] = {
                "requests": len(ms),
                "p50_ms": round(percentile(ms, 50), 2),
                "p99_ms": round(percentile(ms, 99), 2),
            }
    return Phase(
        name,
        round(seconds, 2),
        len(results),
        len(results) - len(ok),
        round(len(results) / seconds, 1),
        round(percentile(latencies, 50), 2),
        round(percentile(latencies, 99), 2),
        per_kind,
        {
            **{str(k): v for k, v in Counter(r[2] for r in results).items()},
            **{f"0: {name}": n for name, n in failures.items()},
        },
    )


def run(
    url: str,
    *,
    seconds: float = 30,
    clients: int = 50,
    max_requests: int = 100_000,
    port: int = 18080,
    rows: int | None = None,
    seed: int = 13,
    synthetic_rows: int | None = None,
    only: str | None = None,
) -> dict[str, Any]:
    """Prepare, serve, load idle and while rescoring; return the figures."""
    setup = prepare(url, rows)
    if synthetic_rows:
        setup = prepare_synthetic(setup, synthetic_rows)
    cat = setup.catalog
    positions, ids = _targets(url, cat)
    service = _start_service(url, port)
    base = f"http://127.0.0.1:{port}"
    phases = []
    try:
        asyncio.run(_load(base, clients, 3, 500, seed + 1, positions, ids, cat, only))  # warm-up
        results, took = asyncio.run(
            _load(base, clients, seconds, max_requests, seed, positions, ids, cat, only)
        )
        phases.append(summarise("idle", results, took))
        stop = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-serve-stop-{os.getpid()}"
        stop.unlink(missing_ok=True)
        context = multiprocessing.get_context("spawn")
        job = context.Process(target=_rescore_loop, args=(url, setup.v2, str(stop), cat))
        job.start()
        time.sleep(2)  # the job is planning and scoring its first chunks
        results, took = asyncio.run(
            _load(base, clients, seconds, max_requests, seed, positions, ids, cat, only)
        )
        stop.write_text("")
        job.join(timeout=600)
        phase = summarise("rescoring", results, took)
        try:
            phase.rescoring_runs = int(stop.read_text() or 0)
        except ValueError:
            phase.rescoring_runs = 0
        stop.unlink(missing_ok=True)
        phases.append(phase)
    finally:
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(timeout=30)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()
        if service.stderr is not None:
            service.stderr.close()
    return {
        "catalog": cat,
        "only": only,
        "rows": setup.rows,
        "clients": clients,
        "phases": [asdict(p) for p in phases],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30, help="length of each phase")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients")
    parser.add_argument(
        "--max-requests", type=int, default=100_000, help="most requests of a phase"
    )
    parser.add_argument(
        "--rows",
        type=int,
        default=None,
        help="load only the first ROWS objects of the sample (quick runs)",
    )
    parser.add_argument(
        "--synthetic-rows",
        type=int,
        default=None,
        help="serve a synthetic catalog of this many rows instead (e.g. 10000000)",
    )
    parser.add_argument(
        "--only", choices=[k for k, _ in MIX], default=None, help="send only this kind"
    )
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    with bench_database() as url:
        info = machine_info(url)
        print_machine(info)
        figures = run(
            url,
            seconds=args.seconds,
            clients=args.clients,
            max_requests=args.max_requests,
            port=args.port,
            rows=args.rows,
            synthetic_rows=args.synthetic_rows,
            only=args.only,
        )
    figures["machine"] = info
    idle, busy = figures["phases"]
    say(f"{figures['rows']:,} objects, {figures['clients']} clients, CPU: {info['cpu']}")
    print(
        format_table(
            [
                "phase",
                "requests",
                "errors",
                "req/s",
                "p50 ms",
                "p99 ms",
                "cone p99",
                "object p99",
                "candidates p99",
                "rescoring runs",
            ],
            [
                [
                    p["name"],
                    p["requests"],
                    p["errors"],
                    p["throughput"],
                    p["p50_ms"],
                    p["p99_ms"],
                    p["per_kind"].get("cone", {}).get("p99_ms"),
                    p["per_kind"].get("object", {}).get("p99_ms"),
                    p["per_kind"].get("candidates", {}).get("p99_ms"),
                    p["rescoring_runs"],
                ]
                for p in figures["phases"]
            ],
        )
    )
    ratio = busy["p99_ms"] / idle["p99_ms"] if idle["p99_ms"] else float("nan")
    say(f"p99 while rescoring / idle p99 = {ratio:.2f} (CPU: {info['cpu']})")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
