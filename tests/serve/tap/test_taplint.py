"""``stilts taplint`` (TAP 1.1) finds no errors in the service.

taplint is the IVOA TAP validator (Debian package ``stilts``, needs a Java
runtime; ``.ci/install-system.sh --with-vo`` installs it and ``make test``
runs that). Every stage that applies runs: capabilities, availability and
tables metadata against the schemas, TAP_SCHEMA against /tables and query
results, sync and async queries, UWS, MAXREC/OVERFLOW, error documents.
ObsCore, the EPN-TAP and upload stages do not apply (no ObsCore table, no
UPLOAD capability) and taplint skips them itself. The examples (DALI, at
/examples) are validated and executed.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.serve.tap.conftest import Tap

INSTALL = "install it with: bash .ci/install-system.sh --with-vo (apt-get install stilts)"


def run_taplint(url: str) -> str:
    stilts = shutil.which("stilts")
    if stilts is None:
        pytest.skip(f"stilts (taplint) is not installed; {INSTALL}")
    done = subprocess.run(
        [
            stilts,
            "taplint",
            f"tapurl={url}",
            "interface=tap1.1",
            "report=EWSF",
            "maxrepeat=20",
            "truncate=1000",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return done.stdout + done.stderr


def test_taplint_reports_no_errors(tap: Tap) -> None:
    output = run_taplint(tap.url)
    print(output)
    errors = [line for line in output.splitlines() if re.match(r"^E-[A-Z]{3}-", line)]
    assert errors == [], "\n".join(errors)
    assert re.search(r"^Totals: +Errors: 0;", output, re.MULTILINE), output[-2000:]
    # the query stages ran, and every query they sent succeeded
    for stage in ("TMS", "QGE", "QPO", "QAS", "MDQ"):
        found = re.search(rf"^S-{stage}-QNUM-01 .*: (\d+)/(\d+)$", output, re.MULTILINE)
        assert found is not None, f"stage {stage} sent no query"
        assert found.group(1) == found.group(2) != "0", found.group(0)
    assert re.search(r"Execution success/attempt: (\d+)/\1", output), "examples not run"
