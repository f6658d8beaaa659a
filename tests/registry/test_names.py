"""The registry layer resolves every name one way, with one error per failure."""

from __future__ import annotations

import secrets
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql
from sklearn.ensemble import RandomForestClassifier

from skyclass.compile.store import resolve_model_version
from skyclass.errors import (
    CatalogNotFoundError,
    InvalidModelRef,
    ModelNotFoundError,
    RegistryAccessError,
    UnknownDeployment,
    UnknownModel,
    UnknownRun,
    UnknownVersion,
)
from skyclass.registry.catalogs import find_catalog
from skyclass.registry.deployments import get_deployment
from skyclass.registry.models import find_version, resolve_version
from skyclass.registry.runs import get_run
from tests.support.registry import DEFAULT_CATALOG, register_test_model


def _forest() -> RandomForestClassifier:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 3))
    y = np.array(["A", "B"])[(x[:, 0] > 0).astype(int)]
    return RandomForestClassifier(n_estimators=2, max_depth=2, random_state=0).fit(x, y)


def test_every_kind_of_name_and_its_failures(conn: psycopg.Connection[Any]) -> None:
    forest = _forest()
    first = register_test_model(conn, forest, classes=["A", "B"], n_features=3, model="sgq")
    second = register_test_model(conn, forest, classes=["A", "B"], n_features=3, model="sgq")

    # Every spelling of a version gives the same row, through both callers' views of it.
    for ref, expected in (("sgq", second), ("sgq:1", first), (first, first), (" 2 ", None)):
        found = find_version(conn, ref)
        if expected is not None:
            assert found.model_version_id == expected
        assert resolve_version(conn, ref).model_version_id == found.model_version_id
        assert resolve_model_version(conn, ref).model_version_id == found.model_version_id
    assert find_version(conn, "sgq").label == "sgq:2"

    failures: list[tuple[Any, type[Exception], str]] = [
        ("Bad:1", InvalidModelRef, "is not MODEL, MODEL:VERSION or a model_version_id"),
        ("sgq:0", InvalidModelRef, "is not MODEL"),
        (True, InvalidModelRef, "not a model reference"),
        ("nope", UnknownModel, "unknown model 'nope' (known models: sgq;"),
        ("sgq:9", UnknownVersion, "model 'sgq' has no version 9; its versions are 1, 2"),
        (999_999, UnknownVersion, "model version id 999999 does not exist"),
    ]
    for ref, error, message in failures:
        with pytest.raises(error) as info:
            find_version(conn, ref)
        assert message in str(info.value)
    assert issubclass(UnknownModel, ModelNotFoundError) and issubclass(UnknownModel, LookupError)
    assert issubclass(InvalidModelRef, ValueError)

    # A role that may read versions but not model names: ids work, names say what to do.
    role = sql.Identifier(f"no_model_{secrets.token_hex(4)}")
    conn.execute(sql.SQL("CREATE ROLE {}").format(role))
    try:
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA skyclass TO {}").format(role))
        conn.execute(sql.SQL("GRANT SELECT ON skyclass.model_version TO {}").format(role))
        conn.execute(sql.SQL("SET ROLE {}").format(role))
        assert find_version(conn, first).label == f"model version {first}"
        with pytest.raises(RegistryAccessError, match="pass the model_version_id instead"):
            find_version(conn, "sgq:1")
    finally:
        conn.execute("RESET ROLE")
        conn.execute(sql.SQL("DROP OWNED BY {}").format(role))
        conn.execute(sql.SQL("DROP ROLE {}").format(role))

    assert find_catalog(conn, DEFAULT_CATALOG).name == DEFAULT_CATALOG
    with pytest.raises(CatalogNotFoundError, match=f"known catalogs: {DEFAULT_CATALOG}"):
        find_catalog(conn, "nosuch")
    with pytest.raises(UnknownDeployment, match="no deployment exists yet"):
        get_deployment(conn, "sgq_current")
    conn.execute("SELECT skyclass.deploy('sgq_current', %s)", (second,))
    assert get_deployment(conn, "sgq_current").label == "sgq:2"
    with pytest.raises(UnknownDeployment, match=r"'other' \(deployments: sgq_current;"):
        get_deployment(conn, "other")
    with pytest.raises(UnknownRun, match="scoring run 42 does not exist"):
        get_run(conn, 42)
