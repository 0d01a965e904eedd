"""Augmentation group: one augmented training set per method, each built only from training-part rows."""

from collections.abc import Iterator
from typing import Literal

import dagster as dg
import pandas as pd
from pydantic import Field

from mfd.augmentation.corruption import corruption_augment
from mfd.augmentation.oversampling import smote_augment
from mfd.modeling.holdout import without_holdout
from mfd.schema import LABEL_COLUMN
from mfd_assets.metadata import table


class AugmentationConfig(dg.Config):
    base: Literal["raw", "cleaned"] = Field(
        "raw", description="augment training_set (raw, so the lift is the method's own) or cleaned_set"
    )
    target_ratio: float = Field(0.25, description="GAN / SMOTE: failures per non-failure after augmenting")
    gan_steps: int = Field(400, description="GAN training steps (batches)")
    gan_seed: int = 0
    smote_k_neighbors: int = 5
    smote_seed: int = 0
    corruption_kind: Literal["dropout", "mosaic", "spike", "stuck", "drift", "mixed"] = "mixed"
    corruption_rows: int = Field(1000, description="corrupted rows added to the training data")
    selection_strategy: Literal["random", "l1", "l2", "cosine"] = Field(
        "cosine", description="how the corrupted rows that join are picked"
    )
    selection_reference: Literal["minority", "misclassified"] = Field(
        "minority", description="distances are measured to the failures or to misclassified rows"
    )
    corruption_seed: int = 0


def _summary(augmented: pd.DataFrame, base_rows: int, holdout_rows: int, **extra: object) -> dict:
    synthetic = augmented[augmented["synthetic"]]
    return {
        "rows_added": dg.MetadataValue.int(len(synthetic)),
        "synthetic_failures": dg.MetadataValue.int(int(synthetic[LABEL_COLUMN].astype("int64").sum())),
        "real_rows": dg.MetadataValue.int(base_rows),
        "holdout_rows_excluded": dg.MetadataValue.int(holdout_rows),
        "failure_rate": dg.MetadataValue.float(float(augmented[LABEL_COLUMN].astype("int64").mean())),
        "dagster/row_count": dg.MetadataValue.int(len(augmented)),
        **extra,
    }


@dg.multi_asset(
    outs={
        "augmented_gan": dg.AssetOut(
            description="training rows + failures from a conditional GAN", is_required=False
        ),
        "augmented_oversampling": dg.AssetOut(
            description="training rows + SMOTE failures", is_required=False
        ),
        "augmented_corruption": dg.AssetOut(
            description="training rows + selected corrupted copies", is_required=False
        ),
    },
    group_name="augmentation",
    can_subset=True,
)
def augmented_sets(
    context: dg.AssetExecutionContext,
    config: AugmentationConfig,
    training_set: pd.DataFrame,
    cleaned_set: pd.DataFrame,
    holdout: pd.DataFrame,
) -> Iterator[dg.Output]:
    """Augmented training sets, one per method; the `holdout` rows never reach them."""
    held = frozenset(int(i) for i in holdout["id"])
    source = cleaned_set if config.base == "cleaned" else training_set
    train = without_holdout(source, held)
    excluded = len(source) - len(train)
    selected = {key.to_user_string() for key in context.selected_asset_keys}
    if "augmented_gan" in selected:
        from mfd.augmentation.gan import GanConfig, gan_augment  # torch: imported only when a GAN runs

        gan_config = GanConfig(steps=config.gan_steps, seed=config.gan_seed)
        augmented, ks = gan_augment(train, config.target_ratio, gan_config)
        yield dg.Output(
            augmented,
            output_name="augmented_gan",
            metadata=_summary(
                augmented,
                len(train),
                excluded,
                ks_vs_real_failures=table(ks, digits=3),
                max_ks_statistic=dg.MetadataValue.float(float(ks["ks_statistic"].max())),
                seed=config.gan_seed,
            ),
        )
    if "augmented_oversampling" in selected:
        augmented = smote_augment(train, config.target_ratio, config.smote_k_neighbors, config.smote_seed)
        yield dg.Output(
            augmented,
            output_name="augmented_oversampling",
            metadata=_summary(augmented, len(train), excluded, seed=config.smote_seed),
        )
    if "augmented_corruption" in selected:
        augmented = corruption_augment(
            train,
            config.corruption_rows,
            config.corruption_kind,
            config.selection_strategy,
            config.selection_reference,
            config.corruption_seed,
        )
        yield dg.Output(
            augmented,
            output_name="augmented_corruption",
            metadata=_summary(
                augmented,
                len(train),
                excluded,
                corruption=config.corruption_kind,
                selection=f"{config.selection_strategy} to {config.selection_reference}",
                seed=config.corruption_seed,
            ),
        )
