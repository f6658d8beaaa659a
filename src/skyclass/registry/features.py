"""Feature-set builds by name: the one resolver of ``NAME``, ``NAME:HASHPREFIX`` and ids.

A feature definition built on several catalogs has one build (a
``skyclass.feature_set`` row) per catalog; a name alone must therefore say
which catalog, or the version must, since another catalog's build could be
evaluation data. Failures: :class:`FeatureSetNotFoundError` (no such build,
or a malformed name) and :class:`AmbiguousName` (several builds fit).
"""

from __future__ import annotations

import re
from typing import Any

import psycopg

from skyclass.errors import AmbiguousName, FeatureSetNotFoundError

_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
_PREFIX = re.compile(r"[0-9a-f]{1,64}")


def find_feature_build(
    conn: psycopg.Connection[Any],
    ref: int | str,
    spec_hash: str | None = None,
    *,
    catalog: str | None = None,
) -> int:
    """The ``feature_set_id`` of the build ``ref`` names.

    ``ref`` is a feature_set_id, a name (its newest build; the name must have
    builds on one existing catalog only, or ``catalog`` must say which) or
    ``NAME:HASHPREFIX``; ``spec_hash`` gives the prefix apart instead.
    """
    if isinstance(ref, int) and not isinstance(ref, bool):
        row = conn.execute(
            "SELECT feature_set_id FROM skyclass.feature_set WHERE feature_set_id = %s", (ref,)
        ).fetchone()
        if row is None:
            raise FeatureSetNotFoundError(f"feature set id {ref} does not exist")
        return int(row[0])
    if not isinstance(ref, str):
        raise FeatureSetNotFoundError(f"a feature set is named by id or name, not {ref!r}")
    name, _, prefix = ref.partition(":")
    prefix = (spec_hash if spec_hash is not None else prefix).lower()
    if not _NAME.fullmatch(name) or (
        (":" in ref or spec_hash is not None) and not _PREFIX.fullmatch(prefix)
    ):
        raise FeatureSetNotFoundError(
            f"feature set {ref[:80]!r}"
            + (f" version {spec_hash[:80]!r}" if spec_hash is not None else "")
            + ": expected NAME or NAME:HASHPREFIX (a lower-case name, then a prefix of its "
            "sha256 in hexadecimal)"
        )
    if prefix:
        rows = conn.execute(
            "SELECT feature_set_id, spec_hash, catalog_name FROM skyclass.feature_set "
            "WHERE name = %s AND left(spec_hash, %s) = %s ORDER BY feature_set_id DESC",
            (name, len(prefix), prefix),
        ).fetchall()
        if len(rows) > 1:
            versions = ", ".join(str(r[1])[:12] for r in rows)
            raise AmbiguousName(
                f"version prefix {prefix!r} of feature set {name!r} is ambiguous: {versions}; "
                "give more of the hash"
            )
    else:
        rows = conn.execute(
            "SELECT feature_set_id, spec_hash, catalog_name FROM skyclass.feature_set "
            "WHERE name = %s AND catalog_id IS NOT NULL "
            "AND (%s::text IS NULL OR catalog_name = %s) ORDER BY feature_set_id DESC",
            (name, catalog, catalog),
        ).fetchall()
        if len({r[2] for r in rows}) > 1:
            listing = ", ".join(f"{name}:{str(r[1])[:12]} on {r[2]}" for r in rows)
            raise AmbiguousName(
                f"feature set {name!r} is built on several catalogs ({listing}); name the "
                "catalog (--catalog NAME) or the version (NAME:HASHPREFIX)"
            )
    if not rows:
        known = [
            f"{r[0]} ({str(r[1])[:12]})"
            for r in conn.execute(
                "SELECT name, spec_hash FROM skyclass.feature_set ORDER BY name, feature_set_id"
            )
        ]
        what = f"feature set {name!r}" + (f" version {prefix!r}" if prefix else "")
        if catalog is not None:
            what += f" on catalog {catalog!r}"
        listing = f"registered: {', '.join(known)}" if known else "none are registered"
        raise FeatureSetNotFoundError(
            f"{what} is not registered ({listing}); build one with `skyclass features build SPEC`"
        )
    return int(rows[0][0])
