"""Rescore a sharded catalog on every shard at once, in place.

Each shard runs the ordinary scoring job (:func:`skyclass.score.jobs.score_catalog`)
on its own rows against its own database: chunked, resumable and single-flight
there; the coordinator only starts them, one thread per shard, and reports each
outcome. A shard that stops mid-job (server stopped, connection lost) fails
alone; the others finish. Running the same command again resumes the stopped
shard's job where it stopped; a shard whose job already succeeded scores again
(a full rescore) unless ``only_new`` is given, when it has nothing left to do.

Before anything starts, the target is resolved on every shard and the
compiled model must be the same everywhere (equal artifact sha256): the same
model must classify every part of the catalog.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import psycopg

from skyclass.db.connect import database_url
from skyclass.errors import ShardError, SkyclassError, UnknownTarget
from skyclass.registry.models import resolve_target
from skyclass.registry.runs import RunInfo
from skyclass.shard.servers import ShardInfo, list_shards, shard_url

# Per shard progress: (shard, chunks done, chunks total, rows scored).
ShardProgress = Callable[[str, int, int, int], None]


@dataclass(frozen=True)
class ShardRun:
    """The outcome of one shard's job: its finished run, or the error that stopped it."""

    shard: str
    run: RunInfo | None
    error: str | None
    seconds: float


def catalog_shards(name: str, url: str) -> list[ShardInfo]:
    """The shards holding part of attached catalog ``name``, in pixel order."""
    with psycopg.connect(url) as conn:
        names = [
            str(r[0])
            for r in conn.execute(
                "SELECT shard_name FROM skyclass.shard_range WHERE catalog_name = %s "
                "ORDER BY ipix_lo NULLS FIRST",
                (name,),
            )
        ]
    if not names:
        raise ShardError(
            f"catalog {name} is not attached over shards (skyclass shard attach {name})"
        )
    by_name = {s.name: s for s in list_shards(url=url, names=names)}
    return [by_name[n] for n in names]


def model_identity(target: str, shards: list[ShardInfo]) -> dict[str, str]:
    """Per shard, the sha256 (hex) of the compiled model ``target`` resolves to there.

    Raises :class:`ShardError` when a shard cannot resolve it, has no compiled
    artifact for it, or when the shards disagree.
    """
    found: dict[str, str] = {}
    for s in shards:
        try:
            with psycopg.connect(shard_url(s.conninfo), connect_timeout=10) as conn:
                version = resolve_target(conn, target).model_version_id
                row = conn.execute(
                    "SELECT sha256 FROM skyclass.model_artifact WHERE model_version_id = %s",
                    (version,),
                ).fetchone()
        except UnknownTarget as exc:
            raise ShardError(f"shard {s.name}: {exc}") from None
        except psycopg.Error as exc:
            message = exc.diag.message_primary if isinstance(exc, psycopg.DatabaseError) else None
            raise ShardError(f"shard {s.name}: {message or str(exc).strip()}") from None
        if row is None or row[0] is None:
            raise ShardError(
                f"shard {s.name}: {target} has no compiled artifact (skyclass compile there)"
            )
        found[s.name] = bytes(row[0]).hex()
    if len(set(found.values())) > 1:
        listing = ", ".join(f"{k}: {v[:12]}" for k, v in found.items())
        raise ShardError(
            f"{target} is not the same compiled model on every shard ({listing}): register "
            "and compile the same version on each shard"
        )
    return found


def rescore_shards(
    target: str,
    catalog: str,
    *,
    only_new: bool = False,
    chunk_size: int = 50_000,
    workers_per_shard: int | None = None,
    restart: bool = False,
    url: str | None = None,
    progress: ShardProgress | None = None,
) -> list[ShardRun]:
    """Score ``catalog`` with ``target`` on every shard holding it, all at once.

    One thread per shard runs the shard's own scoring job with
    ``workers_per_shard`` sessions (default: the job's default, the number of
    cores). Returns one :class:`ShardRun` per shard, in pixel order; a failed
    shard has ``error`` set and the others are unaffected (no two-phase
    commit: each shard's run commits on its own). Raises :class:`ShardError`
    before starting anything when the catalog is not attached or the model
    differs between shards.
    """
    from time import perf_counter

    from skyclass.score.jobs import score_catalog

    coordinator = url or database_url()
    shards = catalog_shards(catalog, coordinator)
    model_identity(target, shards)
    lock = threading.Lock()

    def one(shard: ShardInfo) -> ShardRun:
        started = perf_counter()

        def update(done: int, total: int, rows: int) -> None:
            if progress is not None:
                with lock:
                    progress(shard.name, done, total, rows)

        try:
            run = score_catalog(
                target,
                catalog,
                only_new=only_new,
                chunk_size=chunk_size,
                workers=workers_per_shard,
                resume=not restart,
                url=shard_url(shard.conninfo),
                progress=update,
            )
        except (SkyclassError, psycopg.Error) as exc:
            return ShardRun(shard.name, None, str(exc), perf_counter() - started)
        return ShardRun(shard.name, run, None, perf_counter() - started)

    with ThreadPoolExecutor(max_workers=len(shards), thread_name_prefix="shard") as pool:
        return list(pool.map(one, shards))
