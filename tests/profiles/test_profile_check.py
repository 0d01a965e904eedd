"""`mfd profile check PATH` prints the rule table a profile derives and exits 0, or exits 2 with one line on
stderr naming the key and what is wrong; it reads the file given, whatever MFD_PROFILE says."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mfd.cli.main import main
from mfd.profiles import _TOP_KEYS, load

# A plant that is neither AI4I nor C-MAPSS: every key of a profile, written as docs/profiles.md shows it.
PUMP: dict = {
    "name": "pump-station",
    "description": "centrifugal pumps, one reading a minute",
    "machine": {"column": "asset_id"},
    "timestamp": {"column": "ts"},
    "attributes": {"pump_model": {"values": ["A", "B"]}},
    "sensors": {
        "vibration_mm_s": {"unit": "mm/s", "min": 0, "max": 50},
        "pressure_bar": {"unit": "bar", "min": 0, "max": 16},
        "motor_current_a": {"unit": "A", "min": 0, "max": 200},
        "bearing_temperature_c": {"unit": "degC", "min": -20, "max": 150},
    },
    "label": {"column": "failed"},
    "failures": {"records": "maintenance"},
    "horizon": "6 h",
    "windows": [5, 30],
    "derived": {"hydraulic_power_kw": {"expression": "pressure_bar * motor_current_a / 10", "unit": "kW"}},
    "peripheral": {"ambient_temperature_c": {"unit": "degC", "min": -40, "max": 60}},
    "costs": {"B": {"missed_failure": 25000, "false_stop": 800}},
    "generator": "generic",
}


@pytest.fixture(autouse=True)
def broken_active_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check never reads MFD_PROFILE: point it at nothing to prove it."""
    monkeypatch.setenv("MFD_PROFILE", "/nonexistent/profile.yaml")


def _write(tmp_path: Path, body: dict | str) -> Path:
    path = tmp_path / "plant.yaml"
    path.write_text(body if isinstance(body, str) else yaml.safe_dump(body, sort_keys=False))
    return path


def _check(path: Path | str, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    status = main(["profile", "check", str(path)])
    out, err = capsys.readouterr()
    return status, out, err


def test_a_plant_of_its_own_prints_its_rule_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    status, out, err = _check(_write(tmp_path, PUMP), capsys)
    assert (status, err) == (0, "")
    assert "pump-station@" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert rows["asset_id"][:2] == ["asset_id", "machine_id"]
    assert rows["ts"][:2] == ["ts", "timestamp"]
    assert rows["pump_model"][:3] == ["pump_model", "machine_type", "segment"] and "A," in rows["pump_model"]
    assert rows["bearing_temperature_c"] == ["bearing_temperature_c", "bearing_temperature_c", "sensor", "degC",
                                             "-20", "150", "no"]  # fmt: skip
    assert rows["failed"][:2] == ["failed", "machine_failure"]
    assert "hydraulic_power_kw" in rows and "pressure_bar * motor_current_a / 10" in out
    assert rows["ambient_temperature_c"] == ["ambient_temperature_c", "degC", "-40", "60"]
    assert "6 h" in out and "5, 30 readings" in out and "generic" in out
    costs = out.split("alarm costs per segment")[1].splitlines()
    assert costs[1].split() == ["segment", "missed_failure", "false_stop", "late_alarm"]
    assert costs[3].split() == ["A", "10000", "500", "4000"]  # the example figures
    assert costs[4].split() == ["B", "25000", "800", "4000"]


@pytest.mark.parametrize("name", ["ai4i", "cmapss"])
def test_the_shipped_profiles_check(name: str, capsys: pytest.CaptureFixture) -> None:
    status, out, err = _check(name, capsys)
    assert (status, err) == (0, "")
    assert f"{name}@" in out and f"mfd/profiles/{name}.yaml" in out
    assert "w32_lpt_coolant_bleed" in out if name == "cmapss" else "power_w" in out


def test_profile_list_names_the_shipped_profiles(capsys: pytest.CaptureFixture) -> None:
    assert main(["profile", "list"]) == 0
    out = capsys.readouterr().out
    assert "ai4i@" in out and "cmapss@" in out and "NASA C-MAPSS" in out


def _broken(change: str) -> dict:
    """PUMP with one thing wrong (`change` names the case)."""
    body = copy.deepcopy(PUMP)
    sensors = body["sensors"]
    match change:
        case "unknown top key":
            body["sensor"] = {}
        case "unknown sensor key":
            sensors["pressure_bar"]["scale"] = 10
        case "unknown machine key":
            body["machine"]["records"] = "maintenance"
        case "unknown derived key":
            body["derived"]["hydraulic_power_kw"]["window"] = 5
        case "min above max":
            sensors["pressure_bar"].update(min=20, max=16)
        case "duplicate sensor and machine column":
            sensors["asset_id"] = {"min": 0, "max": 1}
        case "duplicate derived and sensor":
            body["derived"]["pressure_bar"] = {"expression": "motor_current_a * 2"}
        case "duplicate up to case":
            sensors["Pressure_Bar"] = {"min": 0, "max": 16}
        case "reserved sensor name":
            sensors["probability"] = {"min": 0, "max": 1}
        case "reserved canonical name":
            sensors["timestamp"] = {"min": 0, "max": 1}
        case "derived names an unknown sensor":
            body["derived"]["flow"] = {"expression": "pressure_bar * flow_rate_m3_h"}
        case "empty sensor list":
            body["sensors"] = {}
        case "no sensors key":
            del body["sensors"]
        case "not a number":
            sensors["pressure_bar"]["max"] = float("nan")
        case "horizon without unit":
            body["horizon"] = 30
        case "costs of no segment":
            body["costs"]["C"] = {"missed_failure": 1}
        case "column name with a space":
            sensors["motor current"] = {"min": 0, "max": 1}
    return body


CASES: dict[str, str] = {
    "unknown top key": "sensor: unknown key",
    "unknown sensor key": "sensors.pressure_bar.scale: unknown key",
    "unknown machine key": "machine.records: unknown key",
    "unknown derived key": "derived.hydraulic_power_kw.window: unknown key",
    "min above max": "sensors.pressure_bar: min 20 above max 16",
    "duplicate sensor and machine column": "sensors.asset_id: column 'asset_id' is also machine.column",
    "duplicate derived and sensor": "derived.pressure_bar: column 'pressure_bar' is also sensors.pressure_bar",
    "duplicate up to case": "sensors.Pressure_Bar: column 'Pressure_Bar' is also sensors.pressure_bar",
    "reserved sensor name": "sensors.probability: 'probability' is a reserved column name",
    "reserved canonical name": "sensors.timestamp: 'timestamp' is a reserved column name",
    "derived names an unknown sensor": "derived.flow.expression: 'flow_rate_m3_h' is not a sensor",
    "empty sensor list": "sensors: a profile needs at least one sensor",
    "no sensors key": "sensors: a profile needs at least one sensor",
    "not a number": "sensors.pressure_bar.max: expected a finite number",
    "horizon without unit": "horizon: 30 has no unit",
    "costs of no segment": "costs.C: not a segment value (A, B)",
    "column name with a space": "sensors.motor current: 'motor current' is not a column name",
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_profile_that_cannot_run_exits_2_with_one_line_naming_the_key(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = _write(tmp_path, _broken(case))
    status, out, err = _check(path, capsys)
    assert (status, out) == (2, "")
    assert err.count("\n") == 1, err
    assert err.startswith(f"mfd: error: profile {path}: {CASES[case]}"), err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: [", "not valid YAML"),
        ("", "(top level): expected a mapping, got NoneType"),
        ("- a\n- b\n", "(top level): expected a mapping, got list"),
    ],
)
def test_a_file_that_is_no_profile_exits_2_with_one_line(
    text: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    status, out, err = _check(_write(tmp_path, text), capsys)
    assert (status, out, err.count("\n")) == (2, "", 1)
    assert expected in err


def test_a_missing_file_exits_2_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    status, _, err = _check(tmp_path / "nope.yaml", capsys)
    assert status == 2
    assert (
        err
        == f"mfd: error: profile {tmp_path / 'nope.yaml'}: no such file, and not a shipped profile (ai4i, cmapss)\n"
    )


def test_the_installed_command_binds_nothing_to_the_active_profile(tmp_path: Path) -> None:
    """In a fresh process with a broken MFD_PROFILE: exit 0, and neither mfd.schema nor mfd.validation
    (which load the active profile) is imported."""
    path = _write(tmp_path, PUMP)
    script = (
        "import sys; from mfd.cli.main import main; status = main(['profile', 'check', sys.argv[1]]); "
        "bound = [m for m in ('mfd.schema', 'mfd.validation', 'mfd.settings') if m in sys.modules]; "
        "print('bound:', bound); sys.exit(status)"
    )
    env = {**os.environ, "MFD_PROFILE": "/nonexistent/profile.yaml"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "pump-station@" in done.stdout and "bound: []" in done.stdout
    cli = Path(sys.executable).parent / "mfd"
    bad = _write(tmp_path, _broken("min above max"))
    done = subprocess.run([str(cli), "profile", "check", str(bad)], env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == f"mfd: error: profile {bad}: sensors.pressure_bar: min 20 above max 16\n"


def test_the_documented_example_is_the_checked_file_and_every_key_is_documented() -> None:
    """docs/profiles.md shows docs/examples/compressor-station.yaml verbatim, and its table names every key."""
    repo = Path(__file__).resolve().parents[2]
    page = (repo / "docs" / "profiles.md").read_text()
    example = repo / "docs" / "examples" / "compressor-station.yaml"
    assert f"```yaml\n{example.read_text()}```" in page
    profile = load(str(example))
    assert (profile.name, profile.segments, len(profile.sensors)) == (
        "compressor-station",
        ("two_throw", "four_throw"),
        5,
    )
    for key in _TOP_KEYS:
        assert f"| `{key}` |" in page, key
