"""Covariate shift between a model version's training snapshot and a catalog it is applied to.

:mod:`.classifier` fits the domain classifier (training snapshot against a
sample of the catalog) and its cross-validated AUC; :mod:`.weights` turns its
propensities into clipped importance weights; :mod:`.expected` weighs the
version's out-of-fold predictions into expected metrics on the catalog;
:mod:`.source` holds the calls into the registry and training packages;
:mod:`.compiled` registers the classifier as a model version, compiles it and
scores the catalog in the database;
:mod:`.run` computes and stores one (version, catalog) pair; :mod:`.cli` is ``skyclass domain``;
:mod:`.defaults` the settings the CLI shows.
"""
