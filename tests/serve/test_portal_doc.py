"""docs/portal.md: every example request runs against the service with default settings.

An ``http`` block holds ``GET`` lines, each answered 200. An ``http-error``
block starts with the expected status and a text the answer must contain,
then the ``GET`` line. A ``python`` block runs with ``BASE`` set to the
service's URL (the pyvo snippet).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from skyclass.serve.app import create_app
from skyclass.serve.config import ServeConfig
from skyclass.serve.pool import portal_url
from tests.serve.conftest import Scored, _free_port, start_server

PORTAL = Path(__file__).resolve().parents[2] / "docs" / "portal.md"
BLOCK = re.compile(r"^```(http|http-error|python)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


@pytest.fixture(scope="module")
def default_service(scored: Scored) -> Iterator[str]:
    """The service with default settings (as `skyclass serve` starts it)."""
    config = ServeConfig()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SKYCLASS_DATABASE_URL", scored.url)
        app = create_app(config, url=portal_url(config))
    port = _free_port()
    server, thread = start_server(app, port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def _blocks() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(PORTAL.read_text())]


def test_the_document_has_examples_of_every_endpoint() -> None:
    text = "\n".join(body for _, body in _blocks())
    for path in (
        "/scs/",
        "/api/catalogs",
        "/api/cone",
        "/api/objects/",
        "/api/candidates",
        "/api/models",
        "/objects/",
        "/models/",
        "/api/openapi.json",
    ):
        assert f"GET {path}" in text, path


def test_every_example_request_answers_as_documented(default_service: str) -> None:
    failures = []
    for kind, body in _blocks():
        lines = [line for line in body.splitlines() if line.strip()]
        if kind == "http":
            for line in lines:
                target = line.removeprefix("GET ").strip()
                answer = httpx.get(default_service + target, timeout=30)
                if answer.status_code != 200 or 'INFO name="Error"' in answer.text:
                    failures.append(f"{target}: {answer.status_code} {answer.text[:300]}")
        elif kind == "http-error":
            status, _, message = lines[0].partition(" ")
            target = lines[1].removeprefix("GET ").strip()
            answer = httpx.get(default_service + target, timeout=30)
            if answer.status_code != int(status) or message not in answer.text:
                failures.append(f"{target}: {answer.status_code} {answer.text[:300]}")
    assert not failures, "\n".join(failures)


def test_the_pyvo_example_runs(default_service: str, capsys: pytest.CaptureFixture[str]) -> None:
    snippets = [body for kind, body in _blocks() if kind == "python"]
    assert snippets
    for code in snippets:
        exec(compile(code, str(PORTAL), "exec"), {"BASE": default_service})
    assert "sgq_current_class" in capsys.readouterr().out


def test_the_readme_pyvo_snippet_runs(default_service: str) -> None:
    readme = (PORTAL.parents[1] / "README.md").read_text()
    part = readme.split("## Serving portals and VO tools", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"^```python\n(.*?)^```$", part, re.MULTILINE | re.DOTALL)
    assert code is not None and "http://127.0.0.1:8080" in code.group(1)
    exec(
        compile(code.group(1).replace("http://127.0.0.1:8080", default_service), "README", "exec"),
        {},
    )
