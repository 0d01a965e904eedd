"""The `/predict` request and response: one reading per item, checked against the schema's physical ranges."""

from __future__ import annotations

from http import HTTPStatus
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict

from mfd.errors import MfdError
from mfd.schema import MACHINE_TYPES, SENSOR_RANGES

MachineType = Literal[MACHINE_TYPES]  # type: ignore[valid-type]


def _sensor(column: str) -> Any:
    r = SENSOR_RANGES[column]
    limits = Field(
        ge=r.low, le=r.high, allow_inf_nan=False, strict=True, description=f"{r.unit}, {r.low}-{r.high}"
    )
    return Annotated[float, limits]


AirTemperatureK = _sensor("air_temperature_k")
ProcessTemperatureK = _sensor("process_temperature_k")
RotationalSpeedRpm = _sensor("rotational_speed_rpm")
TorqueNm = _sensor("torque_nm")
ToolWearMin = _sensor("tool_wear_min")


# TypedDicts, not models: validating 1,000 readings costs a third of what BaseModel instances cost.
@with_config(ConfigDict(extra="forbid"))
class Reading(TypedDict):
    """What a caller sends to score one reading: the machine type and the five sensors (numbers only)."""

    machine_type: MachineType
    air_temperature_k: AirTemperatureK
    process_temperature_k: ProcessTemperatureK
    rotational_speed_rpm: RotationalSpeedRpm
    torque_nm: TorqueNm
    tool_wear_min: ToolWearMin


class Prediction(TypedDict):
    """The champion's answer for one reading: label is 1 when probability >= threshold."""

    probability: float
    label: int
    threshold: float
    model_name: str
    model_version: str


class RejectedRequest(MfdError):
    """A request the service refuses before any model call; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.UNPROCESSABLE_ENTITY) -> None:
        super().__init__(message)
        self.status = status


_readings = TypeAdapter(list[Reading])


def _where(loc: tuple[int | str, ...]) -> str:
    index, *fields = loc if loc else ("?",)
    return f"readings[{index}]" + "".join(f".{f}" for f in fields)


def describe(error: ValidationError, limit: int = 10) -> str:
    """One line per bad field: where it is, why it is rejected, and the value sent (first `limit`)."""
    lines = []
    for e in error.errors(include_url=False)[:limit]:
        got = "" if e["type"] == "missing" else f" (got {e['input']!r})"
        lines.append(f"{_where(e['loc'])}: {e['msg']}{got}")
    more = error.error_count() - limit
    return "; ".join(lines) + (f"; and {more} more" if more > 0 else "")


def parse_readings(data: object, max_readings: int) -> list[Reading]:
    """Validate a decoded JSON list of readings; RejectedRequest (422, or 413 when too many) otherwise."""
    if not isinstance(data, list):
        raise RejectedRequest(f"readings must be a list of readings, got {type(data).__name__}")
    if not data:
        raise RejectedRequest("readings is empty: send at least one reading")
    if len(data) > max_readings:
        raise RejectedRequest(
            f"{len(data)} readings in one request; the limit is {max_readings} (MFD_MAX_READINGS)",
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        )
    try:
        return _readings.validate_python(data)
    except ValidationError as exc:
        raise RejectedRequest(describe(exc)) from exc
