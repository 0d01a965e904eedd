"""`mfd detect` against real services: readings in PostgreSQL (and the SQLite twin), the champion on a real
MLflow server; every reading scored once, a second run scores nothing, new readings are picked up."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from mfd.cli.main import main
from mfd.profiles.ai4i_reference import load_ai4i
from mfd.schema import PROFILE
from mfd.storage import readings as store
from mfd.storage.tables import failure_events, predictions
from mfd_resources import ReadingsStore, Tracking

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(PROFILE.name != "ai4i", reason="the champion fixture is trained on AI4I"),
]


def test_detect_scores_every_unscored_reading_once(
    readings_url: str, champion: Tracking, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("MFD_HOME", champion.home)  # where the fixture's champion copy is kept
    monkeypatch.setenv("MFD_DATABASE_URL", readings_url)
    monkeypatch.setenv("MFD_MLFLOW_TRACKING_URI", champion.tracking_uri)
    monkeypatch.setenv("MFD_MODEL_NAME", champion.model_name)
    ai4i = load_ai4i()
    readings = ReadingsStore(url=readings_url)
    readings.insert(ai4i.head(2_500))

    assert main(["detect", "--batch-rows", "1000", "--quiet"]) == 0
    out = capsys.readouterr().out
    # 1,000 readings a batch: at least 3 (PostgreSQL may split a range at a sequence gap not yet final)
    found = re.search(rf"scored 2500 readings with {champion.model_name} version 1 in (\d+) batches", out)
    assert found and int(found.group(1)) >= 3, out

    engine = store.create_engine(readings_url)
    with engine.connect() as conn:
        scored = conn.execute(sa.select(sa.func.count(sa.distinct(predictions.c.reading_id)))).scalar()
        rows = conn.execute(sa.select(sa.func.count()).select_from(predictions)).scalar()
        events = conn.execute(sa.select(sa.func.count()).select_from(failure_events)).scalar()
    assert scored == rows == 2_500
    assert f"{events} predicted failures" in out and events > 0

    assert main(["detect"]) == 0
    assert "scored 0 readings" in capsys.readouterr().out

    readings.insert(ai4i.iloc[2_500:2_700])
    assert main(["detect", "--quiet"]) == 0
    assert "scored 200 readings" in capsys.readouterr().out
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(predictions)).scalar() == 2_700
