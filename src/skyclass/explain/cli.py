"""``skyclass explain TARGET --catalog NAME (--ids ... | --where SQL)``."""

from __future__ import annotations

import json

import click

from skyclass.cli_params import OBJECT_IDS


@click.command("explain")
@click.argument("target")
@click.option("--catalog", required=True, help="Registered catalog holding the objects.")
@click.option("--ids", type=OBJECT_IDS, help="Object ids, separated by commas or spaces.")
@click.option(
    "--where",
    "where",
    help="A WHERE clause over catalogs.NAME choosing the objects (run read-only), "
    'e.g. "r < 18 AND ra BETWEEN 150 AND 151".',
)
@click.option(
    "--limit",
    type=click.IntRange(min=1, max=100_000),
    default=20,
    show_default=True,
    help="At most this many objects with --where (lowest object ids first).",
)
@click.option(
    "--top",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Contributions shown per object and class with --format table.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="table: the largest contributions per object; json: everything.",
)
def explain(
    target: str,
    catalog: str,
    ids: list[int] | None,
    where: str | None,
    limit: int,
    top: int,
    fmt: str,
) -> None:
    """Why TARGET classified some objects as it did: exact TreeSHAP contributions.

    TARGET is a deployment, MODEL:VERSION or a model_version_id. Each
    object's raw model output (softmax logit for boosting, class frequency
    for forests) is split into a base value plus one contribution per
    feature and class; base + contributions = output. The rows are stored in
    skyclass.explanation (view skyclass.explanation_long, one object at a
    time with SELECT * FROM skyclass.explain_object(TARGET, CATALOG, ID)).
    """
    from skyclass.db.connect import connect
    from skyclass.explain.run import as_records, explain_objects

    with connect() as conn:
        result = explain_objects(conn, target, catalog, ids=ids, where=where, limit=limit)
    if fmt == "json":
        click.echo(
            json.dumps(
                {
                    "explanation_run_id": result.explanation_run_id,
                    "model": result.label,
                    "catalog": catalog,
                    "objects": as_records(result),
                },
                indent=1,
            )
        )
        return
    click.echo(
        f"{result.label} on {catalog}: {result.object_id.size} object(s) explained in "
        f"{result.seconds:.2f} s (explanation run {result.explanation_run_id}; output: "
        f"{result.model_output})"
    )
    ex = result.explanation
    for i, oid in enumerate(result.object_id.tolist()):
        top_k = int(ex.margin[i].argmax())
        click.echo(f"\nobject {oid}: top output {result.output_names[top_k]}")
        for k, name in enumerate(result.output_names):
            order = abs(ex.contributions[i, :, k]).argsort()[::-1][:top]
            parts = ", ".join(
                f"{result.feature_names[f]} {ex.contributions[i, f, k]:+.3f}" for f in order
            )
            click.echo(f"  {name:>10}: base {ex.base[k]:+.3f} -> {ex.margin[i, k]:+.3f}  ({parts})")
