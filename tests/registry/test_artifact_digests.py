"""Registered model files are checked against their sha256 tags before anything unpickles them: the champion
loader (registry and local copy), load_model_version and promotion's evaluation."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline

from mfd.errors import MfdError, ServiceUnavailable
from mfd.modeling.model_io import (
    CHAMPION,
    DIGEST_TAGS,
    UntrustedModel,
    file_sha256,
    load_model_version,
    log_failure_model,
)
from mfd.modeling.pipeline import MODEL_INPUT_COLUMNS, build_pipeline
from mfd.profiles.ai4i_reference import load_ai4i
from mfd.registry import champion as loader
from mfd.registry.champion import LocalCopies, load_champion
from mfd.registry.promotion import evaluate_version
from mfd.registry.retag import record_digests
from mfd.storage.tracking import connect


class RunsCodeWhenUnpickled:
    """A pickle that creates `marker` when loaded: the file exists only if something unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(tracking URI, experiment id) of an embedded SQLite registry."""
    root = tmp_path_factory.mktemp("digests")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = connect(uri)
    return uri, client.create_experiment("digests", artifact_location=(root / "artifacts").as_uri())


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    ai4i = load_ai4i()
    fitted = build_pipeline(HistGradientBoostingClassifier(max_iter=5, random_state=0))
    return fitted.fit(ai4i[list(MODEL_INPUT_COLUMNS)], ai4i["machine_failure"].astype(int))


Register = Callable[[str], str]


@pytest.fixture
def register(registry: tuple[str, str], pipeline: Pipeline) -> Register:
    """Register a new version of `name` through log_failure_model; returns the version."""
    uri, experiment = registry
    connect(uri)

    def new_version(name: str) -> str:
        with mlflow.start_run(experiment_id=experiment):
            _, mv = log_failure_model(pipeline, load_ai4i().head(20), registered_name=name, threshold=0.4)
        return str(mv.version)

    return new_version


@pytest.fixture(autouse=True)
def empty_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "_memory", {})


def stored_model_dir(client: MlflowClient, name: str, version: str) -> Path:
    """The version's model directory in the (local) artifact store."""
    model_id = client.get_model_version(name, version).source.removeprefix("models:/")
    return Path(mlflow.get_logged_model(model_id).artifact_location.removeprefix("file://"))


def tamper(model_dir: Path, marker: Path) -> None:
    (model_dir / "model.pkl").write_bytes(pickle.dumps(RunsCodeWhenUnpickled(marker)))


def down() -> MlflowClient:
    raise ServiceUnavailable("registry down (test)")


def test_registration_records_the_sha256_of_the_model_files(
    registry: tuple[str, str], register: Register
) -> None:
    client = connect(registry[0])
    version = register("digest-tags")
    tags = client.get_model_version("digest-tags", version).tags
    stored = stored_model_dir(client, "digest-tags", version)
    assert set(DIGEST_TAGS) == {"model_sha256", "mlmodel_sha256"}
    assert tags["model_sha256"] == file_sha256(stored / "model.pkl")
    assert tags["mlmodel_sha256"] == file_sha256(stored / "MLmodel")
    assert tags["threshold"] == "0.400000"


def test_a_changed_artifact_is_refused_before_unpickling_and_an_intact_one_loads(
    registry: tuple[str, str], register: Register, tmp_path: Path
) -> None:
    uri, name = registry[0], "digest-tampered"
    client = connect(uri)
    intact, changed = register(name), register(name)
    marker = tmp_path / "unpickled"
    tamper(stored_model_dir(client, name, changed), marker)

    client.set_registered_model_alias(name, CHAMPION, changed)
    refused = rf"model '{name}' version {changed}: model.pkl .* does not match .* Re-register the model"
    with pytest.raises(UntrustedModel, match=refused):
        load_champion(uri, name, lambda: client, tmp_path / "home")
    with pytest.raises(UntrustedModel, match=refused):
        load_model_version(client, name, changed)
    with pytest.raises(UntrustedModel, match=refused):
        evaluate_version(client, name, changed, load_ai4i().head(100))
    assert not marker.exists(), "the changed pickle was unpickled"
    assert not (LocalCopies(tmp_path / "home", uri, name).root / f"v{changed}").exists()

    client.set_registered_model_alias(name, CHAMPION, intact)
    loaded = load_champion(uri, name, lambda: client, tmp_path / "home")
    assert (loaded.source, loaded.model.version) == ("registry", intact)
    assert load_model_version(client, name, intact).version == intact


def test_a_changed_local_copy_is_refused_with_or_without_the_registry(
    registry: tuple[str, str], register: Register, tmp_path: Path
) -> None:
    uri, name = registry[0], "digest-copy"
    client = connect(uri)
    version = register(name)
    client.set_registered_model_alias(name, CHAMPION, version)
    home = tmp_path / "home"
    load_champion(uri, name, lambda: client, home)
    copy = LocalCopies(home, uri, name).root / f"v{version}"
    marker = tmp_path / "unpickled"
    tamper(copy, marker)
    loader._memory.clear()

    for connect_to in (lambda: client, down):
        with pytest.raises(UntrustedModel, match=rf"version {version}: model.pkl .* delete {copy}"):
            load_champion(uri, name, connect_to, home)
    assert not marker.exists()


def test_a_local_copy_without_digests_is_refused_when_the_registry_is_down(
    registry: tuple[str, str], register: Register, tmp_path: Path
) -> None:
    uri, name = registry[0], "digest-old-copy"
    client = connect(uri)
    client.set_registered_model_alias(name, CHAMPION, register(name))
    load_champion(uri, name, lambda: client, tmp_path)
    (copy_json,) = LocalCopies(tmp_path, uri, name).root.glob("v*/copy.json")
    meta = json.loads(copy_json.read_text())
    copy_json.write_text(json.dumps({k: v for k, v in meta.items() if k != "digests"}))
    loader._memory.clear()
    with pytest.raises(UntrustedModel, match="records no sha256 digests"):
        load_champion(uri, name, down, tmp_path)
    # With the registry up, its tags check the same copy, which is intact.
    assert load_champion(uri, name, lambda: client, tmp_path).source == "disk cache"


def test_versions_registered_without_digests_are_refused_until_retagged(
    registry: tuple[str, str], register: Register, tmp_path: Path
) -> None:
    uri, name = registry[0], "digest-untagged"
    client = connect(uri)
    version = register(name)
    for tag in DIGEST_TAGS:  # as registered before the tags existed
        client.delete_model_version_tag(name, version, tag)
    client.set_registered_model_alias(name, CHAMPION, version)
    retag = (
        rf"version {version} has no model_sha256, mlmodel_sha256 tag .* mfd.registry.retag {name} {version}"
    )
    with pytest.raises(UntrustedModel, match=retag):
        load_champion(uri, name, lambda: client, tmp_path)
    with pytest.raises(UntrustedModel, match=retag):
        load_model_version(client, name, version)

    digests = record_digests(client, name, version)
    assert client.get_model_version(name, version).tags["model_sha256"] == digests["model_sha256"]
    model = load_champion(uri, name, lambda: client, tmp_path).model
    assert model.version == version and len(model.probability(load_ai4i().head(20))) == 20


def test_retag_refuses_a_version_whose_files_changed(
    registry: tuple[str, str], register: Register, tmp_path: Path
) -> None:
    uri, name = registry[0], "digest-retag-changed"
    client = connect(uri)
    version = register(name)
    tamper(stored_model_dir(client, name, version), tmp_path / "unpickled")
    with pytest.raises(MfdError, match="changed after registration; re-register"):
        record_digests(client, name, version)
    assert not (tmp_path / "unpickled").exists()
