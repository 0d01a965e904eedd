"""Peripheral devices per machine (power meter, vibration, ambient temperature) on their own clock."""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from mfd.generator.fleet import angular_speed
from mfd.generator.randomness import keyed_normal, keyed_uniform, splitmix64
from mfd.schema import PERIPHERAL_COLUMNS

PERIPHERAL_PERIOD_S = 120.0
PERIPHERAL_JITTER_S = 5.0


def generate_peripheral(
    readings: pd.DataFrame,
    seed: int,
    reading_interval_s: float = 60.0,
    period_s: float = PERIPHERAL_PERIOD_S,
) -> pd.DataFrame:
    """Peripheral rows (power meter, vibration, ambient temperature) for the time the readings cover.

    Each machine's devices report every `period_s` on their own clock (a per-machine phase plus up to
    5 s jitter), so joining them to readings needs a merge_asof on the nearest earlier timestamp. A
    machine's readings at t0..t1 cover [t0, t1 + reading_interval_s): consecutive chunks of one run
    give every device tick exactly once, whatever the chunking.
    """
    if readings.empty:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in PERIPHERAL_COLUMNS}).astype(
            {"machine_id": "object", "timestamp": "datetime64[ns, UTC]"}
        )
    codes, ids = pd.factorize(readings["machine_id"].astype(str), sort=True)
    ns_read = pd.to_datetime(readings["timestamp"], utc=True).dt.as_unit("ns").astype("int64").to_numpy()
    span = pd.DataFrame({"code": codes, "ns": ns_read}).groupby("code")["ns"].agg(["min", "max"])
    first, last = span["min"].to_numpy(), span["max"].to_numpy()
    keys = np.array([zlib.crc32(m.encode()) for m in ids], dtype=np.uint64) + (
        np.uint64(seed & 0xFFFFFFFF) << np.uint64(32)
    )
    ms = 1_000_000
    period_ns, jitter_ms = round(period_s * 1000) * ms, round(PERIPHERAL_JITTER_S * 1000)
    phase = np.floor(keyed_uniform(keys, 1) * (period_ns // ms)).astype(np.int64) * ms
    end = last + round(reading_interval_s * 1000) * ms
    first_k = (first - phase - jitter_ms * ms) // period_ns
    counts = (end - phase) // period_ns - first_k + 1
    machine = np.repeat(np.arange(len(ids)), counts)
    k = np.repeat(first_k, counts) + np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    tick_key = keys[machine] ^ splitmix64(k.astype(np.uint64))
    ns = (
        k * period_ns
        + phase[machine]
        + np.floor(keyed_uniform(tick_key, 2) * jitter_ms).astype(np.int64) * ms
    )
    keep = (ns >= first[machine]) & (ns < end[machine])
    ticks = pd.DataFrame(
        {"code": machine[keep], "timestamp": pd.DatetimeIndex(ns[keep], tz="UTC"), "key": tick_key[keep]}
    ).sort_values("timestamp", kind="stable")
    source = pd.DataFrame(
        {
            "code": codes,
            "timestamp": pd.DatetimeIndex(ns_read, tz="UTC"),
            "power_w": (readings["torque_nm"] * angular_speed(readings["rotational_speed_rpm"])).to_numpy(),
            "wear": readings["tool_wear_min"].to_numpy(),
            "air": readings["air_temperature_k"].to_numpy(),
        }
    ).sort_values("timestamp", kind="stable")
    joined = pd.merge_asof(ticks, source, on="timestamp", by="code", direction="backward")
    key = joined["key"].to_numpy()
    power = joined["power_w"].to_numpy() * (1.0 + 0.02 * keyed_normal(key, 3)) + 40.0 * keyed_normal(key, 4)
    vibration = 1.2 + 0.012 * joined["wear"].to_numpy() + 0.15 * keyed_normal(key, 5)
    ambient = joined["air"].to_numpy() - 3.0 + 0.5 * keyed_normal(key, 6)
    out = pd.DataFrame(
        {
            "machine_id": ids.to_numpy()[joined["code"].to_numpy()],
            "timestamp": joined["timestamp"],
            "power_meter_w": np.round(np.clip(power, 0.0, None), 1),
            "vibration_mm_s": np.round(np.clip(vibration, 0.0, None), 2),
            "ambient_temperature_k": np.round(ambient, 1),
        }
    )
    return out.sort_values(["timestamp", "machine_id"], kind="stable").reset_index(drop=True)[
        list(PERIPHERAL_COLUMNS)
    ]
