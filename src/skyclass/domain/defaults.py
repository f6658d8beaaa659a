"""Default settings of the domain step (no heavy imports: the CLI reads them at start-up)."""

from __future__ import annotations

#: Seed of the catalog sample, the domain classifier's folds and the bootstrap.
SEED = 11
#: Folds of the domain classifier's cross-validation.
FOLDS = 5
#: Bootstrap resamples per expected metric.
BOOTSTRAP = 200
#: Clip bounds of the importance weights.
W_MIN = 0.01
W_MAX = 100.0
