"""`FileRejected`: the whole incoming file is unusable, with the rule that failed."""

from __future__ import annotations

from typing import Any

from mfd.errors import MfdError


class FileRejected(MfdError):
    """The whole file is unusable; `reason` says which rule failed, on which columns, with examples."""

    def __init__(self, rule: str, message: str, columns: list[str] | None = None, examples: Any = None):
        super().__init__(f"{rule}: {message}")
        self.reason: dict[str, Any] = {
            "rule": rule,
            "message": message,
            "columns": columns or [],
            "examples": examples if examples is not None else [],
        }
