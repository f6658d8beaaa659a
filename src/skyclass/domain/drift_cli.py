"""``skyclass drift DEPLOYMENT --catalog NAME``."""

from __future__ import annotations

import click


@click.command("drift")
@click.argument("deployment")
@click.option("--catalog", "catalog", required=True, help="Catalog the deployment scored.")
@click.option(
    "--run",
    "run",
    type=click.IntRange(min=1),
    default=None,
    help="Scoring run to show (default: the newest one with drift summaries).",
)
@click.option(
    "--level",
    "min_level",
    type=click.Choice(["ok", "warn", "alert"]),
    default="warn",
    show_default=True,
    help="Show rows at this level or above (ok: every row).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Output format.",
)
def drift(deployment: str, catalog: str, run: int | None, min_level: str, fmt: str) -> None:
    """Drift alerts of a scoring run by sky region and magnitude.

    DEPLOYMENT is a deployment (or MODEL:VERSION, or a model_version_id).
    Every scoring run records, per HEALPix region (nside 4, equal area), per
    magnitude bin and overall, feature histograms, predicted class fractions,
    mean top probability and OOD fraction, and compares them with the training
    snapshot and with the previous run of the same deployment: PSI and
    Wasserstein/sigma warn at 0.1 and alert at 0.25 (docs/drift.md). Prints
    the rows at --level or above, worst first, and the worst regions.
    """
    from skyclass.db.connect import connect
    from skyclass.domain.drift import drift_report, format_json, format_table

    with connect() as conn:
        report = drift_report(conn, deployment, catalog, run=run, min_level=min_level)
    click.echo(format_json(report) if fmt == "json" else format_table(report))
