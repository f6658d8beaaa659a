"""The compile step: artifacts, checkpoints, reproducible builds and refused inputs."""

from __future__ import annotations

import ctypes
import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from skyclass.compile import (
    CompiledArtifact,
    CompileError,
    calibration_columns,
    compile_checkpoint,
    compile_estimator,
    load_checkpoint,
    model_layout,
    treelite_checkpoint,
)
from tests.score.models import N_FEATURES, case, sdss17


class _Entry(ctypes.Union):
    _fields_ = [("missing", ctypes.c_int), ("fvalue", ctypes.c_double)]


def library_probabilities(artifact: CompiledArtifact, x: np.ndarray) -> np.ndarray:
    """Score float32 rows with the artifact's library through ctypes (no database)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.so"
        path.write_bytes(artifact.library)
        lib = ctypes.CDLL(str(path))
        assert lib.get_num_feature() == artifact.n_features
        raw = np.zeros((len(x), artifact.n_outputs))
        entries = (_Entry * artifact.n_features)()
        out = (ctypes.c_double * artifact.n_outputs)()
        for i, row in enumerate(x):
            for j, value in enumerate(row):
                if np.isnan(value):
                    entries[j].missing = -1
                else:
                    entries[j].fvalue = float(value)
            ctypes.memset(out, 0, ctypes.sizeof(out))
            lib.predict(entries, 0, out)
            raw[i] = list(out)
    return artifact.to_probabilities(raw)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Single-threaded OpenMP: a shared 2-core machine makes spinning threads very slow."""
    with threadpool_limits(limits=1):
        yield


def test_artifact_describes_library_and_provenance() -> None:
    c = case("hgb_multiclass")
    a = c.artifact
    assert hashlib.sha256(a.library).hexdigest() == a.sha256_hex
    assert a.sha256 == bytes.fromhex(a.sha256_hex) and len(a.sha256) == 32
    assert (a.n_features, a.n_outputs, a.n_classes, a.output_transform) == (9, 3, 3, "identity")
    assert (a.treelite_version, a.tl2cgen_version) == ("4.8.1", "1.0.0")
    assert a.compiler.startswith("gcc")
    assert "-O2" in a.compiler_flags and "-Bsymbolic" in a.compiler_flags
    assert a.compile_seconds > 0
    assert a.library[:4] == b"\x7fELF"
    layout = model_layout(load_checkpoint(a.checkpoint))
    assert (layout.n_features, layout.n_classes, layout.postprocessor) == (9, 3, "softmax")


def test_binary_boosting_has_one_output_and_forests_one_per_class() -> None:
    hgb, rf = case("hgb_binary").artifact, case("rf_binary").artifact
    assert (hgb.n_outputs, hgb.n_classes, hgb.output_transform) == (1, 2, "binary_expand")
    assert (rf.n_outputs, rf.n_classes, rf.output_transform) == (2, 2, "identity")
    p = hgb.to_probabilities(np.array([[0.25], [1.0]]))
    assert p.tolist() == [[0.75, 0.25], [0.0, 1.0]]


@pytest.mark.parametrize("name", ["hgb_binary", "rf_multiclass", "et_binary"])
def test_library_matches_predict_proba_without_a_database(name: str) -> None:
    c = case(name)
    x = sdss17().x_eval[:300]
    got = library_probabilities(c.artifact, x)
    expected = c.estimator.predict_proba(x)
    assert np.abs(got - expected).max() <= 1e-12


def test_checkpoint_rebuilds_the_same_library() -> None:
    a = case("et_binary").artifact
    rebuilt = compile_checkpoint(a.checkpoint, n_features=N_FEATURES)
    assert rebuilt.sha256_hex == a.sha256_hex
    assert rebuilt.checkpoint == a.checkpoint
    with pytest.raises(CompileError, match="declares 9 features, expected 8"):
        compile_checkpoint(a.checkpoint, n_features=8)


def test_checkpoint_of_an_estimator_is_its_treelite_model() -> None:
    c = case("rf_binary")
    assert treelite_checkpoint(c.estimator, n_features=N_FEATURES) == c.artifact.checkpoint


def test_annotated_quantized_build_scores_the_same() -> None:
    c = case("rf_multiclass")
    data = sdss17()
    fast = compile_estimator(
        c.estimator,
        n_features=N_FEATURES,
        opt_level="-O3",
        annotate_with=data.x_train[:2000],
        quantize=True,
    )
    assert '"annotate": 1' in fast.compiler_flags and '"quantize": 1' in fast.compiler_flags
    assert fast.sha256_hex != c.artifact.sha256_hex
    x = data.x_eval[:300]
    assert np.abs(library_probabilities(fast, x) - c.estimator.predict_proba(x)).max() <= 1e-12


def test_unquantized_build_scores_the_same_as_the_default() -> None:
    c = case("hgb_multiclass")
    assert '"quantize": 1' in c.artifact.compiler_flags
    plain = compile_estimator(c.estimator, n_features=N_FEATURES, quantize=False)
    assert '"quantize": 0' in plain.compiler_flags and plain.sha256_hex != c.artifact.sha256_hex
    x = sdss17().x_eval[:500]
    assert np.array_equal(library_probabilities(plain, x), library_probabilities(c.artifact, x))


def test_progress_bar_is_shown_on_request(capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    forest = RandomForestClassifier(n_estimators=2, max_depth=2, random_state=0)
    forest.fit(x, x[:, 0] > 0)
    compile_estimator(forest, n_features=3, parallel_comp=1, progress=True)
    err = capsys.readouterr().err
    assert "compile model" in err
    assert "newer Treelite version" not in err  # native noise goes to build_log instead


@pytest.mark.parametrize(
    ("estimator", "message"),
    [
        (LogisticRegression(), "cannot compile a LogisticRegression"),
        (GradientBoostingClassifier(), "cannot compile a GradientBoostingClassifier"),
        (RandomForestClassifier(), "not fitted"),
    ],
)
def test_unsupported_or_unfitted_estimators_are_refused(estimator: object, message: str) -> None:
    with pytest.raises(CompileError, match=message):
        compile_estimator(estimator, n_features=N_FEATURES)


def test_wrong_feature_count_and_options_are_refused() -> None:
    forest = case("rf_binary").estimator
    with pytest.raises(CompileError, match="fitted on 9 features"):
        compile_estimator(forest, n_features=8)
    with pytest.raises(CompileError, match="opt_level"):
        compile_estimator(forest, n_features=N_FEATURES, opt_level="-O2 -fplugin=/tmp/x.so")
    with pytest.raises(CompileError, match="parallel_comp"):
        compile_estimator(forest, n_features=N_FEATURES, parallel_comp=0)
    with pytest.raises(CompileError, match="annotate_with"):
        compile_estimator(forest, n_features=N_FEATURES, annotate_with=np.zeros((3, 4)))


def test_multi_output_forests_are_refused() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(100, 4)).astype(np.float32)
    forest = RandomForestClassifier(n_estimators=2, random_state=0)
    forest.fit(x, np.column_stack([x[:, 0] > 0, x[:, 1] > 0]))
    with pytest.raises(CompileError, match="multi-output"):
        compile_estimator(forest, n_features=4)


def test_bad_checkpoints_are_refused() -> None:
    for bad in (b"", b"not a treelite checkpoint", case("et_binary").artifact.checkpoint[:64]):
        with pytest.raises(CompileError):
            load_checkpoint(bad)


def test_calibration_columns_layout() -> None:
    c = case("hgb_multiclass")
    iso = calibration_columns(c.calibrations["isotonic"], 3)
    assert iso.kind == "isotonic" and iso.offsets[0] == 0 and len(iso.offsets) == 4
    assert iso.offsets[-1] == len(iso.params)
    for k in range(3):
        block = iso.params[iso.offsets[k] : iso.offsets[k + 1]]
        m = len(block) // 2
        assert list(block[:m]) == list(c.calibrations["isotonic"].knots_x[k])
        assert list(block[m:]) == list(c.calibrations["isotonic"].knots_y[k])
    temp = calibration_columns(c.calibrations["temperature"], 3)
    assert temp.kind == "temperature"
    assert temp.params == (c.calibrations["temperature"].temperature,)
    assert calibration_columns(c.calibrations["identity"], 3).kind == "none"
    assert calibration_columns(None, 3).kind == "none"
    with pytest.raises(CompileError, match="for 3 classes"):
        calibration_columns(c.calibrations["identity"], 2)
