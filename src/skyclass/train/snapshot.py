"""Frozen training snapshots: features plus labels, folds and a calibration split, as a table.

A snapshot is what a model version is trained on, frozen: the table
``snapshots.snapshot_<id>`` (contract: ``object_id bigint PRIMARY KEY, label
text, label_index smallint, z_true double precision, fold smallint, x
real[]``) and its row in ``skyclass.training_snapshot`` are written in one
transaction, so a live catalog or feature table changing later never changes
what a model was trained on.

Labels come from a column of the feature set's own catalog
(:class:`ColumnLabels`) or from the nearest object of another, labelled
catalog within a radius (:class:`CrossmatchLabels`, using
``skyclass.crossmatch``). Objects without a label (NULL, or a non-finite
redshift), without a feature row, or with a label outside the requested
classes are left out and counted in ``label_source -> 'excluded'``.

The leakage guard (:mod:`skyclass.train.leakage`) runs here, on the feature
names and on the catalog columns their expressions read, against the label
column and the catalog's id, RA and Dec columns: a feature computed from
``redshift`` is refused when the label is ``class`` unless forced, and what
was forced is recorded in ``leakage_forced``.

Folds are assigned by :func:`skyclass.train.crossval.make_splits` (stratified,
seeded): ``fold`` -1 rows form the calibration split, never trained on.
Photo-z snapshots (task ``photoz``) label each object with its redshift bin on
a grid (:func:`parse_bins`; labels like ``0.00-0.04``; redshifts outside the
grid go to the end bins and are counted); their folds are stratified on
redshift deciles rather than on the bins, so that sparsely populated end bins
do not make the split impossible.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

from skyclass.db.connect import connect
from skyclass.errors import FeatureSetNotFoundError, ModelOutputError
from skyclass.registry.catalogs import find_catalog
from skyclass.registry.features import find_feature_build
from skyclass.train.crossval import make_splits
from skyclass.train.errors import LeakageError, TrainError
from skyclass.train.leakage import RefusedFeature, check_features
from skyclass.train.photoz import RedshiftGrid, bin_redshifts

TASKS = ("classification", "photoz")
SNAPSHOT_SCHEMA = "snapshots"
FEATURE_SCHEMA = "features"
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,62}")
_NUMERIC_TYPES = ("double precision", "real", "bigint", "integer", "smallint", "numeric")


class SnapshotNotFoundError(TrainError, LookupError):
    """A training snapshot named by the user does not exist."""


# --------------------------------------------------------------------------- feature sets


@dataclass(frozen=True)
class CatalogInfo:
    """A registered catalog: its table, the source names of its id/RA/Dec and its columns."""

    catalog_id: int
    name: str
    schema_name: str
    table_name: str
    id_column: str | None
    ra_column: str | None
    dec_column: str | None
    columns: Mapping[str, tuple[str, str | None]]
    """column name -> (PostgreSQL type, unit)"""

    @property
    def table(self) -> sql.Composable:
        """The quoted ``schema.table`` of the catalog."""
        return sql.Identifier(self.schema_name, self.table_name)


@dataclass(frozen=True)
class FeatureSetInfo:
    """A feature set version as the training layer needs it (read from the registry row).

    ``sources`` maps each feature to the catalog columns its expression reads
    (the leakage guard checks them); ``groups`` maps group names to features
    (used by ablation); ``trees`` holds each feature's parsed expression
    (:mod:`skyclass.features.spec` nodes; used to recompute colours of
    augmented copies).
    """

    feature_set_id: int
    name: str
    spec_hash: str
    catalog: CatalogInfo
    feature_names: tuple[str, ...]
    table_name: str
    groups: Mapping[str, tuple[str, ...]]
    sources: Mapping[str, tuple[str, ...]]
    trees: Mapping[str, Any]

    @property
    def table(self) -> sql.Composable:
        """The quoted ``features.<table_name>``."""
        return sql.Identifier(FEATURE_SCHEMA, self.table_name)

    @property
    def label(self) -> str:
        """``name:hash12``, how the CLI shows a feature set version."""
        return f"{self.name}:{self.spec_hash[:12]}"


def _details(
    spec: Mapping[str, Any], feature_names: Sequence[str]
) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]], dict[str, Any]]:
    """Groups, source columns and expression tree of every output feature of a stored spec.

    The stored canonical spec is re-parsed with :mod:`skyclass.features.spec`.
    Indicator features (``<name>_missing``, ``<name>_nondet``) read what their
    feature reads, plus the non-detection column or flag.
    """
    from skyclass.features.spec import columns_of, parse_expression, spec_from_canonical

    parsed = spec_from_canonical(spec)
    sources: dict[str, tuple[str, ...]] = {}
    trees: dict[str, Any] = {}
    for feature in parsed.features:
        tree = parse_expression(feature.expr)
        trees[feature.name] = tree
        columns = columns_of(tree)
        nd = feature.nondetection
        extra = [c for c in (nd.column, nd.flag) if c] if nd is not None else []
        for out in feature.output_names():
            found = columns + (extra if out != feature.name or (nd and nd.mask) else [])
            sources[out] = tuple(dict.fromkeys(found))
    missing = [n for n in feature_names if n not in sources]
    if missing:
        raise TrainError(f"the stored spec does not describe features {missing}")
    return dict(parsed.groups), sources, trees


def load_catalog_info(conn: psycopg.Connection[Any], name: str) -> CatalogInfo:
    """The registry row and columns of catalog ``name`` (raises CatalogNotFoundError)."""
    found = find_catalog(conn, name)
    row = (
        found.catalog_id,
        found.name,
        found.schema,
        found.table,
        found.id_column,
        found.ra_column,
        found.dec_column,
    )
    return _catalog_from_row(conn, row)


def _catalog_from_row(conn: psycopg.Connection[Any], row: Sequence[Any]) -> CatalogInfo:
    catalog_id, name, schema, table = row[0], row[1], row[2], row[3]
    # The table is the truth for names and types; the registry adds units.
    cols = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), cc.unit "
        "FROM pg_attribute AS a "
        "LEFT JOIN skyclass.catalog_column AS cc "
        "  ON cc.catalog_id = %s AND cc.column_name = a.attname "
        "WHERE a.attrelid = to_regclass(format('%%I.%%I', %s::text, %s::text)) "
        "  AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        (catalog_id, schema, table),
    ).fetchall()
    return CatalogInfo(
        catalog_id=int(catalog_id),
        name=str(name),
        schema_name=str(schema),
        table_name=str(table),
        id_column=row[4],
        ra_column=row[5],
        dec_column=row[6],
        columns={str(c[0]): (str(c[1]), c[2]) for c in cols},
    )


def load_feature_set_info(conn: psycopg.Connection[Any], ref: int | str) -> FeatureSetInfo:
    """Feature set ``ref``: an id, a name (its newest version) or ``name:hashprefix``.

    Resolved by :func:`skyclass.registry.features.find_feature_build` (and
    fails with its errors).
    """
    query = (
        "SELECT fs.feature_set_id, fs.name, fs.spec_hash, fs.feature_names, fs.table_name, "
        "fs.spec, c.catalog_id, c.name, c.schema_name, c.table_name, c.id_column, "
        "c.ra_column, c.dec_column FROM skyclass.feature_set fs "
        "JOIN skyclass.catalog c USING (catalog_id) "
    )
    build = find_feature_build(conn, ref)
    row = conn.execute(query + "WHERE fs.feature_set_id = %s", (build,)).fetchone()
    if row is None:
        raise FeatureSetNotFoundError(
            f"feature set {ref!r}: its catalog was dropped, so it cannot be trained on; "
            "build the definition on a registered catalog (`skyclass features build`)"
        )
    catalog = _catalog_from_row(conn, row[6:13])
    spec = row[5] if isinstance(row[5], Mapping) else json.loads(row[5])
    feature_names = tuple(str(n) for n in row[3])
    groups, sources, trees = _details(spec, feature_names)
    return FeatureSetInfo(
        feature_set_id=int(row[0]),
        name=str(row[1]),
        spec_hash=str(row[2]),
        catalog=catalog,
        feature_names=feature_names,
        table_name=str(row[4]),
        groups=groups,
        sources=sources,
        trees=trees,
    )


# --------------------------------------------------------------------------- labels


@dataclass(frozen=True)
class ColumnLabels:
    """Labels from a column of the feature set's own catalog.

    With ``queue``, labels imported into ``skyclass.label_queue`` (``skyclass
    queue label``) for objects of that catalog take precedence (newest first),
    so the next snapshot learns from the objects followed up.
    """

    column: str
    queue: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON record (stored in ``training_snapshot.label_source``)."""
        record: dict[str, Any] = {"kind": "column", "column": self.column}
        if self.queue:
            record["queue_labels"] = True
        return record


@dataclass(frozen=True)
class CrossmatchLabels:
    """Labels from ``column`` of ``catalog``, taken from each object's nearest match within
    ``radius`` (a number of degrees, or text with a unit such as ``1arcsec``)."""

    catalog: str
    column: str
    radius: float | str = "1arcsec"

    def to_dict(self) -> dict[str, Any]:
        """JSON record (stored in ``training_snapshot.label_source``)."""
        return {"kind": "crossmatch", "catalog": self.catalog, "column": self.column}


LabelSource = ColumnLabels | CrossmatchLabels


def _radius_arcsec(radius: float | str) -> float:
    import astropy.units as u

    from skyclass.errors import QueryError
    from skyclass.query.spatial import parse_radius

    try:
        return float(parse_radius(radius).to_value(u.arcsec))
    except QueryError as exc:
        raise TrainError(f"match radius: {exc}") from None


# --------------------------------------------------------------------------- photo-z grid


def parse_bins(text: str | Sequence[float]) -> tuple[float, ...]:
    """Redshift bin edges from ``start:stop:step`` (``0:1:0.04``) or explicit edges (``0,0.1,0.3``).

    A step must divide ``stop - start`` into a whole number of bins (within
    1e-9); edges are rounded to 10 decimals so that ``0.12`` is not
    ``0.12000000000000001``. At least two bins, strictly increasing.
    """
    if isinstance(text, str):
        spec = text.strip()
        try:
            if ":" in spec:
                parts = [float(p) for p in spec.split(":")]
                if len(parts) != 3:
                    raise ValueError
                start, stop, step = parts
                if not (step > 0 and stop > start):
                    raise TrainError(f"bins {text!r}: need stop > start and step > 0")
                count = (stop - start) / step
                n = round(count)
                if n < 2 or abs(count - n) > 1e-9 * max(1.0, count):
                    raise TrainError(
                        f"bins {text!r}: the step must split [{start}, {stop}] into at least "
                        f"2 whole bins ({count:g} here)"
                    )
                edges = [round(start + k * step, 10) for k in range(n + 1)]
            else:
                edges = [float(p) for p in spec.split(",") if p.strip()]
        except ValueError:
            raise TrainError(
                f"bins {text!r}: use START:STOP:STEP (e.g. 0:1:0.04) or comma-separated edges"
            ) from None
    else:
        edges = [float(v) for v in text]
    if not all(math.isfinite(e) for e in edges):
        raise TrainError("redshift bin edges must be finite")
    try:
        return RedshiftGrid(tuple(edges)).edges
    except ModelOutputError as exc:
        raise TrainError(f"bins {text!r}: {exc}") from None


def bin_labels(edges: Sequence[float]) -> tuple[str, ...]:
    """Labels of the bins (``0.00-0.04``), with as many decimals as the edges need (2..6)."""
    decimals = 2
    while decimals < 6 and any(abs(round(e, decimals) - e) > 1e-9 for e in edges):
        decimals += 1
    text = [f"{e:.{decimals}f}" for e in edges]
    return tuple(f"{lo}-{hi}" for lo, hi in itertools.pairwise(text))


# --------------------------------------------------------------------------- snapshots


@dataclass(frozen=True)
class Snapshot:
    """A registered training snapshot (the ``skyclass.training_snapshot`` row)."""

    snapshot_id: int
    table_name: str
    feature_set_id: int
    task: str
    label_source: Mapping[str, Any]
    classes: tuple[str, ...]
    bin_edges: tuple[float, ...] | None
    n_rows: int
    n_folds: int
    calibration_fraction: float
    seed: int
    class_counts: Mapping[str, int]
    leakage_forced: tuple[Mapping[str, str], ...] = field(default=())

    @property
    def table(self) -> sql.Composable:
        """The quoted ``snapshots.<table_name>``."""
        return sql.Identifier(SNAPSHOT_SCHEMA, self.table_name)

    @property
    def grid(self) -> RedshiftGrid | None:
        """The redshift grid of a photo-z snapshot."""
        return RedshiftGrid(self.bin_edges) if self.bin_edges is not None else None


_SNAPSHOT_COLUMNS = (
    "snapshot_id, table_name, feature_set_id, task, label_source, classes, bin_edges, n_rows, "
    "n_folds, calibration_fraction, seed, class_counts, leakage_forced"
)


def _snapshot_from_row(row: Sequence[Any]) -> Snapshot:
    return Snapshot(
        snapshot_id=int(row[0]),
        table_name=str(row[1]),
        feature_set_id=int(row[2]),
        task=str(row[3]),
        label_source=dict(row[4]),
        classes=tuple(str(c) for c in row[5]),
        bin_edges=tuple(float(e) for e in row[6]) if row[6] is not None else None,
        n_rows=int(row[7]),
        n_folds=int(row[8]),
        calibration_fraction=float(row[9]),
        seed=int(row[10]),
        class_counts={str(k): int(v) for k, v in dict(row[11]).items()},
        leakage_forced=tuple(dict(f) for f in row[12]),
    )


def load_snapshot(conn: psycopg.Connection[Any], snapshot_id: int) -> Snapshot:
    """The registry row of snapshot ``snapshot_id`` (raises SnapshotNotFoundError)."""
    row = conn.execute(
        f"SELECT {_SNAPSHOT_COLUMNS} FROM skyclass.training_snapshot WHERE snapshot_id = %s",
        (snapshot_id,),
    ).fetchone()
    if row is None:
        raise SnapshotNotFoundError(f"training snapshot {snapshot_id} does not exist")
    return _snapshot_from_row(row)


@dataclass(frozen=True)
class SnapshotData:
    """The rows of a snapshot table as arrays, ordered by ``object_id``."""

    object_id: npt.NDArray[np.int64]
    label_index: npt.NDArray[np.intp]
    fold: npt.NDArray[np.int16]
    z_true: npt.NDArray[np.float64]
    X: npt.NDArray[np.float32]


def snapshot_data(conn: psycopg.Connection[Any], snapshot: Snapshot) -> SnapshotData:
    """Read a snapshot's rows (binary transfer; NaN features stay NaN)."""
    with conn.cursor(binary=True) as cur:
        cur.execute(
            sql.SQL(
                "SELECT object_id, label_index, fold, z_true, x FROM {} ORDER BY object_id"
            ).format(snapshot.table)
        )
        rows = cur.fetchall()
    if not rows:
        raise TrainError(f"snapshot {snapshot.snapshot_id} has no rows")
    n_features = len(rows[0][4])
    return SnapshotData(
        object_id=np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)),
        # An anomaly snapshot has no labels: label_index -1.
        label_index=np.fromiter(
            (-1 if r[1] is None else r[1] for r in rows), dtype=np.intp, count=len(rows)
        ),
        fold=np.fromiter((r[2] for r in rows), dtype=np.int16, count=len(rows)),
        z_true=np.fromiter(
            (math.nan if r[3] is None else r[3] for r in rows), dtype=np.float64, count=len(rows)
        ),
        X=np.asarray([r[4] for r in rows], dtype=np.float32).reshape(len(rows), n_features),
    )


def _label_column(catalog: CatalogInfo, column: str, task: str) -> str:
    if column not in catalog.columns or column in ("object_id", "ra", "dec"):
        usable = [c for c in catalog.columns if c not in ("object_id", "ra", "dec")]
        raise TrainError(
            f"catalog {catalog.name!r} has no label column {column!r}; "
            f"its columns are: {', '.join(usable)}"
        )
    pg_type = catalog.columns[column][0]
    if task == "photoz" and not pg_type.startswith(_NUMERIC_TYPES):
        raise TrainError(
            f"photo-z labels must be redshifts, but {catalog.name}.{column} is {pg_type}"
        )
    return column


def _guard(
    feature_set: FeatureSetInfo, label_column: str, force: Collection[str]
) -> tuple[RefusedFeature, ...]:
    """Run the leakage guard on feature names and their source columns; return what was forced."""
    catalog = feature_set.catalog
    checked: list[str] = list(feature_set.feature_names)
    for columns in feature_set.sources.values():
        checked.extend(c for c in columns if c not in checked)
    used_by: dict[str, list[str]] = {}
    for feature, columns in feature_set.sources.items():
        for column in columns:
            if column != feature:
                used_by.setdefault(column, []).append(feature)
    unknown = sorted(set(force) - set(checked))
    if unknown:
        raise TrainError(
            f"--force-feature {', '.join(unknown)}: not a feature of {feature_set.label} nor a "
            f"column its features read (features: {', '.join(feature_set.feature_names)})"
        )
    forced = set(force)
    for name in force:
        forced.update(feature_set.sources.get(name, ()))
    units = {c: unit for c, (_, unit) in catalog.columns.items() if unit}
    # Run the guard with everything forced to learn every refusal and its reason,
    # then refuse those the caller did not force, naming the features reading them.
    report = check_features(
        checked,
        label_column=label_column,
        id_column=catalog.id_column,
        ra_column=catalog.ra_column,
        dec_column=catalog.dec_column,
        extra_refused=("object_id",),
        units=units,
        force=True,
    )
    blocked = [r for r in report.forced if r.name not in forced]
    if blocked:
        reasons = []
        for refused in blocked:
            users = used_by.get(refused.name)
            where = f", read by feature(s) {', '.join(users)}" if users else ""
            reasons.append(f"{refused.name!r} ({refused.reason}{where})")
        flags = " ".join(f"--force-feature {r.name}" for r in blocked)
        raise LeakageError(
            f"feature set {feature_set.label}: refused {len(blocked)} feature input(s) that "
            f"would leak the label {label_column!r} or identify objects: {'; '.join(reasons)}. "
            f"Remove them from the feature spec, or train anyway with {flags} "
            "(Python: force_features=[...]); forced inputs are recorded in "
            "training_snapshot.leakage_forced",
            tuple(r.name for r in blocked),
        )
    return tuple(r for r in report.forced if r.name in forced)


def _fetch_labels(
    conn: psycopg.Connection[Any],
    feature_set: FeatureSetInfo,
    source: LabelSource,
    task: str,
) -> tuple[list[tuple[int, Any, bool]], dict[str, Any]]:
    """(object_id, raw label, has features) for every object of the feature set's catalog."""
    catalog = feature_set.catalog
    value = "l.{}" if task == "photoz" else "l.{}::text"
    if isinstance(source, ColumnLabels):
        column = _label_column(catalog, source.column, task)
        if source.queue:
            if task == "photoz":
                raise TrainError("queue labels are class labels: they cannot train a photo-z model")
            value = "coalesce(q.label, l.{}::text)"
        query = sql.SQL(
            "SELECT l.object_id, " + value + ", f.object_id IS NOT NULL "
            "FROM {} AS l LEFT JOIN {} AS f USING (object_id)"
            + (
                " LEFT JOIN LATERAL (SELECT q.label FROM skyclass.label_queue AS q "
                "WHERE q.catalog_id = %s AND q.object_id = l.object_id AND q.state = 'labelled' "
                "ORDER BY q.labelled_at DESC, q.queue_id DESC LIMIT 1) AS q ON true"
                if source.queue
                else ""
            )
        ).format(sql.Identifier(column), catalog.table, feature_set.table)
        params = (catalog.catalog_id,) if source.queue else ()
        return list(conn.execute(query, params).fetchall()), {
            **source.to_dict(),
            "catalog": catalog.name,
        }
    label_catalog = load_catalog_info(conn, source.catalog)
    column = _label_column(label_catalog, source.column, task)
    if catalog.ra_column is None or label_catalog.ra_column is None:
        raise TrainError(
            f"cross-matching needs sky positions, and catalog "
            f"{(catalog if catalog.ra_column is None else label_catalog).name!r} has none"
        )
    radius = _radius_arcsec(source.radius)
    # Every object of the feature catalog is listed (unmatched ones get a NULL
    # label and are counted), each with its nearest label-catalog match.
    query = sql.SQL(
        "SELECT c.object_id, " + value + ", f.object_id IS NOT NULL "
        "FROM {} AS c "
        "LEFT JOIN skyclass.crossmatch(%s, %s, %s, true) AS m ON m.object_id_a = c.object_id "
        "LEFT JOIN {} AS l ON l.object_id = m.object_id_b "
        "LEFT JOIN {} AS f ON f.object_id = c.object_id"
    ).format(sql.Identifier(column), catalog.table, label_catalog.table, feature_set.table)
    try:
        rows = conn.execute(query, (catalog.name, label_catalog.name, radius)).fetchall()
    except psycopg.DataError as exc:
        raise TrainError(f"cross-match for labels failed: {exc.diag.message_primary}") from None
    return list(rows), {
        **source.to_dict(),
        "radius_arcsec": radius,
        "label_catalog_id": label_catalog.catalog_id,
    }


def create_snapshot(
    feature_set: int | str | FeatureSetInfo,
    label_source: LabelSource | str,
    *,
    task: str = "classification",
    classes: Sequence[str] | None = None,
    bin_edges: Sequence[float] | str | None = None,
    n_folds: int = 5,
    calibration_fraction: float = 0.2,
    seed: int = 0,
    force_features: Collection[str] = (),
    url: str | None = None,
) -> Snapshot:
    """Freeze a feature set with labels, folds and a calibration split into a snapshot table.

    ``label_source`` is a :class:`ColumnLabels`, a :class:`CrossmatchLabels`
    or a column name of the feature set's catalog. Classification labels are
    the column's text; ``classes`` (default: the sorted distinct labels)
    restricts and orders them. Photo-z (``task="photoz"``) needs ``bin_edges``
    (edges or ``start:stop:step``) and a numeric redshift column. The leakage
    guard runs first (raises :class:`LeakageError` naming each refused feature
    unless listed in ``force_features``); then the table
    ``snapshots.snapshot_<id>`` and its registry row are written in one
    transaction. Returns the :class:`Snapshot`.
    """
    if task not in TASKS:
        raise TrainError(f"task must be one of {', '.join(TASKS)}, not {task!r}")
    if isinstance(label_source, str):
        label_source = ColumnLabels(label_source)
    if task == "photoz" and bin_edges is None:
        raise TrainError("a photo-z snapshot needs redshift bins (e.g. bins '0:1:0.04')")
    if task == "classification" and bin_edges is not None:
        raise TrainError("redshift bins are only for task 'photoz'")
    if task == "photoz" and classes is not None:
        raise TrainError("photo-z classes are the redshift bins: give bin_edges, not classes")
    edges = parse_bins(bin_edges) if bin_edges is not None else None
    if isinstance(n_folds, bool) or not isinstance(n_folds, int) or n_folds < 2:
        raise TrainError(f"the number of folds must be an integer >= 2, not {n_folds!r}")
    with connect(url) as conn, conn.transaction():
        info = (
            feature_set
            if isinstance(feature_set, FeatureSetInfo)
            else load_feature_set_info(conn, feature_set)
        )
        forced = _guard(info, label_source.column, force_features)
        rows, source_record = _fetch_labels(conn, info, label_source, task)
        selected, labels, z_true, excluded, class_list, record = _select(rows, task, classes, edges)
        split_key = _split_key(task, labels, z_true)
        splits = make_splits(
            split_key, n_splits=n_folds, seed=seed, calibration_fraction=calibration_fraction
        )
        index_of = {c: k for k, c in enumerate(class_list)}
        label_index = np.fromiter((index_of[v] for v in labels), dtype=np.int16, count=len(labels))
        if task == "photoz":
            train_bins = set(label_index[splits.fold >= 0].tolist())
            empty = [class_list[k] for k in range(len(class_list)) if k not in train_bins]
            if empty:
                raise TrainError(
                    f"redshift bins {empty} have no training objects; narrow the grid or "
                    "use wider bins"
                )
        counts = Counter(labels)
        snapshot_id = int(
            conn.execute(
                "SELECT nextval(pg_get_serial_sequence('skyclass.training_snapshot', "
                "'snapshot_id'))"
            ).fetchone()[0]  # type: ignore[index]
        )
        table_name = f"snapshot_{snapshot_id}"
        source_record.update(
            {
                "feature_set": info.label,
                "excluded": excluded,
                "n_objects_in_catalog": len(rows),
                "split": splits.to_dict(),
                **record,
            }
        )
        conn.execute(
            "INSERT INTO skyclass.training_snapshot (snapshot_id, feature_set_id, table_name, "
            "task, label_source, classes, bin_edges, n_rows, n_folds, calibration_fraction, "
            "seed, class_counts, leakage_forced) OVERRIDING SYSTEM VALUE "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                snapshot_id,
                info.feature_set_id,
                table_name,
                task,
                psycopg.types.json.Jsonb(source_record),
                list(class_list),
                list(edges) if edges is not None else None,
                len(selected),
                n_folds,
                float(calibration_fraction),
                int(seed),
                psycopg.types.json.Jsonb({c: int(counts.get(c, 0)) for c in class_list}),
                psycopg.types.json.Jsonb([{"name": f.name, "reason": f.reason} for f in forced]),
            ),
        )
        _write_table(
            conn, info, table_name, selected, labels, label_index.tolist(), z_true, splits.fold
        )
        comment = (
            f"Training snapshot {snapshot_id}: feature set {info.label}, task {task}, "
            f"labels {json.dumps(label_source.to_dict())}"
        )
        conn.execute(
            sql.SQL("COMMENT ON TABLE {} IS {}").format(
                sql.Identifier(SNAPSHOT_SCHEMA, table_name), sql.Literal(comment)
            )
        )
        return load_snapshot(conn, snapshot_id)


def create_sample_snapshot(
    conn: psycopg.Connection[Any],
    info: FeatureSetInfo,
    *,
    sample: int | None = None,
    reference_fraction: float = 0.2,
    seed: int = 0,
) -> Snapshot:
    """Freeze an unlabelled sample of a feature build as a snapshot of task ``anomaly``.

    ``sample`` objects (all when None or larger than the build) are drawn
    without replacement with ``seed``; a ``reference_fraction`` of them get
    fold -1 (held out: the reference a score is read against), the others
    fold 0. No labels, no classes. Runs in the caller's transaction.
    """
    if sample is not None and (isinstance(sample, bool) or not isinstance(sample, int)):
        raise TrainError(f"the sample size must be an integer, not {sample!r}")
    if sample is not None and sample < 3:
        raise TrainError(f"the sample must hold at least 3 objects, not {sample}")
    if not 0 < reference_fraction < 1:
        raise TrainError(f"the reference fraction must be in (0, 1), not {reference_fraction!r}")
    all_ids = np.asarray(
        [r[0] for r in conn.execute(sql.SQL("SELECT object_id FROM {}").format(info.table))],
        dtype=np.int64,
    )
    all_ids.sort()
    if all_ids.size < 3:
        raise TrainError(
            f"feature table {info.table_name} of catalog {info.catalog.name!r} has "
            f"{all_ids.size} rows: an anomaly forest needs at least 3"
        )
    rng = np.random.default_rng(seed)
    if sample is not None and sample < all_ids.size:
        ids = np.sort(rng.choice(all_ids, size=sample, replace=False))
    else:
        ids = all_ids
    n_reference = min(max(1, round(reference_fraction * ids.size)), ids.size - 2)
    fold = np.zeros(ids.size, dtype=np.int16)
    fold[rng.permutation(ids.size)[:n_reference]] = -1
    snapshot_id = int(
        conn.execute(
            "SELECT nextval(pg_get_serial_sequence('skyclass.training_snapshot', 'snapshot_id'))"
        ).fetchone()[0]  # type: ignore[index]
    )
    table_name = f"snapshot_{snapshot_id}"
    source = {
        "kind": "none",
        "feature_set": info.label,
        "catalog": info.catalog.name,
        "n_objects_in_catalog": int(all_ids.size),
        "sample": int(ids.size),
        "n_reference": n_reference,
    }
    conn.execute(
        "INSERT INTO skyclass.training_snapshot (snapshot_id, feature_set_id, table_name, "
        "task, label_source, classes, n_rows, n_folds, calibration_fraction, seed, "
        "class_counts) OVERRIDING SYSTEM VALUE "
        "VALUES (%s, %s, %s, 'anomaly', %s, '{}', %s, 1, %s, %s, '{}')",
        (
            snapshot_id,
            info.feature_set_id,
            table_name,
            psycopg.types.json.Jsonb(source),
            int(ids.size),
            n_reference / ids.size,
            int(seed),
        ),
    )
    nothing: list[None] = [None] * int(ids.size)
    z_none = np.full(ids.size, np.nan)
    _write_table(conn, info, table_name, ids, nothing, nothing, z_none, fold, labelled=False)
    conn.execute(
        sql.SQL("COMMENT ON TABLE {} IS {}").format(
            sql.Identifier(SNAPSHOT_SCHEMA, table_name),
            sql.Literal(
                f"Anomaly snapshot {snapshot_id}: {ids.size} unlabelled objects of feature set "
                f"{info.label} (fold -1: held-out reference)"
            ),
        )
    )
    return load_snapshot(conn, snapshot_id)


def _select(
    rows: Sequence[tuple[int, Any, bool]],
    task: str,
    classes: Sequence[str] | None,
    edges: tuple[float, ...] | None,
) -> tuple[
    npt.NDArray[np.int64],
    list[str],
    npt.NDArray[np.float64],
    dict[str, int],
    tuple[str, ...],
    dict[str, Any],
]:
    """Keep labelled objects with features; count every reason an object was left out."""
    excluded = {"no_label": 0, "no_features": 0, "other_class": 0}
    kept_ids: list[int] = []
    raw: list[Any] = []
    for object_id, value, has_features in rows:
        missing = value is None or (task == "photoz" and not math.isfinite(float(value)))
        if missing:
            excluded["no_label"] += 1
        elif not has_features:
            excluded["no_features"] += 1
        else:
            kept_ids.append(int(object_id))
            raw.append(value)
    order = np.argsort(np.asarray(kept_ids, dtype=np.int64), kind="stable")
    ids = np.asarray(kept_ids, dtype=np.int64)[order]
    raw = [raw[i] for i in order]
    record: dict[str, Any] = {}
    if task == "photoz":
        assert edges is not None
        z = np.asarray(raw, dtype=np.float64)
        if z.size == 0:
            raise TrainError("no object has both a redshift and features")
        grid = RedshiftGrid(edges)
        record["outside_grid"] = {
            "below": int((z < edges[0]).sum()),
            "above": int((z > edges[-1]).sum()),
            "policy": "assigned to the first/last bin",
        }
        class_list = bin_labels(edges)
        labels = [class_list[b] for b in bin_redshifts(z, grid).tolist()]
        return ids, labels, z, excluded, class_list, record
    labels = [str(v) for v in raw]
    if classes is not None:
        class_list = tuple(str(c) for c in classes)
        if len(set(class_list)) != len(class_list):
            raise TrainError(f"classes listed more than once: {list(classes)}")
        wanted = set(class_list)
        keep = np.fromiter((v in wanted for v in labels), dtype=np.bool_, count=len(labels))
        excluded["other_class"] = int((~keep).sum())
        ids = ids[keep]
        labels = [v for v, k in zip(labels, keep.tolist(), strict=True) if k]
        absent = sorted(wanted - set(labels))
        if absent:
            raise TrainError(f"classes {absent} have no labelled objects with features")
    else:
        class_list = tuple(sorted(set(labels)))
    if len(class_list) < 2:
        raise TrainError(
            f"need at least two classes to train a classifier, found {list(class_list)} "
            f"among {len(labels)} labelled objects with features"
        )
    return ids, labels, np.full(len(labels), math.nan), excluded, class_list, record


def _split_key(task: str, labels: Sequence[str], z: npt.NDArray[np.float64]) -> npt.NDArray[Any]:
    """What folds are stratified on: the class, or (photo-z) the redshift decile."""
    if task != "photoz":
        return np.asarray(labels, dtype=object)
    cuts = np.unique(np.quantile(z, np.linspace(0.0, 1.0, 11)[1:-1]))
    return np.searchsorted(cuts, z, side="right")


def _write_table(
    conn: psycopg.Connection[Any],
    info: FeatureSetInfo,
    table_name: str,
    ids: npt.NDArray[np.int64],
    labels: Sequence[str | None],
    label_index: Sequence[int | None],
    z_true: npt.NDArray[np.float64],
    fold: npt.NDArray[np.int16],
    *,
    labelled: bool = True,
) -> None:
    """Create the snapshot table and fill it: labels via COPY, features copied in SQL.

    ``labelled=False`` (task ``anomaly``) leaves ``label`` and ``label_index`` NULL.
    """
    target = sql.Identifier(SNAPSHOT_SCHEMA, table_name)
    required = sql.SQL(" NOT NULL" if labelled else "")
    conn.execute(
        sql.SQL(
            "CREATE TABLE {} (object_id bigint PRIMARY KEY, label text{}, "
            "label_index smallint{} CHECK (label_index >= 0), z_true double precision, "
            "fold smallint NOT NULL CHECK (fold >= -1), x real[] NOT NULL)"
        ).format(target, required, required)
    )
    conn.execute(
        "CREATE TEMPORARY TABLE _skyclass_labels (object_id bigint, label text, "
        "label_index smallint, z_true double precision, fold smallint) ON COMMIT DROP"
    )
    with conn.cursor() as cur, cur.copy("COPY _skyclass_labels FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["bigint", "text", "smallint", "double precision", "smallint"])
        for row in zip(
            ids.tolist(),
            labels,
            label_index,
            [None if math.isnan(v) else v for v in z_true.tolist()],
            fold.tolist(),
            strict=True,
        ):
            copy.write_row(row)
    inserted = conn.execute(
        sql.SQL(
            "INSERT INTO {} SELECT l.object_id, l.label, l.label_index, l.z_true, l.fold, f.x "
            "FROM _skyclass_labels AS l JOIN {} AS f USING (object_id) ORDER BY l.object_id"
        ).format(target, info.table)
    ).rowcount
    if inserted != ids.size:
        raise TrainError(
            f"feature table {info.table_name} changed while the snapshot was built "
            f"({inserted} of {ids.size} rows found); try again"
        )
    conn.execute(sql.SQL("ANALYZE {}").format(target))
