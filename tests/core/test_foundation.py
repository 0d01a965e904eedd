"""Schema, reference data, features, settings and retry behaviour."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from mfd.errors import ServiceUnavailable, with_retries
from mfd.features import FEATURE_COLUMNS, feature_matrix
from mfd.profiles.ai4i_reference import AI4I_SHA256, ai4i_path, load_ai4i
from mfd.schema import FAILURE_MODE_COLUMNS, READING_COLUMNS
from mfd.validation import SENSOR_RANGES


def test_vendored_ai4i_is_the_reference_file() -> None:
    assert hashlib.sha256(ai4i_path().read_bytes()).hexdigest() == AI4I_SHA256


def test_ai4i_maps_onto_the_schema() -> None:
    df = load_ai4i()
    assert len(df) == 10_000 and int(df["machine_failure"].sum()) == 339
    assert list(df.columns[: len(READING_COLUMNS)]) == list(READING_COLUMNS)
    assert set(df["machine_type"]) == {"L", "M", "H"}
    for col, rng in SENSOR_RANGES.items():
        assert df[col].between(rng.low, rng.high).all(), col
    assert df.groupby("machine_id")["timestamp"].is_monotonic_increasing.all()


def test_feature_matrix_never_contains_failure_modes() -> None:
    features = feature_matrix(load_ai4i().head(100))
    assert list(features.columns) == list(FEATURE_COLUMNS)
    assert not set(FAILURE_MODE_COLUMNS) & set(features.columns)
    assert features["power_w"].iloc[0] == pytest.approx(42.8 * 1551 * 2 * np.pi / 60)
    assert features.loc[:, ["type_L", "type_M", "type_H"]].sum(axis=1).eq(1).all()


def test_physics_rules_hold_on_the_real_file() -> None:
    """The README's exact rules: our physics features reproduce HDF/PWF/OSF labels."""
    df = load_ai4i()
    f = feature_matrix(df)
    hdf = (f["temperature_difference_k"] < 8.6) & (df["rotational_speed_rpm"] < 1380)
    pwf = (f["power_w"] < 3500) | (f["power_w"] > 9000)
    limit = df["machine_type"].map({"L": 11_000, "M": 12_000, "H": 13_000})
    osf = f["strain_min_nm"] > limit
    assert (hdf == df["hdf"].astype(bool)).all()
    assert (pwf == df["pwf"].astype(bool)).all()
    assert (osf == df["osf"].astype(bool)).all()


def test_retries_then_names_the_setting() -> None:
    calls = []

    def failing() -> None:
        calls.append(1)
        raise ConnectionError("refused")

    with pytest.raises(ServiceUnavailable, match="check MFD_X"):
        with_retries(failing, what="thing", setting="MFD_X", attempts=3, base_delay=0.01)
    assert len(calls) == 3


def test_retry_recovers_when_the_service_comes_back() -> None:
    answers = iter([ConnectionError("down"), "up"])

    def flaky() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert with_retries(flaky, what="thing", setting="MFD_X", base_delay=0.01) == "up"
