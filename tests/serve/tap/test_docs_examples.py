"""The examples of docs/tap.md run against the service and return rows.

Each ```adql block is run with pyvo's ``run_sync`` and must return at least one
row; each ```python block runs with the service URL of the document replaced by
the test service's.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import pyvo
import requests

from tests.serve.tap.conftest import Tap

DOC = Path(__file__).resolve().parents[3] / "docs" / "tap.md"
DOC_URL = "http://127.0.0.1:8080/tap"


def blocks(kind: str) -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    return re.findall(rf"^```{kind}\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)


def test_the_document_has_examples() -> None:
    assert len(blocks("adql")) >= 5
    assert len(blocks("python")) >= 1


@pytest.mark.parametrize("adql", blocks("adql"))
def test_each_adql_example_returns_rows(tap: Tap, adql: str) -> None:
    with requests.Session() as session:
        result = pyvo.dal.TAPService(tap.url, session=session).run_sync(adql)
    assert len(result) >= 1


@pytest.mark.parametrize("code", blocks("python"))
def test_each_python_example_runs(tap: Tap, code: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert DOC_URL in code
    exec(compile(code.replace(DOC_URL, tap.url), str(DOC), "exec"), {})
    assert capsys.readouterr().out.strip()
