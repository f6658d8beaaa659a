-- skyclass head SQL: Uncertainty across the domain: photo-z intervals and class probabilities
-- conditioned on the object's OOD percentile (Mondrian by OOD bin).
--
-- The current text of every function of this area, as `skyclass db migrate` (upgrade head)
-- leaves it. Migrations are frozen deltas with their own copies of the text; a migration that
-- changes a function also changes it here, and tests/db/test_head_sql.py keeps the two equal.

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
