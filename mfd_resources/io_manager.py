"""`ObjectStoreIOManager`: asset outputs on the object store, so a run's steps need not share a disk.

DataFrames are stored as Parquet, every other object pickled beside them, under `dagster/` inside the
bucket's prefix (S3/MinIO in production) or inside the local directory of the embedded twin:

    dagster/<asset key path>[/<partition>].parquet | .pkl      asset outputs
    dagster/runs/<run id>/<step>/<output>.pkl                   op outputs (e.g. rollback_champion)

A step started on another machine (another process, container or pod) reads its inputs from there.
"""

from __future__ import annotations

import io
import pickle
from urllib.parse import quote

import dagster as dg
import pandas as pd

from mfd.storage.objects import ObjectMissing
from mfd_resources.object_store import ObjectStore

PARQUET = ".parquet"
PICKLE = ".pkl"


def _encode(obj: object) -> tuple[str, bytes]:
    """(suffix, bytes): Parquet for a DataFrame (index and dtypes kept), a pickle for anything else."""
    if isinstance(obj, pd.DataFrame):
        buffer = io.BytesIO()
        obj.to_parquet(buffer, engine="pyarrow")
        return PARQUET, buffer.getvalue()
    return PICKLE, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _decode(suffix: str, data: bytes) -> object:
    if suffix == PARQUET:
        return pd.read_parquet(io.BytesIO(data), engine="pyarrow")
    return pickle.loads(data)  # noqa: S301 - written by this IO manager into the project's own store


class ObjectStoreIOManager(dg.ConfigurableIOManager):
    """Outputs as objects in `object_store` under `base` (Parquet for DataFrames, pickles otherwise)."""

    object_store: ObjectStore
    base: str = "dagster/"

    def _stem(self, context: dg.OutputContext | dg.InputContext, partition: str | None) -> str:
        if context.has_asset_key:
            stem = "/".join(quote(part, safe="") for part in context.asset_key.path)
        else:
            stem = "/".join(["runs", *(quote(part, safe="") for part in context.get_identifier())])
        if partition is not None:
            stem = f"{stem}/{quote(partition, safe='')}"
        return f"{self.base}{stem}"

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        if obj is None and context.dagster_type.is_nothing:
            return
        partition = context.asset_partition_key if context.has_asset_partitions else None
        stem = self._stem(context, partition)
        suffix, data = _encode(obj)
        objects = self.object_store.objects()
        objects.put(stem + suffix, data)
        stale = stem + (PICKLE if suffix == PARQUET else PARQUET)
        if objects.exists(stale):  # the output changed type: the older twin must not be read back
            objects.delete(stale)
        context.add_output_metadata(
            {
                "stored_at": dg.MetadataValue.text(f"{stem}{suffix} in {objects.describe()}"),
                "bytes": len(data),
            }
        )

    def _load_one(self, stem: str) -> object:
        objects = self.object_store.objects()
        for suffix in (PARQUET, PICKLE):
            try:
                return _decode(suffix, objects.get(stem + suffix))
            except ObjectMissing:
                continue
        raise ObjectMissing(
            f"no stored output {stem}{PARQUET} or {stem}{PICKLE} in {objects.describe()}: materialize the "
            "upstream asset first"
        )

    def load_input(self, context: dg.InputContext) -> object:
        if context.dagster_type.is_nothing:
            return None
        if not context.has_asset_partitions:
            return self._load_one(
                self._stem(context if context.has_asset_key else context.upstream_output, None)
            )
        keys = context.asset_partition_keys
        if len(keys) == 1:
            return self._load_one(self._stem(context, keys[0]))
        return {key: self._load_one(self._stem(context, key)) for key in keys}
