"""Runs over Dagster's GraphQL API (what the seeds' `POST /run_flow/{type}` was), with dagster-graphql.

    python deploy/graphql/runs.py launch training_job --config '{"ops": {"candidate_model": {"config": {"family": "hgb"}}}}'
    python deploy/graphql/runs.py materialize training_set cleaned_set holdout
    python deploy/graphql/runs.py status <run id> [--wait]
    python deploy/graphql/runs.py events candidate_model [--limit 3]

`--url` (default http://127.0.0.1:3000, `make stack`'s webserver) points it elsewhere; each command prints
one JSON document. tests/e2e/test_stack_api.py runs it against the stack.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from urllib.parse import urlsplit

from dagster_graphql import DagsterGraphQLClient

LOCATION, REPOSITORY = "mfd", "__repository__"  # the code location of workspace.yaml / make stack
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}

ASSET_EVENTS = """
query AssetEvents($key: AssetKeyInput!, $limit: Int!) {
  assetOrError(assetKey: $key) {
    __typename
    ... on Asset {
      assetMaterializations(limit: $limit) {
        runId
        timestamp
        partition
        metadataEntries {
          label
          __typename
          ... on TextMetadataEntry { text }
          ... on UrlMetadataEntry { url }
          ... on IntMetadataEntry { intValue }
          ... on FloatMetadataEntry { floatValue }
          ... on BoolMetadataEntry { boolValue }
          ... on MarkdownMetadataEntry { mdStr }
        }
      }
    }
  }
}
"""


def client_for(url: str) -> DagsterGraphQLClient:
    parts = urlsplit(url)
    return DagsterGraphQLClient(parts.hostname or "127.0.0.1", port_number=parts.port, timeout=60)


def launch(client: DagsterGraphQLClient, job: str, run_config: dict | None = None) -> str:
    """Launch a job of the mfd code location; its run id."""
    return client.submit_job_execution(
        job, repository_location_name=LOCATION, repository_name=REPOSITORY, run_config=run_config or {}
    )


def materialize(client: DagsterGraphQLClient, assets: list[str], run_config: dict | None = None) -> str:
    """Materialize a selection of assets (the implicit asset job); its run id."""
    return client.submit_job_execution(
        "__ASSET_JOB",
        repository_location_name=LOCATION,
        repository_name=REPOSITORY,
        asset_selection=[name.split("/") for name in assets],
        run_config=run_config or {},
    )


def status(client: DagsterGraphQLClient, run_id: str, wait_s: float = 0.0) -> str:
    """The run's status, after waiting up to `wait_s` seconds for it to finish."""
    deadline = time.monotonic() + wait_s
    while True:
        value = client.get_run_status(run_id).value
        if value in FINISHED or time.monotonic() >= deadline:
            return value
        time.sleep(2)


def events(client: DagsterGraphQLClient, asset: str, limit: int = 1) -> list[dict]:
    """The asset's latest materializations: run id, time, partition and metadata {label: value}."""
    data = client._execute(ASSET_EVENTS, {"key": {"path": asset.split("/")}, "limit": limit})  # noqa: SLF001
    found = data["assetOrError"]
    if found["__typename"] != "Asset":
        raise SystemExit(f"no asset {asset!r}: {found['__typename']}")
    out = []
    for event in found["assetMaterializations"]:
        metadata = {}
        for entry in event["metadataEntries"]:
            values = [v for k, v in entry.items() if k not in ("label", "__typename")]
            metadata[entry["label"]] = values[0] if values else None
        out.append({**{k: event[k] for k in ("runId", "timestamp", "partition")}, "metadata": metadata})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:3000", help="the Dagster webserver")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("launch", help="launch a job")
    run.add_argument("job")
    run.add_argument("--config", default="{}", help="run config as JSON")
    assets = commands.add_parser("materialize", help="materialize a selection of assets")
    assets.add_argument("assets", nargs="+")
    assets.add_argument("--config", default="{}", help="run config as JSON")
    state = commands.add_parser("status", help="a run's status")
    state.add_argument("run_id")
    state.add_argument("--wait", type=float, default=0.0, help="seconds to wait for the run to finish")
    asset_events = commands.add_parser("events", help="an asset's latest materializations")
    asset_events.add_argument("asset")
    asset_events.add_argument("--limit", type=int, default=1)
    args = parser.parse_args(argv)
    client = client_for(args.url)
    if args.command == "launch":
        result: object = {"run_id": launch(client, args.job, json.loads(args.config))}
    elif args.command == "materialize":
        result = {"run_id": materialize(client, args.assets, json.loads(args.config))}
    elif args.command == "status":
        result = {"run_id": args.run_id, "status": status(client, args.run_id, args.wait)}
    else:
        result = events(client, args.asset, args.limit)
    json.dump(result, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
