"""``skyclass domain MODEL[:VERSION] --catalog NAME``, ``skyclass ood fit|score`` and
``skyclass anomaly fit|score|top``."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import click

from skyclass.domain.defaults import BOOTSTRAP, SEED, W_MAX, W_MIN


@click.command("domain")
@click.argument("model")
@click.option(
    "--catalog", "catalog", required=True, help="Registered catalog the model is applied to."
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=SEED,
    show_default=True,
    help="Seed of the catalog sample, folds and bootstrap.",
)
@click.option(
    "--bootstrap",
    "n_bootstrap",
    type=click.IntRange(min=2),
    default=BOOTSTRAP,
    show_default=True,
    help="Bootstrap resamples per estimate.",
)
@click.option(
    "--w-min",
    type=click.FloatRange(min=0, min_open=True),
    default=W_MIN,
    show_default=True,
    help="Lower clip bound of the importance weights.",
)
@click.option(
    "--w-max",
    type=click.FloatRange(min=0, min_open=True),
    default=W_MAX,
    show_default=True,
    help="Upper clip bound of the importance weights.",
)
@click.option(
    "--ood/--no-ood",
    default=True,
    show_default=True,
    help="Also fit the version's OOD forest when it has none and compute the catalog's OOD "
    "scores in the database (skyclass ood score).",
)
@click.option(
    "--client-scoring",
    is_flag=True,
    help="Score the catalog with scikit-learn in the client instead of the compiled "
    "domain classifier in the database.",
)
def domain(
    model: str,
    catalog: str,
    seed: int,
    n_bootstrap: int,
    w_min: float,
    w_max: float,
    ood: bool,
    client_scoring: bool,
) -> None:
    """Covariate shift of MODEL[:VERSION] on a catalog and its expected metrics there.

    Fits a domain classifier (training snapshot against an equal-size sample
    of the catalog), stores its cross-validated AUC, each catalog object's
    propensity and clipped importance weight, and the importance-weighted
    expected metrics with bootstrap errors and the effective sample size.
    With --ood (default) it then computes the catalog's per-object OOD scores
    (skyclass ood score), fitting the version's OOD forest first if needed.
    The classifier is registered as a version of MODEL_domain and, when the
    role may register native code (a superuser), compiled and scored in the
    database by skyclass.predict; otherwise scikit-learn scores the catalog.
    From SQL: SELECT * FROM skyclass.expected_metrics('MODEL:VERSION', 'NAME').
    """
    from skyclass.db.connect import connect
    from skyclass.domain.run import format_result, run_domain

    with connect() as conn:
        result = run_domain(
            conn,
            model,
            catalog,
            seed=seed,
            n_bootstrap=n_bootstrap,
            w_min=w_min,
            w_max=w_max,
            in_database=not client_scoring,
        )
    click.echo(format_result(result))
    if ood:
        from skyclass.domain.ood_job import run_ood_job
        from skyclass.domain.ood_store import fit_version_ood

        with connect(autocommit=True) as conn:
            fit = fit_version_ood(conn, model)
            if fit.created or fit.compile_seconds is not None:
                click.echo(_fit_line(model, fit))
            if fit.compile_error is None:
                run = run_ood_job(
                    conn, model, catalog, progress=_bar(None), workers=min(os.cpu_count() or 1, 64)
                )
                click.echo(_run_line(run))


def _job_options(command: Callable[..., None]) -> Callable[..., None]:
    """--chunk-size, --workers and --progress of the OOD job (ood score, anomaly score)."""
    for option in (
        click.option(
            "--progress/--no-progress",
            default=None,
            help="Show a progress bar on stderr.  [default: when stderr is a terminal]",
        ),
        click.option(
            "--workers",
            type=click.IntRange(1, 64),
            default=None,
            help="Parallel database sessions.  [default: number of cores]",
        ),
        click.option(
            "--chunk-size",
            type=click.IntRange(min=1),
            default=100_000,
            show_default=True,
            help="Objects per chunk (each chunk commits on its own).",
        ),
    ):
        command = option(command)
    return command


def _run_job(
    conn: Any, model: str, catalog: str, chunk_size: int, workers: int | None, progress: bool | None
) -> None:
    """Run the OOD job of ``model`` on ``catalog`` and print its outcome."""
    from skyclass.domain.ood_job import run_ood_job

    run = run_ood_job(
        conn,
        model,
        catalog,
        chunk_size=chunk_size,
        progress=_bar(progress),
        workers=workers or min(os.cpu_count() or 1, 64),
    )
    click.echo(_run_line(run))


@click.group("ood")
def ood() -> None:
    """Out-of-distribution scores of a model version's objects (its OOD forest).

    Each model version gets an IsolationForest fitted on its training snapshot,
    compiled like the classifiers and scored inside PostgreSQL. Per object:
    ood_percentile (the forest's score as a percentile of held-out training
    scores), out_of_range (per feature, outside the training [min, max]) and
    in_domain (ood_percentile < 99 and no feature out of range), in
    skyclass.ood_score and the published views.
    """


@ood.command("fit")
@click.argument("model")
@click.option(
    "--seed", type=click.IntRange(min=0), default=SEED, show_default=True, help="Forest seed."
)
@click.option("--no-compile", is_flag=True, help="Register the forest without compiling it.")
def ood_fit(model: str, seed: int, no_compile: bool) -> None:
    """Fit, register and compile the OOD forest of MODEL[:VERSION] (once per version)."""
    from skyclass.db.connect import connect
    from skyclass.domain.ood_store import fit_version_ood

    with connect(autocommit=True) as conn:
        fit = fit_version_ood(conn, model, seed=seed, compile_forest=not no_compile)
    click.echo(_fit_line(model, fit))


def _fit_line(model: str, fit: Any) -> str:
    m = fit.model
    what = (
        f"fitted in {fit.fit_seconds:.1f} s on {m.n_fit:,} rows, reference {m.n_reference:,} "
        f"rows ({m.reference_rows})"
        if fit.created
        else "already fitted"
    )
    line = f"OOD forest of {model}: model version {m.ood_version_id}, {what}"
    if fit.compile_seconds is not None and fit.compile_error is None:
        line += f"; compiled in {fit.compile_seconds:.1f} s"
    if fit.compile_error is not None:
        line += f"\nnot compiled: {fit.compile_error}"
    return line


@ood.command("score")
@click.argument("model")
@click.option("--catalog", "catalog", required=True, help="Catalog to score.")
@_job_options
def ood_score(
    model: str, catalog: str, chunk_size: int, workers: int | None, progress: bool | None
) -> None:
    """Compute the OOD scores of every object of a catalog for MODEL[:VERSION].

    Chunked and resumable: an interrupted run is resumed by the next start.
    Fits the version's OOD forest first when it has none.
    """
    from skyclass.db.connect import connect
    from skyclass.domain.ood_store import fit_version_ood

    with connect(autocommit=True) as conn:
        fit = fit_version_ood(conn, model)
        if fit.created or fit.compile_seconds is not None:
            click.echo(_fit_line(model, fit))
        _run_job(conn, model, catalog, chunk_size, workers, progress)


def _bar(progress: bool | None) -> Any:
    show = sys.stderr.isatty() if progress is None else progress
    state: dict[str, Any] = {}

    def update(done: int, total: int) -> None:
        if not show:
            return
        if "bar" not in state:
            from tqdm import tqdm

            state["bar"] = tqdm(total=total, unit="chunk", desc="OOD scores", file=sys.stderr)
        state["bar"].n = done
        state["bar"].refresh()
        if done >= total:
            state["bar"].close()

    return update


def _run_line(run: Any) -> str:
    share = (
        ""
        if run.in_domain_fraction is None
        else f", in domain {100 * run.in_domain_fraction:.1f}% (out of domain "
        f"{100 * (1 - run.in_domain_fraction):.1f}%)"
    )
    resumed = f", attempt {run.attempts}" if run.attempts > 1 else ""
    return (
        f"OOD run {run.ood_run_id} on {run.catalog}: {run.status}, {run.rows_scored:,} objects "
        f"in {run.chunks_done}/{run.chunks_total} chunks, {run.seconds:.1f} s{resumed}{share}"
    )


@click.group("anomaly")
def anomaly() -> None:
    """Anomaly models: the oddest objects of a catalog, ranked, without labels.

    An IsolationForest fitted on a sample of any feature build, compiled like
    the classifiers and scored inside PostgreSQL by the OOD job. Per object:
    a score (higher = stranger), its percentile among held-out sample rows and
    a rank (1 = strangest): SELECT * FROM skyclass.anomaly_rank('NAME',
    'CATALOG') WHERE rank <= 100. `top` also takes a classifier
    (MODEL:VERSION or a deployment) scored with `skyclass ood score`. In SQL,
    CALL skyclass.refresh_ood('NAME:VERSION', 'CATALOG') rescores.
    """


@anomaly.command("fit")
@click.argument("name")
@click.option(
    "--feature-set", "feature_set", required=True, help="Feature set (NAME or NAME:HASHPREFIX)."
)
@click.option("--catalog", required=True, help="Catalog whose build of the feature set to fit on.")
@click.option(
    "--sample",
    type=click.IntRange(min=3),
    default=50_000,
    show_default=True,
    help="Objects drawn from the build (20% of them held out as the percentile reference).",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=SEED,
    show_default=True,
    help="Sample and forest seed.",
)
@click.option("--no-compile", is_flag=True, help="Register the forest without compiling it.")
def anomaly_fit(
    name: str, feature_set: str, catalog: str, sample: int, seed: int, no_compile: bool
) -> None:
    """Fit, register and compile a new version of anomaly model NAME on a feature build.

    \b
      skyclass anomaly fit oddities --feature-set sdss_ugriz --catalog sdss17
    """
    from skyclass.db.connect import connect
    from skyclass.domain.anomaly import fit_anomaly_model

    with connect(autocommit=True) as conn:
        fit = fit_anomaly_model(
            conn,
            name,
            feature_set,
            catalog,
            sample=sample,
            seed=seed,
            compile_forest=not no_compile,
        )
    m = fit.model
    line = (
        f"anomaly model {fit.label} (model version {m.ood_version_id}) on {fit.feature_set}: "
        f"fitted in {fit.fit_seconds:.1f} s on {m.n_fit:,} objects, reference {m.n_reference:,} "
        f"(snapshot {fit.snapshot_id})"
    )
    if fit.compile_seconds is not None and fit.compile_error is None:
        line += f"; compiled in {fit.compile_seconds:.1f} s"
    if fit.compile_error is not None:
        line += f"\nnot compiled: {fit.compile_error}"
    click.echo(line)


@anomaly.command("score")
@click.argument("name")
@click.option("--catalog", required=True, help="Catalog to score.")
@_job_options
def anomaly_score(
    name: str, catalog: str, chunk_size: int, workers: int | None, progress: bool | None
) -> None:
    """Score every object of a catalog with anomaly model NAME[:VERSION], in the database.

    The catalog needs a build of the model's feature definition. Chunked and
    resumable (the OOD job): an interrupted run is resumed by the next start.
    """
    from skyclass.db.connect import connect

    with connect(autocommit=True) as conn:
        _run_job(conn, name, catalog, chunk_size, workers, progress)


@anomaly.command("top")
@click.argument("name")
@click.option("--catalog", required=True, help="Scored catalog.")
@click.option(
    "--limit", type=click.IntRange(min=1), default=20, show_default=True, help="Objects shown."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "votable"]),
    default="table",
    show_default=True,
    help="Output format.",
)
def anomaly_top_command(name: str, catalog: str, limit: int, fmt: str) -> None:
    """The strangest objects of a catalog: rank, score, percentile and features.

    NAME is an anomaly model (its newest version), NAME:VERSION, a
    model_version_id or a deployment (a classifier's OOD forest). Read from
    skyclass.anomaly_rank.
    """
    from astropy.table import Table

    from skyclass.db.connect import connect
    from skyclass.domain.anomaly import anomaly_top
    from skyclass.query.output import write_table

    with connect() as conn:
        top = anomaly_top(conn, name, catalog, limit)
    columns: dict[str, list[Any]] = {
        "rank": [int(r[0]) for r in top.rows],
        "object_id": [int(r[1]) for r in top.rows],
        "score": [float(r[2]) for r in top.rows],
        "percentile": [float(r[3]) for r in top.rows],
        "in_domain": [bool(r[4]) for r in top.rows],
    }
    for k, feature in enumerate(top.feature_names):
        columns[feature] = [float("nan") if r[5] is None else float(r[5][k]) for r in top.rows]
    table = Table(columns)
    table.meta.update({"anomaly_model": name, "catalog": catalog, "limit": limit})
    write_table(table, fmt)
