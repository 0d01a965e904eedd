"""Machine-window features (mfd.windows): hand-checked numbers, the same numbers as a plain pandas reference
(groupby + rolling), no window sees a later reading (property-based), and the incremental form returns exactly
the batch form's numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mfd.profiles import MACHINE, TIMESTAMP
from mfd.windows import WindowSpec, WindowState, window_features

SPEC = WindowSpec(sensors=("a", "b"), windows=(2, 4), baseline=3)
START = pd.Timestamp("2024-01-01", tz="UTC")


def fleet(values: list[tuple[int, float, float]]) -> pd.DataFrame:
    """Readings from (machine number, a, b): each machine's readings one minute apart, in list order."""
    seen: dict[int, int] = {}
    rows = []
    for machine, a, b in values:
        at = START + pd.Timedelta(minutes=seen.setdefault(machine, 0))
        seen[machine] += 1
        rows.append({MACHINE: f"m{machine}", TIMESTAMP: at, "a": a, "b": b})
    return pd.DataFrame(rows, columns=[MACHINE, TIMESTAMP, "a", "b"])


reading = st.tuples(
    st.integers(0, 1),
    st.floats(-1e3, 1e3, allow_nan=False, width=32),
    st.floats(-1e3, 1e3, allow_nan=False, width=32),
)
readings = st.lists(reading, min_size=1, max_size=60)
# Long enough that a machine's history outgrows what the state holds (baseline + history readings).
histories = st.lists(reading, min_size=16, max_size=60)


def test_numbers_by_hand() -> None:
    frame = fleet([(0, 1.0, 0.0), (0, 3.0, 0.0), (0, 5.0, 0.0), (0, 10.0, 0.0), (1, 7.0, 1.0)])
    got = window_features(frame, SPEC)
    assert got["a__mean_2"].tolist() == [1.0, 2.0, 4.0, 7.5, 7.0]
    assert got["a__std_2"].tolist() == [0.0, 1.0, 1.0, 2.5, 0.0]
    assert got["a__slope_2"].tolist() == [0.0, 2.0, 2.0, 5.0, 0.0]
    np.testing.assert_allclose(got["a__slope_4"], [0.0, 2.0, 2.0, 2.9, 0.0])  # least squares of 1, 3, 5, 10
    # change: the window's mean minus the mean of the first 3 (of those read so far)
    np.testing.assert_allclose(got["a__change_2"], [0.0, 0.0, 1.0, 7.5 - 3.0, 0.0])
    np.testing.assert_allclose(got["a__change_4"], [0.0, 0.0, 0.0, 19 / 4 - 3.0, 0.0])
    assert got["life_readings"].tolist() == [1, 2, 3, 4, 1]


def test_a_reset_starts_a_new_life() -> None:
    frame = fleet([(0, 1.0, 0.0), (0, 3.0, 0.0), (0, 9.0, 0.0), (0, 11.0, 0.0), (0, 22.0, 0.0)])
    resets = pd.DataFrame({MACHINE: ["m0"], TIMESTAMP: [START + pd.Timedelta(seconds=90)]})
    got = window_features(frame, SPEC, resets)
    assert got["a__mean_4"].tolist() == [1.0, 2.0, 9.0, 10.0, 14.0]
    # a record at a reading's own time (the failing cycle) ends that life: the next reading starts afresh
    at_reading = resets.assign(**{TIMESTAMP: [START + pd.Timedelta(minutes=1)]})
    pd.testing.assert_frame_equal(window_features(frame, SPEC, at_reading), got)
    # the baseline restarts at the reset: mean of 9, 11, 22 for the last reading
    np.testing.assert_allclose(got["a__change_2"], [0.0, 0.0, 0.0, 0.0, 16.5 - 14.0])
    assert got["life_readings"].tolist() == [1, 2, 1, 2, 3]


def test_rows_come_back_in_the_frames_order() -> None:
    frame = fleet([(0, 1.0, 0.0), (1, 2.0, 0.0), (0, 3.0, 0.0)])
    shuffled = frame.iloc[[2, 0, 1]]
    pd.testing.assert_frame_equal(
        window_features(shuffled, SPEC), window_features(frame, SPEC).iloc[[2, 0, 1]]
    )


@settings(max_examples=40, deadline=None)
@given(readings, readings, st.data())
def test_no_window_feature_sees_a_later_reading(early: list, later: list, data: st.DataObject) -> None:
    before = fleet(early)
    grown = fleet(early + later)  # later readings appended to every machine
    changed = grown.copy()
    tail = changed.index >= len(early)
    changed.loc[tail, ["a", "b"]] = data.draw(st.floats(-1e3, 1e3, allow_nan=False, width=32))
    expected = window_features(before, SPEC)
    for frame in (grown, changed):
        pd.testing.assert_frame_equal(window_features(frame, SPEC).iloc[: len(early)], expected)


@settings(max_examples=40, deadline=None)
@given(histories, st.lists(st.integers(1, 15), min_size=1, max_size=6), st.booleans())
@example([(0, float(i), -float(i)) for i in range(20)], [10, 4], False)
def test_the_incremental_form_equals_the_batch_form(values: list, sizes: list, reset: bool) -> None:
    frame = fleet(values)
    resets = None
    if reset:
        resets = pd.DataFrame({MACHINE: ["m0", "m1"], TIMESTAMP: [START + pd.Timedelta(minutes=5)] * 2})
    expected = window_features(frame, SPEC, resets)
    state = WindowState(SPEC)
    parts, at = [], 0
    for size in [*sizes, len(frame)]:
        if at < len(frame):
            parts.append(state.update(frame.iloc[at : at + size], resets))
            at += size
    pd.testing.assert_frame_equal(pd.concat(parts), expected, check_exact=True)
    assert state.held <= 3 * (SPEC.baseline + SPEC.history)


@settings(max_examples=20, deadline=None)
@given(histories, st.integers(1, 9))
def test_chunks_give_the_same_numbers(values: list, chunk: int) -> None:
    import mfd.windows as windows

    frame = fleet(values)
    whole = windows.CHUNK
    assert len(frame) < whole  # the default: one chunk for these frames
    expected = window_features(frame, SPEC)
    windows.CHUNK = chunk
    try:
        pd.testing.assert_frame_equal(window_features(frame, SPEC), expected, check_exact=True)
    finally:
        windows.CHUNK = whole


def pandas_reference(frame: pd.DataFrame, spec: WindowSpec, resets: pd.DataFrame | None) -> pd.DataFrame:
    """The window features written the plain pandas way (groupby, rolling, np.polyfit), row by row slow."""
    frame = frame.assign(_life=0)
    for _, record in (resets if resets is not None else frame.iloc[:0]).iterrows():
        later = (frame[MACHINE] == record[MACHINE]) & (frame[TIMESTAMP] > record[TIMESTAMP])
        frame.loc[later, "_life"] += 1
    out = pd.DataFrame(index=frame.index)
    lives = frame.sort_values(TIMESTAMP, kind="stable").groupby([MACHINE, "_life"], sort=False)
    for sensor in spec.sensors:
        values = lives[sensor]
        # the mean of the life's first `baseline` readings (of those read so far)
        first = values.transform(
            lambda v: v.expanding().mean().where(np.arange(len(v)) < spec.baseline).ffill()
        )
        for w in spec.windows:
            rolling = values.rolling(w, min_periods=1)
            mean = rolling.mean().reset_index(level=[0, 1], drop=True)
            out[f"{sensor}__mean_{w}"] = mean
            out[f"{sensor}__std_{w}"] = rolling.std(ddof=0).reset_index(level=[0, 1], drop=True)
            slope = rolling.apply(
                lambda v: np.polyfit(np.arange(len(v)), v, 1)[0] if len(v) > 1 else 0.0, raw=True
            )
            out[f"{sensor}__slope_{w}"] = slope.reset_index(level=[0, 1], drop=True)
            out[f"{sensor}__change_{w}"] = mean - first
    out["life_readings"] = lives.cumcount() + 1.0
    return out[list(spec.columns)]


@settings(max_examples=25, deadline=None)
@given(readings, st.booleans())
@example([(0, float(i) ** 1.5, 7.0 - i) for i in range(12)] + [(1, 3.0, 4.0)] * 5, True)
def test_the_features_equal_a_plain_pandas_reference(values: list, reset: bool) -> None:
    frame = fleet(values)
    resets = None
    if reset:
        resets = pd.DataFrame({MACHINE: ["m0"], TIMESTAMP: [START + pd.Timedelta(minutes=4)]})
    got = window_features(frame, SPEC, resets)
    expected = pandas_reference(frame, SPEC, resets)
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-7, atol=1e-5)
