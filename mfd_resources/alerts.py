"""`AlertWebhooks`: where failure alerts are delivered (generic JSON and Slack webhooks) and how."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

from mfd.alerts.webhooks import Target, parse_targets


class AlertWebhooks(dg.ConfigurableResource):
    """Webhook URLs (comma-separated; given through dg.EnvVar, since a Slack URL is a secret), the dedup
    window and the per-request timeout. No URL: alerts wait in the outbox."""

    webhook_urls: str = ""
    slack_webhook_urls: str = ""
    dedup_window_s: float = 900.0
    timeout_s: float = 5.0

    def targets(self) -> list[Target]:
        return parse_targets(self.webhook_urls, self.slack_webhook_urls)

    @property
    def window(self) -> timedelta:
        return timedelta(seconds=self.dedup_window_s)
