"""Uncertainty across the domain: per model version, conformal photo-z interval quantiles
and class-probability temperatures per OOD-percentile bin, and the SQL functions applying them.

- ``skyclass.interval_calibration``: per photo-z version, OOD bin ``[ood_lo, ood_hi)``
  and nominal level (0.68, 0.95), the Mondrian conformal quantile of the calibration
  split's scores in that bin (NULL: too few calibration objects) and their count.
- ``skyclass.probability_recalibration``: per classification version and OOD bin, the
  temperature fitted on the calibration split's rows in that bin (NULL: too few).
- ``skyclass.photoz_intervals(version, pdf, ood_percentile, out_of_range)``: the 68% and
  95% intervals and a flag (NULL intervals beyond the training support).
- ``skyclass.recalibrated_probabilities(version, probabilities, ood_percentile,
  out_of_range)``: probabilities recalibrated for the bin, NULL beyond the support.

Readers and model admins may read both tables; only the training role (the owner) writes.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

TABLES = r"""
CREATE TABLE skyclass.interval_calibration (
    model_version_id   bigint NOT NULL REFERENCES skyclass.model_version ON DELETE CASCADE,
    level              float8 NOT NULL CHECK (level > 0 AND level < 1),
    bin                integer NOT NULL CHECK (bin >= 0),
    ood_lo             float8 NOT NULL CHECK (ood_lo >= 0),
    ood_hi             float8 NOT NULL CHECK (ood_hi <= 100),
    conformal_quantile float8 CHECK (conformal_quantile > -1 AND conformal_quantile < 'Infinity'),
    n                  integer NOT NULL CHECK (n >= 0),
    PRIMARY KEY (model_version_id, level, bin),
    CHECK (ood_lo < ood_hi)
);
COMMENT ON TABLE skyclass.interval_calibration IS
    'Mondrian conformal quantile per photo-z model version, OOD-percentile bin [ood_lo, ood_hi) '
    'and nominal level, from the calibration split (NULL: too few objects in the bin).';

CREATE TABLE skyclass.probability_recalibration (
    model_version_id bigint NOT NULL REFERENCES skyclass.model_version ON DELETE CASCADE,
    bin              integer NOT NULL CHECK (bin >= 0),
    ood_lo           float8 NOT NULL CHECK (ood_lo >= 0),
    ood_hi           float8 NOT NULL CHECK (ood_hi <= 100),
    temperature      float8 CHECK (temperature > 0 AND temperature < 'Infinity'),
    n                integer NOT NULL CHECK (n >= 0),
    PRIMARY KEY (model_version_id, bin),
    CHECK (ood_lo < ood_hi)
);
COMMENT ON TABLE skyclass.probability_recalibration IS
    'Temperature per classification model version and OOD-percentile bin [ood_lo, ood_hi), '
    'fitted on the calibration split (NULL: too few objects in the bin).';

CREATE TRIGGER interval_calibration_immutable BEFORE UPDATE ON skyclass.interval_calibration
    FOR EACH ROW EXECUTE FUNCTION skyclass.refuse_update();
CREATE TRIGGER probability_recalibration_immutable
    BEFORE UPDATE ON skyclass.probability_recalibration
    FOR EACH ROW EXECUTE FUNCTION skyclass.refuse_update();

GRANT SELECT ON skyclass.interval_calibration, skyclass.probability_recalibration
    TO skyclass_reader, skyclass_model_admin;
"""

FUNCTIONS = r"""
CREATE OR REPLACE FUNCTION skyclass.photoz_intervals(model_version_id bigint, pdf real[], ood_percentile double precision, out_of_range boolean DEFAULT false, OUT z_lo68 real, OUT z_hi68 real, OUT z_lo95 real, OUT z_hi95 real, OUT interval_flag text)
 RETURNS record
 LANGUAGE plpgsql
 STABLE PARALLEL SAFE
AS $function$
DECLARE
    -- Keep in step with skyclass.probability.conformal.WIDTH_FLOOR.
    d        constant double precision := 0.001;
    v_task   text;
    v_edges  double precision[];
    s        record;
    q68      double precision;
    q95      double precision;
    n_rows   bigint;
    top      double precision;
    e0       double precision;
    e1       double precision;
BEGIN
    IF photoz_intervals.model_version_id IS NULL OR pdf IS NULL THEN
        RETURN;
    END IF;
    SELECT mv.task, mv.bin_edges INTO v_task, v_edges
      FROM skyclass.model_version AS mv
     WHERE mv.model_version_id = photoz_intervals.model_version_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'model version % does not exist', photoz_intervals.model_version_id
            USING ERRCODE = 'undefined_object';
    END IF;
    IF v_task <> 'photoz' THEN
        RAISE EXCEPTION 'model version % is a % model; photo-z intervals need a photoz model',
            photoz_intervals.model_version_id, v_task
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF ood_percentile IS NOT NULL AND NOT (ood_percentile >= 0 AND ood_percentile <= 100) THEN
        RAISE EXCEPTION 'ood_percentile must be in [0, 100], not %', ood_percentile
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Validates the PDF against the version's bin edges (SQLSTATE 22023).
    s := skyclass.pdf_summary(pdf, v_edges);
    SELECT count(*), max(ic.ood_hi) INTO n_rows, top
      FROM skyclass.interval_calibration AS ic
     WHERE ic.model_version_id = photoz_intervals.model_version_id;
    IF n_rows = 0 THEN
        RAISE EXCEPTION 'model version % has no interval calibration',
            photoz_intervals.model_version_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'versions trained before skyclass 0014 have none: train a new version';
    END IF;
    IF ood_percentile IS NULL THEN
        interval_flag := 'no_ood_score';
        RETURN;
    END IF;
    IF coalesce(out_of_range, false) OR ood_percentile >= top THEN
        interval_flag := 'out_of_domain';
        RETURN;
    END IF;
    SELECT max(ic.conformal_quantile) FILTER (WHERE ic.level = 0.68::float8),
           max(ic.conformal_quantile) FILTER (WHERE ic.level = 0.95::float8)
      INTO q68, q95
      FROM skyclass.interval_calibration AS ic
     WHERE ic.model_version_id = photoz_intervals.model_version_id
       AND ood_percentile >= ic.ood_lo AND ood_percentile < ic.ood_hi;
    IF q68 IS NULL OR q95 IS NULL THEN
        interval_flag := 'too_few_calibration';
        RETURN;
    END IF;
    e0 := v_edges[array_lower(v_edges, 1)];
    e1 := v_edges[array_upper(v_edges, 1)];
    z_lo68 := least(greatest(least(s.z_lo68 - q68 * (s.z_median - s.z_lo68 + d), s.z_median), e0), e1);
    z_hi68 := least(greatest(greatest(s.z_hi68 + q68 * (s.z_hi68 - s.z_median + d), s.z_median), e0), e1);
    z_lo95 := least(greatest(least(s.z_lo95 - q95 * (s.z_median - s.z_lo95 + d), s.z_median), e0), e1);
    z_hi95 := least(greatest(greatest(s.z_hi95 + q95 * (s.z_hi95 - s.z_median + d), s.z_median), e0), e1);
    -- Each level is calibrated on its own: the 95% interval is held to contain the 68% one.
    z_lo95 := least(z_lo95, z_lo68);
    z_hi95 := greatest(z_hi95, z_hi68);
    interval_flag := 'ok';
END
$function$;
COMMENT ON FUNCTION skyclass.photoz_intervals(bigint,real[],double precision,boolean) IS
'68% and 95% photo-z intervals of a PDF (bin masses on the version''s bin edges) that hold in '
'every OOD bin: the PDF''s central interval [L, U] widened or narrowed around its median M by '
'the conformal quantile q of the object''s OOD-percentile bin (skyclass.interval_calibration): '
'[L - q (M - L + 0.001), U + q (U - M + 0.001)], containing M (the 95% interval containing the'
' 68% one), clipped to the grid. '
'interval_flag: ok; out_of_domain (percentile at or above the top bin edge, or out_of_range) '
'or too_few_calibration or no_ood_score (NULL percentile) with NULL intervals, never invented '
'ones. Unknown version 42704; not photoz, percentile outside [0, 100] or a PDF that '
'skyclass.pdf_summary refuses 22023; no calibration rows 55000. NULL version or PDF: NULL.';

CREATE OR REPLACE FUNCTION skyclass.recalibrated_probabilities(model_version_id bigint, probabilities real[], ood_percentile double precision, out_of_range boolean DEFAULT false)
 RETURNS real[]
 LANGUAGE plpgsql
 STABLE PARALLEL SAFE
AS $function$
DECLARE
    -- Keep in step with skyclass.probability.calibration.CALIBRATION_EPS.
    eps      constant double precision := 1e-12;
    v_n      integer;
    n        integer := cardinality(probabilities);
    lo       integer := array_lower(probabilities, 1) - 1;
    n_rows   bigint;
    top      double precision;
    t        double precision;
    sc       double precision[];
    m        double precision := '-Infinity';
    total    double precision := 0;
    out      real[];
BEGIN
    IF recalibrated_probabilities.model_version_id IS NULL OR probabilities IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT cardinality(mv.classes) INTO v_n
      FROM skyclass.model_version AS mv
     WHERE mv.model_version_id = recalibrated_probabilities.model_version_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'model version % does not exist', recalibrated_probabilities.model_version_id
            USING ERRCODE = 'undefined_object';
    END IF;
    IF array_ndims(probabilities) > 1 OR n <> v_n THEN
        RAISE EXCEPTION 'model version % has % classes: expected a one-dimensional array of % probabilities, not %',
            recalibrated_probabilities.model_version_id, v_n, v_n,
            coalesce(array_ndims(probabilities), 1) || '-dimensional of ' || n
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR k IN 1..n LOOP
        IF probabilities[lo + k] IS NULL
           OR NOT (probabilities[lo + k] >= 0 AND probabilities[lo + k] <= 1) THEN
            RAISE EXCEPTION 'probabilities must be in [0, 1], not % (class %)',
                coalesce(probabilities[lo + k]::text, 'NULL'), k
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    IF ood_percentile IS NOT NULL AND NOT (ood_percentile >= 0 AND ood_percentile <= 100) THEN
        RAISE EXCEPTION 'ood_percentile must be in [0, 100], not %', ood_percentile
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT count(*), max(r.ood_hi) INTO n_rows, top
      FROM skyclass.probability_recalibration AS r
     WHERE r.model_version_id = recalibrated_probabilities.model_version_id;
    IF n_rows = 0 THEN
        RAISE EXCEPTION 'model version % has no probability recalibration',
            recalibrated_probabilities.model_version_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'versions trained before skyclass 0014 have none: train a new version';
    END IF;
    IF ood_percentile IS NULL OR coalesce(out_of_range, false) OR ood_percentile >= top THEN
        RETURN NULL;
    END IF;
    SELECT r.temperature INTO t
      FROM skyclass.probability_recalibration AS r
     WHERE r.model_version_id = recalibrated_probabilities.model_version_id
       AND ood_percentile >= r.ood_lo AND ood_percentile < r.ood_hi;
    IF t IS NULL THEN
        RETURN NULL;
    END IF;
    sc := array_fill(0::double precision, ARRAY[n]);
    FOR k IN 1..n LOOP
        sc[k] := ln(least(greatest(probabilities[lo + k]::double precision, eps), 1.0)) / t;
        m := greatest(m, sc[k]);
    END LOOP;
    FOR k IN 1..n LOOP
        sc[k] := exp(sc[k] - m);
        total := total + sc[k];
    END LOOP;
    out := array_fill(0::real, ARRAY[n]);
    FOR k IN 1..n LOOP
        out[k] := (sc[k] / total)::real;
    END LOOP;
    RETURN out;
END
$function$;
COMMENT ON FUNCTION skyclass.recalibrated_probabilities(bigint,real[],double precision,boolean) IS
'Class probabilities recalibrated for the object''s OOD bin: softmax(ln(max(p, 1e-12)) / T) with '
'the bin''s temperature T (skyclass.probability_recalibration). NULL when the percentile is NULL,'
' at or above the top bin edge, out_of_range is true, or the bin has too few calibration rows: '
'never invented probabilities. Unknown version 42704; an array not of the version''s class '
'count, values outside [0, 1] or a percentile outside [0, 100] 22023; no recalibration rows '
'55000. NULL version or probabilities: NULL.';
"""

DOWNGRADE = r"""
DROP FUNCTION skyclass.recalibrated_probabilities(bigint, real[], double precision, boolean);
DROP FUNCTION skyclass.photoz_intervals(bigint, real[], double precision, boolean);
DROP TABLE skyclass.probability_recalibration;
DROP TABLE skyclass.interval_calibration;
"""


def upgrade() -> None:
    op.execute(TABLES)
    op.execute(FUNCTIONS)


def downgrade() -> None:
    op.execute(DOWNGRADE)
