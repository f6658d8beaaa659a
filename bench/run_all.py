"""Run the catalog-store benchmarks: ingest, cone search and cross-match.

Full sizes (``make bench``): ingest of 1M rows (to_sql on 100k), cone searches
on 1M and 10M rows, cross-match of 1M x 1M; 12-20 minutes on 2 cores.
``--quick`` runs a smoke-sized version (100k rows) in a couple of minutes.
The benchmarks use ``SKYCLASS_DATABASE_URL`` when it is set, otherwise a
throwaway cluster with durable settings in a temporary directory.

Usage: ``.venv/bin/python bench/run_all.py [--quick] [--only ingest,cone,xmatch] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import bench_cone, bench_ingest, bench_xmatch
from bench.common import bench_database, load_average, machine_info, print_machine, say, wall

BENCHMARKS = ("ingest", "cone", "xmatch")


def sizes(quick: bool) -> dict[str, dict[str, Any]]:
    """Keyword arguments of each benchmark's ``run`` for full or quick sizes."""
    if quick:
        return {
            "ingest": {"rows": 100_000, "to_sql_rows": 10_000, "repeats": 1},
            "cone": {"sizes": (100_000,), "queries": 300, "warmup": 50},
            "xmatch": {"rows": 100_000, "repeats": 1},
        }
    return {
        "ingest": {"rows": 1_000_000, "to_sql_rows": 100_000, "repeats": 3},
        "cone": {"sizes": (1_000_000, 10_000_000), "queries": 2000, "warmup": 200},
        "xmatch": {"rows": 1_000_000, "repeats": 3},
    }


def run_all(url: str, *, quick: bool = False, only: tuple[str, ...] = BENCHMARKS) -> dict[str, Any]:
    """Run the chosen benchmarks on database ``url``; return machine info and every result."""
    info = machine_info(url)
    print_machine(info)
    results: dict[str, Any] = {"machine": info, "quick": quick}
    arguments = sizes(quick)
    runners: dict[str, Callable[..., Any]] = {
        "ingest": bench_ingest.run,
        "cone": bench_cone.run,
        "xmatch": bench_xmatch.run,
    }
    for name in only:
        say(f"\n=== {name} ===")
        clock = wall()
        result = runners[name](url, **arguments[name])
        results[name] = result.as_dict()
        say(f"=== {name}: {wall() - clock:.0f} s ===")
    results["load_average_end"] = load_average()
    say("\n=== targets ===")
    for name in only:
        for target, met in results[name]["targets"].items():
            say(f"  {'MET    ' if met else 'NOT MET'}  {name}: {target}")
    if "xmatch" in results:
        say(f"  match checks (database vs astropy): {results['xmatch']['checks_passed']}")
    if "cone" in results:
        say(f"  cones where the variants disagree: {results['cone']['mismatched_cones']}")
    return results


def main(argv: list[str] | None = None) -> None:
    """Command line of ``make bench``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke-sized run (100k rows)")
    parser.add_argument(
        "--only", default=",".join(BENCHMARKS), help="comma-separated: ingest,cone,xmatch"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write all results here")
    args = parser.parse_args(argv)
    only = tuple(name.strip() for name in args.only.split(",") if name.strip())
    unknown = [name for name in only if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {BENCHMARKS}")
    with bench_database() as url:
        results = run_all(url, quick=args.quick, only=only)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
        say(f"results written to {args.json}")


if __name__ == "__main__":
    main()
