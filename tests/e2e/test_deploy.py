"""deploy/ loads: the instance configs validate against dagster, dagster-postgres and dagster-k8s, the Helm
values agree with them, the code location loads with each executor, and the Dockerfile and Procfile name
what exists. No cluster, broker or image build: only that the configs are right."""

from __future__ import annotations

import re
import runpy
import shutil
import tomllib
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._config import validate_config
from dagster._core.instance.config import dagster_instance_config
from dagster_k8s import K8sRunLauncher
from dagster_postgres import PostgresEventLogStorage

from mfd.services.stack import SERVICES

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PG_ENV = {
    "MFD_DAGSTER_PG_HOST": "127.0.0.1",
    "MFD_DAGSTER_PG_PORT": "5432",
    "MFD_DAGSTER_PG_USER": "dagster",
    "MFD_DAGSTER_PG_PASSWORD": "x",
    "MFD_DAGSTER_PG_DB": "dagster",
    "DAGSTER_PG_PASSWORD": "x",
}


def _instance_config(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    for key, value in PG_ENV.items():
        monkeypatch.setenv(key, value)
    shutil.copy(path, tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))  # raises DagsterInvalidConfigError on a bad key
    return dict(config)


def _check(config_type: object, value: dict) -> list[str]:
    result = validate_config(config_type, value)
    return [error.message for error in result.errors or []]


@pytest.mark.parametrize("name", ["dagster/dagster.yaml", "k8s/dagster.yaml"])
def test_instance_configs_validate(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _instance_config(DEPLOY / name, tmp_path, monkeypatch)
    postgres = config["storage"]["postgres"]
    assert _check(PostgresEventLogStorage.config_type(), postgres) == []
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["run_retries"]["enabled"] is True


def test_a_misspelled_instance_key_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (DEPLOY / "dagster" / "dagster.yaml").read_text().replace("run_retries:", "run_retry:")
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(dg.DagsterInvalidConfigError):
        _instance_config(tmp_path / "bad.yaml", tmp_path, monkeypatch)


def test_k8s_run_launcher_config_validates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    launcher = _instance_config(DEPLOY / "k8s" / "dagster.yaml", tmp_path, monkeypatch)["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    assert _check(K8sRunLauncher.config_type(), launcher["config"]) == []
    assert _check(K8sRunLauncher.config_type(), {**launcher["config"], "env_secret": ["x"]}) != []


def test_helm_values_match_the_instance_and_hold_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = yaml.safe_load((DEPLOY / "k8s" / "values.yaml").read_text())
    instance = _instance_config(DEPLOY / "k8s" / "dagster.yaml", tmp_path, monkeypatch)
    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    secrets = [s["name"] for s in launcher["config"]["k8sRunLauncher"]["envSecrets"]]
    assert secrets == instance["run_launcher"]["config"]["env_secrets"] == ["mfd-env"]
    [deployment] = values["dagster-user-deployments"]["deployments"]
    assert [s["name"] for s in deployment["envSecrets"]] == ["mfd-env"]
    module = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["dagster"]["module_name"]
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", module]
    assert values["postgresql"]["enabled"] is False and values["generatePostgresqlPasswordSecret"] is False
    assert (
        values["global"]["postgresqlSecretName"]
        == instance["run_launcher"]["config"]["postgres_password_secret"]
    )
    text = (DEPLOY / "k8s" / "values.yaml").read_text()
    assert not re.search(r"(?i)(password|secret_access_key|api_keys)\s*:\s*\S", text)


@pytest.mark.parametrize(
    ("location", "executor"),
    [(None, None), ("celery/definitions.py", "celery"), ("k8s/definitions.py", "k8s")],
)
def test_definitions_load_with_each_executor(location: str | None, executor: str | None) -> None:
    """None: mfd_assets.definitions with the executor it chooses; else deploy/'s file with its executor."""
    from mfd_assets.definitions import defs as mfd_defs

    defs = mfd_defs if location is None else runpy.run_path(str(DEPLOY / location))["defs"]
    dg.Definitions.validate_loadable(defs)
    expected = executor or (mfd_defs.executor.name if mfd_defs.executor else "multi_or_in_process_executor")
    assert defs.resolve_job_def("training_job").executor_def.name == expected
    assert defs.resolve_job_def("prediction_job").executor_def.name == "in_process"  # one step: no hop
    assert "io_manager" in defs.resources  # steps on other machines read their inputs from the store
    assert {s.name for s in defs.sensors} == {s.name for s in mfd_defs.sensors}


def test_dockerfile_copies_what_exists_and_serves_the_code_location() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    sources = [part for line in text.splitlines() if line.startswith("COPY ") for part in line.split()[1:-1]]
    assert sources and all((REPO / source).exists() for source in sources), sources
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert f'"-m", "{pyproject["tool"]["dagster"]["module_name"]}"' in text
    [torch] = [d for d in pyproject["project"]["dependencies"] if d.startswith("torch")]
    assert f"pip install --no-cache-dir {torch}" in text


def test_procfile_runs_every_stack_service() -> None:
    lines = [
        line
        for line in (DEPLOY / "Procfile").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    processes = dict(line.split(":", 1) for line in lines)
    assert tuple(processes) == SERVICES
    for name, command in processes.items():
        assert command.strip() == f"python -m mfd.services.stack run {name}"
