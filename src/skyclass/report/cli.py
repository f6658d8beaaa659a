"""``skyclass report``: the plots and HTML page of one model version.

matplotlib and numpy are imported inside the command so that ``skyclass
--help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command(
    "report",
    epilog="""\b
Examples:
  skyclass report sdss_classes            newest version
  skyclass report sdss_classes:3          version 3
  skyclass report sdss_classes:3 -o /tmp/report

The page embeds its figures and needs no network: open report.html in any
browser, or send that one file.
""",
)
@click.argument("model")
@click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write to (default: ./skyclass-report-MODEL-vVERSION).",
)
def report(model: str, output: Path | None) -> None:
    """Write the report of MODEL[:VERSION]: PNG plots and one self-contained HTML page.

    Reads the model version and everything recorded with it (the candidate's
    and the baselines' cross-validated metrics, curves, feature importance,
    ablations, the training snapshot, feature set and catalog provenance) from
    the database.
    """
    from skyclass.report import make_report

    files = make_report(model, output)
    data = files.data
    click.echo(f"report of {data.model_name} v{data.version}: {files.html}")
    for path in files.pngs:
        click.echo(f"  {path}")
    for note in files.notes:
        click.secho(f"note: {note}", fg="yellow", err=True)
