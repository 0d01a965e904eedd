"""Serving: the champion packaged as a BentoML bento (`bentoml build`)."""

import os

import dagster as dg

from mfd.errors import MfdError
from mfd.serving.packaging import build_champion_bento
from mfd_assets.metadata import rounded
from mfd_resources import Tracking

GROUP = "serving"


@dg.asset(group_name=GROUP, deps=["champion_model"], kinds={"bentoml"})
def champion_bento(context: dg.AssetExecutionContext, tracking: Tracking) -> dg.MaterializeResult:
    """The BentoML service built for the registry's champion, with the model's local copy inside."""
    try:
        build = build_champion_bento(tracking.tracking_uri, tracking.model_name)
    except MfdError as exc:
        raise dg.Failure(str(exc)) from exc
    context.log.info("built %s for %s version %s", build.bento_tag, build.model_name, build.model_version)
    return dg.MaterializeResult(
        metadata=rounded(
            {
                "bento_tag": build.bento_tag,
                "model_name": build.model_name,
                "model_version": build.model_version,
                "local_model_tag": build.local_model_tag,
                # Port 3001: the Dagster UI has 3000 (README, "Ports"); the bento lives in this BentoML store.
                "serve": dg.MetadataValue.md(
                    f"`BENTOML_HOME={os.environ.get('BENTOML_HOME', '~/bentoml')} .venv/bin/bentoml serve "
                    f"{build.bento_tag} --port 3001`"
                ),
                "containerize": dg.MetadataValue.md(f"`bentoml containerize {build.bento_tag}`"),
            }
        )
    )
