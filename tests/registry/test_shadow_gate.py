"""The shadow gate against real PostgreSQL and MLflow: a new version has no shadow evidence (reported; the
gate blocks or leaves it to the holdout), a shadowed challenger alerting far more than the champion is
refused with that reason, one whose evidence is good takes over. Every verdict comes from the stored
`predictions` and `shadow_predictions` rows the detection code wrote."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from mlflow import start_run
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sqlalchemy.engine import Engine

from mfd.cli.main import main
from mfd.detection.batches import score_batch
from mfd.detection.shadow import Challenger, challenger_policy
from mfd.modeling.model_io import CHALLENGER, CHAMPION, load_model_version, load_version, log_failure_model
from mfd.modeling.pipeline import build_pipeline
from mfd.profiles.ai4i_reference import load_ai4i
from mfd.registry import promotion as registry
from mfd.registry.shadow_evidence import HOLDOUT, ShadowGate
from mfd.schema import LABEL_COLUMN
from mfd.services import free_port
from mfd.storage.tables import predictions, readings, shadow_predictions
from mfd_assets.jobs import promote_challenger
from mfd_assets.training import (
    CandidateModelConfig,
    ChampionModelConfig,
    candidate_model,
    champion_model,
    holdout,
)
from mfd_resources import ReadingsStore, Tracking
from mfd_sensors.promotion import build_shadow_promotion_sensor, evidence_step

pytestmark = pytest.mark.integration

GATE = ShadowGate(min_readings=1000, min_agreement=0.9, max_alert_rate_ratio=1.5, min_labelled=200)


@pytest.fixture(autouse=True)
def mfd_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MFD_HOME", str(tmp_path / "home"))


def _sample() -> pd.DataFrame:
    return load_ai4i().sample(1500, random_state=7)


@pytest.fixture(scope="module")
def model_uri(champion: Tracking) -> str:
    """The champion fixture's HistGradientBoosting model (it learnt all of AI4I), to register again as
    challengers: it wins on any AI4I holdout against the logistic regression champion below."""
    client = champion.client()
    return client.get_model_version(champion.model_name, _champion(champion)).source


@pytest.fixture(scope="module")
def weak(champion: Tracking, model_uri: str) -> Tracking:
    """A logistic regression as champion, its threshold set so it raises as many alerts on the sample as
    the strong model at 0.5: a strong challenger at 0.5 alerts at the same rate and mostly agrees."""
    ai4i = load_ai4i()
    pipeline = build_pipeline(LogisticRegression(max_iter=500))
    pipeline.fit(ai4i, ai4i[LABEL_COLUMN].astype(int))
    strong = load_model_version(champion.client(), champion.model_name, _champion(champion))
    alerts = int((strong.probability(_sample()) >= 0.5).sum())
    threshold = float(np.sort(pipeline.predict_proba(_sample())[:, 1])[::-1][alerts - 1])
    with start_run(experiment_id=champion.experiment_id()):
        _, version = log_failure_model(
            pipeline, ai4i, registered_name=champion.model_name, threshold=threshold
        )
    champion.client().set_registered_model_alias(champion.model_name, CHAMPION, version.version)
    return champion


@pytest.fixture
def store(pg_url: str) -> ReadingsStore:
    store = ReadingsStore(url=pg_url)
    store.insert(_sample())
    return store


def _champion(tracking: Tracking) -> str:
    return str(tracking.client().get_model_version_by_alias(tracking.model_name, CHAMPION).version)


def _register(
    tracking: Tracking, uri: str, threshold: float, engine: Engine, gate: ShadowGate = GATE
) -> registry.Decision:
    """A new version through the gate; margin -1: it always wins on the holdout."""
    holdout = load_ai4i().sample(2000, random_state=3)
    return registry.promote_candidate(
        tracking.client(),
        tracking.model_name,
        uri,
        holdout,
        threshold=threshold,
        margin=-1.0,
        shadow_gate=gate,
        engine=engine,
    )


def _score(tracking: Tracking, engine: Engine, version: str, rows: int) -> None:
    """The first `rows` readings scored by the champion (predictions) and by `version` (shadow)."""
    ids = pd.read_sql("select id from readings order by id", engine)["id"].tolist()[:rows]
    client = tracking.client()
    model = load_model_version(client, tracking.model_name, version)
    challenger = Challenger(model, challenger_policy(client, tracking.model_name, model))
    champion = load_version(client, tracking.model_name, CHAMPION)
    score_batch(engine, champion, ids[0], ids[-1], challenger=challenger)


def _both(engine: Engine, version: str) -> pd.DataFrame:
    """The stored champion (`_p`) and shadow (`_s`) rows of the readings both scored, with their labels."""
    with engine.connect() as conn:
        p = pd.read_sql(sa.select(predictions), conn)
        s = pd.read_sql(
            sa.select(shadow_predictions).where(shadow_predictions.c.model_version == version), conn
        )
        r = pd.read_sql(sa.select(readings.c.id, readings.c[LABEL_COLUMN]), conn)
    both = s.merge(p, on="reading_id", suffixes=("_s", "_p"))
    return both.merge(r, left_on="reading_id", right_on="id").astype({LABEL_COLUMN: "int64"})


def _alerts(engine: Engine, version: str) -> tuple[int, int]:
    """Champion and challenger alerts on the readings both scored, counted from the stored rows."""
    with engine.connect() as conn:
        champion = conn.execute(
            sa.select(sa.func.sum(predictions.c.label))
            .join(shadow_predictions, shadow_predictions.c.reading_id == predictions.c.reading_id)
            .where(shadow_predictions.c.model_version == version)
        ).scalar_one()
        challenger = conn.execute(
            sa.select(sa.func.sum(shadow_predictions.c.label)).where(
                shadow_predictions.c.model_version == version
            )
        ).scalar_one()
    return int(champion), int(challenger)


def test_a_new_version_has_no_shadow_evidence_the_gate_says_so(
    weak: Tracking, model_uri: str, store: ReadingsStore
) -> None:
    champion = weak
    before = _champion(champion)
    blocked = _register(champion, model_uri, 0.5, store.engine)
    assert blocked.promoted is False and blocked.champion_after == before
    assert blocked.reason.startswith("champion kept: shadow evidence insufficient: 0 readings scored by both")
    assert f"version {blocked.challenger} stays challenger" in blocked.reason
    client = champion.client()
    assert (
        str(client.get_model_version_by_alias(champion.model_name, CHALLENGER).version) == blocked.challenger
    )
    assert "shadow_readings" in blocked.table().columns

    # Half the evidence needed, then the fallback to the holdout.
    _score(champion, store.engine, blocked.challenger, 500)
    waiting = registry.promote_challenger(client, champion.model_name, store.engine, GATE)
    assert waiting.promoted is False and _champion(champion) == before
    assert "shadow evidence insufficient: 500 readings scored by both (need 1000)" in waiting.reason
    lenient = ShadowGate(min_readings=1000, on_insufficient=HOLDOUT)
    fallback = registry.promote_challenger(client, champion.model_name, store.engine, lenient)
    assert fallback.promoted is True and "the holdout alone decides" in fallback.reason
    assert _champion(champion) == blocked.challenger
    client.set_registered_model_alias(champion.model_name, CHAMPION, before)  # the next tests' champion


def test_a_challenger_alerting_far_more_than_the_champion_is_refused(
    weak: Tracking, model_uri: str, store: ReadingsStore
) -> None:
    champion = weak
    before = _champion(champion)
    eager = _register(champion, model_uri, 0.005, store.engine).challenger
    _score(champion, store.engine, eager, 1500)
    champion_alerts, challenger_alerts = _alerts(store.engine, eager)
    ratio = challenger_alerts / max(champion_alerts, 1)
    assert ratio > GATE.max_alert_rate_ratio, (champion_alerts, challenger_alerts)

    decision = registry.promote_challenger(champion.client(), champion.model_name, store.engine, GATE)
    assert decision.promoted is False and _champion(champion) == before
    assert decision.reason.startswith("champion kept: shadow evidence against:")
    assert f"is {ratio:.2f}x the champion's (max 1.5x)" in decision.reason, decision.reason
    table = decision.table()
    assert table.loc[f"challenger v{eager}", "shadow_alerts"] == challenger_alerts
    assert table.loc[f"champion v{before}", "shadow_alerts"] == champion_alerts
    tags = champion.client().get_model_version(champion.model_name, eager).tags
    assert tags[registry.SHADOW_VERDICT_TAG].startswith("shadow evidence against")


def test_champion_compare_prints_holdout_shadow_and_replay_side_by_side(
    weak: Tracking,
    model_uri: str,
    store: ReadingsStore,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    champion = weak
    before = _champion(champion)
    twin = _register(champion, model_uri, 0.5, store.engine).challenger
    _score(champion, store.engine, twin, 1500)
    monkeypatch.setenv("MFD_DATABASE_URL", store.url)
    monkeypatch.setenv("MFD_MLFLOW_TRACKING_URI", champion.tracking_uri)
    monkeypatch.setenv("MFD_MODEL_NAME", champion.model_name)
    capsys.readouterr()
    assert main(["champion", "compare", "--days", "100000"]) == 0
    out = capsys.readouterr().out
    holdout, rest = out.split("shadow (readings both scored):")
    shadow, replay = rest.split("replay of the last 100000 days (1500 readings")
    tags = champion.client().get_model_version(champion.model_name, twin).tags
    assert holdout.startswith("holdout (the challenger's, both scored at its registration):")
    for tag in ("holdout_pr_auc", f"{registry.CHAMPION_SCORE_PREFIX}pr_auc"):  # 1 and about 0.54
        assert f"{float(tags[tag]):.4g}"[:4] in holdout
    both = _both(store.engine, twin)
    agreement = float((both["label_p"] == both["label_s"]).mean())
    for section in (holdout, shadow, replay):
        assert f"challenger v{twin}" in section and f"champion v{before}" in section
    assert f"{agreement:.4g}"[:4] in shadow
    alerts = _alerts(store.engine, twin)
    assert all(re.search(rf"\b{n}\b", shadow) for n in alerts), shadow
    assert "replay not worse" in replay or "replay worse" in replay, replay


def test_a_challenger_with_good_shadow_evidence_takes_over(
    weak: Tracking, model_uri: str, store: ReadingsStore
) -> None:
    """Through shadow_promotion_sensor: no run before the gate's evidence bar, one run key at it."""
    champion = weak
    before = _champion(champion)
    resources = {"tracking": champion, "readings_store": store}
    sensor = build_shadow_promotion_sensor(min_readings=GATE.min_readings)
    instance = dg.DagsterInstance.ephemeral()

    def tick() -> dg.SensorExecutionData:
        return sensor.evaluate_tick(dg.build_sensor_context(instance=instance, resources=resources))

    twin = _register(champion, model_uri, 0.5, store.engine).challenger
    _score(champion, store.engine, twin, 500)
    early = tick()
    assert not early.run_requests and f"v{twin} has shadowed 500 of the 1000" in early.skip_message
    _score(champion, store.engine, twin, 1500)
    champion_alerts, challenger_alerts = _alerts(store.engine, twin)
    assert champion_alerts == challenger_alerts > 0
    (request,) = tick().run_requests
    assert request.run_key == f"promote-v{twin}-1000" and request.tags["mfd/trigger"] == "shadow"
    assert [r.run_key for r in tick().run_requests] == [request.run_key]  # same evidence, same key

    result = promote_challenger.execute_in_process(
        resources=resources, run_config=request.run_config, instance=instance
    )
    assert result.success
    [event] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_OUTPUT]
    meta = {k: v.value for k, v in event.step_output_data.metadata.items()}
    assert meta["promoted"] is True, meta["reason"]
    assert "shadow evidence passed: 1500 readings" in meta["reason"]
    both = _both(store.engine, twin)
    agreement = float((both["label_p"] == both["label_s"]).mean())
    assert GATE.min_agreement <= agreement < 1.0 and f"agreement {agreement:.4f}" in meta["reason"]
    pr_aucs = [average_precision_score(both[LABEL_COLUMN], both[f"probability_{t}"]) for t in "sp"]
    assert f"PR AUC on 1500 labelled {pr_aucs[0]:.4f} vs {pr_aucs[1]:.4f}" in meta["reason"]
    assert _champion(champion) == twin != before
    assert registry.history(champion.client(), champion.model_name)[-1] == twin
    after = tick()
    assert not after.run_requests and "no challenger awaits a shadow verdict" in after.skip_message


def test_champion_model_with_the_shadow_gate_reports_a_new_version_without_evidence(
    weak: Tracking, store: ReadingsStore
) -> None:
    """The asset path: champion_model with shadow_gate on registers the candidate, finds no shadow rows
    of the new version in the readings store, keeps the champion and says so in its metadata."""
    champion = weak
    before = _champion(champion)
    frame = load_ai4i().head(3000).copy()
    frame.insert(0, "id", np.arange(1, len(frame) + 1, dtype="int64"))

    @dg.asset(name="training_set")
    def training_set() -> pd.DataFrame:
        return frame

    @dg.asset(name="cleaned_set", deps=[training_set])
    def cleaned_set() -> pd.DataFrame:
        return frame

    result = dg.materialize(
        [training_set, cleaned_set, holdout, candidate_model, champion_model],
        resources={"tracking": champion, "readings_store": store},
        run_config=dg.RunConfig(
            {
                "candidate_model": CandidateModelConfig(family="logreg", folds=2, trials=1),
                "champion_model": ChampionModelConfig(margin=-1.0, replay_days=0, shadow_gate=True),
            }
        ),
    )
    [event] = result.asset_materializations_for_node("champion_model")
    meta = {k: v.value for k, v in event.metadata.items()}
    insufficient = "shadow evidence insufficient: 0 readings scored by both (need 1000)"
    assert meta["promoted"] is False and insufficient in meta["reason"]
    assert meta["shadow_verdict"] == insufficient and _champion(champion) == before
    assert "shadow_readings" in [c.name for c in meta["scores"].schema.columns]


def test_evidence_steps_double_from_the_gates_bar() -> None:
    steps = [evidence_step(n, 1000) for n in (0, 999, 1000, 1999, 2000, 3999, 4100)]
    assert steps == [None, None, 1000, 1000, 2000, 2000, 4000]


def test_the_promotion_sensor_skips_a_tick_while_the_registry_is_down(store: ReadingsStore) -> None:
    down = Tracking(tracking_uri=f"http://127.0.0.1:{free_port()}", model_name="nobody-listens")
    sensor = build_shadow_promotion_sensor(min_readings=GATE.min_readings)
    context = dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(), resources={"tracking": down, "readings_store": store}
    )
    result = sensor.evaluate_tick(context)
    assert not result.run_requests and result.skip_message.startswith(f"registry at {down.tracking_uri}: ")
