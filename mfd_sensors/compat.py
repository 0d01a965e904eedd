"""Dagster internals mfd relies on, in one place.

`INVALID_PARTITION_SUBSTRINGS`: the substrings Dagster forbids in a partition key (`...` is how its UI
selects a range of partitions, control characters do not display). Dagster enforces the rule for static
partitions only and exports no public name for the list; dynamic partition keys are not checked (1.13),
so `incoming_files_sensor` skips object keys that break it instead of adding unusable partitions. The
list lives in `dagster._core.definitions.partitions.utils.base` in the release installed here (1.13) and
in `dagster._core.definitions.partition` in older 1.x releases; any other layout fails the import here.
"""

from __future__ import annotations

try:  # dagster 1.13 (the partitions package)
    from dagster._core.definitions.partitions.utils.base import INVALID_PARTITION_SUBSTRINGS
except ImportError:  # older dagster 1.x: one partition module
    from dagster._core.definitions.partition import INVALID_PARTITION_SUBSTRINGS  # type: ignore[no-redef]

__all__ = ["INVALID_PARTITION_SUBSTRINGS", "valid_partition_key"]


def valid_partition_key(key: str) -> bool:
    """Whether Dagster accepts `key` as a partition key."""
    return not any(s in key for s in INVALID_PARTITION_SUBSTRINGS)
