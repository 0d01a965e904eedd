"""Asking a running service to re-check its champion (`POST /reload`)."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from mfd.errors import MfdError


def request_reload(service_url: str, api_key: str | None = None, timeout_s: float = 20.0) -> dict[str, Any]:
    """POST `<service_url>/reload`; returns the service's status (what it serves after the check)."""
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(
        f"{service_url.rstrip('/')}/reload", data=b"{}", headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - configured URL
            return json.loads(response.read())
    except OSError as exc:
        raise MfdError(
            f"reload of {service_url} failed ({exc}); check MFD_SERVICE_URL and MFD_API_KEYS"
        ) from exc


def service_down(service_url: str, timeout_s: float = 2.0) -> str | None:
    """None when `<service_url>/readyz` answers 200, else why not: for callers that go on without it."""
    try:
        with urllib.request.urlopen(f"{service_url.rstrip('/')}/readyz", timeout=timeout_s) as response:  # noqa: S310
            return None if response.status == 200 else f"/readyz answered {response.status}"
    except OSError as exc:
        return str(exc)
