"""CSV ingest: peak memory against file size (normal and adversarial files) and reader speed.

- ``memory``: each file is ingested by :func:`skyclass.ingest.ingest_file` in
  a child process of its own, whose peak resident set (``VmHWM``) is
  reported beside the file size, the seconds and the outcome.
  Normal files: the synthetic SDSS-like catalog of :mod:`bench.common` at
  several sizes. Adversarial files: one 10 MB cell in a 10 MB file (the
  hostile test's case: 87 s and 9.4 GiB before the strict reader), an
  unclosed quote at the top of a 100k-row file, and 1,000 cells of 100 kB
  quoted (legal, loaded). A child that only imports skyclass gives the floor.
  A normal file's peak grows with its size because the ingest holds the rows
  to sort them in Q3C order up to ``SORT_MEMORY``; the reader itself holds
  one chunk.
- ``read``: the CSV reader alone (no database) on the largest normal file,
  against astropy's chunked fast reader with the settings the ingest used
  before (``chunk_generator``, 16 MB chunks, the same NULL markers), medians
  of interleaved rounds.

``--src DIR`` runs the ingest children with another checkout's ``src`` first
on ``sys.path`` (add ``--no-adversarial`` for a version that would take 9 GiB
on the 10 MB cell). ``--compare-src DIR`` instead ingests the largest normal
file alternately with this checkout and with ``DIR`` (``repeats`` rounds each,
medians): the before/after cost of a change on the same file and load.

Usage: ``.venv/bin/python bench/bench_csv_ingest.py [--quick] [--src DIR | --compare-src DIR]
[--no-adversarial] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    SyntheticCatalog,
    drop_catalog,
    format_table,
    interleaved,
    median,
    patch_for,
    say,
    synthetic_catalog,
    write_csv,
)

SEED = 20261202
CHILD = "--child"


def adversarial_files(directory: Path) -> dict[str, Path]:
    """The hostile files: a 10 MB cell, an early unclosed quote, many large quoted cells."""
    header = b"id,ra,dec,name\n"
    files: dict[str, Path] = {}
    path = directory / "one_10mb_cell.csv"
    path.write_bytes(header + b"1,10,10," + b"x" * 10_000_000 + b"\n2,11,11,b\n")
    files["one 10 MB cell"] = path
    path = directory / "unclosed_quote.csv"
    with path.open("wb") as fh:
        fh.write(header + b'1,10,10,"a\n')
        for i in range(2, 100_001):
            fh.write(b"%d,%d.5,%d.25,n%d\n" % (i, i % 360, i % 90, i))
    files["unclosed quote, 100k rows"] = path
    path = directory / "big_quoted_cells.csv"
    with path.open("wb") as fh:
        fh.write(header)
        cell = b'"' + b"q" * 99_998 + b'"'
        for i in range(1, 1001):
            fh.write(b"%d,%d.5,%d.25,%s\n" % (i, i % 360, i % 90, cell))
    files["1,000 quoted 100 kB cells"] = path
    return files


def normal_files(directory: Path, sizes: tuple[int, ...]) -> dict[str, Path]:
    """Synthetic SDSS-like catalogs of ``sizes`` rows as CSV."""
    files: dict[str, Path] = {}
    for rows in sizes:
        catalog: SyntheticCatalog = synthetic_catalog(rows, patch_for(rows), SEED)
        files[f"{rows:,} rows"] = write_csv(catalog, directory / f"normal_{rows}.csv")
    return files


def measure(path: Path | None, url: str, catalog: str, src: Path | None) -> dict[str, Any]:
    """Ingest ``path`` (None: imports only) in a child; its outcome, seconds and peak RSS."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    args = [sys.executable, __file__, CHILD, url, catalog, str(path or "")]
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace").strip()
    try:
        result: dict[str, Any] = json.loads(text.splitlines()[-1])
    except (ValueError, IndexError):
        result = {"outcome": f"crashed (exit {proc.returncode}): {text[-300:]}", "seconds": None}
    # The child's own high-water mark (VmHWM, reset by exec); wait4's ru_maxrss also
    # counts the parent's pages at fork time, so it is only the fallback of a crash.
    result["peak_rss_mib"] = result.get("vm_hwm_mib") or usage.ru_maxrss / 1024
    result["file_mb"] = path.stat().st_size / 1e6 if path else 0.0
    return result


def child(url: str, catalog: str, path: str) -> None:
    """The child process: ingest ``path`` into ``catalog`` and print one JSON line."""
    import skyclass.ingest  # noqa: F401 - the floor includes the imports
    from skyclass.errors import SkyclassError

    if not path:
        print(json.dumps({"outcome": "imports only", "seconds": 0.0, "vm_hwm_mib": _vm_hwm()}))
        return
    from skyclass.ingest import ingest_file

    started = time.perf_counter()
    try:
        report = ingest_file(Path(path), catalog, url=url)
        outcome = f"loaded {report.rows_accepted:,} rows"
    except SkyclassError as exc:
        outcome = "refused: " + str(exc).split(": ", 1)[-1][:90]
    seconds = time.perf_counter() - started
    print(json.dumps({"outcome": outcome, "seconds": seconds, "vm_hwm_mib": _vm_hwm()}))


def _vm_hwm() -> float | None:
    """This process's peak resident set in MiB (``VmHWM`` of /proc/self/status)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def read_speed(path: Path, repeats: int) -> dict[str, float]:
    """Seconds to read ``path`` with the skyclass reader and with astropy's chunked reader."""
    from astropy.io import ascii as astropy_ascii

    from skyclass.ingest.csvtext import CSV_NULL_MARKERS
    from skyclass.ingest.sources import CHUNK_BYTES, CsvSource

    def skyclass_reader() -> float:
        started = time.perf_counter()
        with CsvSource(path) as source:
            rows = sum(chunk.length for chunk in source.chunks())
        assert rows > 0
        return time.perf_counter() - started

    def astropy_reader() -> float:
        started = time.perf_counter()
        tables = astropy_ascii.read(
            str(path),
            format="csv",
            guess=False,
            fast_reader={"chunk_size": CHUNK_BYTES, "chunk_generator": True},
            fill_values=[(marker, "0") for marker in CSV_NULL_MARKERS],
        )
        rows = sum(len(table) for table in tables)
        assert rows > 0
        return time.perf_counter() - started

    seconds = interleaved(
        {"skyclass_strict": skyclass_reader, "astropy_fast_chunked": astropy_reader}, repeats
    )
    return {name: median(values) for name, values in seconds.items()}


def run(
    url: str,
    *,
    sizes: tuple[int, ...],
    repeats: int,
    src: Path | None = None,
    adversarial: bool = True,
) -> dict[str, Any]:
    """Measure memory for every file and reader speed on the largest; print and return them."""
    result: dict[str, Any] = {"memory": {}, "read_seconds": {}}
    with tempfile.TemporaryDirectory(prefix="skyclass-bench-csv-") as tmp:
        directory = Path(tmp)
        files = {"(imports only)": None} | normal_files(directory, sizes)
        if adversarial:
            files |= adversarial_files(directory)
        for i, (label, path) in enumerate(files.items()):
            catalog = f"bench_csv_{i}"
            say(f"  ingest {label} ...")
            try:
                result["memory"][label] = measure(path, url, catalog, src)
            finally:
                drop_catalog(url, catalog)
        largest = files[f"{max(sizes):,} rows"]
        assert largest is not None
        say(f"  read speed on {max(sizes):,} rows ({repeats} rounds) ...")
        result["read_seconds"] = read_speed(largest, repeats)
        result["read_rows"] = max(sizes)
    rows = [
        [
            label,
            f"{m['file_mb']:.1f}",
            f"{m['peak_rss_mib']:.0f}",
            "" if m["seconds"] is None else f"{m['seconds']:.2f}",
            m["outcome"],
        ]
        for label, m in result["memory"].items()
    ]
    say(format_table(["file", "MB", "peak RSS MiB", "seconds", "outcome"], rows))
    n = result["read_rows"]
    say(
        format_table(
            ["reader", "seconds", "rows/s"],
            [[k, f"{v:.2f}", f"{n / v:,.0f}"] for k, v in result["read_seconds"].items()],
        )
    )
    return result


def compare(url: str, *, rows: int, repeats: int, other: Path) -> dict[str, Any]:
    """Ingest one normal file of ``rows`` rows alternately with this src and ``other``."""
    here = Path(__file__).resolve().parents[1] / "src"
    runs: dict[str, list[dict[str, Any]]] = {"this checkout": [], str(other): []}
    with tempfile.TemporaryDirectory(prefix="skyclass-bench-csv-") as tmp:
        path = normal_files(Path(tmp), (rows,))[f"{rows:,} rows"]
        for i in range(repeats):
            order = [(here, "this checkout"), (other, str(other))]
            for src, label in order if i % 2 == 0 else order[::-1]:
                catalog = f"bench_csv_compare_{i}"
                try:
                    runs[label].append(measure(path, url, catalog, src))
                finally:
                    drop_catalog(url, catalog)
                say(f"  round {i + 1}/{repeats} {label}: {runs[label][-1]['seconds']:.2f} s")
    result = {
        label: {
            "seconds": median([r["seconds"] for r in values]),
            "peak_rss_mib": median([r["peak_rss_mib"] for r in values]),
        }
        for label, values in runs.items()
    }
    say(
        format_table(
            ["src", "seconds (median)", "rows/s", "peak RSS MiB"],
            [
                [
                    k,
                    f"{v['seconds']:.2f}",
                    f"{rows / v['seconds']:,.0f}",
                    f"{v['peak_rss_mib']:.0f}",
                ]
                for k, v in result.items()
            ],
        )
    )
    return result


def main(argv: list[str] | None = None) -> None:
    """Command line: run the CSV ingest benchmark on its own."""
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == [CHILD]:
        child(*args_in[1:4])
        return
    from bench.common import bench_database, machine_info, print_machine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="up to 100k rows, 1 round")
    parser.add_argument("--src", type=Path, default=None, help="run the ingest from this src")
    parser.add_argument("--compare-src", type=Path, default=None, help="before/after on 1 file")
    parser.add_argument(
        "--no-adversarial", action="store_true", help="normal files only (e.g. with --src)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(args_in)
    sizes = (10_000, 100_000) if args.quick else (100_000, 300_000, 1_000_000)
    repeats = 1 if args.quick else 3
    with bench_database() as url:
        info = machine_info(url)
        print_machine(info)
        if args.compare_src is not None:
            result = compare(url, rows=max(sizes), repeats=repeats, other=args.compare_src)
        else:
            result = run(
                url, sizes=sizes, repeats=repeats, src=args.src, adversarial=not args.no_adversarial
            )
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "csv_ingest": result}, indent=2))


if __name__ == "__main__":
    main()
