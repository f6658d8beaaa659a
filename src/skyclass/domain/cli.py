"""``skyclass domain MODEL[:VERSION] --catalog NAME``."""

from __future__ import annotations

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
    client_scoring: bool,
) -> None:
    """Covariate shift of MODEL[:VERSION] on a catalog and its expected metrics there.

    Fits a domain classifier (training snapshot against an equal-size sample
    of the catalog), stores its cross-validated AUC, each catalog object's
    propensity and clipped importance weight, and the importance-weighted
    expected metrics with bootstrap errors and the effective sample size.
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
