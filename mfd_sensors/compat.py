"""Dagster internals mfd relies on, in one place.

`INVALID_PARTITION_SUBSTRINGS`: the substrings Dagster forbids in a partition key (`...` is how its UI
selects a range of partitions, control characters do not display). Dagster enforces the rule for static
partitions only and exports no public name for the list; dynamic partition keys are not checked (1.13).
`mfd.ingestion.incoming.partition_key` escapes these substrings (mfd/ holds no Dagster import), and a
test holds that escaping against this list, so a Dagster upgrade that adds a substring fails the suite. The
list lives in `dagster._core.definitions.partitions.utils.base` in the release installed here (1.13) and
in `dagster._core.definitions.partition` in older 1.x releases; any other layout fails the import here.
"""

from __future__ import annotations

try:  # dagster 1.13 (the partitions package)
    from dagster._core.definitions.partitions.utils.base import INVALID_PARTITION_SUBSTRINGS
except ImportError:  # older dagster 1.x: one partition module
    from dagster._core.definitions.partition import INVALID_PARTITION_SUBSTRINGS  # type: ignore[no-redef]

__all__ = ["INVALID_PARTITION_SUBSTRINGS"]
