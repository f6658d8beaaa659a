"""Batch scoring: resumable single-flight jobs, predictions with history, deployments, schedules.

``score_catalog`` runs a scoring job with several sessions (the in-database
scorer, or the client-side fallback when the server has no extension);
``deploy`` moves a deployment name to another model version; ``add_schedule``
registers a pg_cron job that runs ``CALL skyclass.rescore(...)``. The SQL side
(tables, job functions, views, roles) is migration 0004. Names are imported
lazily so that the command line starts without numpy.

Storage (revision 0017)
    Every run writes ``predictions.mv_<version>_c<catalog>_r<run>``,
    partitioned by RANGE (object_id) into one table per chunk, in the compact
    layout of ``skyclass.prediction_codec`` (object_id, top class, 16-bit
    probabilities; see :mod:`skyclass.score.codec`), rows in object_id order
    under a b-tree on object_id (a BRIN index with ``skyclass.prediction_index =
    brin``). ``skyclass.prediction_table`` lists the published run
    tables and ``skyclass.prediction`` is a view over them (one branch per
    table, the run's version, catalog, run id and time as constants): one
    prediction per object and version, where object ids are only unique within
    a catalog and a version may score any catalog that has its feature set.
    Versions never write into each other's tables, so history is kept by
    construction; ``skyclass.class_changes(a, b)`` compares two.

A full re-score of a version
    builds a new run table beside the published ones and, once every chunk is
    done, publishes it in their place (``skyclass.publish_predictions``
    rewrites the view, the old tables are dropped) in one transaction: readers
    see all of the old run's rows or all of the new run's, never a mix and
    never a half-finished run, and the old rows leave no dead tuples behind.
    ``only_new`` runs score the objects that have no prediction yet into a
    table of their own, published beside the others.

Jobs
    A run's chunks are contiguous object_id ranges of ``chunk_size`` feature
    rows (found by one walk along the primary key). Sessions claim
    chunks with ``FOR UPDATE SKIP LOCKED``; a chunk's predictions (its table,
    with its CHECK and primary key, attached as a partition)
    and its completion mark commit in one transaction, so a job killed at any
    point leaves neither gaps nor duplicates. Chunk commits do not wait for the
    WAL flush (a crash loses trailing chunks together with their marks); the
    final swap commits synchronously. One job per model version and catalog
    runs at a time: a lease (the job's row of ``skyclass.scoring_lease``,
    naming the backend that runs it), taken by ``skyclass.start_scoring_run``
    with an UPDATE that only roles writing that table can run, released by
    finish/fail and stale once its backend is gone; a second start fails at once with
    "already running (run N, started ..., pid P)". Starting a job whose last
    run was interrupted or failed (same mode) resumes that run: its done
    chunks stay done, ``attempts`` counts the starts, and exactly one run is
    marked succeeded. A run whose session died still says ``running`` until
    the next start, which holds the lease and so knows it is dead and marks it
    ``interrupted``; listings show it as such at once (the lease is stale). A
    cancelled ``CALL`` marks its run interrupted itself, unless the cancel
    lands between two chunks, outside the procedure's error handler: the run
    then looks running and its lease stays with the idle session until that
    session ends (the "already running" error says so). Objects of the
    catalog without a feature row are counted per chunk and reported.

Privileges
    Jobs create tables in schema ``predictions`` and rewrite the view
    ``skyclass.prediction``, which PostgreSQL allows its owner only: run them
    as the role that ran the migrations (or a member of it). Portals read
    through ``skyclass_reader``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from skyclass.lazy import lazy_getattr

if TYPE_CHECKING:
    from skyclass.score.deploy import Deployment as Deployment
    from skyclass.score.deploy import deploy as deploy
    from skyclass.score.deploy import deployment_history as deployment_history
    from skyclass.score.deploy import list_deployments as list_deployments
    from skyclass.score.errors import AlreadyRunningError as AlreadyRunningError
    from skyclass.score.errors import ScoringError as ScoringError
    from skyclass.score.fallback import ClientScorer as ClientScorer
    from skyclass.score.jobs import score_catalog as score_catalog
    from skyclass.score.runs import RunInfo as RunInfo
    from skyclass.score.schedule import add_schedule as add_schedule
    from skyclass.score.schedule import list_schedules as list_schedules
    from skyclass.score.schedule import remove_schedule as remove_schedule

_EXPORTS = {
    "Deployment": "skyclass.score.deploy",
    "deploy": "skyclass.score.deploy",
    "deployment_history": "skyclass.score.deploy",
    "list_deployments": "skyclass.score.deploy",
    "AlreadyRunningError": "skyclass.score.errors",
    "ScoringError": "skyclass.score.errors",
    "ClientScorer": "skyclass.score.fallback",
    "score_catalog": "skyclass.score.jobs",
    "RunInfo": "skyclass.score.runs",
    "add_schedule": "skyclass.score.schedule",
    "list_schedules": "skyclass.score.schedule",
    "remove_schedule": "skyclass.score.schedule",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
