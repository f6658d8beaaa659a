"""``skyclass score``, ``skyclass runs``, ``skyclass deploy`` and ``skyclass schedule``.

Heavy modules (numpy, tl2cgen) are imported inside the commands so that
``skyclass --help`` stays fast.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from skyclass.score.runs import RunInfo


def _when(value: Any) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M:%S}"


def _run_line(run: RunInfo) -> str:
    took = "" if run.seconds is None else f" in {run.seconds:.1f} s"
    status = run.effective_status
    if status != run.status:
        status += " (backend gone)"
    where = f"{run.label} on {run.catalog}"
    if run.deployment:
        where = f"{run.deployment} = {where}"
    return (
        f"run {run.run_id}  {status:<11} {where}  {run.mode}, {run.scorer}, "
        f"{run.chunks_done}/{run.chunks_total} chunks, {run.rows_scored:,} rows{took}  "
        f"started {_when(run.started_at)} ({run.triggered_by}"
        + (f" {run.schedule_name}" if run.schedule_name else "")
        + f", attempt {run.attempts}, pid {run.backend_pid})"
    )


@click.command(
    "score",
    epilog="""\b
Examples:
  skyclass score sgq_current --catalog sdss17              every object, all cores
  skyclass score sgq_current --catalog sdss17 --only-new   objects without a prediction
  skyclass score sgq:3 --catalog sdss17 --workers 1        a model version, one session

\b
TARGET is a deployment (skyclass deploy), MODEL:VERSION or a model_version_id.
The job is chunked: each chunk's predictions and its completion mark commit
together, so a job that is killed (Ctrl-C, a terminated backend, a server
restart) continues where it stopped when started again with the same
arguments (--restart starts over). One job per model version and catalog runs
at a time; a second start fails at once with "already running". A full run
replaces the version's predictions of the catalog in one transaction when it
succeeds; other versions' predictions are never touched. Without the skyclass
extension on the server, the model runs on the client (same results).
The same job runs inside the database with:
  CALL skyclass.rescore('sgq_current', 'sdss17');
""",
)
@click.argument("target", metavar="TARGET")
@click.option("--catalog", "catalog", required=True, help="Catalog to score.")
@click.option("--only-new", is_flag=True, help="Score only objects without a prediction.")
@click.option(
    "--chunk-size",
    default=50_000,
    show_default=True,
    type=click.IntRange(1, 100_000_000),
    help="Objects per chunk (one transaction each).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    default=None,
    help="Parallel database sessions.  [default: number of cores]",
)
@click.option(
    "--scorer",
    type=click.Choice(["auto", "database", "client"]),
    default="auto",
    show_default=True,
    help="database: skyclass.predict; client: the fallback scorer; auto: database if possible.",
)
@click.option("--restart", is_flag=True, help="Do not resume an interrupted run; start over.")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show a progress bar on stderr.  [default: when stderr is a terminal]",
)
@click.option(
    "--ood/--no-ood",
    default=True,
    show_default=True,
    help="Afterwards bring the catalog's OOD scores up to date when the version has an OOD "
    "forest (CALL skyclass.refresh_ood).",
)
def score(
    target: str,
    catalog: str,
    only_new: bool,
    chunk_size: int,
    workers: int | None,
    scorer: str,
    restart: bool,
    progress: bool | None,
    ood: bool,
) -> None:
    """Score every object of a catalog with a deployment or model version.

    When the version has an OOD forest (skyclass ood fit), its OOD scores of
    the catalog are then refreshed too, unless --no-ood.
    """
    from skyclass.score.jobs import score_catalog

    show = sys.stderr.isatty() if progress is None else progress
    bar: Any = None

    def update(done: int, total: int, rows: int) -> None:
        nonlocal bar
        if not show:
            return
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="chunk", desc=f"scoring {catalog}", file=sys.stderr)
        bar.total = total
        bar.n = done
        bar.set_postfix(rows=f"{rows:,}")
        bar.refresh()

    try:
        run = score_catalog(
            target,
            catalog,
            only_new=only_new,
            chunk_size=chunk_size,
            workers=workers,
            scorer=scorer,
            resume=not restart,
            progress=update,
        )
    finally:
        if bar is not None:
            bar.close()
    rate = "" if not run.seconds else f" ({run.rows_scored / run.seconds:,.0f} rows/s)"
    resumed = f", attempt {run.attempts}" if run.attempts > 1 else ""
    click.echo(
        f"run {run.run_id} {run.status}: {run.rows_scored:,} objects of {run.catalog} scored "
        f"with {run.label} (model version {run.model_version_id}) by the {run.scorer} scorer, "
        f"{run.workers} session(s), {run.chunks_done} chunks{resumed}{rate}"
    )
    if ood and run.status == "succeeded":
        line = _refresh_ood(run.model_version_id, catalog)
        if line is not None:
            click.echo(line)
    if run.objects_without_features:
        click.secho(
            f"warning: {run.objects_without_features:,} objects of {run.catalog} have no "
            "features and were not scored: build the feature set again (skyclass features "
            "build) and rerun with --only-new",
            fg="yellow",
            err=True,
        )


@click.command("runs")
@click.option("--catalog", default=None, help="Only runs over this catalog.")
@click.option(
    "--limit", default=20, show_default=True, type=click.IntRange(1, 10_000), help="Runs to show."
)
def runs(catalog: str | None, limit: int) -> None:
    """List scoring runs, newest first, with their status and progress.

    A run shown as "running (backend gone)" lost its session (terminated,
    cancelled, server restart); the next start of the same job resumes it.
    """
    from skyclass.db.connect import connect
    from skyclass.score.runs import list_runs

    with connect() as conn:
        found = list_runs(conn, limit=limit, catalog=catalog)
    if not found:
        click.echo("no scoring runs")
    for run in found:
        click.echo(_run_line(run))
        if run.error and run.effective_status != "succeeded":
            click.echo(f"    error: {run.error}")


# -- skyclass deploy ------------------------------------------------------------------------------
@click.group("deploy")
def deploy() -> None:
    """Deployments: stable names for the model version that scores a catalog.

    A deployment belongs to one model and switches between its versions in
    one transaction; skyclass.current_classification shows the predictions
    of the version each deployment points at, and every switch is logged in
    skyclass.deployment_history.
    """


@deploy.command("set")
@click.argument("name")
@click.argument("model_ref", metavar="MODEL[:VERSION]")
@click.option("--description", default=None, help="What the deployment is for.")
def deploy_set(name: str, model_ref: str, description: str | None) -> None:
    """Point deployment NAME at a model version (creating NAME if new)."""
    from skyclass.score.deploy import deploy as do_deploy

    result = do_deploy(name, model_ref, description=description)
    d = result.deployment
    if result.previous_version_id is None:
        click.echo(f"deployment {d.name} created: {d.label} (model version {d.model_version_id})")
    elif not result.changed:
        click.echo(f"deployment {d.name} already points at {d.label}")
    else:
        click.echo(
            f"deployment {d.name} switched: model version {result.previous_version_id} -> "
            f"{d.label} (model version {d.model_version_id})"
        )


@deploy.command("list")
def deploy_list() -> None:
    """List deployments and the versions they point at."""
    from skyclass.score.deploy import list_deployments

    found = list_deployments()
    if not found:
        click.echo("no deployments (create one with `skyclass deploy set NAME MODEL:VERSION`)")
    for d in found:
        compiled = {True: "", False: ", NOT COMPILED", None: ""}[d.compiled]
        click.echo(
            f"{d.name:<24} {d.label:<24} model version {d.model_version_id}, {d.task}"
            f"{compiled}; set {_when(d.updated_at)} by {d.updated_by}"
        )


@deploy.command("history")
@click.argument("name", required=False)
def deploy_history(name: str | None) -> None:
    """Show the switches of deployment NAME (or of all), oldest first."""
    from skyclass.score.deploy import deployment_history

    entries = deployment_history(name)
    if not entries:
        click.echo("no deployment history")
    for e in entries:
        what = "removed" if e.model_version_id is None else f"-> {e.label} ({e.model_version_id})"
        before = "" if e.previous_version_id is None else f" (was {e.previous_version_id})"
        click.echo(f"{_when(e.switched_at)}  {e.name:<24} {what}{before}  by {e.switched_by}")


@deploy.command("remove")
@click.argument("name")
def deploy_remove(name: str) -> None:
    """Remove deployment NAME (predictions and history stay)."""
    from skyclass.score.deploy import remove_deployment

    removed = remove_deployment(name)
    click.echo(f"deployment {removed.name} removed (it pointed at {removed.label})")


# -- skyclass schedule -----------------------------------------------------------------------------
@click.group("schedule")
def schedule() -> None:
    """Rescoring schedules run by pg_cron inside the database.

    Each schedule runs CALL skyclass.rescore(...) at the times of a cron
    expression (server time zone). Failed or interrupted runs show in
    `skyclass schedule list`; the next run resumes them.
    """


@schedule.command("add")
@click.argument("name")
@click.option("--deployment", "target", required=True, help="Deployment (or MODEL:VERSION).")
@click.option("--catalog", required=True, help="Catalog to score.")
@click.option("--cron", "cron_expr", required=True, help='Cron expression, e.g. "0 3 * * *".')
@click.option("--only-new", is_flag=True, help="Score only objects without a prediction.")
@click.option(
    "--chunk-size",
    default=50_000,
    show_default=True,
    type=click.IntRange(1, 100_000_000),
    help="Objects per chunk (one transaction each).",
)
def schedule_add(
    name: str, target: str, catalog: str, cron_expr: str, only_new: bool, chunk_size: int
) -> None:
    """Schedule rescoring of a catalog as NAME."""
    from skyclass.score.schedule import add_schedule

    s = add_schedule(name, target, catalog, cron_expr, only_new=only_new, chunk_size=chunk_size)
    click.echo(f"schedule {s.name} added: {s.cron!r} runs {s.command}")
    click.echo(f"  (pg_cron job {s.cron_jobid} {s.cron_jobname!r} in database {s.cron_database})")


@schedule.command("list")
@click.option(
    "--last",
    default=3,
    show_default=True,
    type=click.IntRange(1, 100),
    help="Executions and runs to show per schedule.",
)
def schedule_list(last: int) -> None:
    """List schedules with their last executions and scoring runs."""
    from skyclass.score.schedule import list_schedules

    found = list_schedules(last=last)
    if not found:
        click.echo("no schedules (add one with `skyclass schedule add`)")
    for status in found:
        s = status.schedule
        state = {True: "active", False: "inactive", None: "unknown"}[status.active]
        click.echo(
            f"{s.name}: {s.cron!r} {s.target} on {s.catalog}"
            f"{' (only new)' if s.only_new else ''}, pg_cron job {s.cron_jobid} ({state})"
        )
        if status.cron_error:
            click.echo(f"    pg_cron: {status.cron_error}")
        for c in status.cron_runs:
            message = (c.return_message or "").strip().replace("\n", " ")
            click.echo(f"    cron run {c.runid}  {c.status:<10} {_when(c.start_time)}  {message}")
        for run in status.runs:
            click.echo(f"    {_run_line(run)}")
            if run.error and run.effective_status != "succeeded":
                click.echo(f"        error: {run.error}")
        if not status.cron_runs and not status.runs:
            click.echo("    not run yet")


@schedule.command("remove")
@click.argument("name")
def schedule_remove(name: str) -> None:
    """Unschedule NAME (its past runs stay in skyclass.scoring_run)."""
    from skyclass.score.schedule import remove_schedule

    removed = remove_schedule(name)
    click.echo(f"schedule {removed.name} removed (pg_cron job {removed.cron_jobid})")


def _refresh_ood(model_version_id: int, catalog: str) -> str | None:
    """``CALL skyclass.refresh_ood`` when the version has an OOD forest; a summary line."""
    from skyclass.db.connect import connect

    with connect(autocommit=True) as conn:
        has = conn.execute(
            "SELECT EXISTS (SELECT FROM skyclass.ood_model WHERE model_version_id = %s)",
            (model_version_id,),
        ).fetchone()
        if has is None or not has[0]:
            return None
        conn.execute("CALL skyclass.refresh_ood(%s, %s)", (str(model_version_id), catalog))
        row = conn.execute(
            "SELECT r.ood_run_id, r.rows_scored, avg((NOT s.in_domain)::int) "
            "FROM skyclass.ood_run AS r JOIN skyclass.catalog AS c USING (catalog_id) "
            "LEFT JOIN skyclass.ood_score AS s USING (model_version_id, catalog_id) "
            "WHERE r.model_version_id = %s AND c.name = %s "
            "GROUP BY r.ood_run_id ORDER BY r.ood_run_id DESC LIMIT 1",
            (model_version_id, catalog),
        ).fetchone()
    if row is None:
        return None
    share = "" if row[2] is None else f", {100 * float(row[2]):.1f}% out of domain"
    return f"OOD scores of {catalog} refreshed (OOD run {row[0]}, {int(row[1]):,} objects{share})"
