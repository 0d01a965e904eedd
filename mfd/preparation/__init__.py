"""Preparation: the training set from the readings table.

In: the `readings` and `peripheral_readings` tables. Out: `training_set` (readings joined with the nearest
earlier peripheral values, physics features), `cleaned_set` (IQR outliers removed, counted) and machine
clusters (MDS embedding + k-means); the training-set Great Expectations suite."""
