"""``skyclass train``, ``skyclass models list|show`` and ``skyclass ablate`` end to end."""

from __future__ import annotations

from pathlib import Path

import psycopg
from click.testing import CliRunner

from skyclass.cli import main
from tests.train.pipeline_data import SDSS_SPEC, ingest_sdss, sdss_slice


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_train_show_list_and_ablate(db_url: str, shared_data: Path, tmp_path: Path) -> None:
    ingest_sdss(sdss_slice(shared_data, tmp_path / "s.csv", 4000, seed=11), db_url)
    quick = ("--param", "max_iter=20", "--folds", "3", "--no-progress")
    code, out = _run("train", str(SDSS_SPEC), "--model", "sgq", "--label", "class", *quick)
    assert code == 0, out
    assert "registered sgq:1" in out and "skyclass compile sgq:1" in out
    for text in ("hist_gradient_boosting", "candidate", "dummy", "colour_cut", "logistic"):
        assert text in out
    assert "purity" in out and "completeness" in out and "±" in out

    # the feature set is now built: it can be named instead of the spec file
    code, out = _run(
        "train", "sdss_ugriz", "--model", "sgq", "--label", "class", *quick,
        "--baselines", "dummy", "--calibration", "isotonic", "--no-importance",
    )  # fmt: skip
    assert code == 0, out
    assert "registered sgq:2" in out and "calibration isotonic" in out

    code, out = _run("models", "list")
    assert code == 0 and "sgq" in out and "classification" in out and "accuracy 0." in out
    code, out = _run("models", "show", "sgq:1")
    assert code == 0 and "sgq:1" in out and "permutation importance" in out
    code, out = _run("models", "show", "sgq", "--json")
    assert code == 0 and '"version": 2' in out
    code, out = _run("models", "show", "nope")
    assert code == 1 and "unknown model 'nope'" in out and "sgq" in out
    code, out = _run("models", "show", "sgq:9")
    assert code == 1 and "no version 9" in out
    code, out = _run("models", "show", "Bad;Name")
    assert code == 1 and "MODEL:VERSION" in out

    code, out = _run("ablate", "sgq:2", "--no-progress")
    assert code == 0, out
    assert "magnitudes" in out and "colours" in out and "accuracy" in out
    with psycopg.connect(db_url) as conn:
        groups = conn.execute(
            "SELECT count(DISTINCT dropped_group) FROM skyclass.ablation"
        ).fetchone()
    assert groups == (2,)


def test_train_refuses_leakage_with_a_clear_error(
    db_url: str, shared_data: Path, tmp_path: Path
) -> None:
    ingest_sdss(sdss_slice(shared_data, tmp_path / "s.csv", 2000, seed=12), db_url)
    spec = tmp_path / "leaky.toml"
    spec.write_text(
        SDSS_SPEC.read_text().replace('"sdss_ugriz"', '"sdss_leaky"')
        + '\n[[feature]]\nname = "redshift"\nexpr = "redshift"\n'
    )
    code, out = _run("train", str(spec), "--model", "leaky", "--label", "class", "--no-progress")
    assert code == 1
    assert "'redshift'" in out and "--force-feature redshift" in out and "label source" in out
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM skyclass.training_snapshot").fetchone() == (0,)
    code, out = _run(
        "train", str(spec), "--model", "leaky", "--label", "class", "--force-feature", "redshift",
        "--param", "max_iter=5", "--folds", "2", "--baselines", "dummy", "--no-importance",
        "--no-progress",
    )  # fmt: skip
    assert code == 0, out
    assert "warning: leakage guard forced for redshift" in out
    assert "LEAKAGE FORCED: redshift" in out
    code, out = _run("train", str(spec), "--model", "x", "--no-progress")
    assert code == 2 and "--label" in out
    code, out = _run("train", "no_such_set", "--model", "x", "--label", "class")
    assert code == 1 and "not registered" in out
