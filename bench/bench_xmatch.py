"""Cross-match of two 1M-row catalogs: ``skyclass.crossmatch`` against astropy.

Catalog ``a`` holds ``rows`` synthetic SDSS-like objects; catalog ``b`` as
many rows: 90% are objects of ``a`` moved by Gaussian offsets of ``sigma``
(0.5 arcsec) per axis, 10% are unrelated objects of the same patch. Both are
loaded straight into the database (COPY, Q3C index, CLUSTER, ANALYZE).
Best-only matches within ``radius`` (1 arcsec), side by side in interleaved
rounds:

- ``db_<method>``: ``skyclass.crossmatch(a, b, radius, true, method)`` for each
  method the SQL offers (``cells``, ``index``, ``sweep``: the zone sweep of the
  C extension; ``auto`` picks ``sweep`` for equal sizes when the extension is
  there), with the matches fetched into numpy arrays through binary
  ``COPY (SELECT ...) TO STDOUT``: the result in the client's memory, like
  astropy's;
- ``db_<method>_server`` for cells and sweep: ``SELECT count(*) FROM
  skyclass.crossmatch(...)``: the same work kept in the database (what an
  ``INSERT ... SELECT`` would pay);
- ``astropy_in_memory``: ``SkyCoord`` construction from numpy arrays already in
  memory plus ``match_coordinates_sky`` and the radius cut (both parts are
  also reported separately);
- ``astropy_with_fetch``: the same after fetching ids and coordinates of both
  catalogs from the database with binary COPY, what a user would really do.

Every database method's matches are checked against astropy's: the same
pairs (a difference is only allowed within 1e-8 arcsec of the radius) and
distances within 1e-6 arcsec.

Usage: ``.venv/bin/python bench/bench_xmatch.py [--quick] [--rows N] [--methods cells,sweep]
[--explain] [--json F]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    ID_BASE,
    Patch,
    SyntheticCatalog,
    drop_catalog,
    format_table,
    interleaved,
    load_average,
    load_catalog,
    median,
    patch_for,
    require_absent,
    say,
    synthetic_catalog,
    synthetic_mags,
    wall,
)

SEED = 20261124
NAME_A = "bench_xmatch_a"
NAME_B = "bench_xmatch_b"
METHODS = ("cells", "index", "sweep")
SERVER_METHODS = ("cells", "sweep")  # also timed with the result kept in the database
TOLERANCE_ARCSEC = 1e-6  # distances: database vs astropy (both Vincenty)
BOUNDARY_ARCSEC = 1e-8  # membership may differ only this close to the radius
_HEADER = 19  # binary COPY signature (11) + flags (4) + header extension length (4)
_TRAILER = 2


@dataclass
class MatchCheck:
    """How one database result compares with astropy's."""

    matches_db: int
    matches_astropy: int
    differing_pairs: int
    differing_beyond_boundary: int
    max_distance_diff_arcsec: float

    @property
    def passed(self) -> bool:
        """Same pairs (except right at the radius) and distances within the tolerance."""
        return (
            self.differing_beyond_boundary == 0
            and self.max_distance_diff_arcsec <= TOLERANCE_ARCSEC
        )


@dataclass
class XmatchResult:
    """Medians (seconds), ratios, match checks and target verdict of one run."""

    rows_a: int
    rows_b: int
    radius_arcsec: float
    sigma_arcsec: float
    repeats: int
    seconds: dict[str, float]
    astropy_parts: dict[str, float]
    ratios: dict[str, float]
    checks: dict[str, dict[str, Any]]
    checks_passed: bool
    true_counterparts: float
    targets: dict[str, bool]
    plan: str | None = None
    load_average: dict[str, list[float]] = field(default_factory=dict)
    all_seconds: dict[str, list[float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The result as plain JSON-ready data."""
        return asdict(self)


# -- data -------------------------------------------------------------------------------------
def make_catalogs(
    rows: int, sigma_arcsec: float, unrelated_fraction: float, seed: int = SEED
) -> tuple[SyntheticCatalog, SyntheticCatalog, npt.NDArray[np.int64], Patch]:
    """Catalog a, catalog b and for each row of b the index in a of its source (-1: unrelated).

    b has as many rows as a: a share ``1 - unrelated_fraction`` of a's objects
    moved by Gaussian offsets of ``sigma_arcsec`` along RA and Dec, and
    unrelated objects drawn over the same patch, in random order.
    """
    patch = patch_for(rows)
    a = synthetic_catalog(rows, patch, seed)
    rng = np.random.default_rng([seed, 1])
    related = round(rows * (1 - unrelated_fraction))
    source = np.sort(rng.choice(rows, related, replace=False))
    sigma = sigma_arcsec / 3600
    dec = np.clip(a.dec[source] + rng.normal(0, sigma, related), -90, 90)
    cos_dec = np.maximum(np.cos(np.radians(a.dec[source])), 1e-6)
    ra = np.mod(a.ra[source] + rng.normal(0, sigma, related) / cos_dec, 360.0)
    extra_ra, extra_dec = patch.random_positions(rows - related, rng)
    order = rng.permutation(rows)
    b = SyntheticCatalog(
        object_id=(np.int64(ID_BASE // 2) + np.arange(rows, dtype=np.int64) * 16)[order],
        ra=np.concatenate([ra, extra_ra])[order],
        dec=np.concatenate([dec, extra_dec])[order],
        mags=np.concatenate([a.mags[source], synthetic_mags(rows - related, rng)])[order],
    )
    origin = np.concatenate([source, np.full(rows - related, -1)]).astype(np.int64)[order]
    return a, b, origin, patch


# -- binary COPY into numpy ---------------------------------------------------------------------
def copy_out(
    conn: psycopg.Connection[Any], query: sql.Composable, columns: list[tuple[str, str]]
) -> np.ndarray[Any, np.dtype[np.void]]:
    """Run ``COPY (query) TO STDOUT (FORMAT BINARY)`` and view the rows as a numpy record array.

    ``columns`` are (name, big-endian dtype) of fixed-width NOT NULL columns,
    e.g. ``("id", ">i8")``; the wire format then has a fixed row size.
    """
    layout: list[tuple[str, str]] = [("n", ">i2")]
    for name, dtype in columns:
        layout += [(f"_len_{name}", ">i4"), (name, dtype)]
    record = np.dtype(layout)
    statement = sql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(query)
    parts: list[bytes] = []
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for data in copy:
            parts.append(bytes(data))
    buffer = b"".join(parts)
    count = (len(buffer) - _HEADER - _TRAILER) // record.itemsize
    if count < 0 or _HEADER + count * record.itemsize + _TRAILER != len(buffer):
        raise RuntimeError("unexpected binary COPY stream (NULLs or variable-width columns?)")
    return np.frombuffer(buffer, dtype=record, count=count, offset=_HEADER)


def fetch_positions(
    conn: psycopg.Connection[Any], name: str
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Ids, RA and Dec of catalog ``name`` as native numpy arrays, through binary COPY."""
    query = sql.SQL("SELECT object_id, ra, dec FROM {}").format(sql.Identifier("catalogs", name))
    rec = copy_out(conn, query, [("id", ">i8"), ("ra", ">f8"), ("dec", ">f8")])
    return rec["id"].astype(np.int64), rec["ra"].astype(np.float64), rec["dec"].astype(np.float64)


@dataclass(frozen=True)
class Matches:
    """Best matches: id in a, id in b, distance in arcsec (sorted by id_a)."""

    id_a: npt.NDArray[np.int64]
    id_b: npt.NDArray[np.int64]
    arcsec: npt.NDArray[np.float64]


def fetch_crossmatch(url: str, radius_arcsec: float, method: str) -> Matches:
    """Best-only matches of ``skyclass.crossmatch`` as numpy arrays (binary COPY)."""
    query = sql.SQL(
        "SELECT object_id_a, object_id_b, distance_arcsec "
        "FROM skyclass.crossmatch({}, {}, {}, true, {})"
    ).format(
        sql.Literal(NAME_A),
        sql.Literal(NAME_B),
        sql.Literal(radius_arcsec),
        sql.Literal(method),
    )
    with psycopg.connect(url) as conn:
        rec = copy_out(conn, query, [("a", ">i8"), ("b", ">i8"), ("d", ">f8")])
    return Matches(
        rec["a"].astype(np.int64), rec["b"].astype(np.int64), rec["d"].astype(np.float64)
    )


def count_crossmatch(
    url: str, radius_arcsec: float, method: str, *, a: str = NAME_A, b: str = NAME_B
) -> int:
    """Number of best-only matches of catalog ``a`` in ``b``, counted in the database."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM skyclass.crossmatch(%s, %s, %s, true, %s)",
            (a, b, radius_arcsec, method),
        ).fetchone()
    assert row is not None
    return int(row[0])


def astropy_match(
    ids_a: npt.NDArray[np.int64],
    ra_a: npt.NDArray[np.float64],
    dec_a: npt.NDArray[np.float64],
    ids_b: npt.NDArray[np.int64],
    ra_b: npt.NDArray[np.float64],
    dec_b: npt.NDArray[np.float64],
    radius_arcsec: float,
) -> tuple[Matches, float, float]:
    """Nearest b of every a within the radius with astropy; also (SkyCoord s, match s)."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord, match_coordinates_sky

    clock = wall()
    coords_a = SkyCoord(ra=ra_a * u.deg, dec=dec_a * u.deg)
    coords_b = SkyCoord(ra=ra_b * u.deg, dec=dec_b * u.deg)
    built = wall()
    index, separation, _ = match_coordinates_sky(coords_a, coords_b)
    arcsec = separation.to_value(u.arcsec)
    keep = np.flatnonzero(arcsec <= radius_arcsec)
    result = Matches(ids_a[keep], ids_b[index[keep]], arcsec[keep])
    done = wall()
    return result, built - clock, done - built


def compare(db: Matches, reference: Matches, radius_arcsec: float) -> MatchCheck:
    """Compare two best-match results pair by pair."""
    db_pairs = dict(
        zip(db.id_a.tolist(), zip(db.id_b.tolist(), db.arcsec.tolist(), strict=True), strict=True)
    )
    ref_pairs = dict(
        zip(
            reference.id_a.tolist(),
            zip(reference.id_b.tolist(), reference.arcsec.tolist(), strict=True),
            strict=True,
        )
    )
    differing = 0
    beyond = 0
    worst = 0.0
    for id_a in db_pairs.keys() | ref_pairs.keys():
        mine = db_pairs.get(id_a)
        theirs = ref_pairs.get(id_a)
        if mine is not None and theirs is not None and mine[0] == theirs[0]:
            worst = max(worst, abs(mine[1] - theirs[1]))
            continue
        differing += 1
        distances = [p[1] for p in (mine, theirs) if p is not None]
        if not all(abs(d - radius_arcsec) < BOUNDARY_ARCSEC for d in distances):
            beyond += 1
    return MatchCheck(len(db_pairs), len(ref_pairs), differing, beyond, worst)


# -- diagnostics ------------------------------------------------------------------------------
def explain_crossmatch(url: str, radius_arcsec: float, method: str) -> str:
    """The EXPLAIN ANALYZE of the query ``skyclass.crossmatch`` runs inside, via auto_explain.

    The function builds its query dynamically, so a plain EXPLAIN shows only a
    function scan; auto_explain (logging nested statements, sent to the client
    as notices) shows the inner plan. Needs the right to ``LOAD`` it.
    """
    notices: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            conn.execute("LOAD 'auto_explain'")
        except psycopg.Error as exc:
            return f"(auto_explain cannot be loaded: {exc})"
        for setting in (
            "auto_explain.log_min_duration = 0",
            "auto_explain.log_analyze = on",
            "auto_explain.log_nested_statements = on",
            "auto_explain.log_timing = on",
            "client_min_messages = log",
        ):
            conn.execute(sql.SQL("SET " + setting))  # constant text, no user input
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        conn.execute(
            "SELECT count(*) FROM skyclass.crossmatch(%s, %s, %s, true, %s)",
            (NAME_A, NAME_B, radius_arcsec, method),
        )
    inner = [n for n in notices if "Query Text: SELECT id_a" in n]
    return "\n\n".join(condense_plan(n) for n in (inner or notices))


def condense_plan(plan: str, width: int = 240) -> str:
    """A plan made readable: long array literals elided, long lines cut to ``width``.

    The cell join inlines its per-band cell counts (thousands of numbers) into
    every expression that uses them.
    """
    plan = re.sub(r"'\{[-0-9,.]{80,}\}'", "'{...}'", plan)
    return "\n".join(
        line if len(line) <= width else line[: width - 3] + "..." for line in plan.splitlines()
    )


# -- the benchmark ------------------------------------------------------------------------------
def run(
    url: str,
    *,
    rows: int = 1_000_000,
    radius_arcsec: float = 1.0,
    sigma_arcsec: float = 0.5,
    unrelated_fraction: float = 0.1,
    repeats: int = 3,
    methods: tuple[str, ...] = METHODS,
    explain: bool | None = None,
) -> XmatchResult:
    """Run the cross-match benchmark on database ``url`` and print its figures.

    ``explain`` None prints the inner plan of the fastest database method only
    when the target (database at least as fast as astropy) is missed.
    """
    require_absent(url, (NAME_A, NAME_B))
    before = load_average()
    say(
        f"cross-match benchmark: {rows:,} x {rows:,} rows, radius {radius_arcsec:g} arcsec, "
        f"offsets {sigma_arcsec:g} arcsec per axis, {unrelated_fraction:.0%} unrelated; "
        f"{repeats} rounds"
    )
    a, b, origin, _ = make_catalogs(rows, sigma_arcsec, unrelated_fraction)
    # Imports and first-call set-up of astropy/scipy stay out of the timings.
    head = slice(0, 10)
    astropy_match(
        a.object_id[head], a.ra[head], a.dec[head], b.object_id[head], b.ra[head], b.dec[head], 1.0
    )
    try:
        for name, catalog in ((NAME_A, a), (NAME_B, b)):
            clock = wall()
            load_catalog(url, name, [catalog])
            say(f"  loaded {name} in {wall() - clock:.1f} s")
        result = _measure(url, a, b, origin, radius_arcsec, sigma_arcsec, repeats, methods)
        missed = not all(result.targets.values())
        if explain or (explain is None and missed):
            fastest = min(methods, key=lambda m: result.seconds[f"db_{m}"])
            say(f"  EXPLAIN ANALYZE of the {fastest} method's inner query (auto_explain) ...")
            result.plan = explain_crossmatch(url, radius_arcsec, fastest)
    finally:
        drop_catalog(url, NAME_A)
        drop_catalog(url, NAME_B)
    result.load_average = {"before": before, "after": load_average()}
    print_result(result)
    return result


def _measure(
    url: str,
    a: SyntheticCatalog,
    b: SyntheticCatalog,
    origin: npt.NDArray[np.int64],
    radius: float,
    sigma: float,
    repeats: int,
    methods: tuple[str, ...],
) -> XmatchResult:
    db_results: dict[str, Matches] = {}
    astropy_results: list[Matches] = []
    parts: dict[str, list[float]] = {"skycoord": [], "match": []}

    def database(method: str) -> float:
        clock = wall()
        matches = fetch_crossmatch(url, radius, method)
        elapsed = wall() - clock
        db_results.setdefault(method, matches)
        return elapsed

    def database_server(method: str) -> float:
        clock = wall()
        count_crossmatch(url, radius, method)
        return wall() - clock

    def in_memory() -> float:
        clock = wall()
        matches, built, matched = astropy_match(
            a.object_id, a.ra, a.dec, b.object_id, b.ra, b.dec, radius
        )
        elapsed = wall() - clock
        parts["skycoord"].append(built)
        parts["match"].append(matched)
        astropy_results.append(matches)
        return elapsed

    def with_fetch() -> float:
        clock = wall()
        with psycopg.connect(url) as conn:
            fetched_a = fetch_positions(conn, NAME_A)
            fetched_b = fetch_positions(conn, NAME_B)
        astropy_match(*fetched_a, *fetched_b, radius)
        return wall() - clock

    variants: dict[str, Callable[[], float]] = {
        f"db_{m}": functools.partial(database, m) for m in methods
    }
    for method in SERVER_METHODS:
        if method in methods:
            variants[f"db_{method}_server"] = functools.partial(database_server, method)
    variants["astropy_in_memory"] = in_memory
    variants["astropy_with_fetch"] = with_fetch
    seconds = interleaved(variants, repeats)
    medians = {name: median(values) for name, values in seconds.items()}

    reference = astropy_results[0]
    checks = {m: compare(db_results[m], reference, radius) for m in methods}
    # The share of a's objects whose match is their true counterpart (informative).
    source_of_b = dict(zip(b.object_id.tolist(), origin.tolist(), strict=True))
    index_of_a = {int(i): n for n, i in enumerate(a.object_id.tolist())}
    true = sum(
        1
        for ia, ib in zip(reference.id_a.tolist(), reference.id_b.tolist(), strict=True)
        if source_of_b[ib] == index_of_a[ia]
    )
    astropy_best = medians["astropy_in_memory"]
    fastest_db = min(medians[f"db_{m}"] for m in methods)
    ratios = {f"astropy_in_memory/db_{m}": astropy_best / medians[f"db_{m}"] for m in methods}
    ratios |= {
        f"astropy_with_fetch/db_{m}": medians["astropy_with_fetch"] / medians[f"db_{m}"]
        for m in methods
    }
    ratios |= {
        f"astropy_in_memory/db_{m}_server": astropy_best / medians[f"db_{m}_server"]
        for m in SERVER_METHODS
        if m in methods
    }
    targets = {
        "database (fastest method, result in client memory) at least as fast as astropy "
        "in memory": fastest_db <= astropy_best,
        "database at least as fast as astropy with the fetch": fastest_db
        <= medians["astropy_with_fetch"],
    }
    return XmatchResult(
        rows_a=len(a),
        rows_b=len(b),
        radius_arcsec=radius,
        sigma_arcsec=sigma,
        repeats=repeats,
        seconds=medians,
        astropy_parts={name: median(values) for name, values in parts.items()},
        ratios=ratios,
        checks={m: asdict(c) | {"passed": c.passed} for m, c in checks.items()},
        checks_passed=all(c.passed for c in checks.values()),
        true_counterparts=true / len(a),
        targets=targets,
        all_seconds=seconds,
    )


def print_result(result: XmatchResult) -> None:
    """Print timings, ratios, match checks and target verdicts."""
    say(f"\ncross-match: medians of {result.repeats} interleaved rounds")
    say(
        format_table(
            ("variant", "seconds", "rows of a per s"),
            [(name, f"{s:.3f}", f"{result.rows_a / s:,.0f}") for name, s in result.seconds.items()],
        )
    )
    say(
        f"  astropy parts: SkyCoord construction {result.astropy_parts['skycoord']:.3f} s, "
        f"match_coordinates_sky + cut {result.astropy_parts['match']:.3f} s"
    )
    say("\nratios (> 1: the database is faster)")
    say(format_table(("ratio", "value"), [(k, f"{v:.2f}") for k, v in result.ratios.items()]))
    say("\nmatch checks against astropy")
    for method, check in result.checks.items():
        say(
            f"  {method}: {check['matches_db']:,} matches (astropy {check['matches_astropy']:,}), "
            f"{check['differing_pairs']} differing pairs "
            f"({check['differing_beyond_boundary']} not at the radius), max |d distance| "
            f"{check['max_distance_diff_arcsec']:.2e} arcsec: "
            f"{'PASS' if check['passed'] else 'FAIL'}"
        )
    say(f"  objects of a matched to their true counterpart: {result.true_counterparts:.1%}")
    say("targets")
    for name, met in result.targets.items():
        say(f"  {'MET    ' if met else 'NOT MET'}  {name}")
    if result.plan:
        say("\ninner plan of skyclass.crossmatch (auto_explain):")
        say(result.plan)


def main(argv: list[str] | None = None) -> None:
    """Command line: run the cross-match benchmark on its own."""
    from bench.common import bench_database, machine_info, print_machine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k x 100k rows, 1 round")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--explain", action="store_true", help="print the inner query plan")
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated database methods to time (default {','.join(METHODS)})",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    if not methods or set(methods) - set(METHODS):
        parser.error(f"--methods: choose from {', '.join(METHODS)}")
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    repeats = args.repeats or (1 if args.quick else 3)
    with bench_database() as url:
        info = machine_info(url)
        print_machine(info)
        result = run(
            url,
            rows=rows,
            repeats=repeats,
            methods=methods,
            explain=True if args.explain else None,
        )
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "xmatch": result.as_dict()}, indent=2))


if __name__ == "__main__":
    main()
