"""The vendored AI4I 2020 dataset (CC BY 4.0, S. Matzka; see mfd/data/README.md) mapped onto the schema."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd

from mfd.profiles import LABEL as LABEL_COLUMN
from mfd.profiles import shipped

_AI4I = shipped("ai4i")
FAILURE_MODE_COLUMNS: tuple[str, ...] = _AI4I.failure_modes

AI4I_SHA256 = "dc6630cd9b1f0f853922fad78a1b6436570d3f1ec863f1dd5c4340ac56bc8a8e"

_RENAME = {
    "Type": "machine_type",
    "Air temperature [K]": "air_temperature_k",
    "Process temperature [K]": "process_temperature_k",
    "Rotational speed [rpm]": "rotational_speed_rpm",
    "Torque [Nm]": "torque_nm",
    "Tool wear [min]": "tool_wear_min",
    "Machine failure": LABEL_COLUMN,
    **{m.upper(): m for m in FAILURE_MODE_COLUMNS},
}


def ai4i_path() -> Path:
    """Path of the vendored ai4i2020.csv."""
    return Path(str(resources.files("mfd") / "data" / "ai4i2020.csv"))


def load_ai4i(path: Path | None = None) -> pd.DataFrame:
    """AI4I rows as readings: one machine per product id, one reading a minute in UDI order."""
    raw = pd.read_csv(path or ai4i_path(), encoding="utf-8-sig")
    df = raw.rename(columns=_RENAME)
    df.insert(0, "machine_id", raw["Product ID"].astype("string"))
    df.insert(
        1, "timestamp", pd.Timestamp("2020-01-01", tz="UTC") + pd.to_timedelta(raw["UDI"] - 1, unit="min")
    )
    df["machine_type"] = df["machine_type"].astype("string")
    for col in _AI4I.sensor_columns:
        df[col] = df[col].astype("float64")
    for col in [LABEL_COLUMN, *FAILURE_MODE_COLUMNS]:
        df[col] = df[col].astype("Int8")
    return df.drop(columns=["UDI", "Product ID"])
