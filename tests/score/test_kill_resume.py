"""Kill and resume (RELIABILITY.md, test 3): a chunked scoring job survives everything.

In a throwaway cluster of its own (so that restarting it cannot disturb
other tests): 200,000 objects are scored once without interruption (the
reference), then scored again in full while the job's backends are
terminated at random points more than ten times and the whole server is
stopped with ``immediate`` (a crash) once, each time resuming by starting the
job again, alternately with ``CALL skyclass.rescore`` (one session) and
``skyclass.score.jobs.score_catalog`` (two sessions). Afterwards: exactly one
prediction per object and version, none missing, values identical to the
reference, exactly one run marked succeeded for the re-score, and no
half-built partitions left behind.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import psycopg
import pytest

from skyclass.score.jobs import score_catalog
from tests.score.jobs_support import add_objects, object_features, own_cluster, register

N_OBJECTS = 200_000
CHUNK = 1_000
MIN_KILLS = 10
SEED = 20261121


def _job(url: str, attempt: int) -> threading.Thread:
    """Start the re-score in the background, alternating the two ways of running it."""

    def run() -> None:
        try:
            if attempt % 2 == 0:
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(
                        "CALL skyclass.rescore('sgq_current', 'test_catalog', chunk_size => %s)",
                        (CHUNK,),
                    )
            else:
                score_catalog("sgq_current", "test_catalog", chunk_size=CHUNK, workers=2, url=url)
        except Exception:  # killed: the next attempt resumes
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


class _Monitor:
    """A connection that watches the re-score run and reconnects when the server went away."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: psycopg.Connection[Any] | None = None

    def status(self) -> tuple[int | None, str | None, int]:
        """(run_id, status, chunks_done) of the newest run after the reference."""
        for _ in range(400):
            try:
                if self.conn is None or self.conn.closed:
                    self.conn = psycopg.connect(
                        self.url, autocommit=True, application_name="kill-monitor"
                    )
                row = self.conn.execute(
                    "SELECT run_id, status, chunks_done FROM skyclass.scoring_run "
                    "WHERE run_id > 1 ORDER BY run_id DESC LIMIT 1"
                ).fetchone()
            except psycopg.OperationalError:
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
                time.sleep(0.05)
                continue
            if row is None:
                return None, None, 0
            return int(row[0]), str(row[1]), int(row[2])
        raise AssertionError("the server did not come back")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def _terminate_job_backends(url: str, rng: random.Random) -> int:
    """Terminate one or all other client sessions of the database (the job's backends)."""
    with psycopg.connect(url, autocommit=True) as conn:
        pids = [
            int(r[0])
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_type = 'client backend' AND pid <> pg_backend_pid() "
                "AND application_name <> 'kill-monitor'"
            ).fetchall()
        ]
        if not pids:
            return 0
        victims = pids if rng.random() < 0.5 else [rng.choice(pids)]
        for pid in victims:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        return len(victims)


@pytest.mark.slow
def test_kill_and_resume(skyclass_extension: None) -> None:
    rng = random.Random(SEED)
    with own_cluster("kill") as cluster:
        url = cluster.url
        with psycopg.connect(url, autocommit=True) as conn:
            version = register(conn)
            ids = add_objects(conn, version, object_features(N_OBJECTS, seed=41))
            conn.execute("SELECT skyclass.deploy('sgq_current', %s)", (version,))
            conn.execute("CALL skyclass.rescore('sgq_current', 'test_catalog', chunk_size => 5000)")
            conn.execute(
                "CREATE TABLE public.reference AS SELECT object_id, top_label, top_probability, "
                "probabilities FROM skyclass.prediction WHERE model_version_id = %s",
                (version,),
            )

        kills = restarts = attempts = 0
        monitor = _Monitor(url)
        deadline = time.monotonic() + 300
        # Kill phase: strike every attempt after it committed a few chunks.
        while kills < MIN_KILLS or restarts == 0:
            assert time.monotonic() < deadline, (kills, restarts)
            before_run, before_status, before_done = monitor.status()
            fresh = before_status in (None, "succeeded")  # this attempt starts a new run
            target = (0 if fresh else before_done) + rng.randint(1, 4)
            thread = _job(url, attempts)
            attempts += 1
            while thread.is_alive():
                run_id, status, done = monitor.status()
                if status == "running" and done >= target and not (fresh and run_id == before_run):
                    break
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.03))  # anywhere inside the next chunk
            if thread.is_alive():
                if kills >= MIN_KILLS // 2 and restarts == 0:
                    cluster.stop("immediate")
                    cluster.start()
                    restarts += 1
                elif _terminate_job_backends(url, rng):
                    kills += 1
            thread.join(timeout=120)
            assert not thread.is_alive(), "a killed job did not return"
        # Then let it finish.
        thread = _job(url, attempts)
        thread.join(timeout=300)
        run_id, status, _ = monitor.status()
        assert status == "succeeded", status
        monitor.close()
        assert kills >= MIN_KILLS and restarts == 1, (kills, restarts)
        print(f"kill and resume: {attempts + 1} starts, {kills} kills, {restarts} server crash")

        with psycopg.connect(url, autocommit=True) as conn:
            counts = conn.execute(
                "SELECT count(*), count(DISTINCT object_id) FROM skyclass.prediction "
                "WHERE model_version_id = %s",
                (version,),
            ).fetchone()
            assert counts == (N_OBJECTS, N_OBJECTS)
            missing = conn.execute(
                "SELECT count(*) FROM unnest(%s::bigint[]) AS i(object_id) WHERE NOT EXISTS "
                "(SELECT 1 FROM skyclass.prediction AS p WHERE p.object_id = i.object_id)",
                (ids.tolist(),),
            ).fetchone()
            assert missing == (0,)
            different = conn.execute(
                "SELECT count(*) FROM public.reference AS r JOIN skyclass.prediction AS p "
                "USING (object_id) WHERE p.model_version_id = %s AND (p.top_label <> r.top_label "
                "OR p.top_probability <> r.top_probability OR p.probabilities <> r.probabilities)",
                (version,),
            ).fetchone()
            assert different == (0,)
            runs: list[Any] = conn.execute(
                "SELECT run_id, status, attempts, chunks_done, chunks_total, rows_scored "
                "FROM skyclass.scoring_run ORDER BY run_id"
            ).fetchall()
            final = runs[-1]
            assert final[0] == run_id and final[1] == "succeeded"
            assert final[3] == final[4] and final[5] == N_OBJECTS and final[2] >= 2
            # Every attempt resumed the one re-score run: the reference and it, nothing else
            # (unless the re-score finished early and was repeated, each then succeeded once).
            assert all(r[1] == "succeeded" for r in runs)
            assert conn.execute(
                "SELECT count(DISTINCT run_id) FROM skyclass.prediction"
            ).fetchone() == (1,)
            # No half-built partitions: only the attached catalog partition and its chunks.
            leftovers = conn.execute(
                "SELECT count(*) FROM pg_class AS c "
                "JOIN pg_namespace AS n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'predictions' AND c.relkind IN ('r', 'p') "
                "AND NOT c.relispartition"
            ).fetchone()
            assert leftovers == (0,)
        log = cluster.log_file.read_text(errors="replace")
        assert "terminated by signal" not in log
