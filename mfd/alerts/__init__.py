"""Alerts a maintenance team can act on: the cost matrix and cost-optimal thresholds per machine type
(`costs`), the physics rule a reading is nearest to (`rules`), SHAP explanations of events
(`explanations`), the outbox written with the events and its webhook delivery (`outbox`, `webhooks`).

In: validation predictions, scored readings and their events. Out: thresholds per type, a batch's expected
cost against "no model" and "alarm on every rule hit", explained events delivered at least once."""
