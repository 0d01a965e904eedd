"""The stream's failure events and alarms are batch detection's: the same readings streamed through
`mfd stream` and scored by a prediction batch (`score_batch`, then `update_alarms` as the alarms asset
does) leave the same failure events, alerts and alarms."""

from __future__ import annotations

import sqlalchemy as sa
from streaming_helpers import champion_of, consuming, counts, fleet, publish, wait_for

from mfd.alarms import read_scored, update_alarms
from mfd.detection.batches import score_batch
from mfd.services import Postgres
from mfd.services.mosquitto import Mosquitto
from mfd.storage.readings import create_engine, ensure_tables, insert_readings
from mfd_resources import Tracking

EVENTS = (
    "SELECT r.machine_id, r.timestamp, round(f.probability::numeric, 9), f.top_features, f.model_version "
    "FROM failure_events f JOIN readings r ON r.id = f.reading_id"
)
ALARMS = (
    "SELECT machine_id, kind, state, count, first_seen, last_seen, round(peak_risk::numeric, 9) FROM alarms"
)


def _rows(engine: sa.Engine, sql: str) -> set[tuple]:
    with engine.connect() as conn:
        return set(conn.execute(sa.text(sql)).all())


def test_mqtt_stream_records_failure_events_and_opens_alarms_as_batch_detection(
    mosquitto: Mosquitto, postgres: Postgres, champion: Tracking
) -> None:
    readings = fleet(4, 80, seed=41)
    worn = readings.index[readings["machine_id"] == readings["machine_id"].iloc[0]][-8:]
    # one machine's last eight readings far past the overstrain and tool-wear rules: predicted failures
    readings.loc[worn, ["tool_wear_min", "torque_nm", "rotational_speed_rpm"]] = [240.0, 68.0, 1250.0]
    streamed, batched = (create_engine(postgres.create_database(n)) for n in ("streamed", "batched"))
    for engine in (streamed, batched):
        ensure_tables(engine)
    with consuming(mosquitto, streamed, champion, "alarms", batch_readings=25) as consumer:
        publish(mosquitto, readings)
        # the counters move once a batch is committed and taken into the alarms
        wait_for(lambda: consumer.status.scored == len(readings), "every reading scored and taken")
    assert counts(streamed)["predictions"] == len(readings)
    model, policy = champion_of(champion)()
    insert_readings(batched, readings)
    score_batch(batched, model, 1, len(readings), policy)
    thresholds = {k: float(v) for k, v in policy.thresholds.items() if k != "all"}
    update_alarms(batched, read_scored(batched, 1, len(readings)), thresholds=thresholds or None)
    events = _rows(streamed, EVENTS)
    assert len(events) >= 3, "the worn machine's readings should be predicted failures"
    assert events == _rows(batched, EVENTS)
    alarms = _rows(streamed, ALARMS)
    assert readings.loc[worn[0], "machine_id"] in {a[0] for a in alarms}, (
        "the worn machine's streak opens one"
    )
    assert alarms == _rows(batched, ALARMS)
    risk = "SELECT machine_id, streak, round(risk::numeric, 9) FROM machine_risk"
    assert _rows(streamed, risk) == _rows(batched, risk)
    outbox = "SELECT count(*) FROM alert_outbox"  # one alert per machine's episode of events (issue 24)
    assert _rows(streamed, outbox) == _rows(batched, outbox) == {(len({e[0] for e in events}),)}
    for engine in (streamed, batched):
        engine.dispose()
