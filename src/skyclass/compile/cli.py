"""``skyclass compile`` and ``skyclass artifacts``: build model versions into native libraries.

Heavy modules (treelite, tl2cgen) are imported inside the commands so that
``skyclass --help`` stays fast.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from skyclass.compile.store import ArtifactInfo

OPT_LEVELS = ("-O0", "-O1", "-O2", "-O3", "-Os")


def _opt_level(flags: str) -> str:
    """The optimisation level recorded in ``compiler_flags`` ('?' when absent)."""
    return next((part for part in flags.split() if part in OPT_LEVELS), "?")


def _describe(info: ArtifactInfo) -> list[str]:
    seconds = "?" if info.compile_seconds is None else f"{info.compile_seconds:.1f} s"
    return [
        f"  sha256     {info.sha256_hex}",
        f"  library    {info.library_bytes:,} bytes, {info.n_features} features, "
        f"{info.n_outputs} outputs ({info.output_transform})",
        f"  toolchain  {info.compiler}; treelite {info.treelite_version}, "
        f"tl2cgen {info.tl2cgen_version}",
        f"  flags      {info.compiler_flags}",
        f"  built      {seconds}, by {info.created_by}, {info.created_at:%Y-%m-%d %H:%M:%S %Z}",
    ]


@click.command(
    "compile",
    epilog="""\b
Examples:
  skyclass compile sdss17_rf           the newest version of model sdss17_rf
  skyclass compile sdss17_rf:3         version 3
  skyclass compile 7                   model_version_id 7
  skyclass compile sdss17_rf:3 --opt-level -O3

\b
Reads the version's Treelite checkpoint from skyclass.model_version, generates
C with TL2cgen, builds it with gcc and stores the library (with its sha256,
toolchain, flags and build time) in skyclass.model_artifact; skyclass.predict
then loads it. Registering native code needs a superuser (the extension
loads nothing else). A version has exactly one artifact and it never changes:
compiling it again with the same options does nothing, with other options is
refused.
""",
)
@click.argument("model_ref", metavar="MODEL[:VERSION]")
@click.option(
    "--opt-level",
    type=click.Choice(OPT_LEVELS),
    default="-O2",
    show_default=True,
    help="gcc optimisation level (large forests compile much faster at -O1).",
)
@click.option(
    "--parallel-comp",
    type=click.IntRange(1, 64),
    default=2,
    show_default=True,
    help="Translation units the C is split into (compiled concurrently, one per core).",
)
@click.option(
    "--quantize/--no-quantize",
    default=True,
    show_default=True,
    help="TL2cgen threshold quantisation: the trees compare small integers instead of "
    "floats; same results, about 17% faster scoring of a 100-iteration model.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show a progress bar on stderr.  [default: when stderr is a terminal]",
)
@click.option(
    "--ood/--no-ood",
    default=True,
    show_default=True,
    help="Also compile the version's OOD forest when it has one not compiled yet.",
)
def compile_command(
    model_ref: str,
    opt_level: str,
    parallel_comp: int,
    quantize: bool,
    progress: bool | None,
    ood: bool,
) -> None:
    """Compile a trained model version so the database can score with it."""
    from skyclass.compile.store import compile_model_version

    show = sys.stderr.isatty() if progress is None else progress
    info = compile_model_version(
        model_ref,
        opt_level=opt_level,
        parallel_comp=parallel_comp,
        quantize=quantize,
        progress=show,
    )
    if info.created:
        click.echo(
            f"compiled {info.label} (model_version_id {info.model_version_id}) "
            f"-> artifact {info.artifact_id}"
        )
    else:
        click.echo(
            f"{info.label} (model_version_id {info.model_version_id}) is already compiled "
            f"with these options: artifact {info.artifact_id}, nothing to do"
        )
    for line in _describe(info):
        click.echo(line)
    click.echo(
        f"score with: SELECT skyclass.predict({info.model_version_id}, x) FROM features.<table>"
    )
    if ood:
        forest = _uncompiled_ood_forest(info.model_version_id)
        if forest is not None:
            started = time.perf_counter()
            done = compile_model_version(
                forest,
                opt_level=opt_level,
                parallel_comp=parallel_comp,
                quantize=quantize,
                progress=show,
            )
            click.echo(
                f"compiled its OOD forest (model_version_id {forest}) -> artifact "
                f"{done.artifact_id} in {time.perf_counter() - started:.1f} s"
            )


def _uncompiled_ood_forest(model_version_id: int) -> int | None:
    """The anomaly version holding the OOD forest of a version, when it is not compiled."""
    from skyclass.db.connect import connect

    with connect() as conn:
        row = conn.execute(
            "SELECT o.ood_version_id FROM skyclass.ood_model AS o "
            "WHERE o.model_version_id = %s AND NOT EXISTS (SELECT FROM skyclass.model_artifact "
            "AS a WHERE a.model_version_id = o.ood_version_id)",
            (model_version_id,),
        ).fetchone()
    return None if row is None else int(row[0])


@click.group("artifacts")
def artifacts() -> None:
    """Inspect compiled model libraries (skyclass.model_artifact)."""


@artifacts.command("list")
def artifacts_list() -> None:
    """List compiled artifacts, then model versions still waiting to be compiled."""
    from skyclass.compile.store import list_artifacts, uncompiled_versions
    from skyclass.db.connect import connect

    with connect(autocommit=True) as conn:
        rows = list_artifacts(conn)
        pending = uncompiled_versions(conn)
    header = (
        "artifact",
        "model:version",
        "version_id",
        "sha256",
        "bytes",
        "features",
        "outputs",
        "transform",
        "opt",
        "seconds",
        "created",
    )
    table = [
        (
            str(a.artifact_id),
            a.label if a.model is not None else "?",
            str(a.model_version_id),
            a.sha256_hex[:12],
            f"{a.library_bytes:,}",
            str(a.n_features),
            str(a.n_outputs),
            a.output_transform,
            _opt_level(a.compiler_flags),
            "?" if a.compile_seconds is None else f"{a.compile_seconds:.1f}",
            f"{a.created_at:%Y-%m-%d %H:%M}",
        )
        for a in rows
    ]
    if not table:
        click.echo("no compiled artifacts")
    else:
        widths = [max(len(r[i]) for r in (header, *table)) for i in range(len(header))]
        for row in (header, *table):
            click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    if pending:
        names = ", ".join(
            f"{v.label} (id {v.model_version_id})" if v.model else str(v.model_version_id)
            for v in pending
        )
        click.echo(
            f"{len(pending)} model version{'s are' if len(pending) > 1 else ' is'} not "
            f"compiled yet: {names}; run `skyclass compile MODEL:VERSION`"
        )
