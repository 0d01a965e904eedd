"""Modeling: model families, tuning, metrics, the candidate, the holdout and the deployable pipeline.

In: a labelled training frame. Out: a fitted `Pipeline` (readings -> failure probability) with its threshold,
CV and holdout scores and latency, logged to MLflow (`model_io` is the logging/loading contract every
consumer uses); `sequence/` does the same for per-machine windows (LSTM, GRU, BiLSTM, Conv1D, autoencoder)."""
