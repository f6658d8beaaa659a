"""Explaining and interrogating models: why an object got its class, what-if curves.

:mod:`.treeshap` computes exact TreeSHAP contributions from a version's
Treelite checkpoint; :mod:`.run` selects catalog objects and stores the
explanations (``skyclass.explanation``); :mod:`.cli` is ``skyclass explain``.
Partial dependence and ICE curves are computed in the database by
``skyclass.partial_dependence`` with the compiled model.
"""
