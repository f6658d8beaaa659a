"""What the benchmarks share: a throwaway database, timing helpers and synthetic catalogs.

Database: with ``SKYCLASS_DATABASE_URL`` set the benchmarks use that server
(migrated to the current schema); otherwise :func:`bench_database` starts a
private cluster in a temporary directory with skyclass's durable default
settings (``fsync``, ``synchronous_commit`` and ``full_page_writes`` on, unlike
the test cluster) and deletes it afterwards.

Timing: the machine is shared and noisy, so compared variants run side by
side: :func:`interleaved` runs every variant once per round, rotating their
order from round to round, and figures are medians over the rounds.

Catalogs: :func:`synthetic_catalog` draws SDSS-like objects uniformly over a
sky patch whose area gives :data:`DENSITY_PER_DEG2` objects per square degree
(about 10 per square arcminute, the density of the SDSS photometric catalog
to r ~ 22.5), with an int64 id and float32 ugriz magnitudes. They are written
as FITS or CSV files for the ingest benchmark, or loaded straight into
``catalogs.<name>`` (binary COPY, primary key, Q3C index, CLUSTER, ANALYZE and
the registry rows) for the query benchmarks, so that a 10M-row catalog needs
no 10M-row file.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import shutil
import signal
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

from skyclass.db.cluster import EmbeddedCluster, find_pg_bindir, port_is_free
from skyclass.db.migrate import upgrade
from skyclass.ingest.copy_binary import (
    BIGINT,
    COPY_SIGNATURE,
    COPY_TRAILER,
    DOUBLE,
    REAL,
    Field,
    encode_rows,
    fixed_field,
)

# About 10 objects per square arcminute: 36,000 per square degree.
DENSITY_PER_DEG2 = 36_000.0
BANDS = ("u", "g", "r", "i", "z")
# A patch near the COSMOS field, clear of the poles and of RA 0/360.
PATCH_CENTER = (150.0, 2.0)
# SDSS-like 64-bit object ids (SDSS DR ids are about 1.2376e18).
ID_BASE = 1_237_645_000_000_000_000
CHUNK_ROWS = 1_000_000


# -- sky patches and synthetic catalogs ------------------------------------------------------
@dataclass(frozen=True)
class Patch:
    """A sky box: RA in [ra_min, ra_max), Dec in [dec_min, dec_max], in degrees."""

    ra_min: float
    ra_max: float
    dec_min: float
    dec_max: float

    @property
    def area_deg2(self) -> float:
        """Solid angle of the box in square degrees."""
        band = math.sin(math.radians(self.dec_max)) - math.sin(math.radians(self.dec_min))
        return math.radians(self.ra_max - self.ra_min) * band * (180 / math.pi) ** 2

    def shrunk(self, margin_deg: float) -> Patch:
        """The box with ``margin_deg`` cut from every side (cones drawn inside it stay inside)."""
        cos_dec = math.cos(math.radians(max(abs(self.dec_min), abs(self.dec_max))))
        ra_margin = margin_deg / max(cos_dec, 1e-6)
        return Patch(
            self.ra_min + ra_margin,
            self.ra_max - ra_margin,
            self.dec_min + margin_deg,
            self.dec_max - margin_deg,
        )

    def random_positions(
        self, n: int, rng: np.random.Generator
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """``n`` positions uniform on the sphere inside the box (RA, Dec in degrees)."""
        ra = rng.uniform(self.ra_min, self.ra_max, n)
        low, high = np.sin(np.radians([self.dec_min, self.dec_max]))
        dec = np.degrees(np.arcsin(rng.uniform(low, high, n)))
        return ra, np.clip(dec, self.dec_min, self.dec_max)


def size_suffix(rows: int) -> str:
    """A short name for a row count: 1m, 10m, 20k, or the number (benchmark catalog names)."""
    if rows % 1_000_000 == 0:
        return f"{rows // 1_000_000}m"
    if rows % 1_000 == 0:
        return f"{rows // 1_000}k"
    return str(rows)


def patch_for(n_objects: int, density: float = DENSITY_PER_DEG2) -> Patch:
    """The square-ish patch around :data:`PATCH_CENTER` holding ``n_objects`` at ``density``."""
    area = n_objects / density
    side = math.sqrt(area)
    ra0, dec0 = PATCH_CENTER
    dec_min, dec_max = dec0 - side / 2, dec0 + side / 2
    band = math.sin(math.radians(dec_max)) - math.sin(math.radians(dec_min))
    # Solve area = width(rad) * band * (180/pi)^2 for the RA width.
    width = math.degrees(area / (band * (180 / math.pi) ** 2))
    return Patch(ra0 - width / 2, ra0 + width / 2, dec_min, dec_max)


@dataclass(frozen=True)
class SyntheticCatalog:
    """Objects with an int64 id, RA and Dec (float64 degrees) and ugriz (float32, N x 5)."""

    object_id: npt.NDArray[np.int64]
    ra: npt.NDArray[np.float64]
    dec: npt.NDArray[np.float64]
    mags: npt.NDArray[np.float32]

    def __len__(self) -> int:
        return len(self.object_id)

    def take(self, index: npt.NDArray[Any]) -> SyntheticCatalog:
        """The rows selected by ``index`` (integer indices or a boolean mask)."""
        return SyntheticCatalog(
            self.object_id[index], self.ra[index], self.dec[index], self.mags[index]
        )

    def slice(self, start: int, stop: int) -> SyntheticCatalog:
        """Rows ``start`` to ``stop`` (views, no copy)."""
        return SyntheticCatalog(
            self.object_id[start:stop],
            self.ra[start:stop],
            self.dec[start:stop],
            self.mags[start:stop],
        )


def synthetic_mags(n: int, rng: np.random.Generator) -> npt.NDArray[np.float32]:
    """SDSS-like ugriz magnitudes: r uniform in [14, 22.5], colours of typical stars/galaxies."""
    r = rng.uniform(14.0, 22.5, n)
    g = r + rng.normal(0.6, 0.35, n)
    u = g + rng.normal(1.3, 0.5, n)
    i = r - rng.normal(0.25, 0.15, n)
    z = i - rng.normal(0.1, 0.1, n)
    return np.column_stack([u, g, r, i, z]).astype(np.float32)


def synthetic_catalog(
    n: int, patch: Patch, seed: int, *, first_index: int = 0, id_base: int = ID_BASE
) -> SyntheticCatalog:
    """``n`` SDSS-like objects uniform over ``patch``, reproducible from ``seed``.

    Ids increase with the row: ``id_base + 16 * (first_index + row) + random(0..15)``,
    so chunks drawn with consecutive ``first_index`` never share an id.
    """
    rng = np.random.default_rng([seed, first_index])
    ra, dec = patch.random_positions(n, rng)
    index = np.arange(first_index, first_index + n, dtype=np.int64)
    ids = np.int64(id_base) + index * 16 + rng.integers(0, 16, n, dtype=np.int64)
    return SyntheticCatalog(ids, ra, dec, synthetic_mags(n, rng))


def synthetic_chunks(
    n: int, patch: Patch, seed: int, chunk_rows: int = CHUNK_ROWS
) -> Iterator[SyntheticCatalog]:
    """The same kind of catalog as :func:`synthetic_catalog`, drawn ``chunk_rows`` at a time."""
    for start in range(0, n, chunk_rows):
        yield synthetic_catalog(min(chunk_rows, n - start), patch, seed, first_index=start)


def write_fits(catalog: SyntheticCatalog, path: Path) -> Path:
    """Write ``catalog`` as a FITS binary table (objid K, ra/dec D, ugriz E, degree units)."""
    from astropy.io import fits

    columns = [
        fits.Column(name="objid", format="K", array=catalog.object_id),
        fits.Column(name="ra", format="D", unit="deg", array=catalog.ra),
        fits.Column(name="dec", format="D", unit="deg", array=catalog.dec),
    ]
    columns += [
        fits.Column(name=band, format="E", unit="mag", array=catalog.mags[:, j])
        for j, band in enumerate(BANDS)
    ]
    fits.BinTableHDU.from_columns(columns).writeto(path, overwrite=True)
    return path


def write_fits_chunks(chunks: Iterable[SyntheticCatalog], rows: int, path: Path) -> Path:
    """Write ``rows`` objects arriving as ``chunks`` as the FITS table of :func:`write_fits`.

    The header (from astropy, with NAXIS2 = ``rows``) is written first, then
    each chunk's rows as big-endian records, then the padding to a 2880-byte
    block: a 100M-row file never has its rows in memory at once. Raises
    ``ValueError`` when the chunks do not add up to ``rows``.
    """
    from astropy.io import fits

    empty = SyntheticCatalog(
        np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.zeros((0, len(BANDS)), np.float32)
    )
    template = path.with_suffix(".header.fits")
    write_fits(empty, template)
    with fits.open(template) as hdus:
        primary = hdus[0].header.tostring().encode("ascii")
        header = hdus[1].header.copy()
    template.unlink()
    header["NAXIS2"] = rows
    record = np.dtype(
        [("objid", ">i8"), ("ra", ">f8"), ("dec", ">f8")] + [(b, ">f4") for b in BANDS]
    )
    if header["NAXIS1"] != record.itemsize:
        raise RuntimeError(f"FITS row is {header['NAXIS1']} bytes, expected {record.itemsize}")
    written = 0
    with path.open("wb") as out:
        out.write(primary)
        out.write(header.tostring().encode("ascii"))
        for chunk in chunks:
            data = np.empty(len(chunk), dtype=record)
            data["objid"], data["ra"], data["dec"] = chunk.object_id, chunk.ra, chunk.dec
            for j, band in enumerate(BANDS):
                data[band] = chunk.mags[:, j]
            out.write(data.tobytes())
            written += len(chunk)
        out.write(b"\0" * (-(written * record.itemsize) % 2880))
    if written != rows:
        path.unlink()
        raise ValueError(f"{path}: the chunks held {written} rows, not {rows}")
    return path


def write_csv(catalog: SyntheticCatalog, path: Path) -> Path:
    """Write ``catalog`` as CSV with a header; floats in their shortest exact decimal form."""
    import pandas as pd

    frame = pd.DataFrame(
        {"objid": catalog.object_id, "ra": catalog.ra, "dec": catalog.dec}
        | {band: catalog.mags[:, j] for j, band in enumerate(BANDS)}
    )
    frame.to_csv(path, index=False)
    return path


def copy_fields(catalog: SyntheticCatalog) -> list[Field]:
    """The catalog as binary COPY fields in table column order (object_id, ra, dec, ugriz)."""
    fields = [
        fixed_field(catalog.object_id, BIGINT),
        fixed_field(catalog.ra, DOUBLE),
        fixed_field(catalog.dec, DOUBLE),
    ]
    fields += [fixed_field(catalog.mags[:, j], REAL) for j in range(len(BANDS))]
    return fields


def encode_copy(catalog: SyntheticCatalog) -> bytes:
    """A complete binary COPY stream of ``catalog`` (signature, rows, trailer)."""
    body = encode_rows(copy_fields(catalog), len(catalog))
    return COPY_SIGNATURE + body.tobytes() + COPY_TRAILER


# -- catalog tables ------------------------------------------------------------------------
def create_table_sql(table: str, *, constraints: bool) -> sql.Composed:
    """``CREATE TABLE catalogs.<table>`` with the columns an ingest of the synthetic file makes.

    With ``constraints`` the id and coordinates are NOT NULL and the coordinate
    CHECK of an ingested catalog is added; without, it is a plain table.
    """
    not_null = sql.SQL(" NOT NULL" if constraints else "")
    columns: list[sql.Composable] = [
        sql.SQL("object_id bigint{}").format(not_null),
        sql.SQL("ra double precision{}").format(not_null),
        sql.SQL("dec double precision{}").format(not_null),
        *(sql.SQL("{} real").format(sql.Identifier(band)) for band in BANDS),
    ]
    if constraints:
        columns.append(
            sql.SQL(
                "CONSTRAINT coordinates_valid CHECK "
                "(ra >= 0 AND ra < 360 AND dec BETWEEN -90 AND 90)"
            )
        )
    return sql.SQL("CREATE TABLE {} ({})").format(
        sql.Identifier("catalogs", table), sql.SQL(", ").join(columns)
    )


def q3c_schema(conn: psycopg.Connection[Any]) -> str:
    """The schema holding the q3c extension's functions."""
    row = conn.execute(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'q3c'"
    ).fetchone()
    if row is None:
        raise RuntimeError("the q3c extension is not installed in the benchmark database")
    return str(row[0])


def index_statements(conn: psycopg.Connection[Any], table: str) -> list[sql.Composed]:
    """Primary key, Q3C index, CLUSTER and ANALYZE, as an ingest runs them after its COPY."""
    target = sql.Identifier("catalogs", table)
    q3c_index = sql.Identifier(f"_{table}_q3c")
    return [
        sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY (object_id)").format(
            target, sql.Identifier(f"_{table}_pkey")
        ),
        sql.SQL("CREATE INDEX {} ON {} ({}(ra, dec))").format(
            q3c_index, target, sql.Identifier(q3c_schema(conn), "q3c_ang2ipix")
        ),
        sql.SQL("CLUSTER {} USING {}").format(target, q3c_index),
        sql.SQL("ANALYZE {}").format(target),
    ]


def catalog_exists(url: str, name: str) -> bool:
    """True when a registered catalog or a table ``catalogs.<name>`` exists."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM skyclass.catalog WHERE name = %s) "
            "OR to_regclass(format('catalogs.%%I', %s::text)) IS NOT NULL",
            (name, name),
        ).fetchone()
    return bool(row and row[0])


def require_absent(url: str, names: Iterable[str]) -> None:
    """Refuse to run when a benchmark catalog name is taken (never drop someone's data)."""
    taken = [name for name in names if catalog_exists(url, name)]
    if taken:
        raise RuntimeError(
            f"catalog(s) {', '.join(taken)} already exist in the benchmark database; "
            "drop them (skyclass catalog drop NAME) or use another database"
        )


def load_catalog(
    url: str, name: str, chunks: Iterable[SyntheticCatalog], *, description: str = ""
) -> int:
    """Load synthetic ``chunks`` as registered catalog ``name``, in one transaction.

    Binary COPY into ``catalogs.<name>`` (the columns and CHECK of an ingested
    catalog), then primary key, Q3C index, CLUSTER and ANALYZE, then the rows of
    ``skyclass.catalog`` and ``skyclass.catalog_column``, so the SQL functions
    and the query module see an ordinary catalog. Returns the number of rows.
    """
    rows = 0
    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute(create_table_sql(name, constraints=True))
        copy_sql = sql.SQL("COPY {} FROM STDIN (FORMAT BINARY)").format(
            sql.Identifier("catalogs", name)
        )
        with conn.cursor() as cur, cur.copy(copy_sql) as copy:
            copy.write(COPY_SIGNATURE)
            for chunk in chunks:
                copy.write(encode_rows(copy_fields(chunk), len(chunk)).data)
                rows += len(chunk)
            copy.write(COPY_TRAILER)
        for statement in index_statements(conn, name):
            conn.execute(statement)
        row = conn.execute(
            "INSERT INTO skyclass.catalog (name, schema_name, table_name, id_column, ra_column, "
            "dec_column, description) VALUES (%s, 'catalogs', %s, 'objid', 'ra', 'dec', %s) "
            "RETURNING catalog_id",
            (name, name, description or f"synthetic benchmark catalog ({rows} rows)"),
        ).fetchone()
        assert row is not None
        columns = [("object_id", "bigint", None, "objid"), ("ra", "double precision", "deg", "ra")]
        columns += [("dec", "double precision", "deg", "dec")]
        columns += [(band, "real", "mag", band) for band in BANDS]
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO skyclass.catalog_column (catalog_id, column_name, position, "
                "source_name, pg_type, unit) VALUES (%s, %s, %s, %s, %s, %s)",
                [
                    (row[0], column, position, source, pg_type, unit)
                    for position, (column, pg_type, unit, source) in enumerate(columns, start=1)
                ],
            )
    return rows


def drop_catalog(url: str, name: str) -> None:
    """Drop catalog ``name`` (table and registry rows) or a bare ``catalogs.<name>`` table."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM skyclass.catalog WHERE name = %s", (name,))
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier("catalogs", name)))


def checkpoint(url: str) -> None:
    """Flush dirty buffers, so one variant's writes are not paid for by the next one."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


# -- timing -----------------------------------------------------------------------------------
def interleaved(
    variants: Mapping[str, Callable[[], float]], repeats: int, *, log: bool = True
) -> dict[str, list[float]]:
    """Run every variant ``repeats`` times, rotating the order each round.

    A variant returns the seconds it measured itself (so set-up and clean-up
    stay out of the figure). Rotation spreads slow phases of a shared machine
    over all variants instead of one. Returns the seconds per variant.
    """
    names = list(variants)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            elapsed = variants[name]()
            seconds[name].append(elapsed)
            if log:
                say(f"  round {round_ + 1}/{repeats} {name}: {elapsed:.3f} s")
    return seconds


def median(values: Sequence[float]) -> float:
    """The median of ``values``."""
    return float(statistics.median(values))


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``, linear interpolation."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def say(text: str) -> None:
    """Print a progress line at once (benchmarks run for minutes)."""
    print(text, flush=True)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain text table, columns padded to their widest cell."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


# -- the database ----------------------------------------------------------------------------
def _free_port(start: int = 57000) -> int:
    start += (os.getpid() * 13) % 3000
    for port in range(start, start + 500):
        if port_is_free(port):
            return port
    raise RuntimeError("no free TCP port for the benchmark cluster")


@contextlib.contextmanager
def bench_database(url: str | None = None) -> Iterator[str]:
    """The URL of a migrated database to benchmark in.

    ``url``, else ``SKYCLASS_DATABASE_URL``, else a throwaway cluster with the
    embedded default's durable settings in a temporary directory, destroyed on
    exit.
    """
    target = url or os.environ.get("SKYCLASS_DATABASE_URL")
    if target:
        upgrade(target)
        yield target
        return
    home = Path(tempfile.mkdtemp(prefix="skyclass-bench-"))
    os.chmod(home, 0o755)  # the cluster's OS user must reach it when we run as root
    cluster = EmbeddedCluster(home=home, port=_free_port(), bindir=find_pg_bindir())
    # A benchmark stopped with SIGTERM (kill, timeout) must still stop its cluster:
    # by default Python dies on SIGTERM without running finally blocks.
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        say(f"starting a throwaway PostgreSQL cluster in {home} (durable settings)")
        cluster.start()
        upgrade(cluster.url)
        yield cluster.url
    finally:
        cluster.destroy()
        shutil.rmtree(home, ignore_errors=True)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def machine_info(url: str) -> dict[str, Any]:
    """Cores, memory, OS, versions and the server settings that matter to the figures."""
    import astropy
    import pandas
    import scipy
    import sqlalchemy

    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "os": _os_name(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "astropy": astropy.__version__,
        "scipy": scipy.__version__,
        "pandas": pandas.__version__,
        "psycopg": psycopg.__version__,
        "sqlalchemy": sqlalchemy.__version__,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    with psycopg.connect(url) as conn:
        info["postgresql"] = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'q3c'").fetchone()
        info["q3c"] = row[0] if row else None
        settings = {}
        for name in (
            "fsync",
            "synchronous_commit",
            "full_page_writes",
            "wal_level",
            "shared_buffers",
            "work_mem",
            "maintenance_work_mem",
            "max_wal_size",
            "max_parallel_workers_per_gather",
            "max_parallel_maintenance_workers",
            "jit",
        ):
            value = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
            settings[name] = value[0] if value else None
        info["settings"] = settings
    return info


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.platform()


def cpu_model() -> str:
    """The CPU model name (/proc/cpuinfo), printed beside every ratio."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def print_machine(info: Mapping[str, Any]) -> None:
    """Print :func:`machine_info` in a few lines."""
    say(
        f"machine: {info['cores']} cores ({info['cpu']}), {info['memory_gb']} GB, {info['os']}; "
        f"load average {info['load_average']}"
    )
    say(
        f"versions: PostgreSQL {info['postgresql']}, q3c {info['q3c']}, Python {info['python']}, "
        f"numpy {info['numpy']}, astropy {info['astropy']}, scipy {info['scipy']}, "
        f"pandas {info['pandas']}, psycopg {info['psycopg']}, SQLAlchemy {info['sqlalchemy']}"
    )
    say("server: " + ", ".join(f"{k}={v}" for k, v in info["settings"].items()))


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (how busy the shared machine was)."""
    return [round(x, 2) for x in os.getloadavg()]


def wall() -> float:
    """A monotonic clock in seconds, for measuring."""
    return time.perf_counter()
