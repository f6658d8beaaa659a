"""The C extension lives in one folder, and ``make test`` builds it with -Werror."""

from __future__ import annotations

import subprocess

from tests.score.conftest import EXTENSION_DIR, REPO, pg_config


def test_everything_of_the_extension_is_in_its_folder() -> None:
    names = {p.relative_to(EXTENSION_DIR).as_posix() for p in EXTENSION_DIR.rglob("*")}
    assert {
        "Makefile",
        "skyclass.control",
        "skyclass.c",
        "scoring_core.c",
        "crossmatch.c",
        "sql/skyclass--0.1.0.sql",
        "sql/skyclass--0.1.0--0.2.0.sql",
        "test/sql/skyclass.sql",
        "test/expected/skyclass.out",
    } <= names
    assert not (REPO / "sql").exists() and not (REPO / "tests" / "regress").exists()


def test_make_test_builds_the_extension_with_werror() -> None:
    # A dry run (-n): the recursive make of the extension prints its compiler lines
    # (SUDO= : a recursive make runs even under -n, and must not ask for a password).
    done = subprocess.run(
        ["make", "-n", "test", f"PG_CONFIG={pg_config()}", "SUDO="],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    compiles = [line for line in done.stdout.splitlines() if " -c -o skyclass.o " in line]
    assert compiles, done.stdout[-3000:] + done.stderr[-2000:]
    assert all("-Werror" in line for line in compiles)
