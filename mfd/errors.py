"""Errors a person can act on, and the retry-with-backoff used for every external service."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


class MfdError(Exception):
    """An error whose message says what to fix; the CLI prints it as one line."""


class ServiceUnavailable(MfdError):
    """An external service did not answer after retries."""


def one_line(exc: BaseException) -> str:
    """`exc` as one line for a log or a status field: its type and the first line of its message."""
    first = str(exc).strip().splitlines()[:1]
    return f"{type(exc).__name__}: {first[0]}" if first else type(exc).__name__


def with_retries(
    fn: Callable[[], T],
    *,
    what: str,
    setting: str,
    attempts: int = 4,
    base_delay: float = 0.5,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
) -> T:
    """Call `fn`, retrying with exponential backoff; then raise ServiceUnavailable naming `setting`."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except retry_on as exc:  # noqa: PERF203 - the retry loop is the point
            if attempt == attempts:
                raise ServiceUnavailable(
                    f"cannot reach {what} after {attempts} attempts ({type(exc).__name__}: "
                    f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}); check {setting}"
                ) from exc
            delay = base_delay * 2 ** (attempt - 1)
            log.warning("%s unreachable (attempt %d/%d), retrying in %.1fs", what, attempt, attempts, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")
