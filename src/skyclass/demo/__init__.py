"""The demo: the main job on the bundled SDSS DR17 sample, step by step.

For now: load the catalog, run a cone search and a self cross-match, and show
how to reach the same tables from SQL. Later steps (features, training,
in-database scoring, report) extend it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click

DATA_DIR = Path(__file__).resolve().parent / "data"
SDSS17_FILE = DATA_DIR / "sdss17_star_classification_99999.csv.gz"
CATALOG = "sdss17"
# An SDSS object observed twice (rows 62669 and 62670 of the original file).
CONE_CENTRE = (34.7496, -0.6019)

SQL_EXAMPLES = f"""\
-- the ten nearest objects within 1 arcmin, with their photometry
SELECT s.object_id, s.distance_arcsec, c.u, c.g, c.r, c.class
  FROM skyclass.cone_search('{CATALOG}', {CONE_CENTRE[0]}, {CONE_CENTRE[1]}, 1.0/60) AS s
  JOIN catalogs.{CATALOG} AS c USING (object_id)
 ORDER BY s.distance_arcsec LIMIT 10;

-- Q3C directly: objects within 0.1 degree of a position
SELECT count(*) FROM catalogs.{CATALOG} WHERE q3c_radial_query(ra, dec, 180.0, 0.5, 0.1);

-- where every loaded row came from
SELECT file_name, file_sha256, rows_accepted, loaded.finished_at
  FROM skyclass.catalog_load AS loaded JOIN skyclass.catalog USING (catalog_id)
 WHERE name = '{CATALOG}';"""


@contextmanager
def step(title: str, echo: Callable[[str], None] = click.echo) -> Iterator[None]:
    """Print a step's title, run it, then print how long it took."""
    echo(click.style(f"==> {title}", bold=True))
    start = time.perf_counter()
    yield
    echo(click.style(f"    done in {time.perf_counter() - start:.1f} s", dim=True))


def run_demo(data_file: Path = SDSS17_FILE) -> None:
    """Run the demo against the configured database, printing each step."""
    from skyclass.config import load_settings
    from skyclass.db.connect import connect, database_url
    from skyclass.ingest import ingest_file, list_catalogs
    from skyclass.ingest.cli import summary_lines
    from skyclass.query.output import render_text
    from skyclass.query.spatial import cone_search, crossmatch

    total = time.perf_counter()
    settings = load_settings()
    with step("database"):
        url = database_url(settings)
        where = "SKYCLASS_DATABASE_URL" if settings.database_url else f"embedded, {settings.home}"
        click.echo(f"    using {where}")

    with step(f"ingest {data_file.name} as catalog {CATALOG!r}"):
        exists = any(entry.name == CATALOG for entry in list_catalogs(url))
        report = ingest_file(
            data_file,
            CATALOG,
            id_column="orig_row",
            ra_column="alpha",
            dec_column="delta",
            mode="replace" if exists else "create",
            description="SDSS DR17 spectroscopic objects (star/galaxy/QSO), bundled sample",
            url=url,
            progress=True,
        )
        for line in summary_lines(report):
            click.echo(f"    {line}")

    ra, dec = CONE_CENTRE
    with step(f"cone search: 1 arcmin around RA {ra}, Dec {dec}"):
        found = cone_search(CATALOG, ra, dec, "1arcmin", columns="u,g,r,class", url=url)
        click.echo(_indent(render_text(found)))

    with step("self cross-match within 1 arcsec (objects observed twice)"):
        pairs = crossmatch(CATALOG, CATALOG, "1arcsec", url=url)
        click.echo(_indent(render_text(pairs[:10])))

    with step("the same from SQL"):
        with connect(url) as conn:
            count = conn.execute(
                "SELECT count(*) FROM catalogs.sdss17 "
                "WHERE q3c_radial_query(ra, dec, 180.0, 0.5, 0.1)"
            ).fetchone()
        click.echo(f"    psql '{url}'")
        click.echo(_indent(SQL_EXAMPLES))
        click.echo(f"    (the Q3C example counts {count[0] if count else 0} objects)")
    click.echo(click.style(f"demo finished in {time.perf_counter() - total:.0f} s", bold=True))


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.rstrip().splitlines())
