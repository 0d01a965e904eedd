"""`make dev`'s services beside the Dagster and MLflow UIs, over the embedded store (`python -m
mfd.services.dev --state .mfd`): `mfd console` and, when Debian's mosquitto is installed, a broker with a
password file (one account, its password generated into `<state>/mqtt/secrets.json`, mode 0600) and
`mfd stream` subscribed to it. Runs until SIGTERM or SIGINT, then stops each; logs under `<state>/`."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from mfd.errors import MfdError
from mfd.services import mosquitto
from mfd.services.processes import stop_process_group, wait_until

MQTT_USER = "mfd"


def _password(root: Path) -> str:
    """The dev broker's password: read from `root`/secrets.json, generated there (0600) the first time."""
    path = root / "secrets.json"
    if not path.exists():
        root.mkdir(parents=True, exist_ok=True)
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
            json.dump({"mqtt_password": secrets.token_hex(24)}, out)
    return json.loads(path.read_text())["mqtt_password"]


def _start(command: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def _broker_and_stream(state: Path, port: int) -> list[subprocess.Popen]:
    """Mosquitto on `port` with the dev account, then `mfd stream` on it (it needs a champion: after
    `make run`); none when mosquitto is not installed."""
    try:
        binary = mosquitto.mosquitto_binary("mosquitto")
    except MfdError as exc:
        print(f"MQTT broker and mfd stream: not started ({exc})", flush=True)
        return []
    root = state / "mqtt"
    password = _password(root)
    config = mosquitto.broker_dir(root, port, MQTT_USER, password)
    broker = _start([binary, "-c", str(config)], root / "stderr.log")
    wait_until(
        lambda: mosquitto.accepts_login("127.0.0.1", port, MQTT_USER, password),
        f"mosquitto on port {port}",
        timeout=30,
        log=root / "mosquitto.log",
    )
    url = f"mqtt://127.0.0.1:{port}"
    env = {**os.environ, "MFD_MQTT_URL": url, "MFD_MQTT_USERNAME": MQTT_USER, "MFD_MQTT_PASSWORD": password}
    stream = _start([_mfd(), "stream"], state / "stream.log", env)
    print(
        f"MQTT broker: {url} (user {MQTT_USER}, password in {root / 'secrets.json'}); "
        f"mfd stream on plant/+/readings (log {state / 'stream.log'})",
        flush=True,
    )
    return [broker, stream]


def _mfd() -> str:
    return str(Path(sys.executable).with_name("mfd"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mfd.services.dev", description=__doc__.split("\n")[0])
    parser.add_argument("--state", type=Path, default=Path(".mfd"), help="the embedded state (default .mfd)")
    parser.add_argument("--console-port", type=int, default=3002)
    parser.add_argument("--mqtt-port", type=int, default=1883)
    args = parser.parse_args(argv)
    state = args.state.resolve()
    state.mkdir(parents=True, exist_ok=True)
    stopped: list[int] = []  # a flag, not a threading.Event: its set() inside a handler can deadlock wait()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stopped.append(signum))
    console = [_mfd(), "console", "--host", "127.0.0.1", "--port", str(args.console_port)]
    children = [_start(console, state / "console.log")]
    print(f"Console: http://127.0.0.1:{args.console_port} (log {state / 'console.log'})", flush=True)
    try:
        children += _broker_and_stream(state, args.mqtt_port)
        while not stopped:
            time.sleep(0.2)
    finally:
        for child in reversed(children):
            stop_process_group(child)
    return 0


if __name__ == "__main__":
    sys.exit(main())
