"""mfd.serving.compat patches BentoML's TimeoutMiddleware only on the versions it was written for."""

from __future__ import annotations

import pytest
from bentoml._internal.server.http.traffic import TimeoutMiddleware

from mfd.serving import compat


def _original(self: object, scope: object, receive: object, send: object) -> None:
    raise AssertionError("not called")


@pytest.fixture
def unpatched(monkeypatch: pytest.MonkeyPatch) -> None:
    """TimeoutMiddleware as BentoML ships it (monkeypatch restores whatever was there after the test)."""
    monkeypatch.setattr(TimeoutMiddleware, "__call__", _original)


def test_patch_applies_to_the_leaking_1_4_middleware(
    unpatched: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compat, "version", lambda dist: "1.4.40")
    assert compat.cancel_request_timers()
    assert TimeoutMiddleware.__call__ is compat._answer_within_timeout


@pytest.mark.parametrize("release", ["1.5.0", "2.0.1", "1.3.9"])
def test_other_versions_keep_bentomls_code(
    unpatched: None, monkeypatch: pytest.MonkeyPatch, release: str
) -> None:
    monkeypatch.setattr(compat, "version", lambda dist: release)
    assert not compat.cancel_request_timers()
    assert TimeoutMiddleware.__call__ is _original


def test_a_fixed_1_4_middleware_is_left_alone(unpatched: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compat, "version", lambda dist: "1.4.99")
    monkeypatch.delattr(TimeoutMiddleware, "_set_timer_out")
    assert not compat.cancel_request_timers()
    assert TimeoutMiddleware.__call__ is _original
