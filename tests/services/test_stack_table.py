"""The stack's table of services and what its services are given, without starting the stack: every port
has its service, every need has its step, the generated Prometheus config passes promtool, a secrets file
from before the broker gains its password and keeps its other values, owner-only."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from dataclasses import fields
from pathlib import Path

import pytest

from mfd.services.stack import NEEDS, SERVICE_TABLE, SERVICES, Ports, Stack, _prometheus_config, service


def test_every_port_is_one_services_and_every_need_has_its_step() -> None:
    ports = Ports()
    owned = [port for entry in SERVICE_TABLE for port in entry.ports(ports)]
    assert sorted(owned) == sorted(getattr(ports, f.name) for f in fields(ports))
    assert all(need in NEEDS for entry in SERVICE_TABLE for need in entry.needs)
    assert {entry.name for entry in SERVICE_TABLE if entry.after_champion} == {"bento", "stream"}
    assert len(set(SERVICES)) == len(SERVICES)
    with pytest.raises(Exception, match="unknown service 'nope'"):
        service("nope")


def test_the_stack_prometheus_config_passes_promtool_and_scrapes_the_stack(tmp_path: Path) -> None:
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    assert Path(promtool).exists(), "Debian's prometheus (promtool) is missing: `make deps` installs it"
    stack = Stack(tmp_path, Ports(console=3102, bento=3101, prometheus=9190))
    _prometheus_config(stack)
    config = tmp_path / "prometheus" / "prometheus.yml"
    checked = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    text = config.read_text()
    assert all(f"127.0.0.1:{port}" in text for port in (3102, 3101, 9190))
    key = tmp_path / "prometheus" / "bento-api-key"
    assert key.read_text() == stack.secrets()["api_key"] and stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stack.secrets()["api_key"] not in text


def test_a_secrets_file_from_before_the_broker_gains_its_password(tmp_path: Path) -> None:
    stack = Stack(tmp_path, Ports())
    old = {"s3_access_key": "mfdabc", "s3_secret_key": "s" * 48, "api_key": "a" * 48, "pg_password": "p" * 48}
    stack.secrets_file.write_text(json.dumps(old))
    stack.secrets_file.chmod(0o600)
    now = stack.secrets()
    assert {k: now[k] for k in old} == old and len(now["mqtt_password"]) == 48
    assert json.loads(stack.secrets_file.read_text()) == now
    assert stat.S_IMODE(stack.secrets_file.stat().st_mode) == 0o600
    env = stack.env()
    assert env["MFD_MQTT_PASSWORD"] == now["mqtt_password"] and env["MFD_MQTT_USERNAME"] == "mfd"
    assert env["MFD_MQTT_URL"] == "mqtt://127.0.0.1:1883"
