"""The client-side scorer: the scoring job for servers without the skyclass extension.

It runs the same job as ``skyclass.score_chunk`` in the database, through the
same runs, chunks and prediction tables, but computes on the client:

1. the chunk's features leave the server as one binary ``COPY`` and are
   decoded with numpy (every row of the feature-table contract has the same
   width: ``object_id bigint, x real[n]`` without NULL elements);
2. the model version's Treelite checkpoint (``skyclass.model_version``:
   plain data that Treelite parses, never a pickle) is predicted with
   Treelite's interpreter, GTIL (``float32`` features widened to ``float64``,
   NaN = missing, as in the extension). The client never loads the compiled
   library of ``skyclass.model_artifact``: loading a library runs its code
   as the invoking user, and bytes taken from the database must not get
   that (only its layout columns are read, and checked against the
   checkpoint's);
3. raw outputs become probabilities with the artifact's output transform,
   then :func:`skyclass.probability.calibration.apply_calibration` applies the
   version's calibration map (the reference the C scorer mirrors);
4. the top label is the first class of largest probability (as rounded to
   ``real``), photo-z versions get :func:`skyclass.probability.redshift.point_estimates`
   of the PDF (which ``skyclass.pdf_summary`` mirrors);
5. rows go back with binary ``COPY`` into a temporary table, from which the
   encoding of ``skyclass.prediction_codec`` (the in-database scorer's own)
   writes them into the chunk's table in object_id order, and
   ``skyclass.complete_scoring_chunk`` marks the chunk done in that same
   transaction.

Both scorers produce the same rows (probabilities within 1e-6, same top
label; a parity test runs both). GTIL is slower than the compiled library
(docs/benchmarks-scoring.md), which is the price of not running native code
from the database on the client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

from skyclass.features.build import decode_feature_copy
from skyclass.ingest.copy_binary import (
    BIGINT,
    COPY_SIGNATURE,
    COPY_TRAILER,
    REAL,
    Field,
    array_field,
    encode_rows,
    fixed_field,
)
from skyclass.probability.calibration import CalibrationParams, apply_calibration
from skyclass.probability.redshift import RedshiftGrid, point_estimates
from skyclass.score.errors import ScoringError
from skyclass.score.runs import RunPlan

Z_COLUMNS = ("z_mean", "z_median", "z_mode", "z_lo68", "z_hi68", "z_lo95", "z_hi95")
COPY_COLUMNS = ("object_id", "p", *Z_COLUMNS)
# The rows as the client computes them; skyclass.prediction_codec's encoding turns them into
# the run table's compact layout in the database (the same SQL as the in-database scorer).
STAGING_TABLE = (
    "CREATE TEMPORARY TABLE skyclass_chunk (object_id bigint NOT NULL, p real[] NOT NULL, "
    + ", ".join(f"{z} real" for z in Z_COLUMNS)
    + ") ON COMMIT DROP"
)


@dataclass(frozen=True)
class VersionModel:
    """What the client scorer needs to know about a model version (no library bytes)."""

    model_version_id: int
    task: str
    classes: tuple[str, ...]
    bin_edges: tuple[float, ...] | None
    n_features: int
    n_outputs: int
    output_transform: str
    sha256: bytes
    calibration: CalibrationParams

    @property
    def n_classes(self) -> int:
        """Number of classes (or PDF bins)."""
        return len(self.classes)


def calibration_from_columns(
    kind: str, params: list[float], offsets: list[int], eps: float, n_classes: int
) -> CalibrationParams:
    """The trainer's :class:`CalibrationParams` from the columns of ``skyclass.model_version``.

    The inverse of :func:`skyclass.compile.calibration_columns`: ``none`` is
    the ``identity`` map (clip to ``[eps, 1]`` and renormalise), ``temperature``
    holds ``{T}``, ``isotonic`` holds each class's x knots then its y values
    at the offsets given.
    """
    if kind == "none":
        return CalibrationParams("identity", n_classes, eps=eps)
    if kind == "temperature":
        if len(params) != 1:
            raise ScoringError(f"a temperature calibration has one parameter, not {len(params)}")
        return CalibrationParams("temperature", n_classes, eps=eps, temperature=float(params[0]))
    if kind == "isotonic":
        if len(offsets) != n_classes + 1 or offsets[-1] != len(params):
            raise ScoringError("isotonic calibration offsets do not match its parameters")
        xs: list[tuple[float, ...]] = []
        ys: list[tuple[float, ...]] = []
        for k in range(n_classes):
            block = params[offsets[k] : offsets[k + 1]]
            if len(block) % 2 or not block:
                raise ScoringError(f"isotonic calibration of class {k} has an odd block")
            half = len(block) // 2
            xs.append(tuple(float(v) for v in block[:half]))
            ys.append(tuple(float(v) for v in block[half:]))
        return CalibrationParams(
            "isotonic", n_classes, eps=eps, knots_x=tuple(xs), knots_y=tuple(ys)
        )
    raise ScoringError(f"unknown calibration kind {kind!r}")


def load_version_model(conn: psycopg.Connection[Any], model_version_id: int) -> VersionModel:
    """Read a model version and its artifact's layout (raises when it is not compiled)."""
    row = conn.execute(
        "SELECT v.task, v.classes, v.bin_edges, v.n_features, v.calibration_kind, "
        "v.calibration_params, v.calibration_offsets, v.calibration_eps, a.n_outputs, "
        "a.output_transform, a.sha256, a.n_features "
        "FROM skyclass.model_version AS v "
        "LEFT JOIN skyclass.model_artifact AS a USING (model_version_id) "
        "WHERE v.model_version_id = %s",
        (model_version_id,),
    ).fetchone()
    if row is None:
        raise ScoringError(f"model version {model_version_id} does not exist")
    if row[10] is None:
        raise ScoringError(
            f"model version {model_version_id} is not compiled: run `skyclass compile "
            f"{model_version_id}` first"
        )
    classes = tuple(str(c) for c in row[1])
    if int(row[11]) != int(row[3]):
        raise ScoringError(
            f"the artifact of model version {model_version_id} takes {row[11]} features, "
            f"the version {row[3]}"
        )
    return VersionModel(
        model_version_id=model_version_id,
        task=str(row[0]),
        classes=classes,
        bin_edges=None if row[2] is None else tuple(float(v) for v in row[2]),
        n_features=int(row[3]),
        n_outputs=int(row[8]),
        output_transform=str(row[9]),
        sha256=bytes(row[10]),
        calibration=calibration_from_columns(
            str(row[4]), list(row[5]), list(row[6]), float(row[7]), len(classes)
        ),
    )


class ClientScorer:
    """A model version's Treelite checkpoint, predicted with Treelite's GTIL on the client.

    Build one with :meth:`load`, call :meth:`probabilities` and :meth:`close`
    at the end. ``nthread`` is GTIL's own thread count. No native code from
    the database is loaded: the checkpoint is data that Treelite parses.
    """

    def __init__(
        self, version: VersionModel, model: Any, postprocessor: str, *, nthread: int = 1
    ) -> None:
        self.version = version
        self.model = model
        self.postprocessor = postprocessor
        self.nthread = nthread

    @classmethod
    def load(
        cls, conn: psycopg.Connection[Any], model_version_id: int, *, nthread: int = 1
    ) -> ClientScorer:
        """Read and parse the checkpoint of ``model_version_id`` and check it against its artifact.

        The checkpoint must declare the features, raw outputs and output
        transform that the version's artifact row declares (what the
        in-database scorer uses), so both scorers compute the same thing.
        """
        from skyclass.compile.checkpoint import load_checkpoint, model_layout
        from skyclass.errors import CompileError

        version = load_version_model(conn, model_version_id)
        row = conn.execute(
            "SELECT checkpoint FROM skyclass.model_version WHERE model_version_id = %s",
            (model_version_id,),
        ).fetchone()
        if row is None:
            raise ScoringError(f"model version {model_version_id} does not exist")
        try:
            model = load_checkpoint(bytes(row[0]))
            layout = model_layout(model)
        except CompileError as exc:
            raise ScoringError(
                f"the Treelite checkpoint of model version {model_version_id} is unusable: {exc}"
            ) from None
        found = (layout.n_features, layout.n_outputs, layout.output_transform)
        expected = (version.n_features, version.n_outputs, version.output_transform)
        if found != expected:
            raise ScoringError(
                f"the checkpoint of model version {model_version_id} declares (features, "
                f"outputs, transform) {found}, its artifact {expected}"
            )
        return cls(version, model, layout.postprocessor, nthread=nthread)

    def probabilities(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """Calibrated probabilities (n x classes) of float32 features (NaN = missing)."""
        import treelite.gtil

        n = x.shape[0]
        k = self.version.n_classes
        if n == 0:
            return np.zeros((0, k))
        if x.ndim != 2 or x.shape[1] != self.version.n_features:
            raise ScoringError(f"expected {self.version.n_features} features, not {x.shape[1:]}")
        # float32 widened to float64 exactly, like the extension's input; GTIL takes NaN as
        # missing, as the compiled library does.
        data = np.ascontiguousarray(x, dtype=np.float64)
        margin = self.postprocessor == "softmax"
        raw = np.asarray(
            treelite.gtil.predict(self.model, data, nthread=self.nthread, pred_margin=margin),
            dtype=np.float64,
        ).reshape(n, -1)
        if margin:
            raw = softmax(raw)
        if raw.shape[1] != self.version.n_outputs:
            raise ScoringError(
                f"the model returned {raw.shape[1]} outputs, expected {self.version.n_outputs}"
            )
        if self.version.output_transform == "binary_expand":
            raw = np.column_stack([1.0 - raw[:, 0], raw[:, 0]])
        elif self.version.output_transform != "identity":
            raise ScoringError(f"unknown output transform {self.version.output_transform!r}")
        return apply_calibration(self.version.calibration, raw)

    def close(self) -> None:
        """Drop the parsed model."""
        self.model = None


def softmax(margin: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Softmax of each row as TL2cgen's generated code computes it, in float64.

    GTIL's own softmax differs from it by up to 1e-7, which isotonic
    calibration can stretch past the scorers' 1e-6 parity; the margins
    themselves are identical. Sums run class by class, in the C loop's order.
    """
    e = np.exp(margin - margin.max(axis=1, keepdims=True))
    norm = e[:, 0].copy()
    for k in range(1, e.shape[1]):
        norm += e[:, k]
    result: npt.NDArray[np.float64] = e / norm[:, None]
    return result


def read_chunk_features(
    conn: psycopg.Connection[Any],
    plan: RunPlan,
    first: int,
    last: int,
    n_features: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """The features of the chunk's objects (only those without a prediction for insert runs)."""
    anti: sql.Composable = sql.SQL("")
    if plan.write_kind == "insert":
        anti = sql.SQL(
            " AND NOT EXISTS (SELECT 1 FROM skyclass.prediction AS q"
            " WHERE q.object_id = f.object_id AND q.model_version_id = {} AND q.catalog_id = {})"
        ).format(sql.Literal(plan.model_version_id), sql.Literal(plan.catalog_id))
    query = sql.SQL(
        "COPY (SELECT f.object_id, f.x FROM {} AS f WHERE f.object_id BETWEEN {} AND {}{}) "
        "TO STDOUT (FORMAT BINARY)"
    ).format(plan.feature_table, sql.Literal(first), sql.Literal(last), anti)
    # A bitmap scan reads each page of the range once (as skyclass.score_chunk does).
    conn.execute("SET LOCAL enable_indexscan = off")
    buffer = bytearray()
    with conn.cursor().copy(query) as copy:
        for block in copy:
            buffer += block
    return decode_feature_copy(
        buffer, n_features, f"features of run {plan.run_id}", error=ScoringError
    )


# -- binary COPY in: prediction rows ----------------------------------------------------------
def encode_predictions(
    plan: RunPlan,
    version: VersionModel,
    object_ids: npt.NDArray[np.int64],
    proba: npt.NDArray[np.float64],
) -> bytes:
    """A complete binary COPY stream of the prediction rows (columns :data:`COPY_COLUMNS`)."""
    n = len(object_ids)
    p32 = np.ascontiguousarray(proba, dtype=np.float32)
    if version.task == "photoz":
        if version.bin_edges is None:
            raise ScoringError(f"photo-z model version {version.model_version_id} has no bin edges")
        est = point_estimates(p32.astype(np.float64), RedshiftGrid(version.bin_edges))
        z_values = [
            est.mean,
            est.median,
            est.mode,
            est.intervals[0.68][0],
            est.intervals[0.68][1],
            est.intervals[0.95][0],
            est.intervals[0.95][1],
        ]
        z_fields = [fixed_field(np.asarray(z, dtype=np.float32), REAL) for z in z_values]
    else:
        null = np.ones(n, dtype=bool)
        z_fields = [fixed_field(np.zeros(n, dtype=np.float32), REAL, null) for _ in Z_COLUMNS]
    fields: list[Field] = [
        fixed_field(object_ids, BIGINT),
        array_field(p32, REAL, None),
        *z_fields,
    ]
    return COPY_SIGNATURE + encode_rows(fields, n).tobytes() + COPY_TRAILER


def _copy_in(conn: psycopg.Connection[Any], table: sql.Composable, data: bytes) -> None:
    query = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        table, sql.SQL(", ").join(sql.Identifier(c) for c in COPY_COLUMNS)
    )
    with conn.cursor().copy(query) as copy:
        copy.write(data)


def score_chunk_client(
    conn: psycopg.Connection[Any],
    plan: RunPlan,
    scorer: ClientScorer,
    chunk_no: int,
    first: int,
    last: int,
) -> int:
    """Score one claimed chunk on the client and complete it; returns the rows written.

    Runs inside the caller's transaction, which holds the chunk's row lock
    (``skyclass.claim_scoring_chunk``): the predictions and the completion
    mark commit together or not at all.
    """
    ids, x = read_chunk_features(conn, plan, first, last, scorer.version.n_features)
    proba = scorer.probabilities(x)
    data = encode_predictions(plan, scorer.version, ids, proba)
    table = plan.chunk_table(chunk_no)
    # The database creates the table with its constraints (the same as the in-database
    # scorer's), so attaching it later needs no scan.
    created = conn.execute(
        "SELECT skyclass.create_chunk_table(%s, %s)", (plan.run_id, chunk_no)
    ).fetchone()
    expected = f"{plan.target_schema}.{plan.target_name}_{chunk_no}"
    if created is None or created[0] != expected:
        raise ScoringError(f"chunk table {created} is not the expected {expected}")
    conn.execute(STAGING_TABLE)
    _copy_in(conn, sql.Identifier("skyclass_chunk"), data)
    encode = conn.execute(
        "SELECT encode FROM skyclass.prediction_codec(%s)", (plan.model_version_id,)
    ).fetchone()
    if encode is None:
        raise ScoringError(f"model version {plan.model_version_id} has no prediction codec")
    cursor = conn.execute(
        sql.SQL(
            "INSERT INTO {} SELECT {} FROM (SELECT * FROM skyclass_chunk ORDER BY object_id) AS s"
        ).format(table, sql.SQL(encode[0]))
    )
    written = cursor.rowcount
    conn.execute(
        "SELECT skyclass.complete_scoring_chunk(%s, %s, %s)", (plan.run_id, chunk_no, written)
    )
    return written
