"""The ``skyclass`` command line.

Known errors (:class:`skyclass.errors.SkyclassError`) are printed as one clear
message and exit with status 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from skyclass import __version__
from skyclass.compile.cli import artifacts, compile_command
from skyclass.config import load_settings
from skyclass.domain.cli import anomaly, domain, ood
from skyclass.domain.drift_cli import drift
from skyclass.errors import SkyclassError
from skyclass.explain.cli import explain
from skyclass.features.cli import features
from skyclass.ingest.cli import ingest
from skyclass.learning.cli import queue
from skyclass.query.cli import cone, xmatch
from skyclass.registry.cli import catalog
from skyclass.report.cli import report
from skyclass.score.cli import deploy, runs, schedule, score
from skyclass.serve.cli import serve
from skyclass.shard.cli import shard
from skyclass.train.cli import ablate, models, train


class SkyclassGroup(click.Group):
    """A click group that turns :class:`SkyclassError` into a one-line error."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SkyclassError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(1)


@click.group(cls=SkyclassGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="skyclass")
def main() -> None:
    """Classify the sources of survey catalogs inside PostgreSQL.

    With no SKYCLASS_DATABASE_URL set, skyclass runs a private PostgreSQL
    cluster of its own (see `skyclass db --help`) and starts it on demand.
    """


# -- skyclass db ---------------------------------------------------------------
@main.group()
def db() -> None:
    """Manage the database: the embedded default cluster and migrations.

    Without SKYCLASS_DATABASE_URL these commands act on the embedded cluster
    under SKYCLASS_HOME; with it set, on that server (start/stop then only
    report that an external server is in use).
    """


def _embedded_or_none() -> Any:
    from skyclass.db.cluster import EmbeddedCluster

    settings = load_settings()
    if settings.database_url:
        return None
    return EmbeddedCluster.from_settings(settings)


@db.command("start")
def db_start() -> None:
    """Create (first time) and start the embedded cluster, then migrate it."""
    from skyclass.db.migrate import upgrade

    cluster = _embedded_or_none()
    if cluster is None:
        click.echo("SKYCLASS_DATABASE_URL is set: using that server, nothing to start")
        return
    cluster.start()
    for warning in upgrade(cluster.url):
        click.secho(f"warning: {warning}", fg="yellow", err=True)
    click.echo(f"running: data {cluster.data_dir}, port {cluster.port}")
    click.echo(f"connect: psql '{cluster.url}'")


@db.command("stop")
def db_stop() -> None:
    """Stop the embedded cluster."""
    cluster = _embedded_or_none()
    if cluster is None:
        click.echo("SKYCLASS_DATABASE_URL is set: the external server is not managed by skyclass")
        return
    cluster.stop()
    click.echo("stopped")


@db.command("status")
def db_status() -> None:
    """Say which database is used, whether it runs, and its schema revision."""
    from skyclass.db.migrate import current_revision, head_revision

    cluster = _embedded_or_none()
    if cluster is None:
        url = load_settings().database_url or ""
        click.echo("database: external (SKYCLASS_DATABASE_URL)")
    else:
        click.echo(f"database: embedded, data directory {cluster.data_dir}, port {cluster.port}")
        if not cluster.running():
            click.echo("state: stopped (start it with `skyclass db start`)")
            sys.exit(3)
        url = cluster.url
    click.echo("state: running")
    revision = current_revision(url)
    head = head_revision()
    state = "current" if revision == head else "needs `skyclass db migrate`"
    click.echo(f"schema: revision {revision or 'none'} (newest {head}, {state})")


@db.command("url")
@click.option(
    "--tcp",
    is_flag=True,
    help="Give a 127.0.0.1:PORT URL (its password in a file only you can read) "
    "instead of the socket one.",
)
def db_url(tcp: bool) -> None:
    """Print the connection URL (for psql, pandas, SQLAlchemy...)."""
    cluster = _embedded_or_none()
    if cluster is None:
        click.echo(load_settings().database_url)
    else:
        click.echo(cluster.tcp_url() if tcp else cluster.url)


@db.command("migrate")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
def db_migrate(revision: str) -> None:
    """Bring the database to the current skyclass schema (Alembic).

    Checks the server for the extensions skyclass needs (q3c, vector;
    pg_cron optional) and names the command that installs a missing one.
    """
    from skyclass.db.connect import database_url
    from skyclass.db.migrate import current_revision, downgrade, upgrade

    url = database_url()
    before = current_revision(url)
    if revision == "head" or before is None:
        for warning in upgrade(url, revision):
            click.secho(f"warning: {warning}", fg="yellow", err=True)
    else:
        downgrade(url, revision)
    click.echo(f"schema: revision {before or 'none'} -> {current_revision(url) or 'none'}")


@main.command()
@click.option(
    "--quick", is_flag=True, help="Small models and 3 folds (a minute; what the tests run)."
)
@click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory of the demo report (default: SKYCLASS_HOME/demo-report).",
)
@click.option(
    "--serve",
    "then_serve",
    is_flag=True,
    help="Then start the portal service on 127.0.0.1:8080 (skyclass serve).",
)
@click.pass_context
def demo(ctx: click.Context, quick: bool, output: Path | None, then_serve: bool) -> None:
    """Run the whole product on the bundled SDSS DR17 and BOSS DR10 samples, step by step.

    Starts the embedded database (unless SKYCLASS_DATABASE_URL is set), loads
    both catalogs, builds features, trains a star/galaxy/QSO and a photo-z
    model next to their baselines, compiles and deploys them, rescores the
    catalogs inside the database, runs example SQL (cone search with classes,
    QSO candidates at 95% purity, class changes between two versions) and
    writes the demo report. Re-running adds new model versions. With --serve,
    the portal service then serves the results (Ctrl-C stops it).
    """
    from skyclass.demo import run_demo

    run_demo(quick=quick, output=output)
    if then_serve:
        from skyclass.serve.cli import serve

        ctx.invoke(serve)


main.add_command(ingest)
main.add_command(catalog)
main.add_command(cone)
main.add_command(xmatch)
main.add_command(report)
main.add_command(features)
main.add_command(compile_command)
main.add_command(artifacts)
main.add_command(score)
main.add_command(ood)
main.add_command(anomaly)
main.add_command(runs)
main.add_command(deploy)
main.add_command(schedule)
main.add_command(train)
main.add_command(models)
main.add_command(ablate)
main.add_command(domain)
main.add_command(drift)
main.add_command(shard)
main.add_command(explain)
main.add_command(queue)
main.add_command(serve)


if __name__ == "__main__":
    main()
