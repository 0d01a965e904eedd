"""What a new user meets first: one settings rule with one-line errors, state under the checkout, the
generator's history ending now, a drift check quiet on the generator's own data, sensors that carry on
from `make run`."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa
from mlflow.tracking import MlflowClient

from mfd.cli.main import build_parser
from mfd.detection.drift import drift_table
from mfd.errors import MfdError
from mfd.generator.fleet import generate_readings
from mfd.modeling.model_io import CHAMPION
from mfd.profiles.ai4i_reference import load_ai4i
from mfd.services.processes import free_port
from mfd.settings import Settings, load_settings, project_home
from mfd.storage import readings as store
from mfd.storage.tables import ensure_detection_tables, predictions
from mfd_resources import Tracking
from mfd_sensors.champion import build_champion_changed_sensor
from mfd_sensors.prediction import starting_cursor

REPO = Path(__file__).resolve().parents[2]
MFD = str(Path(sys.executable).with_name("mfd"))


def mfd(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MFD_")}
    return subprocess.run(
        [MFD, *args], cwd=cwd, env={**clean, **env}, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MFD_DEPLOYMENT": "prod"}, "MFD_DEPLOYMENT=prod"),
        ({"MFD_PREDICTION_BATCH_ROWS": "many"}, "MFD_PREDICTION_BATCH_ROWS=many"),
        ({"MFD_DEPLOYMENT": "production"}, "MFD_DATABASE_URL, MFD_S3_BUCKET"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(tmp_path: Path, env: dict[str, str], named: str) -> None:
    result = mfd("events", cwd=tmp_path, MFD_HOME=str(tmp_path / "home"), **env)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and named in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_load_settings_applies_the_deployment_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MFD_DEPLOYMENT", "production")
    monkeypatch.delenv("MFD_DATABASE_URL", raising=False)
    with pytest.raises(MfdError, match="MFD_DATABASE_URL"):
        load_settings()


def test_state_lives_in_the_checkout_not_the_working_directory(tmp_path: Path) -> None:
    assert project_home() == REPO / ".mfd"
    assert Settings().bentoml_home == Path(os.environ.get("BENTOML_HOME") or REPO / ".mfd" / "bentoml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    home = tmp_path / "home"
    result = mfd("events", "--since", "10m", cwd=elsewhere, MFD_HOME=str(home))
    assert result.returncode == 0, result.stderr
    assert not (elsewhere / ".mfd").exists() and (home / "readings.db").exists()


def test_version_and_option_errors_are_one_line(tmp_path: Path) -> None:
    version = mfd("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("mfd ")
    folds = mfd("train", "--folds", "1", cwd=tmp_path, MFD_HOME=str(tmp_path / "home"))
    assert folds.returncode == 2 and folds.stderr.strip().count("\n") == 0
    assert "--folds must be at least 2" in folds.stderr


def test_unreachable_mlflow_fails_after_bounded_retries_naming_the_setting(tmp_path: Path) -> None:
    result = mfd(
        "champion",
        "show",
        cwd=tmp_path,
        MFD_HOME=str(tmp_path / "home"),
        MFD_MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}",
    )
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("mfd: error: cannot reach MLflow") and last.endswith(
        "check MFD_MLFLOW_TRACKING_URI"
    )
    assert "urllib3" not in result.stderr and "Retrying" not in result.stderr


def test_generated_history_ends_now() -> None:
    from mfd.cli.generate import plan_from_args

    before = datetime.now(UTC)
    args = build_parser("generate").parse_args(["generate", "--machines", "4", "--rows", "400"])
    plan = plan_from_args(args)
    df = generate_readings(plan.machines, plan.rows, plan.seed, plan.start, plan.interval_s)
    last = pd.Timestamp(df["timestamp"].max()).to_pydatetime()
    assert last <= datetime.now(UTC)
    assert (before - last).total_seconds() < plan.interval_s * 2  # recent: the history ends at now
    live = plan_from_args(build_parser("generate").parse_args(["generate", "--rate", "5"]))
    assert live.start >= before.replace(microsecond=0)  # real time starts now


def test_drift_check_is_quiet_on_the_generators_own_data() -> None:
    recent = generate_readings(machines=20, rows=20_000, seed=0).tail(5_000)
    table = drift_table(load_ai4i(), recent, psi_threshold=0.2, ks_threshold=0.1)
    assert not table["drifted"].any(), table.index[table["drifted"]].tolist()
    hot = recent.assign(air_temperature_k=recent["air_temperature_k"] + 4)
    assert drift_table(load_ai4i(), hot, 0.2, 0.1).loc["air_temperature_k", "drifted"]


def test_prediction_sensor_starts_after_the_readings_make_run_scored(tmp_path: Path) -> None:
    engine = store.create_engine(f"sqlite:///{tmp_path / 'r.db'}")
    assert starting_cursor(None, engine).settled == 0
    ensure_detection_tables(engine)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(predictions),
            [
                {
                    "reading_id": i,
                    "model_name": "m",
                    "model_version": "1",
                    "probability": 0.1,
                    "label": 0,
                    "scored_at": now,
                }
                for i in range(1, 51)
            ],
        )
    assert starting_cursor(None, engine).settled == 50
    assert starting_cursor('{"settled": 7}', engine).settled == 7  # a cursor of its own wins


def test_champion_sensor_builds_no_bento_for_a_version_that_has_one(tmp_path: Path) -> None:
    tracking = Tracking(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", model_name="built")
    client: MlflowClient = tracking.client()
    client.create_registered_model("built")
    client.create_model_version("built", source=(tmp_path / "model").as_uri())
    client.set_registered_model_alias("built", CHAMPION, "1")
    sensor = build_champion_changed_sensor(Settings(service_url=None))
    with dg.instance_for_test() as instance:
        first = sensor(dg.build_sensor_context(instance=instance, resources={"tracking": tracking}))
        assert [r.run_key for r in first.run_requests] == ["champion-built-v1"]
        instance.report_runless_asset_event(
            dg.AssetMaterialization("champion_bento", metadata={"model_version": "1"})
        )
        again = sensor(dg.build_sensor_context(instance=instance, resources={"tracking": tracking}))
    assert isinstance(again, dg.SensorResult) and not again.run_requests and again.cursor == "1"


def test_every_asset_has_owners_and_kinds() -> None:
    from mfd_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    bare = [
        key.to_user_string()
        for key in graph.get_all_asset_keys()
        if not graph.get(key).owners or not graph.get(key).kinds
    ]
    assert not bare
    assert graph.get(dg.AssetKey("readings")).is_observable


def test_tables_are_sortable_with_plain_labels_and_rounded_numbers() -> None:
    from mfd_assets.metadata import table

    scores = pd.DataFrame(
        {"pr_auc": [0.45062499999999983, 0.9], "folds": [5, 5], "kept": [True, False]},
        index=pd.MultiIndex.from_tuples([("raw", "KNN"), ("gan", "RF")], names=["dataset", "classifier"]),
    )
    value = table(scores)
    assert [(c.name, c.type) for c in value.schema.columns] == [
        ("dataset", "string"),
        ("classifier", "string"),
        ("pr_auc", "float"),
        ("folds", "int"),
        ("kept", "bool"),
    ]
    assert value.records[0].data == {
        "dataset": "raw",
        "classifier": "KNN",
        "pr_auc": 0.4506,
        "folds": 5,
        "kept": True,
    }
    unnamed = table(pd.DataFrame({("cv", "pr_auc"): [1.23456789]}))
    assert unnamed.records[0].data == {"cv / pr_auc": 1.235}


def test_scalar_metadata_floats_are_rounded_and_the_rest_kept() -> None:
    import numpy as np

    from mfd_assets.metadata import rounded

    out = rounded(
        {"threshold": 0.45062499999999983, "ms": np.float64(63.579279001714895), "rows": 3, "f": "x"}
    )
    assert out == {"threshold": 0.4506, "ms": 63.58, "rows": 3, "f": "x"}
    assert type(out["ms"]) is float and type(out["rows"]) is int


def test_plots_fit_the_metadata_modal() -> None:
    import base64
    import io

    from matplotlib import pyplot as plt
    from PIL import Image

    from mfd.plots import MAX_WIDTH_PX, png_markdown

    for size in ((16, 7), (5, 3)):
        fig, ax = plt.subplots(figsize=size)
        ax.plot([0, 1], [0, 1], label="a line")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
        png = base64.b64decode(png_markdown(fig, "plot").split(",", 1)[1].rstrip(")"))
        width, _ = Image.open(io.BytesIO(png)).size
        assert width <= MAX_WIDTH_PX
        assert width > 300  # a small figure keeps its size
