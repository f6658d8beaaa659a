"""The demo: the whole product on the bundled SDSS DR17 and BOSS DR10 samples, step by step.

:func:`run_demo` starts the database (the embedded cluster unless
``SKYCLASS_DATABASE_URL`` is set), loads the SDSS17 sample (positions,
classes) and the BOSS DR10 photo-z sample (no positions), builds their
feature sets, trains a star/galaxy/QSO model and a photo-z model next to
their baselines (K-fold, calibrated), compiles both, deploys them as
``sgq_current`` and ``photoz_current``, rescores the catalogs inside the
database, trains and scores a second classifier version to show class
changes, runs the example SQL (:mod:`skyclass.demo.examples`) and writes the
demo report (:func:`skyclass.report.demo.make_demo_report`). Every step
prints its time. Running it again replaces the catalogs and adds new model
versions; nothing is overwritten in place.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

DATA_DIR = Path(__file__).resolve().parent / "data"
SDSS17_FILE = DATA_DIR / "sdss17_star_classification_99999.csv.gz"
BOSS_FILE = DATA_DIR / "boss_dr10_photoz_35762.csv"
BOSS_SPEC = DATA_DIR / "boss_ugriz.toml"
CATALOG = "sdss17"
#: The demo's anomaly model (skyclass anomaly) of the sdss_ugriz features.
ANOMALY_MODEL = "sdss17_oddities"
BOSS_CATALOG = "boss_dr10"
SGQ_MODEL = "sgq"
PHOTOZ_MODEL = "photoz"
SGQ_DEPLOYMENT = "sgq_current"
PHOTOZ_DEPLOYMENT = "photoz_current"
# An SDSS object observed twice (rows 62669 and 62670 of the original file).
CONE_CENTRE = (34.7496, -0.6019)
TARGET_PURITY = 0.95


@dataclass(frozen=True)
class DemoSizes:
    """How big the demo's models are: the full demo, or the quick one the tests run.

    ``sgq_params`` / ``sgq2_params`` are the HistGradientBoosting parameters
    of the first and second star/galaxy/QSO versions, ``photoz_params`` those
    of the photo-z model over ``photoz_bins``; ``opt_level`` is the compiler
    optimisation of the artifacts (compile time grows fast with model size).
    """

    folds: int
    sgq_params: dict[str, Any]
    sgq2_params: dict[str, Any]
    photoz_params: dict[str, Any]
    photoz_bins: str
    ablate: bool
    opt_level: str
    sgq_baselines: tuple[str, ...] = ("dummy", "colour_cut", "logistic")
    photoz_baselines: tuple[str, ...] = ("dummy", "logistic")
    importance: bool = True
    chunk_size: int = 50_000
    domain_bootstrap: int = 100
    notes: tuple[str, ...] = field(default=())


FULL = DemoSizes(
    folds=5,
    sgq_params={"max_iter": 100},
    # A different seed and a coarser model: the second version disagrees with the first on
    # some objects, which is what the class-changes query is for.
    sgq2_params={"max_iter": 60, "max_leaf_nodes": 15, "learning_rate": 0.15},
    photoz_params={"max_iter": 40, "max_leaf_nodes": 15},
    photoz_bins="0:1:0.05",
    # Ablation refits the candidate once per feature group and fold (10 more fits): left to
    # `skyclass ablate sgq` so that the demo stays within its 10 minutes on 2 cores.
    ablate=False,
    opt_level="-O1",
)
QUICK = DemoSizes(
    folds=3,
    sgq_params={"max_iter": 10, "max_leaf_nodes": 15},
    sgq2_params={"max_iter": 6, "max_leaf_nodes": 7, "learning_rate": 0.3},
    photoz_params={"max_iter": 5, "max_leaf_nodes": 7},
    photoz_bins="0:1:0.1",
    ablate=False,
    opt_level="-O0",
    # Logistic regression over many photo-z bins is the slowest fit of the quick run.
    sgq_baselines=("dummy", "colour_cut"),
    photoz_baselines=("dummy",),
    chunk_size=25_000,
    domain_bootstrap=30,
    notes=(
        "quick demo: small models, 3 folds, no logistic baseline; run `skyclass demo` for the "
        "full one",
    ),
)


@contextmanager
def step(title: str, echo: Callable[[str], None] = click.echo) -> Iterator[None]:
    """Print a step's title, run it, then print how long it took."""
    echo(click.style(f"==> {title}", bold=True))
    start = time.perf_counter()
    yield
    echo(click.style(f"    done in {time.perf_counter() - start:.1f} s", dim=True))


class _Timer:
    """The demo's steps with their durations (shown at the end and in the report)."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, float]] = []

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        start = time.perf_counter()
        with step(title):
            yield
        self.steps.append((title, time.perf_counter() - start))


def _say(text: str) -> None:
    click.echo(f"    {text}")


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.rstrip().splitlines())


def _ingest(path: Path, catalog: str, url: str, **options: Any) -> None:
    from skyclass.ingest import ingest_file, list_catalogs
    from skyclass.ingest.cli import summary_lines

    exists = any(entry.name == catalog for entry in list_catalogs(url))
    report = ingest_file(
        path, catalog, mode="replace" if exists else "create", url=url, progress=True, **options
    )
    for line in summary_lines(report):
        _say(line)


def _train(
    model: str,
    feature_set_id: int,
    label: str,
    sizes: DemoSizes,
    params: dict[str, Any],
    *,
    url: str,
    seed: int,
    task: str = "classification",
    bins: str | None = None,
    ablate: bool = False,
    baselines: tuple[str, ...] = (),
    importance: bool = True,
    description: str,
) -> int:
    """Snapshot, cross-validate, calibrate and register a version; return its id."""
    from skyclass.score.jobs import default_workers
    from skyclass.train.pipeline import train_model
    from skyclass.train.registry import describe_version, format_version
    from skyclass.train.snapshot import create_snapshot

    snap = create_snapshot(
        feature_set_id,
        label,
        task=task,
        bin_edges=bins,
        n_folds=sizes.folds,
        seed=seed,
        url=url,
    )
    counts = ", ".join(f"{c} {snap.class_counts.get(c, 0):,}" for c in snap.classes[:6])
    _say(
        f"snapshot {snap.snapshot_id}: {snap.n_rows:,} objects ({counts}"
        + (" ..." if len(snap.classes) > 6 else "")
        + f"), {sizes.folds} folds + calibration split"
    )
    result = train_model(
        model,
        snap.snapshot_id,
        params=params,
        baselines=baselines,
        importance=importance,
        ablate=ablate,
        seed=seed,
        description=description,
        n_jobs=default_workers(),
        url=url,
        progress=sys.stderr.isatty(),
        log=lambda message: _say(f"... {message}"),
    )
    click.echo(_indent(format_version(describe_version(result.model_version_id, url=url))))
    _say(f"registered {result.model}:{result.version} in {result.seconds:.1f} s")
    return result.model_version_id


def _compile(model_version_id: int, sizes: DemoSizes, url: str) -> None:
    from skyclass.compile.store import compile_model_version

    info = compile_model_version(
        model_version_id, url=url, opt_level=sizes.opt_level, progress=sys.stderr.isatty()
    )
    _say(
        f"artifact {info.artifact_id}: {info.library_bytes:,} bytes, sha256 "
        f"{info.sha256_hex[:16]}..., compiled in {info.compile_seconds or 0:.1f} s"
    )


def _score(target: str, catalog: str, sizes: DemoSizes, url: str) -> None:
    from skyclass.score.jobs import score_catalog

    shown = [-1]

    def progress(done: int, total: int, rows: int) -> None:
        if done != shown[0]:
            shown[0] = done
            _say(f"... {done}/{total} chunks, {rows:,} rows")

    run = score_catalog(target, catalog, chunk_size=sizes.chunk_size, url=url, progress=progress)
    _say(
        f"run {run.run_id} ({run.label} on {run.catalog}, {run.scorer} scorer): "
        f"{run.rows_scored:,} rows in {run.chunks_done} chunks, status {run.status}"
    )


def _domain(model_version_id: int, sizes: DemoSizes, url: str) -> None:
    """Build the star/galaxy/QSO features on the BOSS catalog, fit the domain classifier."""
    from skyclass.db.connect import connect
    from skyclass.domain.run import run_domain
    from skyclass.features import build_feature_set, example_spec_path

    built = build_feature_set(
        example_spec_path("sdss_ugriz"),
        catalog=BOSS_CATALOG,
        column_map={b: f"mag_{b}" for b in "ugriz"},
        url=url,
    )
    _say(
        f"{built.name} on {BOSS_CATALOG} (u..z from mag_u..mag_z): "
        f"{built.n_objects:,} objects in {built.qualified_table}"
    )
    with connect(url) as conn:
        result = run_domain(
            conn, str(model_version_id), BOSS_CATALOG, n_bootstrap=sizes.domain_bootstrap
        )
    uncovered = f"{result.uncovered_fraction:.1%}"
    _say(
        f"domain-classifier AUC {result.auc:.3f} ± {result.auc_std:.3f} (0.5 = no shift); "
        f"{uncovered} of {BOSS_CATALOG} is not covered by the training data"
    )
    if result.problems:
        _say("expected metrics UNRELIABLE: " + "; ".join(result.problems))
    _say(f"{'metric':<24} {'expected here':>18} {'CV (training mix)':>18}")
    for e in result.estimates:
        name = f"{e.name}[{e.class_name}]" if e.class_name else e.name
        _say(f"{name:<24} {e.value:>9.3f} ± {e.std:<6.3f} {e.unweighted:>18.3f}")
    _say(
        f"in SQL: SELECT * FROM skyclass.expected_metrics('{model_version_id}', '{BOSS_CATALOG}');"
    )


def _why_and_oddest(model_version_id: int, sizes: DemoSizes, url: str) -> None:
    """Explain a few quasars, vary u-g in the database, and rank the oddest objects."""
    from skyclass.db.connect import connect
    from skyclass.domain.anomaly import fit_anomaly_model
    from skyclass.domain.ood_job import run_ood_job
    from skyclass.explain.run import explain_objects
    from skyclass.score.jobs import default_workers

    target = str(model_version_id)
    with connect(url) as conn:
        found = explain_objects(conn, target, CATALOG, where="class = 'QSO'", limit=100)
    ex = found.explanation
    k = int(ex.margin[0].argmax())
    order = abs(ex.contributions[0, :, k]).argsort()[::-1][:4]
    parts = ", ".join(f"{found.feature_names[f]} {ex.contributions[0, f, k]:+.2f}" for f in order)
    _say(
        f"TreeSHAP of {found.object_id.size} quasars in {found.seconds:.2f} s; object "
        f"{found.object_id[0]}: {found.output_names[k]} logit {ex.base[k]:+.2f} -> "
        f"{ex.margin[0, k]:+.2f} ({parts})"
    )
    with connect(url, autocommit=True) as conn:
        for feature in ("u_g", "g_r"):
            conn.execute(
                "SELECT skyclass.partial_dependence(%s, %s, %s, 15, 30)", (target, CATALOG, feature)
            )
        for quantile in (0.1, 0.5, 0.9):
            conn.execute(
                "SELECT skyclass.partial_dependence(%s, %s, 'u_g', 9, 0, 'g_r', %s)",
                (target, CATALOG, quantile),
            )
        curve = conn.execute(
            "SELECT string_agg(round(c.probability::numeric, 2)::text, ' ' ORDER BY c.grid_index) "
            "FROM skyclass.dependence_curve AS c WHERE c.dependence_run_id = "
            "(SELECT max(dependence_run_id) FROM skyclass.dependence_run WHERE feature = 'u_g' "
            "AND second_feature IS NULL) AND c.curve = 'median' AND c.class_name = 'QSO'"
        ).fetchone()
        _say(f"p(QSO) of the median object as u-g runs over its range: {curve[0] if curve else ''}")
        # The oddest objects: an anomaly model of the feature set (no labels needed), scored
        # and ranked in the database.
        fit = fit_anomaly_model(
            conn, ANOMALY_MODEL, "sdss_ugriz", CATALOG, opt_level=sizes.opt_level
        )
        if fit.compile_error is not None:
            _say(f"anomaly scores skipped: {fit.compile_error}")
            return
        run_ood_job(conn, fit.label, CATALOG, workers=default_workers())
        rows = conn.execute(
            "SELECT a.object_id, a.raw_score, a.percentile, c.class, c.u, c.g, c.r, c.i, "
            "c.z, c.redshift, a.rank FROM skyclass.anomaly_rank(%s, %s) AS a "
            "JOIN catalogs.sdss17 AS c USING (object_id) WHERE a.rank <= 8 ORDER BY a.rank",
            (fit.label, CATALOG),
        ).fetchall()
    _say(
        f"the oddest objects (anomaly model {fit.label} of sdss_ugriz, an IsolationForest "
        "scored in the database, highest first):"
    )
    _say(
        f"{'rank':>4} {'object_id':>10} {'score':>6} {'class':>7} {'u':>6} {'g':>6} {'r':>6} "
        f"{'i':>6} {'z':>6} {'redshift':>8}"
    )
    for r in rows:
        mags = " ".join(f"{m:>6.2f}" for m in r[4:9])
        _say(f"{r[10]:>4} {r[0]:>10} {r[1]:>6.3f} {r[3]:>7} {mags} {r[9]:>8.3f}")
    _say(
        f"in SQL: SELECT * FROM skyclass.anomaly_rank('{ANOMALY_MODEL}', '{CATALOG}') "
        "WHERE rank <= 100;"
    )


def run_demo(
    *,
    quick: bool = False,
    output: Path | None = None,
    data_file: Path = SDSS17_FILE,
) -> Path:
    """Run the demo against the configured database, printing each step; return the report.

    ``quick`` uses small models and 3 folds (the test suite's version);
    ``output`` is the report directory (default: ``demo-report`` under
    ``SKYCLASS_HOME``). Raises the :class:`~skyclass.errors.SkyclassError`
    of a failing step.
    """
    from skyclass.config import load_settings
    from skyclass.db.connect import database_url
    from skyclass.demo import examples
    from skyclass.features.build import build_feature_set
    from skyclass.features.spec import example_spec_path
    from skyclass.query.output import render_text
    from skyclass.query.spatial import cone_search, crossmatch
    from skyclass.score.deploy import deploy

    sizes = QUICK if quick else FULL
    timer = _Timer()
    total = time.perf_counter()
    settings = load_settings()
    for note in sizes.notes:
        click.secho(f"note: {note}", fg="yellow")
    with timer.step("database"):
        url = database_url(settings)
        where = "SKYCLASS_DATABASE_URL" if settings.database_url else f"embedded, {settings.home}"
        _say(f"using {where}")

    with timer.step(f"ingest {data_file.name} as catalog {CATALOG!r}"):
        _ingest(
            data_file,
            CATALOG,
            url,
            id_column="orig_row",
            ra_column="alpha",
            dec_column="delta",
            description="SDSS DR17 spectroscopic objects (star/galaxy/QSO), bundled sample",
        )
    with timer.step(f"ingest {BOSS_FILE.name} as catalog {BOSS_CATALOG!r} (no sky positions)"):
        _ingest(
            BOSS_FILE,
            BOSS_CATALOG,
            url,
            positions=False,
            description="BOSS DR10 photo-z training set (ugriz, errors, z_spec), bundled sample",
        )

    ra, dec = CONE_CENTRE
    with timer.step(f"cone search: 1 arcmin around RA {ra}, Dec {dec}"):
        found = cone_search(CATALOG, ra, dec, "1arcmin", columns="u,g,r,class", url=url)
        click.echo(_indent(render_text(found)))
    with timer.step("self cross-match within 1 arcsec (objects observed twice)"):
        pairs = crossmatch(CATALOG, CATALOG, "1arcsec", url=url)
        click.echo(_indent(render_text(pairs[:10])))

    with timer.step("features: sdss_ugriz and boss_ugriz, computed inside the database"):
        sdss_fs = build_feature_set(example_spec_path("sdss_ugriz"), url=url)
        boss_fs = build_feature_set(BOSS_SPEC, url=url)
        for fs in (sdss_fs, boss_fs):
            action = fs.build.action if fs.build else "loaded"
            _say(
                f"{fs.name} version {fs.spec_hash[:12]}: {fs.n_features} features of "
                f"{fs.n_objects:,} objects in {fs.qualified_table} ({action})"
            )

    with timer.step("train the star/galaxy/QSO model next to its baselines"):
        sgq_v1 = _train(
            SGQ_MODEL,
            sdss_fs.feature_set_id,
            "class",
            sizes,
            sizes.sgq_params,
            url=url,
            seed=0,
            ablate=sizes.ablate,
            baselines=sizes.sgq_baselines,
            importance=sizes.importance,
            description="star / galaxy / QSO from SDSS ugriz photometry (skyclass demo)",
        )
    with timer.step("train the photo-z model (redshift PDFs) next to its baselines"):
        photoz_v = _train(
            PHOTOZ_MODEL,
            boss_fs.feature_set_id,
            "z_spec",
            sizes,
            sizes.photoz_params,
            url=url,
            seed=0,
            task="photoz",
            bins=sizes.photoz_bins,
            baselines=sizes.photoz_baselines,
            importance=sizes.importance,
            description="photometric redshift PDFs from BOSS DR10 ugriz (skyclass demo)",
        )
    with timer.step("compile both models to native code (Treelite/TL2cgen)"):
        _compile(sgq_v1, sizes, url)
        _compile(photoz_v, sizes, url)
    with timer.step(f"deploy them as {SGQ_DEPLOYMENT!r} and {PHOTOZ_DEPLOYMENT!r}"):
        for name, version in ((SGQ_DEPLOYMENT, sgq_v1), (PHOTOZ_DEPLOYMENT, photoz_v)):
            moved = deploy(name, version, description="skyclass demo", url=url)
            prev = moved.previous_version_id
            was = f" (was model_version_id {prev})" if prev and moved.changed else ""
            _say(f"{name} -> {moved.deployment.label}{was}")
    with timer.step("rescore the catalogs inside the database"):
        _score(SGQ_DEPLOYMENT, CATALOG, sizes, url)
        _score(PHOTOZ_DEPLOYMENT, BOSS_CATALOG, sizes, url)

    with timer.step(
        f"expected performance of {SGQ_MODEL} on a catalog unlike its training set "
        f"({BOSS_CATALOG}: BOSS galaxies)"
    ):
        _domain(sgq_v1, sizes, url)

    with timer.step(f"why and what if: explain {SGQ_MODEL}, interrogate it, rank odd objects"):
        _why_and_oddest(sgq_v1, sizes, url)

    with timer.step("train, compile and score a second star/galaxy/QSO version"):
        sgq_v2 = _train(
            SGQ_MODEL,
            sdss_fs.feature_set_id,
            "class",
            sizes,
            sizes.sgq2_params,
            url=url,
            seed=1,
            # The second version is only compared with the first: the class-prior baseline
            # keeps its metric table honest without refitting the slower baselines.
            baselines=("dummy",),
            importance=False,
            description="star / galaxy / QSO from SDSS ugriz photometry (skyclass demo)",
        )
        _compile(sgq_v2, sizes, url)
        _score(str(sgq_v2), CATALOG, sizes, url)

    with timer.step("example SQL"):
        shown = examples.run_examples(
            url, sgq_v1, sgq_v2, TARGET_PURITY, cone=CONE_CENTRE, catalog=CATALOG
        )
        click.echo(f"    psql '{url}'")
        for example in shown:
            click.echo()
            click.echo(_indent(example.sql))
            click.echo(_indent(example.text()))
            if example.note:
                _say(example.note)

    with timer.step("write the demo report"):
        from skyclass.report.demo import make_demo_report

        directory = output if output is not None else settings.home / "demo-report"
        files = make_demo_report(
            [sgq_v1, photoz_v, sgq_v2],
            directory,
            examples=shown,
            timings=timer.steps,
            catalogs=(CATALOG, BOSS_CATALOG),
            quick=quick,
            url=url,
        )
        _say(f"{files.html} ({files.html.stat().st_size:,} bytes, {len(files.pngs)} figures)")

    elapsed = time.perf_counter() - total
    click.echo(click.style(f"demo finished in {elapsed:.0f} s", bold=True))
    click.echo(f"report:  {files.html}")
    click.echo(f"connect: psql '{url}'")
    click.echo(
        "try:     SELECT top_label, count(*) FROM skyclass.current_classification "
        f"WHERE deployment = '{SGQ_DEPLOYMENT}' GROUP BY 1;"
    )
    click.echo(
        "serve:   skyclass serve   (or skyclass demo --serve), then open "
        f"http://127.0.0.1:8080/objects/{CATALOG}/62669 or cone-search "
        f"http://127.0.0.1:8080/scs/{CATALOG}?RA={ra}&DEC={dec}&SR=0.05 (docs/portal.md)"
    )
    return files.html
