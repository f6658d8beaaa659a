"""The labelling queue: propose objects (``skyclass.create_label_queue``), import their labels.

A label file is CSV with a header holding ``object_id`` and ``label`` (and
optionally ``source``). Every row must name an object proposed (or observed)
in the queue of that model version and catalog, with one of the version's
classes; otherwise nothing is imported and the error names the line.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from skyclass.errors import SkyclassError
from skyclass.learning.errors import QueueError
from skyclass.learning.strategies import STRATEGIES
from skyclass.registry.models import resolve_target


@dataclass(frozen=True)
class QueueEntry:
    """One proposed object."""

    rank: int
    object_id: int
    score: float
    state: str
    label: str | None


@dataclass(frozen=True)
class QueueIteration:
    """An iteration of the queue of (model version, catalog)."""

    model_version_id: int
    catalog: str
    iteration: int
    strategy: str
    entries: tuple[QueueEntry, ...]


def _sql_error(exc: psycopg.Error) -> QueueError:
    hint = f"; {exc.diag.message_hint}" if exc.diag.message_hint else ""
    return QueueError(f"{exc.diag.message_primary}{hint}")


def _catalog_id(conn: psycopg.Connection[Any], catalog: str) -> int:
    from skyclass.registry.catalogs import find_catalog

    try:
        return find_catalog(conn, catalog).catalog_id
    except SkyclassError as exc:
        raise QueueError(str(exc)) from None


def create_queue(
    conn: psycopg.Connection[Any],
    target: str,
    catalog: str,
    strategy: str,
    budget: int,
    *,
    ood_weight: bool = False,
    seed: int = 0,
) -> QueueIteration:
    """Write the next iteration of the queue and return it."""
    if strategy not in STRATEGIES:
        raise QueueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
    try:
        with conn.transaction():
            row = conn.execute(
                "SELECT skyclass.create_label_queue(%s, %s, %s, %s, %s, %s)",
                (target, catalog, strategy, budget, ood_weight, seed),
            ).fetchone()
    except psycopg.Error as exc:
        raise _sql_error(exc) from None
    assert row is not None
    return show_queue(conn, target, catalog, iteration=int(row[0]))


def show_queue(
    conn: psycopg.Connection[Any], target: str, catalog: str, *, iteration: int | None = None
) -> QueueIteration:
    """An iteration of the queue (default: the newest)."""
    version = resolve_target(conn, target).model_version_id
    catalog_id = _catalog_id(conn, catalog)
    rows = conn.execute(
        "SELECT q.iteration, q.strategy, q.rank, q.object_id, q.score, q.state, q.label "
        "FROM skyclass.label_queue AS q "
        "WHERE q.model_version_id = %s AND q.catalog_id = %s AND q.iteration = coalesce(%s, "
        "(SELECT max(iteration) FROM skyclass.label_queue AS m "
        " WHERE m.model_version_id = q.model_version_id AND m.catalog_id = q.catalog_id)) "
        "ORDER BY q.rank",
        (version, catalog_id, iteration),
    ).fetchall()
    if not rows:
        raise QueueError(
            f"no queue{'' if iteration is None else f' iteration {iteration}'} of {target} on "
            f"catalog {catalog!r}: create one with `skyclass queue create {target} --catalog "
            f"{catalog} --strategy entropy --budget N`"
        )
    entries = tuple(QueueEntry(int(r[2]), int(r[3]), float(r[4]), str(r[5]), r[6]) for r in rows)
    return QueueIteration(version, catalog, int(rows[0][0]), str(rows[0][1]), entries)


def import_labels(
    conn: psycopg.Connection[Any], target: str, catalog: str, path: Path, *, source: str
) -> int:
    """Import the labels of ``path`` into the queue of (target, catalog); returns the count."""
    version = resolve_target(conn, target).model_version_id
    catalog_id = _catalog_id(conn, catalog)
    row = conn.execute(
        "SELECT classes FROM skyclass.model_version WHERE model_version_id = %s", (version,)
    ).fetchone()
    assert row is not None
    classes = set(row[0])
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
            header = rows[0].keys() if rows else set()
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise QueueError(f"{path}: cannot read the label file: {exc}") from None
    if not rows:
        raise QueueError(f"{path}: no label rows (expected a header object_id,label[,source])")
    if not {"object_id", "label"} <= set(header):
        raise QueueError(f"{path}: the header must name object_id and label, not {list(header)}")
    labels: dict[int, tuple[str, str]] = {}
    for line, record in enumerate(rows, start=2):
        text, label = (record.get("object_id") or "").strip(), (record.get("label") or "").strip()
        try:
            object_id = int(text)
        except ValueError:
            raise QueueError(
                f"{path}, line {line}, column object_id: {text!r} is not an id"
            ) from None
        if label not in classes:
            raise QueueError(
                f"{path}, line {line}, column label: {label!r} is not a class of the model "
                f"({', '.join(sorted(classes))})"
            )
        if object_id in labels:
            raise QueueError(f"{path}, line {line}: object {object_id} is labelled twice")
        labels[object_id] = (label, (record.get("source") or "").strip() or source)
    with conn.transaction():
        # The newest open entry of each object (iterations ascending: later ones win).
        open_entries = {
            int(r[0]): int(r[1])
            for r in conn.execute(
                "SELECT q.object_id, q.queue_id FROM skyclass.label_queue AS q "
                "WHERE q.model_version_id = %s AND q.catalog_id = %s AND q.object_id = ANY(%s) "
                "AND q.state IN ('proposed', 'observed') "
                "ORDER BY q.object_id, q.iteration FOR UPDATE OF q",
                (version, catalog_id, list(labels)),
            )
        }
        missing = [oid for oid in labels if oid not in open_entries]
        if missing:
            line = 2 + list(labels).index(missing[0])
            raise QueueError(
                f"{path}, line {line}: object {missing[0]} is not proposed or observed in the "
                f"queue of {target} on catalog {catalog!r} ({len(missing)} such rows); nothing "
                "was imported"
            )
        with conn.cursor() as cur:
            cur.executemany(
                "UPDATE skyclass.label_queue SET state = 'labelled', label = %s, "
                "label_source = %s WHERE queue_id = %s",
                [(lab, src, open_entries[oid]) for oid, (lab, src) in labels.items()],
            )
    return len(labels)


def set_state(
    conn: psycopg.Connection[Any], target: str, catalog: str, ids: list[int], state: str
) -> int:
    """Mark open entries of these objects ``observed`` or ``expired``; returns the count."""
    if state not in ("observed", "expired"):
        raise QueueError(f"state must be observed or expired, not {state!r}")
    version = resolve_target(conn, target).model_version_id
    catalog_id = _catalog_id(conn, catalog)
    try:
        with conn.transaction():
            updated = conn.execute(
                "UPDATE skyclass.label_queue AS q SET state = %s "
                "WHERE q.catalog_id = %s AND q.model_version_id = %s "
                "AND q.object_id = ANY(%s) AND q.state IN ('proposed', 'observed') "
                "AND q.state <> %s",
                (state, catalog_id, version, ids, state),
            ).rowcount
    except psycopg.Error as exc:
        raise _sql_error(exc) from None
    return int(updated)
