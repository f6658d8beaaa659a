"""Compile fitted tree ensembles to native libraries and register them for in-database scoring.

``compile_estimator`` turns a fitted scikit-learn HistGradientBoosting,
RandomForest or ExtraTrees classifier into a :class:`CompiledArtifact`
(library bytes, sha256, output layout, Treelite checkpoint, provenance);
``compile_checkpoint`` rebuilds one from its checkpoint;
``compile_model_version`` compiles a registered model version from the
checkpoint stored in ``skyclass.model_version`` and registers the library
in ``skyclass.model_artifact``, where ``skyclass.predict`` finds it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from skyclass.lazy import lazy_getattr

if TYPE_CHECKING:
    from skyclass.compile.artifact import (
        OUTPUT_TRANSFORMS,
        CompiledArtifact,
    )
    from skyclass.compile.build import (
        compile_checkpoint,
        compile_estimator,
        compiler_flags,
        compiler_version,
    )
    from skyclass.compile.checkpoint import (
        SUPPORTED_ESTIMATORS,
        ModelLayout,
        load_checkpoint,
        model_layout,
        treelite_checkpoint,
    )
    from skyclass.compile.store import (
        ADMIN_ROLE,
        ArtifactInfo,
        CalibrationColumns,
        VersionRef,
        artifact_of,
        calibration_columns,
        check_can_register,
        compile_model_version,
        list_artifacts,
        parse_model_ref,
        resolve_model_version,
        store_artifact,
        uncompiled_versions,
    )
    from skyclass.errors import (
        CompileError,
    )

# Imported on first use (PEP 562): numpy and psycopg would otherwise slow down every
# `skyclass` command, since the CLI imports skyclass.compile.cli at start-up.
_EXPORTS = {
    "OUTPUT_TRANSFORMS": "skyclass.compile.artifact",
    "CompiledArtifact": "skyclass.compile.artifact",
    "compile_checkpoint": "skyclass.compile.build",
    "compile_estimator": "skyclass.compile.build",
    "compiler_flags": "skyclass.compile.build",
    "compiler_version": "skyclass.compile.build",
    "SUPPORTED_ESTIMATORS": "skyclass.compile.checkpoint",
    "ModelLayout": "skyclass.compile.checkpoint",
    "load_checkpoint": "skyclass.compile.checkpoint",
    "model_layout": "skyclass.compile.checkpoint",
    "treelite_checkpoint": "skyclass.compile.checkpoint",
    "ADMIN_ROLE": "skyclass.compile.store",
    "ArtifactInfo": "skyclass.compile.store",
    "CalibrationColumns": "skyclass.compile.store",
    "VersionRef": "skyclass.compile.store",
    "artifact_of": "skyclass.compile.store",
    "calibration_columns": "skyclass.compile.store",
    "check_can_register": "skyclass.compile.store",
    "compile_model_version": "skyclass.compile.store",
    "list_artifacts": "skyclass.compile.store",
    "parse_model_ref": "skyclass.compile.store",
    "resolve_model_version": "skyclass.compile.store",
    "store_artifact": "skyclass.compile.store",
    "uncompiled_versions": "skyclass.compile.store",
    "CompileError": "skyclass.errors",
}

__all__ = [
    "ADMIN_ROLE",
    "OUTPUT_TRANSFORMS",
    "SUPPORTED_ESTIMATORS",
    "ArtifactInfo",
    "CalibrationColumns",
    "CompileError",
    "CompiledArtifact",
    "ModelLayout",
    "VersionRef",
    "artifact_of",
    "calibration_columns",
    "check_can_register",
    "compile_checkpoint",
    "compile_estimator",
    "compile_model_version",
    "compiler_flags",
    "compiler_version",
    "list_artifacts",
    "load_checkpoint",
    "model_layout",
    "parse_model_ref",
    "resolve_model_version",
    "store_artifact",
    "treelite_checkpoint",
    "uncompiled_versions",
]


__getattr__ = lazy_getattr(__name__, _EXPORTS)
