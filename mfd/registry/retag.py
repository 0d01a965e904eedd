"""Record the sha256 tags of a version registered before they existed, after you have checked its artifact:
`.venv/bin/python -m mfd.registry.retag <model name> <version>` (registry: MFD_MLFLOW_TRACKING_URI).

The digests are of the files as they are in the artifact store now: tag only a version whose artifact you
trust (e.g. its run is yours and the store is write-protected); otherwise re-register from a trusted run.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from mlflow.tracking import MlflowClient

from mfd.errors import MfdError
from mfd.modeling.model_io import DIGEST_TAGS, artifact_digests, download_model
from mfd.settings import load_settings
from mfd.storage import tracking


def record_digests(client: MlflowClient, name: str, version: str) -> dict[str, str]:
    """Tag version `version` of `name` with the digests of its artifact; refuses to overwrite other ones."""
    mv = client.get_model_version(name, version)
    with tempfile.TemporaryDirectory(prefix="mfd-retag-") as tmp:
        digests = artifact_digests(download_model(f"models:/{name}/{version}", Path(tmp)))
    conflicting = [tag for tag in DIGEST_TAGS if mv.tags.get(tag) not in (None, "", digests[tag])]
    if conflicting:
        raise MfdError(
            f"model {name!r} version {version} already has {', '.join(conflicting)} tags that its artifact "
            "no longer matches: it changed after registration; re-register the model from a trusted run"
        )
    for tag, digest in digests.items():
        client.set_model_version_tag(name, version, tag, digest)
    return digests


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mfd.registry.retag", description=__doc__)
    parser.add_argument("name", help="registered model name")
    parser.add_argument("version", help="model version to tag")
    args = parser.parse_args(argv)
    client = tracking.connect(load_settings().tracking_uri)
    for tag, digest in record_digests(client, args.name, args.version).items():
        print(f"{args.name} version {args.version}: {tag}={digest}")


if __name__ == "__main__":
    main()
