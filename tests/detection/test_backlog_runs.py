"""A large backlog is caught up in runs sized to it (issue 24), in the backlog lane; new readings are not. A
prediction run that failed for good has its range requested once more: the cursor skips no reading."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
from dagster._core.test_utils import create_run_for_test

from mfd.detection.planning import BACKLOG_ROWS, BACKLOG_RUN_ROWS, rows_per_run
from mfd_sensors.prediction import WILL_RETRY_TAG as WILL_RETRY
from mfd_sensors.prediction import lane_tags, rescue_requests

FAILURE, SUCCESS = dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.SUCCESS


def test_runs_grow_with_a_backlog_up_to_the_cap() -> None:
    assert rows_per_run(1_500, 20_000, 5) == 20_000  # a new file: the configured size
    assert rows_per_run(BACKLOG_ROWS, 20_000, 5) == 20_000
    assert rows_per_run(300_000, 20_000, 5) == 300_000  # one run: the lane runs one at a time
    assert rows_per_run(2_850_000, 20_000, 5) == BACKLOG_RUN_ROWS
    assert rows_per_run(250, 60, 3) == 60  # small: as configured


def test_backlog_runs_go_in_their_own_lane_after_the_others() -> None:
    assert lane_tags(True) == {"mfd/lane": "backlog", "dagster/priority": "-1"}
    assert lane_tags(False) == {"mfd/lane": "fresh"}


def test_a_prediction_run_failed_for_good_is_requested_once_more_with_its_range() -> None:
    config = {"ops": {"prediction_batches": {"config": {"first_id": 11, "last_id": 20}}}}
    tags = {"mfd/reading_ids": "11-20", "mfd/rows": "10", "mfd/lane": "fresh"}
    with dg.instance_for_test() as instance:
        root = create_run_for_test(
            instance, "prediction_job", run_config=config, status=FAILURE, tags={**tags, WILL_RETRY: "true"}
        )
        create_run_for_test(
            instance,
            "prediction_job",
            run_config=config,
            status=FAILURE,
            tags={**tags, WILL_RETRY: "false", "dagster/root_run_id": root.run_id},
            root_run_id=root.run_id,
            parent_run_id=root.run_id,
        )
        create_run_for_test(instance, "prediction_job", status=SUCCESS, tags={**tags, WILL_RETRY: "false"})
        [again] = rescue_requests(instance, datetime.now(UTC))
        assert again.run_key == f"predictions-11-20-again-{root.run_id}"
        assert again.run_config == config and again.tags["mfd/again_after"] == root.run_id
        # The request again fails for good: it is not requested a third time.
        create_run_for_test(
            instance,
            "prediction_job",
            run_config=config,
            status=FAILURE,
            tags={**again.tags, WILL_RETRY: "false"},
        )
        assert [r.run_key for r in rescue_requests(instance, datetime.now(UTC))] == [again.run_key]
