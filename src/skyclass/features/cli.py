"""``skyclass features``: build, list and show feature sets.

numpy and the build module are imported inside the commands so that
``skyclass --help`` stays fast.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import click

SPEC_HELP = """\b
A spec is a TOML file:
  name = "sdss_ugriz"        # the feature set (a-z, 0-9, _; at most 50)
  catalog = "sdss17"         # a catalog loaded with `skyclass ingest`
  [[feature]]                # one table per feature, in model input order
  name = "u_g"
  expr = "u - g"             # see below
  group = "colours"          # optional: ablation drops whole groups
  missing = "indicator"      # optional: also add 0/1 feature u_g_missing
  nondetection = { column = "u", above = 26.0 }   # optional: adds u_g_nondet
                             # ({ flag = "u_nondet" } for a flag column;
                             # mask = true makes the feature NaN there)

\b
Expressions: catalog column names, numbers, + - * /, unary -, parentheses,
log10(a), ln(a), sqrt(a), abs(a), flux_to_mag(flux, zeropoint),
mag_to_flux(mag, zeropoint). Nothing else: no quotes, no SQL.

\b
Values are computed in double precision and stored as real (float4); NULL,
NaN or infinite inputs and undefined results (log of 0, division by 0) are
NaN. Example: src/skyclass/features/examples/sdss_ugriz.toml.
"""


@click.group("features", epilog=SPEC_HELP)
def features() -> None:
    """Feature sets: versioned features computed inside the database.

    A feature set version is the sha256 of its canonical spec; its features
    live in table features.<name>_<first 12 hex digits of the version>, with
    columns object_id, x (real[] in feature order, NaN = missing) and v
    (pgvector, NULL when a feature is missing).
    """


def parse_column_map(items: Sequence[str]) -> dict[str, str]:
    """``SPEC_COLUMN=CATALOG_COLUMN`` options as a dict (a usage error when malformed)."""
    mapping: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise click.BadParameter(
                f"{item!r}: expected SPEC_COLUMN=CATALOG_COLUMN (e.g. g=mag_g)", param_hint="--map"
            )
        if key in mapping and mapping[key] != value:
            raise click.BadParameter(f"{key} is mapped twice", param_hint="--map")
        mapping[key] = value
    return mapping


@features.command("build", epilog=SPEC_HELP)
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--catalog",
    metavar="NAME",
    help="Build the definition on this catalog (default: the spec's `catalog =`).",
)
@click.option(
    "--map",
    "maps",
    multiple=True,
    metavar="SPEC_COLUMN=CATALOG_COLUMN",
    help="Read the spec's column from the catalog's column of another name (repeatable).",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Report the steps on stderr (default: when stderr is a terminal).",
)
def features_build(
    spec: Path, catalog: str | None, maps: tuple[str, ...], progress: bool | None
) -> None:
    """Compute the features of SPEC (a TOML file) for every object of a catalog.

    A spec is a feature definition: its name and expressions, versioned by
    their hash (the definition hash), apart from any catalog. A build computes
    it on one catalog (--catalog, else the spec's `catalog =`) through a column
    map, so one definition is built on catalogs whose columns are named
    differently, and a model trained on one build scores every catalog that has
    a build of its definition. The first build creates its table and registers
    it in skyclass.feature_set, in one transaction. Building again only adds
    rows for catalog objects loaded since (`skyclass ingest --append`), or
    recomputes every row when the catalog was replaced. Comments, whitespace
    and key order in the file do not change the version.
    """
    from skyclass.features.build import build_feature_set

    show = sys.stderr.isatty() if progress is None else progress
    fs = build_feature_set(spec, catalog=catalog, column_map=parse_column_map(maps), progress=show)
    build = fs.build
    assert build is not None
    verb = {
        "created": "created",
        "rebuilt": "rebuilt (its table was missing)",
        "appended": f"appended {build.rows_added:,} rows for new catalog objects to",
        "recomputed": "recomputed (the catalog was replaced) all rows of",
        "unchanged": "unchanged (every catalog object has features):",
    }[build.action]
    click.echo(
        f"{verb} feature set {fs.name} version {fs.spec_hash[:12]} (definition "
        f"{fs.definition_hash[:12]}): {fs.n_features} features, {fs.n_objects:,} objects of "
        f"catalog {fs.catalog} in {fs.qualified_table} ({build.seconds:.1f} s)"
    )


@features.command("list")
def features_list() -> None:
    """List every feature build: name, version, definition, catalog, features, objects."""
    from skyclass.features.build import list_feature_sets

    sets = list_feature_sets()
    if not sets:
        click.echo("no feature sets (build one with `skyclass features build SPEC`)")
        return
    rows: list[tuple[str, ...]] = [
        ("name", "version", "definition", "catalog", "features", "objects", "created", "table")
    ]
    for fs in sets:
        rows.append(
            (
                fs.name,
                fs.spec_hash[:12],
                fs.definition_hash[:12],
                fs.catalog,
                str(fs.n_features),
                f"{fs.n_objects:,}",
                f"{fs.created_at:%Y-%m-%d %H:%M}",
                fs.qualified_table,
            )
        )
    _print_table(rows)


@features.command("show")
@click.argument("name")
@click.option(
    "--version",
    "spec_hash",
    metavar="HASH",
    help="The version (or a unique prefix of it) to show; default: the newest.",
)
@click.option("--catalog", metavar="NAME", help="The build on this catalog.")
@click.option("--sql", "show_sql", is_flag=True, help="Also print the SELECT a build runs.")
def features_show(name: str, spec_hash: str | None, catalog: str | None, show_sql: bool) -> None:
    """Show feature set NAME: version, table, object count, groups and each feature."""
    from skyclass.features.build import feature_sql, load_feature_set

    fs = load_feature_set(name, spec_hash, catalog=catalog)
    click.echo(f"feature set {fs.name} version {fs.spec_hash}")
    click.echo(f"definition {fs.definition_hash}")
    mapped = ", ".join(f"{k}={v}" for k, v in fs.spec.columns)
    click.echo(
        f"catalog {fs.catalog}; table {fs.qualified_table}; {fs.n_objects:,} objects"
        + (f"; columns mapped {mapped}" if mapped else "")
    )
    click.echo(f"created {fs.created_at:%Y-%m-%d %H:%M:%S}")
    click.echo("")
    rows: list[tuple[str, ...]] = [("#", "feature", "group", "definition")]
    position = 0
    for f in fs.spec.features:
        for output in f.output_names():
            if output == f.name:
                definition = f.expr
            elif output.endswith("_missing"):
                definition = f"1 where {f.name} is missing, else 0"
            else:
                nd = f.nondetection
                assert nd is not None
                if nd.flag is not None:
                    test = f"{nd.flag} is true or non-zero"
                elif nd.above is not None:
                    test = f"{nd.column} > {nd.above:g}"
                else:
                    test = f"{nd.column} < {nd.below:g}"
                definition = f"1 where {test}, else 0" + (
                    f" ({f.name} is NaN there)" if nd.mask else ""
                )
            rows.append((str(position), output, f.group_name, definition))
            position += 1
    _print_table(rows)
    if show_sql:
        click.echo("")
        click.echo(feature_sql(fs.spec))


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
