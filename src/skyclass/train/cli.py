"""``skyclass train``, ``skyclass models list|show`` and ``skyclass ablate``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from skyclass.features.cli import parse_column_map
from skyclass.train.errors import TrainError

TREE_ESTIMATORS = ("hist_gradient_boosting", "random_forest", "extra_trees")


def _parse_params(items: tuple[str, ...]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values are read as JSON (numbers, true/false/null), else text."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise TrainError(f"--param {item!r}: expected KEY=VALUE, e.g. --param max_iter=200")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if isinstance(value, list | dict):
            raise TrainError(f"--param {item!r}: values are numbers, true/false/null or text")
        params[key.strip()] = value
    return params


def _feature_set_ref(
    arg: str, url: str, progress: bool, catalog: str | None, column_map: dict[str, str]
) -> int | str:
    """A feature build id from a spec file (built if needed) or the ``NAME[:HASH]`` given.

    With ``catalog``, a name resolves to its build on that catalog only.
    """
    path = Path(arg)
    if arg.endswith(".toml") or path.is_file():
        from skyclass.features.build import build_feature_set

        built = build_feature_set(
            path, catalog=catalog, column_map=column_map, url=url, progress=progress
        )
        return int(built.feature_set_id)
    if column_map:
        raise click.UsageError("--map applies to a SPEC file, not to a built feature set")
    if catalog is not None:
        from skyclass.features.build import load_feature_set

        name, _, prefix = arg.partition(":")
        return int(load_feature_set(name, prefix or None, url, catalog=catalog).feature_set_id)
    return arg


@click.command()
@click.argument("feature_set", metavar="SPEC_OR_FEATURESET", required=False)
@click.option("--model", "model_name", required=True, help="Model name (a new version is added).")
@click.option(
    "--catalog",
    metavar="NAME",
    help="Train on the build of the feature set on this catalog (a SPEC is built on it); "
    "required when the name has builds on several catalogs.",
)
@click.option(
    "--map",
    "maps",
    multiple=True,
    metavar="SPEC_COLUMN=CATALOG_COLUMN",
    help="With a SPEC file: read the spec's column from the catalog's column (repeatable).",
)
@click.option("--label", help="Label column of the feature set's own catalog (e.g. class).")
@click.option(
    "--queue-labels",
    is_flag=True,
    help="Labels imported with `skyclass queue label` override --label COL for their objects.",
)
@click.option("--label-catalog", help="Take labels from this catalog by cross-match instead.")
@click.option("--label-column", help="Label column of --label-catalog.")
@click.option(
    "--match-radius", default="1arcsec", show_default=True, help="Cross-match radius for labels."
)
@click.option(
    "--task",
    type=click.Choice(["classification", "photoz"]),
    default="classification",
    show_default=True,
    help="classification: classes from the label column; photoz: p(z) over redshift bins.",
)
@click.option("--bins", help="Photo-z redshift bins: START:STOP:STEP (0:1:0.04) or edges a,b,c.")
@click.option("--classes", help="Comma-separated classes to keep (default: every label).")
@click.option(
    "--estimator",
    type=click.Choice(TREE_ESTIMATORS),
    default="hist_gradient_boosting",
    show_default=True,
    help="The candidate (a tree ensemble: it is compiled for in-database scoring).",
)
@click.option("--param", "params", multiple=True, help="Estimator parameter KEY=VALUE (repeat).")
@click.option(
    "--baselines",
    default="dummy,colour_cut,logistic",
    show_default=True,
    help="Comma-separated baselines evaluated next to the candidate.",
)
@click.option("--folds", type=int, default=5, show_default=True, help="Cross-validation folds.")
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of folds, splits and models."
)
@click.option(
    "--calibration-fraction",
    type=float,
    default=0.2,
    show_default=True,
    help="Share of the objects held out to fit the calibration map.",
)
@click.option(
    "--calibration",
    type=click.Choice(["temperature", "isotonic", "none"]),
    default="temperature",
    show_default=True,
    help="Calibration map fitted on the held-out calibration split.",
)
@click.option(
    "--augment",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Noisy copies per training row, drawn from magnitude errors (magerr_X features).",
)
@click.option(
    "--augment-policy",
    type=click.Choice(["cap", "nondetection"]),
    default="cap",
    show_default=True,
    help="Errors above --augment-max-error: capped, or the band becomes missing in copies.",
)
@click.option(
    "--augment-max-error",
    type=float,
    default=1.0,
    show_default=True,
    help="Cap (mag) on the errors used for augmentation draws; larger errors are capped.",
)
@click.option(
    "--force-feature",
    "force",
    multiple=True,
    help="Train with a feature (or column) the leakage guard refuses; recorded. Repeat.",
)
@click.option("--snapshot", "snapshot_id", type=int, help="Reuse training snapshot N.")
@click.option(
    "--importance/--no-importance",
    default=True,
    show_default=True,
    help="Permutation importance of each feature on the calibration split.",
)
@click.option("--ablate", is_flag=True, help="Also retrain without each feature group.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True, help="Threads.")
@click.option("--description", help="Description of the model (first version only).")
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: on a TTY).")
@click.option(
    "--ood/--no-ood",
    default=True,
    show_default=True,
    help="Also fit the version's OOD forest (skyclass ood fit, without compiling: "
    "`skyclass compile` compiles both).",
)
def train(
    feature_set: str | None,
    catalog: str | None,
    maps: tuple[str, ...],
    model_name: str,
    label: str | None,
    queue_labels: bool,
    label_catalog: str | None,
    label_column: str | None,
    match_radius: str,
    task: str,
    bins: str | None,
    classes: str | None,
    estimator: str,
    params: tuple[str, ...],
    baselines: str,
    folds: int,
    seed: int,
    calibration_fraction: float,
    calibration: str,
    augment: int,
    augment_policy: str,
    augment_max_error: float,
    force: tuple[str, ...],
    snapshot_id: int | None,
    importance: bool,
    ablate: bool,
    jobs: int,
    description: str | None,
    progress: bool | None,
    ood: bool,
) -> None:
    """Train, evaluate and register a new version of model --model.

    SPEC_OR_FEATURESET is a feature spec file (.toml; built first if needed)
    or a built feature set NAME[:HASH]. Labels come from --label COL of the
    same catalog, or from --label-catalog/--label-column by cross-match within
    --match-radius. A frozen training snapshot is written first (leakage
    guard, stratified folds, calibration split); then the candidate and the
    baselines are cross-validated, the candidate is fitted, calibrated and
    registered with every metric (mean ± std over folds) in one transaction.

    \b
    Examples:
      skyclass train src/skyclass/features/examples/sdss_ugriz.toml --model sgq --label class
      skyclass train boss_ugriz --model photoz --label z_spec --task photoz --bins 0:1:0.04
    """
    from skyclass.db.connect import database_url
    from skyclass.train.augment import AugmentConfig
    from skyclass.train.pipeline import train_model
    from skyclass.train.registry import describe_version, format_version
    from skyclass.train.snapshot import ColumnLabels, CrossmatchLabels, create_snapshot

    show = sys.stderr.isatty() if progress is None else progress

    def log(message: str) -> None:
        click.echo(f"... {message}", err=True)

    url = database_url()
    parsed = _parse_params(params)
    if snapshot_id is None:
        if feature_set is None:
            raise click.UsageError("give SPEC_OR_FEATURESET, or --snapshot N")
        if label_catalog or label_column:
            if not (label_catalog and label_column) or label or queue_labels:
                raise click.UsageError(
                    "use --label COL, or --label-catalog NAME with --label-column COL"
                )
            source: ColumnLabels | CrossmatchLabels = CrossmatchLabels(
                label_catalog, label_column, match_radius
            )
        elif label:
            source = ColumnLabels(label, queue=queue_labels)
        else:
            raise click.UsageError("say where the labels are: --label COL (or --label-catalog)")
        ref = _feature_set_ref(feature_set, url, show, catalog, parse_column_map(maps))
        snap = create_snapshot(
            ref,
            source,
            task=task,
            classes=[c.strip() for c in classes.split(",") if c.strip()] if classes else None,
            bin_edges=bins,
            n_folds=folds,
            calibration_fraction=calibration_fraction,
            seed=seed,
            force_features=force,
            url=url,
        )
        log(
            f"snapshot {snap.snapshot_id}: {snap.n_rows} objects, classes "
            f"{', '.join(f'{c} {snap.class_counts.get(c, 0)}' for c in snap.classes[:12])}"
            + (" ..." if len(snap.classes) > 12 else "")
        )
        excluded = {k: v for k, v in snap.label_source.get("excluded", {}).items() if v}
        if excluded:
            log(
                "left out: "
                + ", ".join(f"{v} ({k.replace('_', ' ')})" for k, v in excluded.items())
            )
        if snap.leakage_forced:
            names = ", ".join(f["name"] for f in snap.leakage_forced)
            click.secho(f"warning: leakage guard forced for {names}", fg="yellow", err=True)
        snapshot: int = snap.snapshot_id
    else:
        snapshot = snapshot_id
    augment_config = (
        AugmentConfig(augment, seed=seed, max_error=augment_max_error, policy=augment_policy)
        if augment
        else None
    )
    result = train_model(
        model_name,
        snapshot,
        estimator=estimator,
        params=parsed,
        baselines=[b.strip() for b in baselines.split(",") if b.strip()],
        calibration=calibration,
        augment=augment_config,
        importance=importance,
        ablate=ablate,
        seed=seed,
        description=description,
        n_jobs=jobs,
        url=url,
        progress=show,
        log=log,
    )
    click.echo(format_version(describe_version(result.model_version_id, url=url)))
    click.echo(
        f"\nregistered {result.model}:{result.version} (model_version_id "
        f"{result.model_version_id}, training run {result.training_run_id}) in "
        f"{result.seconds:.1f} s; compile it with `skyclass compile "
        f"{result.model}:{result.version}`"
    )
    if ood:
        from skyclass.db.connect import connect
        from skyclass.domain.ood_store import fit_version_ood

        with connect(url, autocommit=True) as conn:
            fit = fit_version_ood(conn, result.model_version_id, compile_forest=False)
        click.echo(
            f"OOD forest fitted in {fit.fit_seconds:.1f} s (model version "
            f"{fit.model.ood_version_id}, {fit.model.n_fit:,} rows, reference "
            f"{fit.model.n_reference:,} rows)"
        )


@click.group()
def models() -> None:
    """List registered models and show a version's metrics."""


@models.command("list")
def models_list() -> None:
    """Every model: task, number of versions, newest version and its headline metric."""
    from skyclass.train.registry import list_models

    rows = list_models()
    if not rows:
        click.echo("no models registered yet (train one with `skyclass train`)")
        return
    header = f"{'model':24}{'task':16}{'versions':>9}  {'newest':8}{'estimator':26}metric"
    click.echo(header)
    for m in rows:
        value = "-"
        if m.value is not None:
            value = f"{m.headline} {m.value:.3f}" + (f" ± {m.std:.3f}" if m.std is not None else "")
        newest = str(m.latest_version) if m.latest_version is not None else "-"
        click.echo(
            f"{m.name:24}{m.task:16}{m.versions:>9}  {newest:8}{m.estimator or '-':26}{value}"
        )


@models.command("show")
@click.argument("model_ref", metavar="MODEL[:VERSION]")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def models_show(model_ref: str, as_json: bool) -> None:
    """A model version's provenance, evaluations (mean ± std), per-class table, importance."""
    from skyclass.train.registry import describe_version, format_version

    desc = describe_version(model_ref)
    if as_json:
        from skyclass.train.pipeline import clean_json

        record = {
            "model": desc.ref.model,
            "version": desc.ref.version,
            "model_version_id": desc.ref.model_version_id,
            "estimator": desc.ref.estimator,
            "feature_set": desc.feature_set,
            "snapshot": desc.snapshot,
            "evaluations": [
                {
                    "estimator": ev.estimator,
                    "role": ev.role,
                    "metrics": [
                        {"name": k[0], "class": k[1], "stage": k[2], "mean": v.mean, "std": v.std}
                        for k, v in sorted(ev.metrics.items())
                    ],
                }
                for ev in desc.evaluations
            ],
        }
        click.echo(json.dumps(clean_json(record), indent=2, default=str))
        return
    click.echo(format_version(desc))


@click.command()
@click.argument("model_ref", metavar="MODEL[:VERSION]")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True, help="Threads.")
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: on a TTY).")
def ablate(model_ref: str, jobs: int, progress: bool | None) -> None:
    """Retrain a model version without each feature group; store the metric changes.

    Uses the version's estimator, parameters, seed, snapshot and folds; each
    row of skyclass.ablation is the paired per-fold change (ablated minus
    full) with its mean ± std.
    """
    from skyclass.train.pipeline import ablate_model

    show = sys.stderr.isatty() if progress is None else progress
    rows = ablate_model(
        model_ref,
        n_jobs=jobs,
        progress=show,
        log=lambda message: click.echo(f"... {message}", err=True),
    )
    click.echo(f"{'dropped group':20}{'metric':20}{'full':>18}{'ablated':>18}{'delta':>20}")
    for r in rows:
        click.echo(
            f"{r['group']:20}{r['metric']:20}{_ms(r['full']):>18}{_ms(r['ablated']):>18}"
            f"{_ms(r['delta'], signed=True):>20}"
        )


def _ms(record: dict[str, Any], *, signed: bool = False) -> str:
    """``mean ± std`` of a strict-JSON MeanStd record."""
    mean, std = record.get("mean"), record.get("std")
    if mean is None:
        return "undefined"
    text = f"{mean:+.4f}" if signed else f"{mean:.4f}"
    return text + (f" ± {std:.4f}" if std is not None else "")
