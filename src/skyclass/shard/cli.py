"""``skyclass shard``: add and list shards, attach a catalog over them, rescore it in place."""

from __future__ import annotations

import sys
from typing import Any

import click


@click.group("shard")
def shard() -> None:
    """Catalogs sharded by sky region over several PostgreSQL databases (postgres_fdw).

    \b
    The database skyclass points at is the coordinator; each shard is another
    PostgreSQL database, migrated (skyclass db migrate) and with the same
    extensions. See docs/scale-out.md.
    """


@shard.command("add")
@click.argument("name")
@click.argument("url")
def shard_add(name: str, url: str) -> None:
    """Add the database at URL as shard NAME (a postgres_fdw foreign server).

    \b
    The shard must be at the coordinator's schema revision and have q3c (and
    the skyclass extension when the coordinator has it, same versions). A
    password in URL goes into the current role's user mapping, not into the
    registry; the CLI itself connects with the URL minus password (libpq
    finds one in ~/.pgpass or PGPASSFILE).
    """
    from skyclass.shard.servers import add_shard

    info = add_shard(name, url)
    click.echo(f"shard {info.name} added: foreign server {info.server_name} ({info.conninfo})")


@shard.command("list")
@click.option("--check/--no-check", default=True, show_default=True, help="Connect to each shard.")
def shard_list(check: bool) -> None:
    """List the shards, whether each is reachable, and the catalogs they hold."""
    import psycopg

    from skyclass.db.connect import database_url
    from skyclass.shard.servers import list_shards

    url = database_url()
    shards = list_shards(url=url, check=check)
    if not shards:
        click.echo("no shards (add one with `skyclass shard add NAME URL`)")
        return
    with psycopg.connect(url) as conn:
        held: dict[str, list[str]] = {}
        for shard_name, catalog, objects in conn.execute(
            "SELECT shard_name, catalog_name, object_count FROM skyclass.shard_range "
            "ORDER BY catalog_name"
        ):
            held.setdefault(str(shard_name), []).append(f"{catalog} ({objects:,})")
    rows = [("name", "server", "reachable", "revision", "catalogs (objects)", "connection")]
    for s in shards:
        state = "-" if s.reachable is None else ("yes" if s.reachable else "NO")
        rows.append(
            (
                s.name,
                s.server_name,
                state,
                s.revision or "",
                ", ".join(held.get(s.name, [])),
                s.conninfo,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    for s in shards:
        if s.error:
            click.secho(f"{s.name}: {s.error}", fg="red", err=True)


@shard.command("remove")
@click.argument("name")
def shard_remove(name: str) -> None:
    """Remove shard NAME and its foreign server (refused while it holds an attached catalog)."""
    from skyclass.shard.servers import remove_shard

    remove_shard(name)
    click.echo(f"shard {name} removed")


@shard.command(
    "attach",
    epilog="""\b
Example:
  skyclass shard attach ls_dr10          every shard holds ls_dr10's rows of its sky region
  psql "$(skyclass db url)" -c "SELECT * FROM skyclass.cone_search('ls_dr10', 150, 2, 0.01)"
""",
)
@click.argument("catalog")
@click.option(
    "--shards", default=None, help="Comma-separated shards holding it.  [default: every shard]"
)
def shard_attach(catalog: str, shards: str | None) -> None:
    """Attach CATALOG, which each shard holds a sky region of, on the coordinator.

    \b
    Each shard must hold catalog CATALOG (ingested or registered there) with the
    same columns, its rows in one contiguous Q3C pixel range not overlapping the
    others'. Creates shards.CATALOG (partitioned by q3c_ang2ipix(ra, dec), one
    foreign partition per shard), registered as catalog CATALOG, and
    shards.CATALOG_classification (the shards' current classifications with
    positions). Queries read only the shards whose range they touch.
    """
    from skyclass.shard.catalogs import attach_catalog

    names = None if shards is None else [s.strip() for s in shards.split(",") if s.strip()]
    attached = attach_catalog(catalog, shards=names)
    click.echo(f"catalog {attached.name} attached: {attached.table}, {attached.classification}")
    for p in attached.parts:
        lo = "MINVALUE" if p.lo is None else str(p.lo)
        hi = "MAXVALUE" if p.hi is None else str(p.hi)
        click.echo(f"  {p.shard}: {p.objects:,} objects, Q3C pixels [{lo}, {hi})")


@shard.command("detach")
@click.argument("catalog")
def shard_detach(catalog: str) -> None:
    """Drop the coordinator's tables of CATALOG; the shards keep their data and predictions."""
    from skyclass.shard.catalogs import detach_catalog

    detach_catalog(catalog)
    click.echo(f"catalog {catalog} detached")


@shard.command(
    "rescore",
    epilog="""\b
Each shard runs its own chunked, resumable scoring job on its own rows, all
shards at once. A shard that stops (server down, connection lost) fails alone;
run the same command again to resume it where it stopped. The exit status is
1 when any shard failed.
""",
)
@click.argument("target", metavar="TARGET")
@click.option("--catalog", required=True, help="Attached catalog to score.")
@click.option("--only-new", is_flag=True, help="Score only objects without a prediction.")
@click.option(
    "--chunk-size",
    default=50_000,
    show_default=True,
    type=click.IntRange(1, 100_000_000),
    help="Objects per chunk (one transaction each, on each shard).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    default=None,
    help="Sessions per shard.  [default: number of cores]",
)
@click.option("--restart", is_flag=True, help="Do not resume interrupted runs; start over.")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show progress bars on stderr.  [default: when stderr is a terminal]",
)
def shard_rescore(
    target: str,
    catalog: str,
    only_new: bool,
    chunk_size: int,
    workers: int | None,
    restart: bool,
    progress: bool | None,
) -> None:
    """Score CATALOG with TARGET (deployment or MODEL:VERSION) on every shard in place."""
    from skyclass.shard.rescore import rescore_shards

    show = sys.stderr.isatty() if progress is None else progress
    bars: dict[str, Any] = {}

    def update(name: str, done: int, total: int, rows: int) -> None:
        if not show:
            return
        from tqdm import tqdm

        if name not in bars:
            bars[name] = tqdm(
                total=total, unit="chunk", desc=f"{name}", position=len(bars), file=sys.stderr
            )
        bar = bars[name]
        bar.total = total
        bar.n = done
        bar.set_postfix(rows=f"{rows:,}")
        bar.refresh()

    try:
        results = rescore_shards(
            target,
            catalog,
            only_new=only_new,
            chunk_size=chunk_size,
            workers_per_shard=workers,
            restart=restart,
            progress=update,
        )
    finally:
        for bar in bars.values():
            bar.close()
    failed = 0
    for r in results:
        if r.run is not None:
            resumed = f", attempt {r.run.attempts}" if r.run.attempts > 1 else ""
            click.echo(
                f"{r.shard}: run {r.run.run_id} {r.run.status}, {r.run.rows_scored:,} objects "
                f"in {r.seconds:.1f} s{resumed}"
            )
        else:
            failed += 1
            click.secho(f"{r.shard}: FAILED after {r.seconds:.1f} s: {r.error}", fg="red")
    if failed:
        click.secho(
            f"{failed} of {len(results)} shard(s) failed; the others committed. Run the same "
            "command again to resume them.",
            fg="red",
            err=True,
        )
        sys.exit(1)
