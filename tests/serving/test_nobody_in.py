"""Nobody in without a key: production refuses to run open, websockets need a key too, and the workers'
signal file lives in a private directory under MFD_HOME and is never opened through a symlink."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from mfd.errors import MfdError
from mfd.serving.champion import Poller, sibling_signal_file
from mfd.serving.guards import ApiKeyMiddleware, required_keys


def test_production_without_keys_is_refused_naming_the_setting() -> None:
    for setting in ("", " , "):
        with pytest.raises(MfdError, match="MFD_DEPLOYMENT=production needs MFD_API_KEYS"):
            required_keys("production", setting)
    assert required_keys("production", "a,b") == ("a", "b")
    assert required_keys("local", "") == ()


async def _hello(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hello")
    await websocket.close()


def test_websockets_need_a_key_too() -> None:
    app = Starlette(routes=[WebSocketRoute("/ws", _hello)])
    client = TestClient(ApiKeyMiddleware(app, keys=("secret",)))
    with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect("/ws"):
        pass
    assert refused.value.code == 1008
    with client.websocket_connect("/ws", headers={"Authorization": "Bearer secret"}) as ws:
        assert ws.receive_text() == "hello"


class _Idle:
    def refresh(self) -> bool:
        return True


def test_the_signal_file_is_in_a_private_directory_under_the_home(tmp_path: Path) -> None:
    signal_file = sibling_signal_file(tmp_path / "home")
    assert signal_file.parent == tmp_path / "home" / "serving"
    assert stat.S_IMODE(signal_file.parent.stat().st_mode) == 0o700
    poller = Poller(_Idle(), 0, signal_file)  # type: ignore[arg-type]
    poller.nudge()
    assert stat.S_IMODE(signal_file.stat().st_mode) == 0o600
    assert not list(signal_file.parent.glob("*.signal.*")), "no staged token left behind"


def test_a_symlink_at_the_signal_file_is_refused(tmp_path: Path) -> None:
    signal_file = sibling_signal_file(tmp_path / "home")
    target = tmp_path / "elsewhere"
    target.write_text("someone else's file")
    signal_file.symlink_to(target)
    with pytest.raises(MfdError, match="is a symlink: refusing to follow it"):
        Poller(_Idle(), 0, signal_file)  # type: ignore[arg-type]
    signal_file.unlink()
    poller = Poller(_Idle(), 0, signal_file)  # type: ignore[arg-type]
    signal_file.symlink_to(target)
    with pytest.raises(MfdError, match="is a symlink"):
        poller.nudge()
    assert target.read_text() == "someone else's file"


def test_a_symlink_at_the_private_directory_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "serving").symlink_to(elsewhere)
    with pytest.raises(MfdError, match="serving: is a symlink; refusing to keep private files there"):
        sibling_signal_file(tmp_path / "home")
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o755
