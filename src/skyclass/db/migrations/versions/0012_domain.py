"""Domain shift: the domain classifier of a model version against a catalog, per-object weights,
expected metrics on the catalog.

- ``skyclass.domain_shift``: one row per fit of (model version, catalog): the
  cross-validated AUC of the classifier telling the version's training
  snapshot from an equal-size sample of the catalog (mean, K-fold std, fold
  values), the sizes, the weight clip bounds and fractions clipped, the
  fraction of the catalog the training data does not cover, the effective
  sample size and whether the expected metrics are reliable (with reasons).
- ``skyclass.domain_object``: per catalog object, its propensity
  ``p(application | x)``, importance weight and whether the weight was
  clipped; later OOD scores can join on ``(domain_shift_id, object_id)``.
- ``skyclass.domain_metric``: importance-weighted expected metrics on the
  catalog with a bootstrap std, the unweighted value from the same
  out-of-fold predictions and the Kish effective sample size. A table of its
  own rather than ``skyclass.metric`` rows: those are per-fold CV rows keyed by
  an evaluation (``fold_values`` NOT NULL, immutable), while these belong to a
  (version, catalog) pair and carry an n_eff and a bootstrap error.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE TABLE skyclass.domain_shift (
    domain_shift_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_version_id    bigint NOT NULL REFERENCES skyclass.model_version,
    catalog_id          integer REFERENCES skyclass.catalog ON DELETE CASCADE,
    catalog_name        text NOT NULL,
    feature_set_id      integer NOT NULL REFERENCES skyclass.feature_set ON DELETE CASCADE,
    n_train             bigint NOT NULL CHECK (n_train > 0),
    n_sample            bigint NOT NULL CHECK (n_sample > 0),
    n_catalog           bigint NOT NULL CHECK (n_catalog >= n_sample),
    seed                bigint NOT NULL,
    classifier          jsonb NOT NULL,
    auc                 float8 NOT NULL CHECK (auc BETWEEN 0 AND 1),
    auc_std             float8 NOT NULL CHECK (auc_std >= 0),
    fold_auc            float8[] NOT NULL CHECK (cardinality(fold_auc) >= 2),
    w_min               float8 NOT NULL CHECK (w_min > 0),
    w_max               float8 NOT NULL CHECK (w_max > w_min),
    train_clipped       float8 NOT NULL CHECK (train_clipped BETWEEN 0 AND 1),
    catalog_clipped     float8 NOT NULL CHECK (catalog_clipped BETWEEN 0 AND 1),
    uncovered_threshold float8 NOT NULL CHECK (uncovered_threshold > 0 AND uncovered_threshold < 1),
    uncovered_fraction  float8 NOT NULL CHECK (uncovered_fraction BETWEEN 0 AND 1),
    n_effective         float8 NOT NULL CHECK (n_effective >= 0),
    reliable            boolean NOT NULL,
    problems            text[] NOT NULL DEFAULT '{}',
    created_at          timestamptz NOT NULL DEFAULT now(),
    created_by          text NOT NULL DEFAULT current_user,
    CHECK (reliable = (cardinality(problems) = 0))
);
CREATE INDEX ix_domain_shift_pair ON skyclass.domain_shift (model_version_id, catalog_id);
COMMENT ON TABLE skyclass.domain_shift IS
    'Domain classifier of a model version''s training snapshot against a catalog sample: '
    'CV AUC (0.5 = no detectable shift), weight clipping, uncovered fraction, reliability.';

CREATE TABLE skyclass.domain_object (
    domain_shift_id bigint NOT NULL REFERENCES skyclass.domain_shift ON DELETE CASCADE,
    object_id       bigint NOT NULL,
    propensity      real NOT NULL CHECK (propensity BETWEEN 0 AND 1),
    weight          real NOT NULL CHECK (weight > 0),
    clipped         boolean NOT NULL,
    PRIMARY KEY (domain_shift_id, object_id)
);
COMMENT ON TABLE skyclass.domain_object IS
    'Per catalog object: propensity p(application | x) and clipped importance weight.';

CREATE TABLE skyclass.domain_metric (
    domain_shift_id bigint NOT NULL REFERENCES skyclass.domain_shift ON DELETE CASCADE,
    name            text NOT NULL,
    class_name      text NOT NULL DEFAULT '',
    value           float8,
    std             float8,
    unweighted      float8,
    n_effective     float8 NOT NULL CHECK (n_effective >= 0),
    PRIMARY KEY (domain_shift_id, name, class_name)
);
COMMENT ON TABLE skyclass.domain_metric IS
    'Importance-weighted expected metric on the catalog (bootstrap std, Kish n_eff) beside '
    'the unweighted value from the same out-of-fold predictions; NULL = undefined.';

CREATE TRIGGER domain_shift_immutable BEFORE UPDATE ON skyclass.domain_shift
    FOR EACH ROW EXECUTE FUNCTION skyclass.refuse_update();
CREATE TRIGGER domain_metric_immutable BEFORE UPDATE ON skyclass.domain_metric
    FOR EACH ROW EXECUTE FUNCTION skyclass.refuse_update();

GRANT SELECT ON skyclass.domain_shift, skyclass.domain_object, skyclass.domain_metric
    TO skyclass_reader;
"""

DOWNGRADE = r"""
DROP TABLE skyclass.domain_metric;
DROP TABLE skyclass.domain_object;
DROP TABLE skyclass.domain_shift;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
