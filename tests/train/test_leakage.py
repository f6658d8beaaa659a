"""The leakage guard refuses identifiers, positions and label sources unless forced."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from skyclass.errors import SkyclassError
from skyclass.train.errors import LeakageError, TrainError
from skyclass.train.leakage import check_features

PHOTOMETRY = ["u", "g", "r", "i", "z", "u_g", "g_r", "r_i", "i_z"]
SDSS17 = {
    "label_column": "class",
    "id_column": "orig_row",
    "ra_column": "alpha",
    "dec_column": "delta",
}


def test_sdss17_photometry_passes(sdss17_frame: pd.DataFrame) -> None:
    assert set(PHOTOMETRY[:5]) <= set(sdss17_frame.columns)
    report = check_features(PHOTOMETRY, **SDSS17)
    assert report.forced == () and report.features == tuple(PHOTOMETRY)


def test_redshift_is_refused_for_the_spectroscopic_class() -> None:
    with pytest.raises(LeakageError) as info:
        check_features([*PHOTOMETRY, "redshift"], **SDSS17)
    message = str(info.value)
    assert "'redshift' (a label source" in message
    assert "force=True" in message and "force=['redshift']" in message
    assert info.value.refused == ("redshift",)
    assert isinstance(info.value, SkyclassError) and isinstance(info.value, ValueError)


def test_every_refused_column_of_the_real_file_is_named(sdss17_frame: pd.DataFrame) -> None:
    columns = list(sdss17_frame.columns)  # orig_row, alpha, delta, u..z, class, redshift, MJD
    label = "class"
    features = [c for c in columns if c != label] + [label]
    with pytest.raises(LeakageError) as info:
        check_features(features, **SDSS17)
    assert set(info.value.refused) == {"orig_row", "alpha", "delta", "class", "redshift", "MJD"}
    message = str(info.value)
    for name in info.value.refused:
        assert repr(name) in message
    assert "the label column itself" in message and "the catalog's RA column" in message


def test_forcing_returns_a_record() -> None:
    report = check_features([*PHOTOMETRY, "redshift"], force=True, **SDSS17)
    assert [f.name for f in report.forced] == ["redshift"]
    record = json.loads(json.dumps(report.to_dict()))
    assert record["forced"][0]["name"] == "redshift" and record["label_column"] == "class"
    # Forcing by name forces only those names.
    with pytest.raises(LeakageError, match="'ra'"):
        check_features([*PHOTOMETRY, "redshift", "ra"], force=["redshift"], **SDSS17)
    with pytest.raises(TrainError, match="not among the features"):
        check_features(PHOTOMETRY, force=["spec_z"], **SDSS17)


@pytest.mark.parametrize(
    "name",
    [
        "z_spec",
        "Z_SPEC",
        "spec-z",
        "specz",
        "subclass",
        "objid",
        "SpecObjID",
        "source_id",
        "field_ID",
        "plate",
        "RA",
        "DEJ2000",
        "glat",
        "healpix",
    ],
)
def test_known_leaky_names(name: str) -> None:
    with pytest.raises(LeakageError, match=repr(name)):
        check_features([*PHOTOMETRY, name], label_column="class")


def test_bare_z_is_the_band_next_to_ugri_and_a_redshift_otherwise() -> None:
    check_features(["u", "g", "r", "i", "z"], label_column="class")
    # The BOSS/ANNZ FITS file calls the spectroscopic redshift Z.
    boss = ["MAG_U", "MAG_G", "MAG_R", "MAG_I", "MAG_Z", "Z"]
    with pytest.raises(LeakageError, match="'Z' \\(a redshift"):
        check_features(boss, label_column="class")
    check_features(boss, label_column="class", units={"Z": "mag"})


def test_label_column_and_derived_names_are_refused() -> None:
    photoz = ["mag_u", "mag_g", "mag_r", "mag_i", "mag_z"]
    check_features(photoz, label_column="z_spec")
    with pytest.raises(LeakageError, match="z_spec_err"):
        check_features([*photoz, "z_spec_err"], label_column="z_spec")
    with pytest.raises(LeakageError, match="listed as refused"):
        check_features([*photoz, "flux_ratio"], label_column="z_spec", extra_refused=["flux_ratio"])


def test_argument_errors() -> None:
    with pytest.raises(TrainError, match="no features"):
        check_features([], label_column="class")
    with pytest.raises(TrainError, match="more than once"):
        check_features(["u", "u"], label_column="class")
    with pytest.raises(TrainError, match="collection of feature names"):
        check_features(["u"], label_column="class", force="redshift")
