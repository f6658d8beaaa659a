"""Honest evaluation of classifiers: estimators, cross-validation, metrics, calibration.

Most of this package is pure functions (or scikit-learn estimators) over numpy
arrays: ``estimators``, ``crossval``, ``metrics``, ``calibration``, ``photoz``,
``importance``, ``leakage``, ``augment``. Five modules use the database:
``snapshot`` (freezes a training set), ``pipeline`` (trains and stores a model
version with its metrics as rows), ``uncertainty`` (fits and stores the
corrections per OOD bin of a new version, in the pipeline's transaction),
``registry`` (lists and shows models; names are resolved by
:mod:`skyclass.registry.models`) and ``cli``.
"""
