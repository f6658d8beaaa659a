-- skyclass head SQL: Photo-z PDFs: point estimates of a probability density.
--
-- The current text of every function of this area, as `skyclass db migrate` (upgrade head)
-- leaves it. Migrations are frozen deltas with their own copies of the text; a migration that
-- changes a function also changes it here, and tests/db/test_head_sql.py keeps the two equal.

CREATE OR REPLACE FUNCTION skyclass.pdf_summary(pdf real[], edges double precision[], OUT z_mean real, OUT z_median real, OUT z_mode real, OUT z_lo68 real, OUT z_hi68 real, OUT z_lo95 real, OUT z_hi95 real)
 RETURNS record
 LANGUAGE plpgsql
 IMMUTABLE PARALLEL SAFE STRICT
AS $function$
DECLARE
    n      integer := cardinality(pdf);
    lo     integer := array_lower(pdf, 1) - 1;
    elo    integer := array_lower(edges, 1) - 1;
    e      double precision[];
    total  double precision := 0;
    p      double precision[];
    cum    double precision[];
    acc    double precision := 0;
    mean   double precision := 0;
    best   double precision := -1;
    dens   double precision;
    imode  integer := 1;
    q      double precision[];
    z      double precision[];
    j      integer;
    mass   double precision;
    frac   double precision;
BEGIN
    IF array_ndims(pdf) > 1 OR array_ndims(edges) > 1 THEN
        RAISE EXCEPTION 'pdf and edges must be one-dimensional arrays, not %-dimensional',
            greatest(array_ndims(pdf), array_ndims(edges))
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF n < 2 OR cardinality(edges) <> n + 1 THEN
        RAISE EXCEPTION 'a PDF of % bins needs % edges, not %', n, n + 1, cardinality(edges)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'a PDF has at least 2 bins';
    END IF;
    -- Edges: finite, representable as real (the results are real) and strictly increasing.
    e := array_fill(0::double precision, ARRAY[n + 1]);
    FOR k IN 1..n + 1 LOOP
        e[k] := edges[elo + k];
        IF e[k] IS NULL OR NOT (abs(e[k]) <= 3.4028234663852886e38) THEN
            RAISE EXCEPTION 'PDF bin edges must be finite real numbers, not % (edge %)',
                coalesce(e[k]::text, 'NULL'), k
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF k > 1 AND e[k] <= e[k - 1] THEN
            RAISE EXCEPTION 'PDF bin edges must be strictly increasing, not % after %', e[k], e[k - 1]
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    FOR k IN 1..n LOOP
        IF pdf[lo + k] IS NULL OR NOT (pdf[lo + k] >= 0 AND pdf[lo + k] < 'Infinity'::real) THEN
            RAISE EXCEPTION 'PDF masses must be finite and non-negative, not % (bin %)',
                coalesce(pdf[lo + k]::text, 'NULL'), k
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        total := total + pdf[lo + k];
    END LOOP;
    IF NOT (abs(total - 1) <= 1e-3) THEN
        RAISE EXCEPTION 'PDF masses must sum to 1 (within 0.001), not %', total
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    p := array_fill(0::double precision, ARRAY[n]);
    cum := p;
    FOR k IN 1..n LOOP
        p[k] := pdf[lo + k]::double precision / total;
        acc := acc + p[k];
        cum[k] := acc;
        mean := mean + p[k] * (0.5 * (e[k] + e[k + 1]));
        dens := p[k] / (e[k + 1] - e[k]);
        IF dens > best THEN
            best := dens;
            imode := k;
        END IF;
    END LOOP;
    q := ARRAY[0.5, (1.0::double precision - 0.68) / 2.0, (1.0::double precision + 0.68) / 2.0,
               (1.0::double precision - 0.95) / 2.0, (1.0::double precision + 0.95) / 2.0];
    z := q;
    FOR t IN 1..5 LOOP
        j := 1;
        WHILE j < n AND cum[j] < q[t] LOOP
            j := j + 1;
        END LOOP;
        mass := p[j];
        frac := (q[t] - (cum[j] - mass)) / CASE WHEN mass > 0 THEN mass ELSE 1.0 END;
        frac := least(greatest(frac, 0.0), 1.0);
        z[t] := e[j] + frac * (e[j + 1] - e[j]);
    END LOOP;
    -- Rounding can put the mean a hair outside the edges; keep it inside.
    z_mean := least(greatest(mean, e[1]), e[n + 1]);
    z_mode := 0.5 * (e[imode] + e[imode + 1]);
    z_median := z[1];
    z_lo68 := z[2];
    z_hi68 := z[3];
    z_lo95 := z[4];
    z_hi95 := z[5];
END
$function$;
COMMENT ON FUNCTION skyclass.pdf_summary(real[],double precision[]) IS
'Photo-z point estimates of PDF bin masses on bin edges: mean, median, mode and the central '
'68% and 95% intervals (the CDF is linear inside a bin), with edges[1] <= z_lo95 <= z_lo68 <='
' z_median <= z_hi68 <= z_hi95 <= edges[n+1]. n >= 2 masses, finite, non-negative and summing'
' to 1 within 0.001 (renormalised); n + 1 finite, strictly increasing edges; otherwise '
'SQLSTATE 22023. NULL arguments give NULL.';
