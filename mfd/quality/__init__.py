"""Quality: a grid-searched classifier panel scored on the raw and each augmented training set.

In: labelled training frames (raw + augmented) and the shared holdout. Out: a score table (score, fit time,
best parameters per classifier and set) and its bar chart."""
