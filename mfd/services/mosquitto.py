"""A throw-away Mosquitto MQTT broker on 127.0.0.1: persistence on (queued QoS 1 messages of persistent
sessions survive a restart), a password file written by `mosquitto_passwd` (no anonymous clients), no
limit on in-flight or queued messages per client (a consumer that acknowledges whole micro-batches, or is
down for a while, loses nothing). `stop()` and `start()` restart it on the same port and store."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mfd.errors import MfdError
from mfd.services.processes import free_port, stop_process_group, wait_until

USER = "mfd"


def mosquitto_binary(name: str) -> str:
    """`mosquitto` or `mosquitto_passwd` on PATH or in Debian's /usr/sbin; MfdError when missing."""
    found = shutil.which(name) or next((str(p) for p in (Path("/usr/sbin") / name,) if p.exists()), None)
    if not found:
        raise MfdError(f"{name} not found: install Debian's mosquitto (make deps does)")
    return found


def broker_config(root: Path, port: int, passwords: Path, log: str | None = None) -> str:
    """mosquitto.conf: one listener on 127.0.0.1:`port`, persistence under `root`, password file; the log
    to `root`/mosquitto.log unless `log` names another destination (`stderr` under a supervisor)."""
    return "\n".join(
        [
            f"listener {port} 127.0.0.1",
            "allow_anonymous false",
            f"password_file {passwords}",
            "persistence true",
            f"persistence_location {root}/",
            "autosave_interval 1",
            "max_inflight_messages 0",
            "max_queued_messages 0",
            "max_packet_size 1048576",
            f"log_dest {log or 'file ' + str(root / 'mosquitto.log')}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "",
        ]
    )


@dataclass
class Mosquitto:
    """A broker process; `username`/`password` are the one account of its password file."""

    host: str
    port: int
    username: str
    password: str
    root: Path
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def log(self) -> Path:
        return self.root / "mosquitto.log"

    def start(self) -> None:
        """Start the broker (again) on its port and store; returns once it accepts connections."""
        if self._proc is not None and self._proc.poll() is None:
            return
        self._proc = subprocess.Popen(
            [mosquitto_binary("mosquitto"), "-c", str(self.root / "mosquitto.conf")],
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "stderr.log", "ab"),  # noqa: SIM115 - the child holds it
            start_new_session=True,
        )
        wait_until(self._accepts, f"mosquitto on port {self.port}", timeout=30, log=self.root / "stderr.log")

    def _accepts(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            raise MfdError(f"mosquitto exited with status {self._proc.returncode}; see {self.log}")
        with socket.create_connection((self.host, self.port), timeout=1):
            return True

    def stop(self) -> None:
        """Stop the broker (SIGTERM: it saves its store on the way out)."""
        if self._proc is not None:
            stop_process_group(self._proc)
            self._proc = None


def write_password_file(path: Path, username: str, password: str) -> None:
    """`mosquitto_passwd -c`: one account, hashed; the password on its stdin (a command line is public)."""
    subprocess.run(
        [mosquitto_binary("mosquitto_passwd"), "-c", str(path), username],
        input=f"{password}\n{password}\n",
        text=True,
        check=True,
        capture_output=True,
    )


def broker_dir(root: Path, port: int, username: str, password: str, log: str | None = None) -> Path:
    """A broker's directory: the password file (one account) and mosquitto.conf (`broker_config`), owned by
    Debian's `mosquitto` user when run as root (mosquitto drops to it and writes its store there). The
    config's path."""
    root.mkdir(parents=True, exist_ok=True)
    passwords = root / "passwords"
    write_password_file(passwords, username, password)
    os.chmod(passwords, 0o600)
    config = root / "mosquitto.conf"
    config.write_text(broker_config(root, port, passwords, log))
    if os.geteuid() == 0:
        for path in (root, passwords):
            shutil.chown(path, "mosquitto", "mosquitto")
    return config


def accepts_login(
    host: str, port: int, username: str | None, password: str | None, timeout: float = 5
) -> bool:
    """True when the broker answers a CONNECT with this account (None: anonymous) with success."""
    from paho.mqtt.client import CallbackAPIVersion, Client

    client = Client(CallbackAPIVersion.VERSION2)
    if username is not None:
        client.username_pw_set(username, password)
    answered: list[bool] = []
    client.on_connect = lambda _c, _u, _f, reason, _p: answered.append(not reason.is_failure)
    client.connect(host, port, keepalive=10)
    deadline = time.monotonic() + timeout
    while not answered and time.monotonic() < deadline:
        client.loop(timeout=0.1)
    client.disconnect()
    return bool(answered and answered[0])


@contextmanager
def mosquitto_server(port: int | None = None) -> Iterator[Mosquitto]:
    """A Mosquitto broker in a temp dir on 127.0.0.1 (a free port unless given), stopped on exit."""
    root = Path(tempfile.mkdtemp(prefix="mfd-mqtt-"))
    broker = Mosquitto("127.0.0.1", port or free_port(), USER, secrets.token_urlsafe(16), root)
    broker_dir(root, broker.port, broker.username, broker.password)
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(root, ignore_errors=True)
