"""Patches of BentoML internals, each applied only to the BentoML versions it was written against.

`cancel_request_timers`: BentoML 1.4's TimeoutMiddleware (`bentoml._internal.server.http.traffic`) schedules
`loop.call_later(traffic.timeout, ...)` for every request and never cancels it, so each request keeps a
timer, a future and a context alive for the whole timeout (30 s here: ~90k objects at 3,000 req/s). The full
garbage collections that scanned them stalled the event loop for up to 240 ms (single-reading p99
55-220 ms; 10-13 ms with the patch; docs/serving.md). No upstream issue found (BentoML issues searched for
the timer leak, December 2026). The patch applies to 1.4.x, and only while the middleware is still the
leaking implementation (it has `_set_timer_out`); on any other version BentoML's own code runs.
"""

from __future__ import annotations

import asyncio
from importlib.metadata import version
from typing import Any

from starlette.responses import JSONResponse

from mfd.serving.guards import Message, Receive, Scope, Send

PATCHED_SERIES = (1, 4)


async def _answer_within_timeout(self: Any, scope: Scope, receive: Receive, send: Send) -> None:
    """504 unless the response starts within `self.timeout` seconds; the timer is cancelled in every case."""
    if scope["type"] not in ("http", "websocket"):
        await self.app(scope, receive, send)
        return
    started = asyncio.get_running_loop().create_future()

    async def send_and_mark(message: Message) -> None:
        if not started.done():
            started.set_result(None)
        await send(message)

    app = asyncio.ensure_future(self.app(scope, receive, send_and_mark))
    timeout = self.timeout
    # asyncio.wait cancels its own timeout timer as soon as either future completes.
    await asyncio.wait((started, app), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    if started.done() or app.done():
        await app
    elif app.cancel():
        error = {"error": f"Not able to process the request in {timeout} seconds"}
        await JSONResponse(error, status_code=504)(scope, receive, send)


def cancel_request_timers() -> bool:
    """Make TimeoutMiddleware cancel its per-request timer; True if patched (see the module docstring)."""
    series = tuple(int(part) for part in version("bentoml").split(".")[:2])
    if series != PATCHED_SERIES:
        return False
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    if not hasattr(TimeoutMiddleware, "_set_timer_out"):  # fixed upstream within the series
        return False
    TimeoutMiddleware.__call__ = _answer_within_timeout  # type: ignore[method-assign, assignment]
    return True
