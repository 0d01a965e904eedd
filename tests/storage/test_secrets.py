"""Database and MLflow URLs given in the environment reach the Dagster resources as EnvVars: what the UI
shows of the code location (its repository snapshot) names the variable, never the password."""

from __future__ import annotations

import dagster as dg
import pytest
from dagster._core.remote_representation.external_data import RepositorySnap  # what the webserver reads
from dagster_shared.serdes import serialize_value

from mfd.settings import Settings
from mfd_resources import ReadingsStore, resources_for

PASSWORD = "s3cr3t-pw"


def _snapshot(resources: dict) -> str:
    defs = dg.Definitions(resources=resources)
    return serialize_value(RepositorySnap.from_def(defs.get_repository_def()))


def test_no_password_in_the_code_location_snapshot(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("MFD_DATABASE_URL", f"postgresql+psycopg://mfd:{PASSWORD}@127.0.0.1:1/mfd")
    monkeypatch.setenv("MFD_MLFLOW_TRACKING_URI", f"http://ml:{PASSWORD}@127.0.0.1:5000")
    monkeypatch.setenv("MFD_HOME", str(tmp_path))
    snapshot = _snapshot(resources_for(Settings()))
    assert PASSWORD not in snapshot
    assert "MFD_DATABASE_URL" in snapshot and "MFD_MLFLOW_TRACKING_URI" in snapshot
    # The same snapshot with the URL as a plain value shows it: the check above can fail.
    assert PASSWORD in _snapshot({"readings_store": ReadingsStore(url=f"postgresql://u:{PASSWORD}@h/db")})


def test_the_env_var_url_is_resolved_when_a_run_uses_the_resource(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setenv("MFD_DATABASE_URL", pg_url)
    monkeypatch.setenv("MFD_HOME", str(tmp_path))

    @dg.asset
    def stored(readings_store: ReadingsStore) -> int:
        return readings_store.count()

    result = dg.materialize(
        [stored], resources={"readings_store": resources_for(Settings())["readings_store"]}
    )
    assert result.output_for_node("stored") == 0
