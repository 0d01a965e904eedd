"""Webhook targets and one POST to one: a generic JSON body (the alert as stored) or a Slack-compatible one
(`text` plus blocks), an `Idempotency-Key` header, and a one-line reason for every way it can fail."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from mfd.errors import MfdError

Kind = Literal["json", "slack"]


class DeliveryFailed(MfdError):
    """A webhook did not take an alert; `permanent` when retrying the same request cannot help (4xx)."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class Target:
    url: str
    kind: Kind = "json"

    @property
    def name(self) -> str:
        """The URL without its path (Slack webhook paths are secrets), e.g. `slack:https://hooks.slack.com`."""
        parts = urlsplit(self.url)
        return f"{self.kind}:{parts.scheme}://{parts.netloc}"

    @property
    def key(self) -> str:
        """What `delivered_to` records: kind and full URL hashed, so a changed URL is a new target."""
        return f"{self.kind}:{hashlib.sha256(self.url.encode()).hexdigest()[:16]}"


def parse_targets(json_urls: str, slack_urls: str = "") -> list[Target]:
    """Targets from comma-separated URLs; MfdError for one that is not http(s)."""
    targets = []
    for kind, text in (("json", json_urls), ("slack", slack_urls)):
        for url in (u.strip() for u in text.split(",")):
            if not url:
                continue
            if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
                raise MfdError(f"webhook URL starting {url[:8]!r} is not an http(s) URL with a host")
            targets.append(Target(url, kind))  # type: ignore[arg-type]
    return targets


def _escalation_text(alert: dict[str, Any]) -> str:
    """An escalated alarm (`mfd.alarms.lifecycle.escalation_payload`) in one Slack line."""
    return (
        f":rotating_light: Alarm {alert['alarm_id']} on machine {alert['machine_id']} unacknowledged for "
        f"{alert['unacknowledged_for_s'] / 60:.0f} min: {alert['count']} readings past the threshold, "
        f"peak risk {alert['peak_risk']:.3f}"
    )


def slack_body(alert: dict[str, Any]) -> dict[str, Any]:
    """A Slack incoming-webhook message for an alert (a predicted failure, or an escalated alarm)."""
    if alert.get("event") == "alarm_escalated":
        text = _escalation_text(alert)
        return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]}
    features = ", ".join(f"{f['feature']} {f['attribution']:+.3f}" for f in alert.get("top_features", []))
    rule = alert.get("nearest_rule") or {}
    text = (
        f":rotating_light: Predicted failure on machine {alert['machine_id']} (type {alert.get('machine_type')}) "
        f"at {alert['timestamp']}: probability {alert['probability']:.3f} >= threshold {alert['threshold']:.3f} "
        f"({alert['model_name']} v{alert['model_version']})"
    )
    episode = alert.get("episode")
    if episode:  # one message per episode of the machine (mfd.alerts.outbox)
        text += (
            f"; {episode['count']} reading(s) past the threshold from {episode['first_seen']} to "
            f"{episode['last_seen']}, peak {episode['peak_probability']:.3f}"
        )
    details = [
        f"*Top SHAP features*: {features or 'none'}",
        f"*Nearest physics rule*: {rule.get('rule', '-')} ({'fires' if rule.get('fires') else 'not firing'}, "
        f"margin {rule.get('margin', float('nan')):+.3f}): {rule.get('detail', '')}",
    ]
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(details)}},
        ],
    }


def body(target: Target, alert: dict[str, Any]) -> bytes:
    return json.dumps(slack_body(alert) if target.kind == "slack" else alert).encode()


def post(target: Target, alert: dict[str, Any], idempotency_key: str, timeout: float) -> None:
    """POST the alert; DeliveryFailed with a reason unless the target answers 2xx within `timeout` s."""
    request = urllib.request.Request(
        target.url,
        data=body(target, alert),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Idempotency-Key": idempotency_key,
            "User-Agent": "mfd-alerts",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read(200).decode(errors="replace").strip().replace("\n", " ")
        if 400 <= exc.code < 500 and exc.code not in (408, 429):
            raise DeliveryFailed(
                f"webhook {target.name} refused the alert: HTTP {exc.code} {exc.reason}"
                + (f" ({detail})" if detail else "")
                + "; check its URL and what it accepts (kept pending, retried)",
                permanent=True,
            ) from None
        raise DeliveryFailed(
            f"webhook {target.name} failed: HTTP {exc.code} {exc.reason}" + (f" ({detail})" if detail else "")
        ) from None
    except TimeoutError:
        raise DeliveryFailed(f"webhook {target.name} did not answer within {timeout:g} s") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise DeliveryFailed(f"webhook {target.name} did not answer within {timeout:g} s") from None
        raise DeliveryFailed(f"webhook {target.name} unreachable ({reason})") from None
    except (ConnectionError, OSError) as exc:
        raise DeliveryFailed(f"webhook {target.name} unreachable ({type(exc).__name__}: {exc})") from None
