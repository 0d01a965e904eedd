"""The one champion loader, for detection and serving: `models:/<name>@champion` -> FailureModel, with a
local copy under MFD_HOME that scores when the registry is unreachable.

The copies of one registered model from one registry live in `<home>/champions/<name>-<registry digest>/`
(mode 0700): `v<version>/` is the MLflow model directory as downloaded plus `copy.json` (name, version,
threshold, the registry's digests); `champion.json` names the version the registry last called champion; `lock` is held shared to
read a copy and exclusively to write one, so the workers of a service and concurrent batch runs download a
version once and never read half of one. The newest `KEEP_VERSIONS` copies are kept (current and previous).
Within a process the loaded model is also kept in memory per version. A copy is checked against the
version's sha256 tags (from the registry, or as recorded in `copy.json` when it is down) before it is
unpickled: a changed or untagged one raises UntrustedModel and is never a fallback.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mfd.alerts.costs import POLICY_TAGS, DecisionPolicy
from mfd.errors import MfdError, ServiceUnavailable, one_line
from mfd.modeling.model_io import (
    CHAMPION,
    THRESHOLD_TAG,
    FailureModel,
    UntrustedModel,
    download_model,
    expected_digests,
    load_verified,
    verify_artifact,
)

log = logging.getLogger(__name__)

KEEP_VERSIONS = 2
_MISSING_CODES = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
_memory: dict[tuple[str, str], FailureModel] = {}

Source = Literal["registry", "memory cache", "disk cache", "local copy"]


class NoChampion(MfdError):
    """The registered model has no version with the champion alias."""


@dataclass(frozen=True)
class LoadedChampion:
    """The model to score with and where it came from: the registry (downloaded now), the memory or disk
    cache (the registry named that version), or the local copy (registry unreachable: `registry_error`)."""

    model: FailureModel
    source: Source
    registry_error: str | None = None
    policy_tags: dict[str, str] = field(default_factory=dict)  # the version's `thresholds`, `cost_matrix`

    @property
    def policy(self) -> DecisionPolicy:
        """The version's thresholds per machine type and cost matrix (`mfd.alerts.costs`)."""
        return DecisionPolicy.from_tags(self.policy_tags, self.model.threshold)

    @property
    def fallback(self) -> bool:
        return self.registry_error is not None


def private_dir(path: Path) -> Path:
    """`path` as a directory only this user can enter (0700), created if missing; MfdError when something
    else (a symlink, a file, another user's directory) is there."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(path)
    except OSError as exc:
        st, error = None, one_line(exc)
    else:
        error = "is a symlink" if stat.S_ISLNK(st.st_mode) else "is not a directory of this user"
    if st is None or not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise MfdError(f"{path}: {error}; refusing to keep private files there (remove it)")
    os.chmod(path, 0o700)
    return path


def open_private(path: Path, flags: int) -> int:
    """os.open of `path` (mode 0600 if created) that never follows a symlink at `path`."""
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


class LocalCopies:
    """The local copies of registered model `name` from registry `tracking_uri` under `home`."""

    def __init__(self, home: Path, tracking_uri: str, name: str) -> None:
        digest = hashlib.sha256(tracking_uri.encode()).hexdigest()[:12]
        safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "model"
        self.root = home / "champions" / f"{safe}-{digest}"

    @contextmanager
    def locked(self, *, exclusive: bool) -> Iterator[None]:
        private_dir(self.root.parent)
        private_dir(self.root)
        fd = open_private(self.root / "lock", os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # releases the lock

    def champion_version(self) -> str | None:
        """The version the registry last named champion here, or None."""
        try:
            return str(json.loads((self.root / "champion.json").read_text())["version"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring unreadable %s: %s", self.root / "champion.json", exc)
            return None

    def load(self, version: str, digests: dict[str, str] | None = None) -> FailureModel | None:
        """The copy of `version` (hold the lock), or None if there is none or it cannot be read.

        Its files must match `digests` (the registry's tags), or without them the digests in `copy.json`:
        UntrustedModel otherwise."""
        directory = self.root / f"v{version}"
        try:
            meta = json.loads((directory / "copy.json").read_text())
            expected = digests or meta.get("digests")
            if not expected:
                raise UntrustedModel(
                    f"the local copy of {meta['name']!r} version {version} in {directory} records no sha256 "
                    "digests (copied before they existed): refusing to unpickle it. Delete the directory; "
                    "the next load with the registry up copies the version again"
                )
            pyfunc = load_verified(directory, expected, str(meta["name"]), version)
        except FileNotFoundError:
            return None
        except UntrustedModel as exc:
            raise UntrustedModel(f"{exc} (local copy: delete {directory} to copy it again)") from None
        except (OSError, ValueError, KeyError, MlflowException) as exc:
            log.warning("ignoring unreadable local model copy %s: %s", directory, exc)
            return None
        return FailureModel(str(meta["name"]), str(meta["version"]), float(meta["threshold"]), pyfunc)

    def policy_tags(self, version: str) -> dict[str, str]:
        """The decision-policy tags recorded with the copy of `version` ({} for an older copy)."""
        try:
            return dict(json.loads((self.root / f"v{version}" / "copy.json").read_text()).get("policy", {}))
        except (OSError, ValueError):
            return {}

    def download(
        self,
        name: str,
        version: str,
        threshold: float,
        digests: dict[str, str],
        policy: dict[str, str] | None = None,
    ) -> FailureModel:
        """Copy registry version `version` here and load it once its files match `digests` (hold the lock
        exclusively)."""
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=self.root))
        try:
            download_model(f"models:/{name}/{version}", staging)
            verify_artifact(staging, digests, name, version)  # a changed artifact never becomes a copy
            meta = {
                "name": name,
                "version": version,
                "threshold": threshold,
                "digests": digests,
                "policy": policy or {},
            }
            (staging / "copy.json").write_text(json.dumps(meta))
            target = self.root / f"v{version}"
            shutil.rmtree(target, ignore_errors=True)  # an unreadable earlier copy
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        model = self.load(version, digests)
        if model is None:
            raise MfdError(f"the copy of {name} version {version} just written to {target} does not load")
        return model

    def set_champion(self, version: str) -> None:
        """Record `version` as the champion and drop all but the newest KEEP_VERSIONS copies (hold the lock
        exclusively)."""
        os.utime(self.root / f"v{version}")  # recency = when it was last named champion
        staged = self.root / f".champion.{os.getpid()}.json"
        staged.write_text(json.dumps({"version": version}))
        os.replace(staged, self.root / "champion.json")
        copies = sorted(self.root.glob("v*"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in copies[KEEP_VERSIONS:]:
            shutil.rmtree(old, ignore_errors=True)


def _probe(tracking_uri: str, timeout: float = 3.0) -> None:
    """Raise ServiceUnavailable when an HTTP registry refuses a TCP connection.

    The MLflow client retries a dead server for minutes; this one connect lets a caller fall back at once.
    """
    parts = urlsplit(tracking_uri)
    if parts.scheme not in ("http", "https"):
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as exc:
        raise ServiceUnavailable(f"model registry {tracking_uri} unreachable ({one_line(exc)})") from exc


Connect = Callable[[], MlflowClient]


def _champion_alias(tracking_uri: str, name: str, connect: Connect) -> ModelVersion:
    """The version `name@champion` names in the registry; NoChampion when there is none."""
    _probe(tracking_uri)
    client = connect()
    try:
        mv = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        if exc.error_code in _MISSING_CODES:
            raise NoChampion(
                f"registered model {name!r} has no version with alias {CHAMPION!r} at {tracking_uri}; "
                "train and promote one (champion_model asset)"
            ) from exc
        raise
    return mv


def _from_registry(
    copies: LocalCopies, key: tuple[str, str], mv: ModelVersion
) -> tuple[FailureModel, Source]:
    version, threshold, digests = (
        str(mv.version),
        float(mv.tags.get(THRESHOLD_TAG, 0.5)),
        expected_digests(mv),
    )
    cached = _memory.get(key)
    if cached is not None and cached.version == version and copies.champion_version() == version:
        return cached, "memory cache"
    with copies.locked(exclusive=True):
        if cached is not None and cached.version == version:
            model, source = cached, "memory cache"
        elif (found := copies.load(version, digests)) is not None:
            model, source = found, "disk cache"
        else:
            policy = {t: mv.tags[t] for t in POLICY_TAGS if t in mv.tags}
            model, source = copies.download(key[1], version, threshold, digests, policy), "registry"
        copies.set_champion(version)
    _memory[key] = model
    return model, source


def load_champion(tracking_uri: str, name: str, connect: Connect, home: Path) -> LoadedChampion:
    """The champion of `name`, its copy kept under `home`; `connect` gives a registry client (e.g.
    `Tracking.client`). Raises NoChampion when none is promoted, UntrustedModel when the champion's files
    do not match its sha256 tags, and ServiceUnavailable when the registry fails and there is no local copy."""
    copies, key = LocalCopies(home, tracking_uri, name), (tracking_uri, name)
    try:
        mv = _champion_alias(tracking_uri, name, connect)
        model, source = _from_registry(copies, key, mv)
        return LoadedChampion(model, source, policy_tags={t: mv.tags[t] for t in POLICY_TAGS if t in mv.tags})
    except (NoChampion, UntrustedModel):
        raise
    except Exception as exc:  # noqa: BLE001 - any registry or artifact-store failure falls back to the copy
        error = one_line(exc)
    version = copies.champion_version()
    cached = _memory.get(key)
    if version is not None and cached is not None and cached.version == version:
        model: FailureModel | None = cached
    elif version is not None:
        with copies.locked(exclusive=False):
            model = copies.load(version)
    else:
        model = None
    if model is None:
        raise ServiceUnavailable(
            f"model registry {tracking_uri} failed ({error}) and no local copy of {name!r} exists in "
            f"{copies.root}; check MFD_MLFLOW_TRACKING_URI"
        )
    log.warning("registry failed (%s); using the local copy of %s version %s", error, name, model.version)
    return LoadedChampion(model, "local copy", error, copies.policy_tags(model.version))


def champion_version(tracking_uri: str, name: str, connect: Connect, home: Path) -> tuple[str | None, str]:
    """Without loading the model: (champion version, where from), or (None, why there is none)."""
    copies = LocalCopies(home, tracking_uri, name)
    try:
        return str(_champion_alias(tracking_uri, name, connect).version), "registry"
    except NoChampion as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001 - as in load_champion
        error = one_line(exc)
    version = copies.champion_version()
    if version is None:
        return None, f"model registry {tracking_uri} failed ({error}) and no local copy in {copies.root}"
    return version, f"local copy (registry failed: {error})"
