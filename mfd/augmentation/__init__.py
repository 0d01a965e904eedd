"""Augmented training sets: synthetic failures from a conditional GAN, SMOTE oversampling, and corrupted
copies of real rows chosen by a selection strategy. Each set = the real training rows + synthetic rows,
marked by a boolean `synthetic` column; synthetic rows carry no id, so they can never be holdout rows."""
