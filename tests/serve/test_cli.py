"""`skyclass serve` as a person runs it: workers, access log, graceful stop, refusals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx

from tests.serve.conftest import CATALOG, Scored, _free_port


def _serve(url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "skyclass.cli", "serve", *args],
        env={**os.environ, "SKYCLASS_DATABASE_URL": url},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait(base: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0]
        try:
            if httpx.get(base + "/", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError("skyclass serve did not answer")


def test_two_workers_serve_log_each_request_and_stop_gracefully(scored: Scored) -> None:
    port = _free_port()
    process = _serve(scored.url, "--port", str(port), "--workers", "2", "--pool-size", "2")
    try:
        base = f"http://127.0.0.1:{port}"
        _wait(base, process)
        for _ in range(6):
            assert httpx.get(f"{base}/api/objects/{CATALOG}/3").status_code == 200
        assert httpx.get(f"{base}/api/models/nosuch").status_code == 404
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "as role skyclass_portal, 2 worker(s)" in output
    assert output.count(f'"GET /api/objects/{CATALOG}/3 HTTP/1.1" 200') == 6
    assert '"GET /api/models/nosuch HTTP/1.1" 404' in output
    assert "Finished server process" in output


def test_serve_refuses_a_superuser_url_before_listening(scored: Scored) -> None:
    port = _free_port()
    process = _serve(scored.url, "--port", str(port), "--portal-url", scored.url)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "refusing to serve as role 'postgres'" in output and "superuser" in output
