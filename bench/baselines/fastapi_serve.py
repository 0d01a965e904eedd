"""The seeds-style baseline: FastAPI + uvicorn, one reading per request, pydantic -> 1-row DataFrame ->
predict_proba. Loads `models:/$MFD_MODEL_NAME@champion` from $MFD_MLFLOW_TRACKING_URI."""

from __future__ import annotations

import os

import mlflow.sklearn
import pandas as pd
from fastapi import FastAPI
from pydantic import create_model

from mfd.schema import SEGMENT_COLUMN, SENSOR_COLUMNS

app = FastAPI()
mlflow.set_tracking_uri(os.environ["MFD_MLFLOW_TRACKING_URI"])
model = mlflow.sklearn.load_model(f"models:/{os.environ['MFD_MODEL_NAME']}@champion")


# The active plant profile's reading: its segment and sensors, as a hand-written model would declare them.
Reading = create_model("Reading", **{SEGMENT_COLUMN: (str, ...)}, **{c: (float, ...) for c in SENSOR_COLUMNS})


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/predict")
def predict(reading: Reading) -> dict[str, float]:
    probability = float(model.predict_proba(pd.DataFrame([reading.model_dump()]))[0, 1])
    return {"probability": probability, "label": float(probability >= 0.5)}
