"""Feature sets: declarative specs computed inside PostgreSQL into versioned feature tables.

A spec (TOML file or :class:`FeatureSpec`) lists features as expressions over
a catalog's columns; :func:`build_feature_set` computes them into
``features.<name>_<hash[:12]>`` and registers the version (the sha256 of the
canonical spec) in ``skyclass.feature_set``; :func:`load_feature_set` and
:func:`feature_matrix` read them back. The names are imported lazily so that
the command line starts without numpy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from skyclass.lazy import lazy_getattr

if TYPE_CHECKING:
    from skyclass.errors import FeatureSetNotFoundError as FeatureSetNotFoundError
    from skyclass.errors import FeatureSpecError as FeatureSpecError
    from skyclass.features.build import BuildInfo as BuildInfo
    from skyclass.features.build import FeatureSet as FeatureSet
    from skyclass.features.build import build_feature_set as build_feature_set
    from skyclass.features.build import feature_matrix as feature_matrix
    from skyclass.features.build import feature_sql as feature_sql
    from skyclass.features.build import list_feature_sets as list_feature_sets
    from skyclass.features.build import load_feature_set as load_feature_set
    from skyclass.features.spec import Feature as Feature
    from skyclass.features.spec import FeatureSpec as FeatureSpec
    from skyclass.features.spec import Nondetection as Nondetection
    from skyclass.features.spec import example_spec_path as example_spec_path
    from skyclass.features.spec import load_spec as load_spec
    from skyclass.features.spec import parse_spec as parse_spec

_EXPORTS = {
    "FeatureSetNotFoundError": "skyclass.errors",
    "FeatureSpecError": "skyclass.errors",
    "BuildInfo": "skyclass.features.build",
    "FeatureSet": "skyclass.features.build",
    "build_feature_set": "skyclass.features.build",
    "feature_matrix": "skyclass.features.build",
    "feature_sql": "skyclass.features.build",
    "list_feature_sets": "skyclass.features.build",
    "load_feature_set": "skyclass.features.build",
    "Feature": "skyclass.features.spec",
    "FeatureSpec": "skyclass.features.spec",
    "Nondetection": "skyclass.features.spec",
    "example_spec_path": "skyclass.features.spec",
    "load_spec": "skyclass.features.spec",
    "parse_spec": "skyclass.features.spec",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
