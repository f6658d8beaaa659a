"""The leakage guard: refuse features that identify objects or carry the label.

Many public notebooks report ~98% accuracy on SDSS17 star/galaxy/QSO because
they feed the spectroscopic redshift in as a feature: it comes from the same
spectrum as the class, so the model reads the answer. Identifiers and sky
positions are refused for a different reason: they let a model memorise
objects or survey footprints instead of learning from photometry.

A feature is refused when its name (compared case-insensitively, with ``-``,
``.`` and spaces read as ``_``) is:

- the label column itself, or contains it (``class`` refuses ``subclass``;
  only for label names of 3+ characters);
- the catalog's id, RA or Dec column, or any ``extra_refused`` name;
- an identifier: ``objid``, ``object_id``, ``source_id``, ``specobjid``,
  ``orig_row``, anything ending in ``_id`` or ``objid``, and survey bookkeeping
  (``run``, ``rerun``, ``camcol``, ``field``, ``plate``, ``fiber``, ``mjd``...);
- a position: ``ra``, ``dec``, ``alpha``, ``delta``, ``glon``, ``glat``,
  ``elon``, ``elat``, ``raj2000``, ``dej2000``, ``ra_deg``... and sky-pixel ids
  (``htmid``, ``healpix``, ``ipix``, ``q3c``);
- a label source (spectroscopic outputs): ``redshift``, ``z_spec``, ``zspec``,
  ``spec_z``, ``specz``, ``z_err``, ``zwarning``, ``class``, ``subclass``,
  ``spectral_type`` and similar.

A bare ``z`` is ambiguous: it is the SDSS z band in ``u, g, r, i, z`` and the
redshift in many photo-z files (BOSS/ANNZ call the redshift ``Z``). It is read
as the z band when at least three of ``u, g, r, i`` are also features (or its
unit, if given, is a magnitude), and refused as a redshift otherwise.

:func:`check_features` raises :class:`LeakageError` naming each refused
feature and the reason, and the ``force`` option; forcing returns a
:class:`LeakageReport` of what was forced, which the model row stores.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from skyclass.train.errors import LeakageError, TrainError

IDENTIFIERS = frozenset(
    {
        "id",
        "objid",
        "obj_id",
        "object_id",
        "objectid",
        "source_id",
        "sourceid",
        "specobjid",
        "spec_obj_id",
        "bestobjid",
        "thingid",
        "thing_id",
        "orig_row",
        "row",
        "rowid",
        "row_id",
        "index",
        "run",
        "run_id",
        "rerun",
        "rerun_id",
        "camcol",
        "cam_col",
        "field",
        "field_id",
        "plate",
        "plateid",
        "fiber",
        "fiberid",
        "fiber_id",
        "mjd",
        "name",
        "designation",
    }
)
POSITIONS = frozenset(
    {
        "ra",
        "dec",
        "de",
        "alpha",
        "delta",
        "glon",
        "glat",
        "gal_l",
        "gal_b",
        "elon",
        "elat",
        "ecl_lon",
        "ecl_lat",
        "raj2000",
        "dej2000",
        "decj2000",
        "ra_deg",
        "dec_deg",
        "radeg",
        "decdeg",
        "dedeg",
        "ra_icrs",
        "de_icrs",
        "dec_icrs",
        "cx",
        "cy",
        "cz",
        "htmid",
        "healpix",
        "hpx",
        "ipix",
        "q3c",
        "q3c_ipix",
    }
)
LABEL_SOURCES = frozenset(
    {
        "redshift",
        "z_spec",
        "zspec",
        "spec_z",
        "specz",
        "z_err",
        "zerr",
        "z_spec_err",
        "zwarning",
        "z_warning",
        "z_noqso",
        "zconf",
        "z_conf",
        "zbest",
        "z_best",
        "class",
        "subclass",
        "spec_class",
        "specclass",
        "spectral_class",
        "spectral_type",
        "spectype",
        "sptype",
        "label",
    }
)
BAND_SIBLINGS = ("u", "g", "r", "i")
_MAG_UNITS = frozenset({"mag", "mags", "magnitude", "abmag", "stmag"})


def normalise_name(name: str) -> str:
    """Lower-case ``name`` with ``-``, ``.``, spaces and repeated ``_`` read as one ``_``."""
    return re.sub(r"[\s.\-_]+", "_", name.strip().lower()).strip("_")


@dataclass(frozen=True)
class RefusedFeature:
    """A feature the guard refuses, with why."""

    name: str
    reason: str


@dataclass(frozen=True)
class LeakageReport:
    """Outcome of a passed check: the features checked and those forced through."""

    features: tuple[str, ...]
    label_column: str
    forced: tuple[RefusedFeature, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON record to store with the model."""
        return {
            "features": list(self.features),
            "label_column": self.label_column,
            "forced": [{"name": f.name, "reason": f.reason} for f in self.forced],
        }


def _reason(
    name: str,
    label: str,
    metadata: Mapping[str, str],
    refused_extra: Collection[str],
    z_is_band: bool,
) -> str | None:
    key = normalise_name(name)
    if key == label:
        return "the label column itself"
    for role, column in metadata.items():
        if key == column:
            return f"the catalog's {role} column"
    if key in refused_extra:
        return "listed as refused for this catalog"
    if len(label) >= 3 and label in key:
        return f"derived from the label column {label!r}"
    if key == "z":
        if z_is_band:
            return None
        return "a redshift (a bare 'z' without u/g/r/i band siblings or a magnitude unit)"
    if key in LABEL_SOURCES:
        return "a label source (spectroscopic output)"
    if key in POSITIONS:
        return "a sky position"
    if key in IDENTIFIERS or key.endswith("_id") or key.endswith("objid"):
        return "an identifier or survey bookkeeping"
    return None


def check_features(
    feature_names: Sequence[str],
    *,
    label_column: str,
    id_column: str | None = None,
    ra_column: str | None = None,
    dec_column: str | None = None,
    extra_refused: Iterable[str] = (),
    units: Mapping[str, str] | None = None,
    force: bool | Collection[str] = False,
) -> LeakageReport:
    """Refuse identifiers, positions and label sources as features unless forced.

    ``id_column``/``ra_column``/``dec_column`` come from the catalog registry;
    ``units`` (feature name -> unit) resolves a bare ``z``. ``force=True``
    forces every refused feature, a collection of names forces only those.
    Raises :class:`LeakageError` listing every refused feature not forced;
    otherwise returns the report with the forced ones.
    """
    names = [str(n) for n in feature_names]
    if not names:
        raise TrainError("no features given")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise TrainError(f"features listed more than once: {duplicates}")
    label = normalise_name(label_column)
    metadata = {
        role: normalise_name(col)
        for role, col in (("id", id_column), ("RA", ra_column), ("Dec", dec_column))
        if col
    }
    extra = {normalise_name(n) for n in extra_refused}
    normalised = {normalise_name(n) for n in names}
    unit_of = {normalise_name(k): v.strip().lower() for k, v in (units or {}).items()}
    z_is_band = (
        sum(b in normalised for b in BAND_SIBLINGS) >= 3 or unit_of.get("z", "") in _MAG_UNITS
    )
    refused = []
    for name in names:
        reason = _reason(name, label, metadata, extra, z_is_band)
        if reason is not None:
            refused.append(RefusedFeature(name, reason))
    if isinstance(force, bool):
        forced_names = {r.name for r in refused} if force else set()
    elif isinstance(force, str):
        raise TrainError("force must be True/False or a collection of feature names")
    else:
        forced_names = set(force)
        unknown = sorted(forced_names - set(names))
        if unknown:
            raise TrainError(f"force names {unknown} are not among the features")
    blocked = [r for r in refused if r.name not in forced_names]
    if blocked:
        listing = "; ".join(f"{r.name!r} ({r.reason})" for r in blocked)
        names_list = ", ".join(repr(r.name) for r in blocked)
        raise LeakageError(
            f"refused {len(blocked)} feature(s) that would leak the label "
            f"{label_column!r} or identify objects: {listing}. Remove them, or pass "
            f"force=True (or force=[{names_list}]) to train with them anyway; "
            "forced features are recorded with the model",
            tuple(r.name for r in blocked),
        )
    return LeakageReport(
        features=tuple(names),
        label_column=label_column,
        forced=tuple(r for r in refused if r.name in forced_names),
    )
