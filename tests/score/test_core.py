"""The PostgreSQL-free scoring core on its own, under AddressSanitizer and UBSan.

tests/score/core_driver.c links src/pg_skyclass/scoring_core.c into a small
program built with ``-fsanitize=address,undefined``; it loads real compiled
models from bytes (memfd + dlopen) and scores rows, which must equal
scikit-learn after the same calibration to 1e-12.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from skyclass.compile import calibration_columns
from tests.score.conftest import EXTENSION_DIR
from tests.score.models import case, sdss17

DRIVER = Path(__file__).with_name("core_driver.c")
SANITIZE = ("-fsanitize=address,undefined", "-fno-sanitize-recover=undefined")
ENV = {**os.environ, "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0", "UBSAN_OPTIONS": ""}


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed to build the scoring core test driver")
    out = tmp_path_factory.mktemp("core") / "core_driver"
    argv = [
        "gcc",
        "-std=gnu99",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-g",
        "-O1",
        "-fno-omit-frame-pointer",
        *SANITIZE,
        f"-I{EXTENSION_DIR}",
        "-o",
        str(out),
        str(DRIVER),
        str(EXTENSION_DIR / "scoring_core.c"),
        "-ldl",
        "-lm",
    ]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return out


def _run(driver: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(driver), *args], input=stdin, capture_output=True, text=True, check=False, env=ENV
    )


def test_core_selftest(driver: Path) -> None:
    result = _run(driver, "selftest")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert "runtime error" not in result.stderr  # UBSan


@pytest.mark.parametrize(
    ("name", "method"),
    [("hgb_binary", "isotonic"), ("rf_pdf", "temperature"), ("et_multiclass", "identity")],
)
def test_core_scores_like_scikit_learn(
    driver: Path, tmp_path: Path, name: str, method: str
) -> None:
    c = case(name)
    library = tmp_path / "model.so"
    library.write_bytes(c.artifact.library)
    cal = calibration_columns(c.calibrations[method], len(c.classes))
    x = sdss17().x_eval[:300]
    rows = "\n".join(" ".join("nan" if np.isnan(v) else repr(float(v)) for v in r) for r in x)
    args = [
        "score",
        str(library),
        str(len(c.classes)),
        c.artifact.output_transform,
        cal.kind,
        repr(cal.eps),
        *(repr(v) for v in cal.params),
        "--",
        *(str(v) for v in cal.offsets),
    ]
    result = _run(driver, *args, stdin=rows)
    assert result.returncode == 0, result.stderr
    assert "runtime error" not in result.stderr
    got = np.array([[float(v) for v in line.split()] for line in result.stdout.splitlines()])
    assert np.abs(got - c.reference(x, method)).max() <= 1e-12


def test_core_refuses_a_malformed_calibration(driver: Path, tmp_path: Path) -> None:
    c = case("hgb_binary")
    library = tmp_path / "model.so"
    library.write_bytes(c.artifact.library)
    result = _run(driver, "score", str(library), "2", "binary_expand", "temperature", "1e-12", "0")
    assert result.returncode == 2
    assert "temperature must be positive" in result.stderr
