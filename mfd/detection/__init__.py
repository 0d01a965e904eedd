"""Detection: readings scored by the champion in batches, failure events, and drift against the training data."""
