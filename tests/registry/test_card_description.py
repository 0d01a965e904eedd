"""A model card longer than MLflow's registry holds (a 5,000-character description column: PostgreSQL
refuses a longer one) is cut for the description and points at the full artifact."""

from __future__ import annotations

from mfd.registry.model_card import DESCRIPTION_LIMIT, description


def test_a_long_card_is_cut_to_the_limit_and_names_the_artifact() -> None:
    card = "# Model card\n" + "row\n" * 3000
    cut = description(card, "run123", "7")
    assert len(cut) == DESCRIPTION_LIMIT == 5000
    assert cut.startswith("# Model card\nrow\n")
    assert cut.endswith("the whole card is runs:/run123/model_card/v7/model_card.md)\n")


def test_a_card_within_the_limit_is_kept_whole() -> None:
    card = "# Model card\n" + "x" * (DESCRIPTION_LIMIT - 13)
    assert len(card) == DESCRIPTION_LIMIT and description(card, None, "1") == card
