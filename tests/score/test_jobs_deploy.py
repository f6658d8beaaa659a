"""Deployments: atomic switches, one model per deployment, an append-only history."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from skyclass.score.deploy import deploy, deployment_history, list_deployments
from skyclass.score.errors import ScoringError
from skyclass.score.jobs import score_catalog
from tests.conftest import drop_database
from tests.score.jobs_support import add_objects, jobs_database, object_features, register
from tests.score.models import N_FEATURES, case
from tests.support.registry import register_test_model

CATALOG = "test_catalog"


@pytest.fixture(scope="module")
def url(skyclass_extension: None, server_url: str, template_url: str) -> Iterator[str]:
    database = jobs_database(server_url)
    try:
        yield database
    finally:
        drop_database(server_url, database)


@pytest.fixture(scope="module")
def versions(url: str) -> dict[str, int]:
    """Two versions of model sgq (scored), and a photo-z model."""
    with psycopg.connect(url, autocommit=True) as conn:
        v1 = register(conn, method="identity", model="sgq")
        v2 = register(conn, method="isotonic", model="sgq")
        c = case("hgb_multiclass")
        # A photo-z model: different task, same features (its bins are the 3 classes' names
        # only for the test; what matters is that it is another model).
        photoz = register_test_model(
            conn,
            c.estimator,
            classes=c.classes,
            n_features=N_FEATURES,
            task="photoz",
            bin_edges=[0.0, 0.5, 1.0, 2.0],
            model="photoz",
            artifact=c.artifact,
        )
        uncompiled = register_test_model(
            conn, c.estimator, classes=c.classes, n_features=N_FEATURES, model="sgq"
        )
        add_objects(conn, v1, object_features(1500, seed=21))
    for v in (v1, v2):
        score_catalog(str(v), CATALOG, url=url, workers=1)
    return {"v1": v1, "v2": v2, "photoz": photoz, "uncompiled": uncompiled}


def test_deploy_switch_and_history(url: str, versions: dict[str, int]) -> None:
    first = deploy("sgq_current", "sgq:1", description="star/galaxy/QSO", url=url)
    assert first.previous_version_id is None and first.deployment.model_version_id == versions["v1"]
    assert first.deployment.label == "sgq:1" and first.deployment.compiled is True
    again = deploy("sgq_current", versions["v1"], url=url)
    assert not again.changed
    second = deploy("sgq_current", "sgq:2", url=url)
    assert second.previous_version_id == versions["v1"] and second.changed
    assert second.deployment.description == "star/galaxy/QSO"
    assert [d.name for d in list_deployments(url)] == ["sgq_current"]
    history = deployment_history("sgq_current", url)
    assert [(h.model_version_id, h.previous_version_id) for h in history] == [
        (versions["v1"], None),
        (versions["v2"], versions["v1"]),
    ]
    assert history[1].label == "sgq:2"

    with psycopg.connect(url, autocommit=True) as conn:
        # As of the first switch's time, the deployment pointed at v1.
        at = conn.execute(
            "SELECT skyclass.deployed_version('sgq_current', %s), "
            "skyclass.deployed_version('sgq_current')",
            (history[0].switched_at,),
        ).fetchone()
        assert at == (versions["v1"], versions["v2"])
        # The history is append-only.
        for statement in (
            "UPDATE skyclass.deployment_history SET switched_by = 'someone else'",
            "DELETE FROM skyclass.deployment_history",
        ):
            with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="append-only"):
                conn.execute(statement)


def test_a_deployment_keeps_its_model(url: str, versions: dict[str, int]) -> None:
    deploy("sgq_keep", "sgq:1", url=url)
    refused = r"deployment sgq_keep is of model sgq \(classification\)"
    with pytest.raises(ScoringError, match=refused):
        deploy("sgq_keep", "photoz", url=url)
    with psycopg.connect(url, autocommit=True) as conn:
        # A direct UPDATE is refused the same way.
        with pytest.raises(psycopg.errors.CheckViolation, match="is of model sgq"):
            conn.execute(
                "UPDATE skyclass.deployment SET model_version_id = %s WHERE name = 'sgq_keep'",
                (versions["photoz"],),
            )
        row = conn.execute(
            "SELECT model_version_id FROM skyclass.deployment WHERE name = 'sgq_keep'"
        ).fetchone()
        assert row == (versions["v1"],)
    with pytest.raises(ScoringError, match="is not compiled"):
        deploy("sgq_keep", versions["uncompiled"], url=url)
    with pytest.raises(ScoringError, match="invalid name"):
        deploy("Robert'); DROP TABLE x;--", "sgq:1", url=url)


def test_readers_never_see_a_mix_while_the_deployment_switches(
    url: str, versions: dict[str, int]
) -> None:
    deploy("sgq_flip", "sgq:1", url=url)
    n_objects = 1500
    stop = threading.Event()
    seen: list[tuple[Any, ...]] = []

    def read() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            while not stop.is_set():
                row = conn.execute(
                    "SELECT count(*), count(DISTINCT model_version_id), min(model_version_id) "
                    "FROM skyclass.current_classification WHERE deployment = 'sgq_flip'"
                ).fetchone()
                assert row is not None
                seen.append(tuple(row))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            deadline = time.monotonic() + 30
            i = 0
            while len(seen) < 40 and time.monotonic() < deadline:
                target = versions["v2"] if i % 2 == 0 else versions["v1"]
                conn.execute("SELECT skyclass.deploy('sgq_flip', %s)", (target,))
                i += 1
                time.sleep(0.002)
    finally:
        stop.set()
        reader.join()
    assert len(seen) >= 40
    assert all(count == n_objects and distinct == 1 for count, distinct, _ in seen), seen[:5]
    assert {v for _, _, v in seen} == {versions["v1"], versions["v2"]}
