"""Honest evaluation of classifiers: estimators, cross-validation, metrics, calibration.

Everything in this package is a pure function (or a scikit-learn estimator) over
numpy arrays; nothing here touches the database. The later training layer stores
what these functions return (parameters, seeds, fold assignments, metrics,
calibration maps) as rows.
"""
