"""A large backlog is caught up in runs sized to it (issue 24), in the backlog lane; new readings are not."""

from __future__ import annotations

from mfd.detection.planning import BACKLOG_ROWS, BACKLOG_RUN_ROWS, rows_per_run
from mfd_sensors.prediction import lane_tags


def test_runs_grow_with_a_backlog_up_to_the_cap() -> None:
    assert rows_per_run(1_500, 20_000, 5) == 20_000  # a new file: the configured size
    assert rows_per_run(BACKLOG_ROWS, 20_000, 5) == 20_000
    assert rows_per_run(300_000, 20_000, 5) == 60_000  # spread over the tick's runs
    assert rows_per_run(2_850_000, 20_000, 5) == BACKLOG_RUN_ROWS
    assert rows_per_run(250, 60, 3) == 60  # small: as configured


def test_backlog_runs_go_in_their_own_lane_after_the_others() -> None:
    assert lane_tags(True) == {"mfd/lane": "backlog", "dagster/priority": "-1"}
    assert lane_tags(False) == {"mfd/lane": "fresh"}
