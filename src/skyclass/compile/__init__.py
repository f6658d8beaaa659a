"""Compile fitted tree ensembles to native libraries and register them for in-database scoring.

``compile_estimator`` turns a fitted scikit-learn HistGradientBoosting,
RandomForest or ExtraTrees classifier into a :class:`CompiledArtifact`
(library bytes, sha256, output layout, Treelite checkpoint, provenance);
``compile_checkpoint`` rebuilds one from its checkpoint; ``store_artifact``
and ``store_model_version`` put them where ``skyclass.predict`` finds them.
"""

from __future__ import annotations

from skyclass.compile.artifact import OUTPUT_TRANSFORMS, CompiledArtifact
from skyclass.compile.build import compile_checkpoint, compile_estimator, compiler_version
from skyclass.compile.checkpoint import (
    SUPPORTED_ESTIMATORS,
    ModelLayout,
    load_checkpoint,
    model_layout,
    treelite_checkpoint,
)
from skyclass.compile.errors import CompileError
from skyclass.compile.store import (
    CalibrationColumns,
    calibration_columns,
    store_artifact,
    store_model_version,
)

__all__ = [
    "OUTPUT_TRANSFORMS",
    "SUPPORTED_ESTIMATORS",
    "CalibrationColumns",
    "CompileError",
    "CompiledArtifact",
    "ModelLayout",
    "calibration_columns",
    "compile_checkpoint",
    "compile_estimator",
    "compiler_version",
    "load_checkpoint",
    "model_layout",
    "store_artifact",
    "store_model_version",
    "treelite_checkpoint",
]
