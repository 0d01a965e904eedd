"""ASGI middleware run before any route: API-key check (401) and request-body cap (413).

Both answer on their own, so a refused request never reaches the model. Keys are compared in constant
time and never logged. With keys configured every HTTP route and websocket needs one except the health
probes (HEALTH_PATHS) and, for GET and HEAD, BentoML's Swagger page with its OpenAPI spec and static assets
(DOC_PATHS, DOC_PREFIXES: the API's shape, no model, no data); `/metrics` is not a probe (it names the served
versions and the traffic), so a Prometheus scraper sends a key, and so does `/status`. In production a
service without keys refuses to start (`required_keys`).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from mfd.errors import MfdError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HEALTH_PATHS: frozenset[str] = frozenset({"/healthz", "/livez", "/readyz"})
# BentoML's docs: the Swagger page (`/`), its spec (`/docs.json`, `/schema.json`) and the files it loads.
DOC_PATHS: frozenset[str] = frozenset({"/", "/docs.json", "/schema.json"})
DOC_PREFIXES: tuple[str, ...] = ("/static_content/", "/assets/")


def is_docs(method: str, path: str) -> bool:
    """True for a GET or HEAD of the Swagger page, its spec or one of its static files (never `..`)."""
    if method not in ("GET", "HEAD") or ".." in path.split("/"):
        return False
    return path in DOC_PATHS or path.startswith(DOC_PREFIXES)


def parse_keys(setting: str) -> tuple[str, ...]:
    """Comma-separated keys (MFD_API_KEYS) -> the non-empty ones."""
    return tuple(k.strip() for k in setting.split(",") if k.strip())


def required_keys(deployment: str, api_keys: str) -> tuple[str, ...]:
    """The keys from MFD_API_KEYS; MfdError in production when there are none (every route would be open)."""
    keys = parse_keys(api_keys)
    if deployment == "production" and not keys:
        raise MfdError(
            "MFD_DEPLOYMENT=production needs MFD_API_KEYS (comma-separated keys): refusing to serve "
            "/predict and /reload without authentication"
        )
    return keys


def key_matches(authorization: str | None, keys: Iterable[str]) -> bool:
    """True when `authorization` is `Bearer <one of keys>`; every key is compared, in constant time."""
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not presented:
        return False
    token = presented.strip().encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(token, key.encode())
    return matched


async def _answer(send: Send, status: int, error: str, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"error": error}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class ApiKeyMiddleware:
    """401 unless `Authorization: Bearer <key>` names a configured key; health probes and docs stay open."""

    def __init__(
        self, app: ASGIApp, keys: tuple[str, ...], open_paths: frozenset[str] = HEALTH_PATHS
    ) -> None:
        self.app, self.keys, self.open_paths = app, keys, open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or not self.keys or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
        elif kind == "http" and is_docs(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
        elif key_matches(_header(scope, b"authorization"), self.keys):
            await self.app(scope, receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # policy violation, before accepting
        else:
            await _answer(send, 401, "missing or wrong API key", [(b"www-authenticate", b"Bearer")])


class BodyLimitMiddleware:
    """413 for a request body over `max_bytes`, by Content-Length or by counting a chunked body."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit():
            if int(length) > self.max_bytes:
                await _answer(send, 413, f"request body over {self.max_bytes} bytes (MFD_MAX_REQUEST_BYTES)")
                return
            await self.app(scope, receive, send)
            return
        # No Content-Length (chunked): read it here, bounded, then replay it to the app.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                await _answer(send, 413, f"request body over {self.max_bytes} bytes (MFD_MAX_REQUEST_BYTES)")
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)
