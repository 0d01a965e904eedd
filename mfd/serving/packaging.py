"""`bentoml build` of the service for the current champion, its local copy packed inside the bento."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from mfd.errors import MfdError
from mfd.modeling.model_io import CHAMPION, THRESHOLD_TAG
from mfd.serving import local_copies
from mfd.storage import tracking

REPO_ROOT = Path(__file__).resolve().parents[2]
BENTOFILE = REPO_ROOT / "bento" / "bentofile.yaml"


@dataclass(frozen=True)
class BentoBuild:
    bento_tag: str
    model_name: str
    model_version: str
    local_model_tag: str
    output: str


def _bentoml() -> str:
    return shutil.which("bentoml") or str(Path(sys.executable).with_name("bentoml"))


def build_champion_bento(tracking_uri: str, model_name: str, build_ctx: Path = REPO_ROOT) -> BentoBuild:
    """Copy `model_name@champion` into the BentoML store and build the bento with it; MfdError on failure."""
    client = tracking.connect(tracking_uri)
    mv = client.get_model_version_by_alias(model_name, CHAMPION)
    version = str(mv.version)
    copy = local_copies.keep_copy(model_name, version, float(mv.tags.get(THRESHOLD_TAG, 0.5)))
    bentofile = yaml.safe_load(BENTOFILE.read_text())
    bentofile["models"] = [str(copy.tag)]
    bentofile["envs"] = [{"name": "MFD_MODEL_NAME", "value": model_name}]
    with tempfile.TemporaryDirectory(prefix="mfd-bentofile-") as tmp:
        path = Path(tmp) / "bentofile.yaml"
        path.write_text(yaml.safe_dump(bentofile, sort_keys=False))
        cmd = [_bentoml(), "build", str(build_ctx), "-f", str(path), "--output", "tag"]
        cmd += [
            "--label",
            f"model_name={local_copies.store_name(model_name)}",
            "--label",
            f"model_version={version}",
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise MfdError(f"bentoml build failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    tags = [line.removeprefix("__tag__:") for line in done.stdout.splitlines() if line.startswith("__tag__:")]
    if not tags:
        raise MfdError(f"bentoml build printed no tag: {done.stdout.strip()[-2000:]}")
    return BentoBuild(tags[-1], model_name, version, str(copy.tag), done.stdout)
