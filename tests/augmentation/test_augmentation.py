"""Augmentation: corruptions change only what they say, selection follows its metric, GAN and SMOTE rows
have the schema and ranges, and no augmented row is ever a holdout row."""

import numpy as np
import pandas as pd
import pytest

from mfd.augmentation import corruption as cor
from mfd.augmentation import selection
from mfd.augmentation.frames import AUGMENTED_COLUMNS
from mfd.augmentation.gan import GanConfig, conditions, gan_augment
from mfd.augmentation.oversampling import smote_augment
from mfd.augmentation.selection import BLOCK_BYTES, block_rows, closeness, select_rows
from mfd.errors import MfdError
from mfd.features import add_physics
from mfd.modeling.holdout import assert_disjoint, holdout_ids, holdout_split, without_holdout
from mfd.profiles.ai4i_reference import load_ai4i
from mfd.schema import LABEL_COLUMN, SENSOR_COLUMNS
from mfd.validation import SENSOR_RANGES

SENSORS = list(SENSOR_COLUMNS)


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    """1,500 real AI4I rows (every failure among the first 1,500 plus more) with reading ids."""
    df = load_ai4i()
    df.insert(0, "id", np.arange(1, len(df) + 1, dtype="int64"))
    failures = df[df[LABEL_COLUMN] == 1].iloc[:60]
    others = df[df[LABEL_COLUMN] == 0].sample(1440, random_state=0)
    return pd.concat([failures, others]).sort_values("id").reset_index(drop=True)


def changed_cells(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """Boolean frame: which cells differ."""
    assert list(before.columns) == list(after.columns) and before.index.equals(after.index)
    return ~((before == after) | (before.isna() & after.isna()))


def test_dropout_boxes_only_sets_sensor_cells_to_their_mean(rows):
    chunk = rows.iloc[:100]
    out = cor.dropout_boxes(chunk, np.random.default_rng(1), n_boxes=3, max_rows=8)
    changed = changed_cells(chunk, out)
    assert changed.to_numpy().any()
    assert not changed.drop(columns=SENSORS).to_numpy().any()
    means = chunk[SENSORS].mean()
    for col in SENSORS:
        assert np.allclose(out.loc[changed[col], col], means[col])
    assert changed.any(axis=1).sum() <= 3 * 8


def test_block_shuffle_moves_whole_blocks_of_the_given_columns_only(rows):
    chunk = rows.iloc[:60]
    cols = ("torque_nm", "tool_wear_min")
    out = cor.block_shuffle(chunk, np.random.default_rng(3), block_rows=5, columns=cols)
    changed = changed_cells(chunk, out)
    assert changed[list(cols)].to_numpy().any()
    assert not changed.drop(columns=list(cols)).to_numpy().any()
    # Each block of 5 rows lands intact somewhere: the pairs of values move together, in order.
    source = [tuple(map(tuple, chunk[list(cols)].iloc[i : i + 5].to_numpy())) for i in range(0, 60, 5)]
    moved = [tuple(map(tuple, out[list(cols)].iloc[i : i + 5].to_numpy())) for i in range(0, 60, 5)]
    assert sorted(source) == sorted(moved)


def test_spike_line_touches_one_column_at_n_rows_by_the_magnitude(rows):
    chunk = rows.iloc[:100]
    out = cor.spike_line(chunk, np.random.default_rng(0), "rotational_speed_rpm", n_spikes=4, magnitude=3.0)
    changed = changed_cells(chunk, out)
    assert changed.sum().to_dict() == {c: (4 if c == "rotational_speed_rpm" else 0) for c in chunk.columns}
    delta = (out - chunk.select_dtypes("number")).loc[changed["rotational_speed_rpm"], "rotational_speed_rpm"]
    assert np.allclose(delta.abs(), 3.0 * chunk["rotational_speed_rpm"].std())


def test_spike_line_clips_to_the_physical_range():
    chunk = pd.DataFrame({c: [SENSOR_RANGES[c].low + 1.0] * 3 for c in SENSORS})
    out = cor.spike_line(chunk, np.random.default_rng(0), "torque_nm", n_spikes=3, magnitude=1e6)
    assert out["torque_nm"].between(SENSOR_RANGES["torque_nm"].low, SENSOR_RANGES["torque_nm"].high).all()


def test_stuck_values_repeat_the_segment_start_in_one_column(rows):
    chunk = rows.iloc[:50]
    out = cor.stuck_values(chunk, np.random.default_rng(2), "air_temperature_k", length=12)
    changed = changed_cells(chunk, out)
    assert not changed.drop(columns=["air_temperature_k"]).to_numpy().any()
    positions = np.flatnonzero(changed["air_temperature_k"].to_numpy())
    assert len(positions) > 0 and positions.max() - positions.min() < 12
    start = positions.min() - 1  # the segment's first row keeps its value; the rest repeat it
    assert (
        out["air_temperature_k"].iloc[start : positions.max() + 1] == chunk["air_temperature_k"].iloc[start]
    ).all()


def test_drift_ramps_one_column_over_a_contiguous_segment(rows):
    chunk = rows.iloc[:80]
    out = cor.drift(chunk, np.random.default_rng(4), "process_temperature_k", length=20, magnitude=2.0)
    changed = changed_cells(chunk, out)
    assert not changed.drop(columns=["process_temperature_k"]).to_numpy().any()
    positions = np.flatnonzero(changed["process_temperature_k"].to_numpy())
    assert list(positions) == list(range(positions.min(), positions.min() + 20))
    delta = np.abs((out["process_temperature_k"] - chunk["process_temperature_k"]).iloc[positions].to_numpy())
    assert np.all(np.diff(delta) > 0)
    assert np.isclose(delta[-1], 2.0 * chunk["process_temperature_k"].std())


def test_mixed_changes_sensors_only(rows):
    chunk = rows.iloc[:100]
    out = cor.mixed(chunk, np.random.default_rng(5))
    changed = changed_cells(chunk, out)
    assert changed[SENSORS].to_numpy().any()
    assert not changed.drop(columns=SENSORS).to_numpy().any()


def test_unknown_corruption_is_refused(rows):
    with pytest.raises(MfdError, match="unknown corruption 'blur'"):
        cor.corrupt(rows, "blur", np.random.default_rng(0))


def test_corrupted_candidates_keep_label_and_type_of_their_row(rows):
    candidates = cor.corrupted_candidates(rows, "mixed", chunk_rows=50, seed=0)
    assert len(candidates) > 0
    original = rows.set_index("id").loc[candidates["id"]]
    assert (original[LABEL_COLUMN].to_numpy() == candidates[LABEL_COLUMN].to_numpy()).all()
    assert (original["machine_type"].to_numpy() == candidates["machine_type"].to_numpy()).all()
    assert (~np.isclose(original[SENSORS], candidates[SENSORS])).any(axis=1).all()


def test_l1_l2_and_cosine_each_pick_what_their_metric_says():
    reference = np.array([[1.0, 0.0]])
    candidates = np.array(
        [
            [1.9, 0.9],  # L1 1.8, L2 ~1.27, cosine distance ~0.10
            [2.3, 0.0],  # L1 1.3, L2 1.3,   cosine distance 0 (same direction, far away)
            [0.0, 1.25],  # L1 2.25, L2 ~1.60, cosine distance 1
            [1.0, 1.2],  # L1 1.2, L2 1.2,   cosine distance ~0.36
        ]
    )
    assert list(select_rows(candidates, reference, 1, "l1")) == [3]
    assert list(select_rows(candidates, reference, 2, "l2")) == [0, 3]
    assert list(select_rows(candidates, reference, 1, "cosine")) == [1]
    assert list(select_rows(candidates, reference, 2, "cosine")) == [0, 1]


def test_selection_takes_the_n_smallest_distances_to_the_nearest_reference():
    rng = np.random.default_rng(0)
    candidates, reference = rng.normal(size=(200, 4)), rng.normal(size=(7, 4))
    for strategy, distance in {
        "l1": lambda a, b: np.abs(a - b).sum(),
        "l2": lambda a, b: np.sqrt(((a - b) ** 2).sum()),
        "cosine": lambda a, b: 1 - a @ b / np.linalg.norm(a) / np.linalg.norm(b),
    }.items():
        nearest = np.array([min(distance(c, r) for r in reference) for c in candidates])
        assert np.allclose(closeness(candidates, reference, strategy), nearest)
        assert set(select_rows(candidates, reference, 15, strategy)) == set(np.argsort(nearest)[:15])


def test_closeness_never_holds_more_than_one_block_of_distances(monkeypatch: pytest.MonkeyPatch):
    rng = np.random.default_rng(1)
    candidates, reference = rng.normal(size=(1000, 4)), rng.normal(size=(30, 4))
    blocks: list[tuple[int, int]] = []
    cdist = selection.cdist

    def recorded(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
        blocks.append((len(a), len(b)))
        return cdist(a, b, metric=metric)

    monkeypatch.setattr(selection, "cdist", recorded)
    budget = 8 * 30 * 64  # 64 candidates a block
    for strategy, metric in {"l1": "cityblock", "l2": "euclidean", "cosine": "cosine"}.items():
        blocks.clear()
        whole = cdist(candidates, reference, metric=metric).min(axis=1)
        assert np.array_equal(closeness(candidates, reference, strategy, block_bytes=budget), whole)
        assert max(rows * refs * 8 for rows, refs in blocks) <= budget
        assert sum(rows for rows, _ in blocks) == len(candidates) and len(blocks) == 16
    # A 340,000-row training set: its 11,927 training failures as reference, one block within the budget.
    assert 0 < block_rows(11_927) * 11_927 * 8 <= BLOCK_BYTES <= 128 * 2**20
    assert block_rows(10**9) == 1


def test_random_selection_is_seeded_distinct_and_ignores_the_reference():
    candidates = np.arange(100, dtype=float).reshape(50, 2)
    first = select_rows(candidates, np.zeros((0, 2)), 10, "random", seed=7)
    assert len(set(first)) == 10
    assert list(first) == list(select_rows(candidates, np.ones((3, 2)), 10, "random", seed=7))
    assert list(first) != list(select_rows(candidates, np.zeros((0, 2)), 10, "random", seed=8))
    with pytest.raises(MfdError, match="unknown selection strategy 'manhattan'"):
        select_rows(candidates, candidates, 1, "manhattan")


def test_corruption_augment_adds_the_selected_corrupted_rows(rows):
    out = cor.corruption_augment(rows, n_rows=40, kind="spike", strategy="l2", reference="minority")
    assert list(out.columns) == list(AUGMENTED_COLUMNS)
    assert out["synthetic"].sum() == 40 and (~out["synthetic"]).sum() == len(rows)
    assert out.loc[out["synthetic"], "id"].isna().all()
    real = out[~out["synthetic"]].reset_index(drop=True)
    assert np.allclose(real[SENSORS], rows[SENSORS]) and (real["id"] == rows["id"]).all()


def test_gan_rows_have_the_schema_ranges_and_derived_physics(rows):
    out, ks = gan_augment(rows, target_ratio=0.1, config=GanConfig(steps=30, seed=1))
    failures = rows[rows[LABEL_COLUMN] == 1]
    synthetic = out[out["synthetic"]]
    assert list(out.columns) == list(AUGMENTED_COLUMNS)
    assert len(synthetic) == int(np.ceil(0.1 * (len(rows) - len(failures)))) - len(failures)
    assert (synthetic[LABEL_COLUMN] == 1).all() and synthetic["id"].isna().all()
    assert set(synthetic["machine_type"]) <= set(failures["machine_type"])
    for col in SENSORS:
        assert synthetic[col].between(failures[col].min(), failures[col].max()).all(), col
        assert synthetic[col].between(SENSOR_RANGES[col].low, SENSOR_RANGES[col].high).all(), col
    physics = add_physics(synthetic[["machine_type", *SENSORS]])
    assert np.allclose(physics["power_w"], synthetic["power_w"])
    assert np.allclose(physics["strain_min_nm"], synthetic["strain_min_nm"])
    assert list(ks.index[:5]) == SENSORS and len(ks) == 8
    assert ks["ks_statistic"].between(0, 1).all()
    again, _ = gan_augment(rows, target_ratio=0.1, config=GanConfig(steps=30, seed=1))
    pd.testing.assert_frame_equal(out, again)


def test_smote_adds_failures_only_inside_the_failures_span(rows):
    out = smote_augment(rows, target_ratio=0.2, seed=0)
    failures = rows[rows[LABEL_COLUMN] == 1]
    synthetic = out[out["synthetic"]]
    assert len(synthetic) == int(np.ceil(0.2 * (len(rows) - len(failures)))) - len(failures)
    assert (synthetic[LABEL_COLUMN] == 1).all()
    assert set(synthetic["machine_type"]) <= {"L", "M", "H"}
    for col in SENSORS:
        assert synthetic[col].between(failures[col].min(), failures[col].max()).all(), col
    pd.testing.assert_frame_equal(
        out[~out["synthetic"]][SENSORS].reset_index(drop=True), rows[SENSORS].reset_index(drop=True)
    )


def test_smote_adds_nothing_when_the_ratio_is_already_met(rows):
    assert smote_augment(rows, target_ratio=0.01)["synthetic"].sum() == 0


def test_holdout_is_seeded_stratified_and_independent_of_row_order(rows):
    ids = holdout_ids(rows, 0.2, seed=3)
    assert ids == holdout_ids(rows.sample(frac=1, random_state=9), 0.2, seed=3)
    assert ids != holdout_ids(rows, 0.2, seed=4)
    held = rows[rows["id"].isin(ids)]
    assert len(held) == 300 and held[LABEL_COLUMN].sum() == 12


def test_holdout_of_a_subset_is_the_same_rows(rows):
    split = holdout_split(rows, 0.2, seed=0)
    cleaned = rows.iloc[::2]
    remaining = without_holdout(cleaned, holdout_ids(rows, 0.2, seed=0))
    assert set(remaining["id"]) == set(cleaned["id"]) - set(split.holdout["id"])


def test_augmented_rows_never_appear_in_the_holdout(rows):
    split = holdout_split(rows, 0.2, seed=0)
    held = frozenset(int(i) for i in split.holdout["id"])
    augmented = {
        "gan": gan_augment(split.train, 0.1, GanConfig(steps=10))[0],
        "smote": smote_augment(split.train, 0.1),
        "corruption": cor.corruption_augment(split.train, 30, strategy="cosine"),
    }
    for name, df in augmented.items():
        assert_disjoint(df, held, name)
        assert not set(df["id"].dropna()) & held, name
        assert len(df) > len(split.train), name
    leaky = pd.concat([augmented["smote"], split.holdout.iloc[:1]])
    with pytest.raises(MfdError, match="1 holdout row"):
        assert_disjoint(leaky, held, "leaky")


def test_bad_input_is_refused_with_the_column_to_fix(rows):
    with pytest.raises(MfdError, match=r"lacks column\(s\) \['torque_nm'\]"):
        smote_augment(rows.drop(columns=["torque_nm"]))
    with pytest.raises(MfdError, match="missing or duplicate ids"):
        holdout_ids(pd.concat([rows, rows.iloc[:1]]))
    with pytest.raises(MfdError, match="at least 2 real failures"):
        gan_augment(rows[rows[LABEL_COLUMN] == 0].iloc[:50].assign(**{LABEL_COLUMN: 0}), 0.5)


def test_gan_conditions_on_machine_type_and_failure_modes(rows):
    failures = rows[rows[LABEL_COLUMN] == 1]
    cond = conditions(failures)
    assert cond.shape == (len(failures), 3 + 5)
    assert (cond[:, :3].sum(axis=1) == 1).all()
    assert np.array_equal(cond[:, 3 + 1], failures["hdf"].astype(float).to_numpy())  # twf, hdf, ...
    without_modes = failures.drop(columns=["twf", "hdf", "pwf", "osf", "rnf"])
    assert conditions(without_modes).shape == (len(failures), 3)
    out, _ = gan_augment(rows.drop(columns=["twf", "hdf", "pwf", "osf", "rnf"]), 0.1, GanConfig(steps=10))
    assert out["synthetic"].sum() > 0
