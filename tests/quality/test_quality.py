"""The quality panel: every classifier x training set row, honest skips, config errors, and the
augmentation + quality assets materialized end to end (object store: local directory and real S3)."""

import io
import json

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from dagster_aws.s3 import S3Resource

from mfd.errors import MfdError
from mfd.modeling.holdout import holdout_split
from mfd.modeling.shifts import NoiseLevels
from mfd.profiles.ai4i_reference import load_ai4i
from mfd.quality.panel import CLASSIFIERS, TABLE_COLUMNS, PanelConfig, lift_summary, run_panel
from mfd.schema import LABEL_COLUMN
from mfd_assets.augmentation import augmented_sets
from mfd_assets.quality import REPORT_KEY, quality_scores
from mfd_assets.training import holdout as holdout_asset
from mfd_resources import LocalObjectStore, S3ObjectStore

TINY_GRIDS = {
    "KNN": {"n_neighbors": [3, 7]},
    "SVC": {"C": [1.0]},
    "DecisionTree": {"max_depth": [3, None]},
    "RandomForest": {"n_estimators": [10]},
    "MLP": {"alpha": [1e-3]},
    "AdaBoost": {"n_estimators": [10]},
    "GaussianNB": {"var_smoothing": [1e-9]},
    "QDA": {"shrinkage": [0.1]},
}


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    df = load_ai4i()
    df.insert(0, "id", np.arange(1, len(df) + 1, dtype="int64"))
    failures = df[df[LABEL_COLUMN] == 1].iloc[:50]
    others = df[df[LABEL_COLUMN] == 0].sample(950, random_state=1)
    return pd.concat([failures, others]).sort_values("id").reset_index(drop=True)


def test_panel_has_every_classifier_by_dataset_row_with_scores(rows):
    split = holdout_split(rows, 0.25, seed=0)
    sets = {"raw": split.train, "half": split.train.iloc[::2], "copy": split.train}
    config = PanelConfig(grids=TINY_GRIDS, folds=2, n_jobs=2, max_train_rows={"SVC": 300}, time_budget_s=3600)
    table = run_panel(sets, split.holdout, config)
    assert list(table.columns) == list(TABLE_COLUMNS)
    assert sorted(zip(table["dataset"], table["classifier"], strict=True)) == sorted(
        (d, c) for d in sets for c in CLASSIFIERS
    )
    for metric in ("roc_auc", "pr_auc", "f1", "cv_pr_auc"):
        assert table[metric].between(0, 1).all(), metric
    assert (table[["search_s", "fit_s", "predict_s"]] >= 0).all().all()
    svc = table[table["classifier"] == "SVC"].set_index("dataset")
    assert svc.loc["raw", "train_rows"] == 300 and svc.loc["raw", "note"] == "subsampled 300/750 rows"
    assert svc.loc["half", "train_rows"] == 300
    knn = table[(table["classifier"] == "KNN") & (table["dataset"] == "raw")].iloc[0]
    assert knn["train_rows"] == 750 and knn["note"] == ""
    assert json.loads(knn["best_params"])["n_neighbors"] in (3, 7)
    # The same data and seed give the same scores: the holdout and CV splits are seeded.
    both = table.set_index(["dataset", "classifier"])
    assert np.allclose(both.loc["raw", "pr_auc"], both.loc["copy", "pr_auc"])
    lift = lift_summary(table)
    assert lift.loc["raw", "pr_auc_lift"] == 0 and list(lift.index) == list(sets)


def test_panel_scores_every_classifier_on_the_shifted_holdouts_too(rows):
    split = holdout_split(rows, 0.25, seed=0)
    noisy = NoiseLevels.of(seed=4, torque_nm=0.3).apply(split.holdout)
    config = PanelConfig(
        classifiers=("DecisionTree", "GaussianNB"), grids=TINY_GRIDS, folds=2, n_jobs=1, time_budget_s=3600
    )
    table = run_panel(
        {"raw": split.train, "copy": split.train}, split.holdout, config, shifted={"noisy": noisy}
    )
    assert list(table.columns) == [*TABLE_COLUMNS, "noisy_roc_auc", "noisy_pr_auc"]
    assert table["noisy_pr_auc"].between(0, 1).all()
    # the same holdout under heavy torque noise is harder than the clean one
    assert table["noisy_pr_auc"].mean() < table["pr_auc"].mean()
    lift = lift_summary(table)
    assert lift.loc["copy", "noisy_pr_auc_lift"] == pytest.approx(0.0)


def test_spent_time_budget_lists_the_remaining_rows_as_skipped(rows):
    split = holdout_split(rows, 0.25, seed=0)
    config = PanelConfig(classifiers=("GaussianNB", "QDA"), grids=TINY_GRIDS, folds=2, time_budget_s=0)
    table = run_panel({"raw": split.train, "other": split.train}, split.holdout, config)
    assert len(table) == 4
    assert table["pr_auc"].isna().all()
    assert (table["note"] == "skipped: time budget of 0 s spent").all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"classifiers": ("KNN", "XGBoost")}, r"unknown classifier\(s\) \['XGBoost'\]"),
        ({"folds": 1}, "CV folds must be at least 2"),
        ({"grids": {**TINY_GRIDS, "KNN": {"n_neighbors": []}}}, "the grid for KNN"),
    ],
)
def test_bad_panel_config_says_what_to_fix(kwargs, message):
    with pytest.raises(MfdError, match=message):
        PanelConfig(**kwargs)


def test_too_few_failures_for_the_folds_is_refused(rows):
    split = holdout_split(rows, 0.25, seed=0)
    failure = split.train[LABEL_COLUMN] == 1
    train = pd.concat([split.train[failure].iloc[:2], split.train[~failure].iloc[:100]])
    config = PanelConfig(classifiers=("GaussianNB",), grids=TINY_GRIDS, folds=5)
    with pytest.raises(MfdError, match="5-fold CV needs at least 5 rows of each class"):
        run_panel({"raw": train}, split.holdout, config)


def _run_config(store_key: str = "object_store") -> dict:
    return {
        "ops": {
            "augmented_sets": {"config": {"gan_steps": 40, "corruption_rows": 60, "target_ratio": 0.1}},
            "quality_scores": {
                "config": {
                    "folds": 2,
                    "n_jobs": 1,
                    "grids": {name: json.dumps(grid) for name, grid in TINY_GRIDS.items()},
                    "max_train_rows": {"SVC": 400},
                    "time_budget_s": 3600,
                }
            },
        }
    }


@pytest.fixture(params=["local", "s3"])
def object_store(request, tmp_path):
    if request.param == "local":
        return LocalObjectStore(root=str(tmp_path / "objects"))
    server = request.getfixturevalue("s3")
    resource = S3Resource(
        endpoint_url=server.endpoint_url,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name=server.region,
    )
    return S3ObjectStore(s3=resource, bucket=request.getfixturevalue("bucket"))


def _sources(training: pd.DataFrame, cleaned: pd.DataFrame) -> list[dg.AssetsDefinition]:
    """Stand-ins for the preparation assets: `training_set` and `cleaned_set` returning fixed frames."""

    @dg.asset(name="training_set")
    def small_training_set() -> pd.DataFrame:
        return training

    @dg.asset(name="cleaned_set")
    def small_cleaned_set() -> pd.DataFrame:
        return cleaned

    return [small_training_set, small_cleaned_set]


def test_augmentation_and_quality_assets_materialize(rows, object_store, tmp_path):
    sources = _sources(rows, rows.iloc[10:])
    instance = dg.DagsterInstance.ephemeral(tempdir=str(tmp_path / "dagster"))
    result = dg.materialize(
        [*sources, holdout_asset, augmented_sets, quality_scores],
        instance=instance,
        resources={"object_store": object_store},
        run_config=_run_config(),
    )
    assert result.success
    table = result.output_for_node("quality_scores")
    assert len(table) == 8 * 6
    assert set(table["dataset"]) == {"raw", "cleaned", "jitter", "gan", "oversampling", "corruption"}
    csv = pd.read_csv(io.BytesIO(object_store.objects().get(REPORT_KEY)))
    shifted = ["noisy_roc_auc", "noisy_pr_auc", "label_noise_roc_auc", "label_noise_pr_auc"]
    assert len(csv) == 48 and list(csv.columns) == [*TABLE_COLUMNS, *shifted]

    holdout = holdout_split(rows, 0.2, seed=0).holdout
    for name in ("augmented_gan", "augmented_oversampling", "augmented_corruption"):
        augmented = result.output_for_node("augmented_sets", name)
        assert not set(augmented["id"].dropna()) & set(holdout["id"]), name
        assert set(augmented["id"].dropna()) == set(rows["id"]) - set(holdout["id"]), name
        added = result.asset_materializations_for_node("augmented_sets")
        assert any(m.asset_key.path == [name] for m in added)

    by_key = {
        m.asset_key.path[0]: m.metadata for m in result.asset_materializations_for_node("augmented_sets")
    }
    assert by_key["augmented_corruption"]["rows_added"].value == 60
    assert by_key["augmented_gan"]["rows_added"].value > 0
    assert "ks_statistic" in [
        c.name for c in by_key["augmented_gan"]["ks_vs_real_failures"].value.schema.columns
    ]
    quality = result.asset_materializations_for_node("quality_scores")[0].metadata
    assert "data:image/png;base64," in quality["pr_auc_chart"].value
    assert "oversampling" in [r.data["dataset"] for r in quality["scores"].value.records]
    assert quality["holdout_rows"].value == len(holdout)
    lift = quality["lift_over_raw"].value
    assert "noisy_pr_auc_lift" in [c.name for c in lift.schema.columns]
    assert "jitter" in [r.data["dataset"] for r in lift.records]
    assert quality["shift_settings"].value["noise_torque_nm"] == 0.03


def test_quality_refuses_augmented_sets_built_with_another_holdout(rows, tmp_path):
    sources = _sources(rows, rows)
    assets = [*sources, holdout_asset, augmented_sets, quality_scores]
    instance = dg.DagsterInstance.ephemeral(tempdir=str(tmp_path / "dagster"))
    resources = {"object_store": LocalObjectStore(root=str(tmp_path / "objects"))}
    stale = {
        "ops": {"augmented_sets": _run_config()["ops"]["augmented_sets"], "holdout": {"config": {"seed": 1}}}
    }
    built = dg.materialize(
        assets,
        selection=[
            "training_set",
            "cleaned_set",
            "holdout",
            "augmented_gan",
            "augmented_oversampling",
            "augmented_corruption",
        ],
        instance=instance,
        resources=resources,
        run_config=stale,
    )
    assert built.success
    # the holdout changes afterwards; the stored augmented sets still hold some of its rows
    result = dg.materialize(
        assets,
        selection=["holdout", "quality_scores"],
        instance=instance,
        resources=resources,
        run_config={"ops": {"quality_scores": _run_config()["ops"]["quality_scores"]}},
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert failure.step_key == "quality_scores"
    assert "built with another holdout" in str(failure.step_failure_data.error.cause)
    assert not (tmp_path / "objects" / REPORT_KEY).exists()


def test_a_classifier_that_cannot_fit_gets_a_row_with_its_error(rows):
    split = holdout_split(rows, 0.25, seed=0)
    grids = {**TINY_GRIDS, "GaussianNB": {"var_smoothing": [-1.0]}}
    config = PanelConfig(
        classifiers=("GaussianNB", "DecisionTree"), grids=grids, folds=2, n_jobs=1, time_budget_s=3600
    )
    table = run_panel({"raw": split.train}, split.holdout, config).set_index("classifier")
    assert np.isnan(table.loc["GaussianNB", "pr_auc"])
    assert table.loc["GaussianNB", "note"].startswith("failed: ValueError")
    assert table.loc["DecisionTree", "pr_auc"] > 0


def test_one_augmented_set_materializes_on_its_own(rows, tmp_path):
    sources = _sources(rows, rows)
    result = dg.materialize(
        [*sources, holdout_asset, augmented_sets],
        selection=["training_set", "cleaned_set", "holdout", "augmented_corruption"],
        instance=dg.DagsterInstance.ephemeral(tempdir=str(tmp_path / "dagster")),
        run_config={
            "ops": {"augmented_sets": {"config": {"corruption_kind": "spike", "corruption_rows": 25}}}
        },
    )
    assert result.success
    keys = {m.asset_key.path[0] for m in result.asset_materializations_for_node("augmented_sets")}
    assert keys == {"augmented_corruption"}
    assert result.output_for_node("augmented_sets", "augmented_corruption")["synthetic"].sum() == 25
