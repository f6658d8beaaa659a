"""Drift of scoring runs by sky region and magnitude: read and present ``skyclass.drift``.

Every scoring run records its drift in its finish step, in SQL
(``skyclass.record_run_drift``, called by ``skyclass.finish_scoring_run``):
per HEALPix region, per magnitude bin and overall, it summarises the objects
(counts, predicted classes, mean top probability, OOD fraction, feature
histograms) and compares them with the version's training snapshot and with
the previous run of the same deployment. This module only reads the result
through ``skyclass.drift_alerts`` (the same rows ``skyclass drift`` prints)
and formats it; docs/drift.md explains regions, bins and thresholds.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import psycopg

from skyclass.domain.errors import DomainError

LEVELS = ("ok", "warn", "alert")


@dataclass(frozen=True)
class DriftRow:
    """One drift value of a run: where (scope, bin), what, against what, how bad."""

    run_id: int
    reference: str  # training | previous_run
    scope: str  # all | region | magnitude
    bin: int
    quantity: str  # a feature name, class, top_probability, ood_fraction or n_objects
    metric: str  # psi | wasserstein_sigma | abs_change | relative_change
    value: float | None
    level: str  # ok | warn | alert | low_count
    n_objects: int
    n_reference: int
    ra_mean: float | None
    dec_mean: float | None
    bin_low: float | None
    bin_high: float | None

    @property
    def where(self) -> str:
        """The region or magnitude bin in words."""
        if self.scope == "all":
            return "all objects"
        if self.scope == "region":
            centre = (
                ""
                if self.ra_mean is None or self.dec_mean is None
                else f" (mean RA {self.ra_mean:.1f}, Dec {self.dec_mean:+.1f})"
            )
            return f"region {self.bin}{centre}"
        if self.bin < 0:
            return "magnitude missing"
        low = "" if self.bin_low is None else f"{self.bin_low:g}"
        high = "" if self.bin_high is None else f"{self.bin_high:g}"
        return f"magnitude {low}..{high}"


@dataclass(frozen=True)
class DriftReport:
    """The drift rows of one run at or above a level, and its worst regions."""

    target: str
    catalog: str
    run_id: int
    min_level: str
    rows: list[DriftRow]
    regions: list[tuple[int, float, str, DriftRow]]  # (region, worst value, level, its row)

    def counts(self) -> dict[str, int]:
        """How many rows of each level."""
        out: dict[str, int] = {}
        for row in self.rows:
            out[row.level] = out.get(row.level, 0) + 1
        return out


def drift_report(
    conn: psycopg.Connection[Any],
    target: str,
    catalog: str,
    *,
    run: int | None = None,
    min_level: str = "warn",
    worst: int = 10,
) -> DriftReport:
    """The drift of the newest run (or ``run``) of ``target`` on ``catalog``.

    ``target`` is a deployment, ``MODEL:VERSION`` or a model_version_id;
    ``min_level`` one of ``ok`` (every row), ``warn`` or ``alert``. The worst
    regions are the ``worst`` regions with the highest PSI or
    Wasserstein/sigma against either reference (at any level, low counts
    left out). Raises :class:`DomainError` naming what is missing.
    """
    if min_level not in LEVELS:
        raise DomainError(f"min_level must be one of {', '.join(LEVELS)}, not {min_level!r}")
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT * FROM skyclass.drift_alerts(%s, %s, %s, 'ok')", (target, catalog, run)
            )
            every = [DriftRow(*r) for r in cur.fetchall()]
    except psycopg.Error as exc:
        conn.rollback()
        diag = exc.diag
        message = diag.message_primary or str(exc)
        hint = f" ({diag.message_hint})" if diag.message_hint else ""
        raise DomainError(f"drift of {target} on {catalog}: {message}{hint}") from None
    rank = {"ok": 0, "warn": 1, "alert": 2}
    rows = [r for r in every if r.level in rank and rank[r.level] >= rank[min_level]]
    best: dict[int, DriftRow] = {}
    for r in every:
        if r.scope != "region" or r.level == "low_count" or r.value is None:
            continue
        if r.metric not in ("psi", "wasserstein_sigma"):
            continue
        if r.bin not in best or r.value > (best[r.bin].value or 0.0):
            best[r.bin] = r
    regions = sorted(
        ((k, float(v.value or 0.0), v.level, v) for k, v in best.items()),
        key=lambda t: -t[1],
    )[:worst]
    run_id = every[0].run_id if every else _run_of(conn, target, catalog, run)
    return DriftReport(target, catalog, run_id, min_level, rows, regions)


def _run_of(conn: psycopg.Connection[Any], target: str, catalog: str, run: int | None) -> int:
    """The run drift_alerts chose when it returned no rows at all (a run without summaries)."""
    if run is not None:
        return run
    row = conn.execute(
        "SELECT max(d.run_id) FROM skyclass.drift_run AS d JOIN skyclass.catalog AS c "
        "USING (catalog_id) WHERE c.name = %s",
        (catalog,),
    ).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _value(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def format_table(report: DriftReport, limit: int = 40) -> str:
    """The report as text: counts per level, the rows (worst first) and the worst regions."""
    counts = report.counts()
    lines = [
        f"drift of {report.target} on {report.catalog}, scoring run {report.run_id}: "
        + (
            ", ".join(f"{counts[k]} {k}" for k in ("alert", "warn", "ok") if k in counts)
            or f"nothing at {report.min_level} or above"
        )
    ]
    if report.rows:
        header = ("level", "against", "where", "quantity", "metric", "value", "n", "n_ref")
        table = [
            (
                r.level,
                "training" if r.reference == "training" else "previous run",
                r.where,
                r.quantity,
                r.metric,
                _value(r.value),
                str(r.n_objects),
                str(r.n_reference),
            )
            for r in report.rows[:limit]
        ]
        widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(header)]
        lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
        lines.extend("  ".join(c.ljust(w) for c, w in zip(t, widths, strict=True)) for t in table)
        if len(report.rows) > limit:
            lines.append(f"... {len(report.rows) - limit} more (--format json lists every row)")
    if report.regions:
        lines.append("worst regions (HEALPix RING, nside 4; highest PSI or Wasserstein/sigma):")
        for _region, value, level, row in report.regions:
            lines.append(
                f"  {row.where}: {row.quantity} {row.metric} {value:.3f} against "
                f"{'training' if row.reference == 'training' else 'the previous run'} [{level}]"
            )
    return "\n".join(lines)


def format_json(report: DriftReport) -> str:
    """The report as JSON: the rows and the worst regions."""
    return json.dumps(
        {
            "target": report.target,
            "catalog": report.catalog,
            "run_id": report.run_id,
            "min_level": report.min_level,
            "counts": report.counts(),
            "rows": [asdict(r) for r in report.rows],
            "worst_regions": [
                {"region": k, "value": v, "level": level, **asdict(r)}
                for k, v, level, r in report.regions
            ],
        },
        indent=2,
    )
