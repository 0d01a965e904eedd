"""Detection: readings scored by the champion in batches, failure events, and drift.

In: the `readings` table (ids planned by `planning`, so every reading is scored once whatever order its
load commits in) and the champion from `mfd.registry.champion`. Out: rows in `predictions` and
`failure_events`, the `every_reading_scored` coverage count, and the drift table of recent readings against
AI4I 2020."""
