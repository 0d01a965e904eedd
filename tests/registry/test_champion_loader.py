"""The shared champion loader on an embedded MLflow registry: sources, the local copy, its lock and layout."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sklearn.ensemble import HistGradientBoostingClassifier

from mfd.errors import ServiceUnavailable
from mfd.modeling.model_io import CHAMPION, log_failure_model
from mfd.modeling.pipeline import MODEL_INPUT_COLUMNS, build_pipeline
from mfd.profiles.ai4i_reference import load_ai4i
from mfd.registry import champion as loader
from mfd.registry.champion import KEEP_VERSIONS, LocalCopies, NoChampion, champion_version, load_champion
from mfd.schema import LABEL_COLUMN
from mfd.storage.tracking import connect

NAME = "loader-model"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite registry with three versions of NAME (thresholds 0.31, 0.32, 0.33); version 1 is champion."""
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = connect(uri)
    experiment = client.create_experiment("loader", artifact_location=(root / "artifacts").as_uri())
    ai4i = load_ai4i()
    pipeline = build_pipeline(HistGradientBoostingClassifier(max_iter=5, random_state=0))
    pipeline.fit(ai4i[list(MODEL_INPUT_COLUMNS)], ai4i[LABEL_COLUMN].astype(int))
    for threshold in (0.31, 0.32, 0.33):
        with mlflow.start_run(experiment_id=experiment):
            log_failure_model(pipeline, ai4i, registered_name=NAME, threshold=threshold)
    client.set_registered_model_alias(NAME, CHAMPION, "1")
    return uri


@pytest.fixture(autouse=True)
def empty_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "_memory", {})


def down() -> MlflowClient:
    raise ServiceUnavailable("cannot reach MLflow tracking server (test); check MFD_MLFLOW_TRACKING_URI")


def test_sources_registry_then_memory_then_disk(registry: str, tmp_path: Path) -> None:
    first = load_champion(registry, NAME, lambda: connect(registry), tmp_path)
    assert (first.source, first.model.version, first.model.threshold) == ("registry", "1", 0.31)
    assert not first.fallback
    again = load_champion(registry, NAME, lambda: connect(registry), tmp_path)
    assert again.source == "memory cache" and again.model is first.model
    loader._memory.clear()
    from_disk = load_champion(registry, NAME, lambda: connect(registry), tmp_path)
    assert (from_disk.source, from_disk.model.version) == ("disk cache", "1")
    sample = load_ai4i().head(50)
    pd.testing.assert_series_equal(
        pd.Series(from_disk.model.probability(sample)), pd.Series(first.model.probability(sample))
    )


def test_registry_down_uses_the_local_copy_and_says_why(registry: str, tmp_path: Path) -> None:
    with pytest.raises(ServiceUnavailable, match="no local copy"):
        load_champion(registry, NAME, down, tmp_path)
    load_champion(registry, NAME, lambda: connect(registry), tmp_path)
    loader._memory.clear()
    fallback = load_champion(registry, NAME, down, tmp_path)
    assert (fallback.source, fallback.model.version, fallback.model.threshold) == ("local copy", "1", 0.31)
    assert fallback.fallback and "ServiceUnavailable: cannot reach MLflow" in fallback.registry_error
    assert champion_version(registry, NAME, down, tmp_path) == (
        "1",
        f"local copy (registry failed: {fallback.registry_error})",
    )
    assert champion_version(registry, NAME, lambda: connect(registry), tmp_path) == ("1", "registry")


def test_an_http_registry_that_refuses_connections_falls_back_at_once(registry: str, tmp_path: Path) -> None:
    # Never connect: the TCP probe answers before any MLflow client retries.
    def never() -> MlflowClient:
        raise AssertionError("connected to a registry that refuses connections")

    with pytest.raises(ServiceUnavailable, match=r"ConnectionRefusedError.*no local copy"):
        load_champion("http://127.0.0.1:9", NAME, never, tmp_path)


def test_alias_moves_reload_and_only_recent_copies_stay(registry: str, tmp_path: Path) -> None:
    client = connect(registry)
    seen = []
    try:
        for version in ("1", "2", "3", "1"):
            client.set_registered_model_alias(NAME, CHAMPION, version)
            loaded = load_champion(registry, NAME, lambda: client, tmp_path)
            seen.append((loaded.model.version, loaded.source))
    finally:
        client.set_registered_model_alias(NAME, CHAMPION, "1")
    # Version 1 was dropped to keep two copies, so coming back to it downloads it again.
    assert seen == [("1", "registry"), ("2", "registry"), ("3", "registry"), ("1", "registry")]
    copies = LocalCopies(tmp_path, registry, NAME)
    assert sorted(p.name for p in copies.root.glob("v*")) == ["v1", "v3"]
    assert len(list(copies.root.glob("v*"))) == KEEP_VERSIONS
    assert copies.champion_version() == "1"
    assert not list(copies.root.glob(".*")), "no staging directory or pointer file left behind"


def test_no_champion_is_an_error_not_a_fallback(registry: str, tmp_path: Path) -> None:
    client = connect(registry)
    client.create_registered_model("never-promoted")
    with pytest.raises(NoChampion, match="no version with alias 'champion'"):
        load_champion(registry, "never-promoted", lambda: client, tmp_path)
    version, why = champion_version(registry, "never-promoted", lambda: client, tmp_path)
    assert version is None and "no version with alias 'champion'" in why


def test_copies_are_private_and_the_lock_never_follows_a_symlink(registry: str, tmp_path: Path) -> None:
    load_champion(registry, NAME, lambda: connect(registry), tmp_path)
    copies = LocalCopies(tmp_path, registry, NAME)
    for directory in (copies.root.parent, copies.root):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    assert stat.S_IMODE((copies.root / "lock").stat().st_mode) == 0o600

    target = tmp_path / "elsewhere"
    target.write_text("")
    (copies.root / "lock").unlink()
    (copies.root / "lock").symlink_to(target)
    with pytest.raises(OSError), copies.locked(exclusive=True):
        pass
    assert target.read_text() == ""


def test_concurrent_loaders_download_a_version_once(
    registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    downloads: list[str] = []
    download = LocalCopies.download

    def counted(self: LocalCopies, name: str, version: str, *args: object):  # type: ignore[no-untyped-def]
        downloads.append(version)
        return download(self, name, version, *args)

    monkeypatch.setattr(LocalCopies, "download", counted)
    sources: list[str] = []
    start = threading.Barrier(2)

    def worker() -> None:
        start.wait()
        sources.append(load_champion(registry, NAME, lambda: connect(registry), tmp_path).source)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert downloads == ["1"]
    assert sorted(sources) in (["disk cache", "registry"], ["memory cache", "registry"])
    assert os.listdir(LocalCopies(tmp_path, registry, NAME).root / "v1")
