"""Progress of a long command: mfd's own INFO log lines as a tqdm bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from tqdm import tqdm


class LogProgress(logging.Handler):
    """Each record advances a bar whose label is the latest line (terminal), or is printed as it is."""

    def __init__(self, stream: TextIO, unit: str) -> None:
        super().__init__(logging.INFO)
        self.stream = stream
        self.bar = tqdm(unit=unit, file=stream, dynamic_ncols=True) if stream.isatty() else None

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if self.bar is None:
            print(message, file=self.stream, flush=True)
        else:
            self.bar.set_description_str(message, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        super().close()


@contextmanager
def log_progress(logger: str, unit: str, stream: TextIO | None = None) -> Iterator[None]:
    """Show `logger`'s INFO records (e.g. `mfd.modeling`'s one line per trial) while the block runs."""
    target = logging.getLogger(logger)
    handler = LogProgress(stream or sys.stderr, unit)
    previous = target.level, target.propagate
    target.addHandler(handler)
    target.setLevel(min(previous[0] or logging.WARNING, logging.INFO))
    target.propagate = False  # shown once, by this handler
    try:
        yield
    finally:
        target.removeHandler(handler)
        target.setLevel(previous[0])
        target.propagate = previous[1]
        handler.close()
