"""sd_notify against a real AF_UNIX datagram socket, and the watchdog interval."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import pytest

from mtpoold._sdnotify import sd_notify, watchdog_interval_s


def _receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


def test_sd_notify_sends_to_path_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    with _receiver(path) as rx:
        assert sd_notify("READY=1\nSTATUS=ok", env={"NOTIFY_SOCKET": path}) is True
        assert rx.recv(4096) == b"READY=1\nSTATUS=ok"


def test_sd_notify_abstract_namespace() -> None:
    name = f"mtpoold-test-{os.getpid()}"
    with _receiver("\0" + name) as rx:
        assert sd_notify("WATCHDOG=1", env={"NOTIFY_SOCKET": "@" + name}) is True
        assert rx.recv(4096) == b"WATCHDOG=1"


def test_sd_notify_without_socket_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sd_notify("READY=1") is False
    assert sd_notify("READY=1", env={}) is False


def test_sd_notify_failure_is_logged_at_debug_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="mtpoold.sdnotify"):
        assert sd_notify("READY=1", env={"NOTIFY_SOCKET": str(tmp_path / "missing")}) is False
    [record] = caplog.records
    assert record.levelno == logging.DEBUG
    assert record.getMessage().startswith('event=sd_notify_failed state="READY=1" error=')
    assert record.msg.fields["state"] == "READY=1"


def test_watchdog_interval_s() -> None:
    assert watchdog_interval_s(env={}) is None
    assert watchdog_interval_s(env={"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval_s(env={"WATCHDOG_USEC": "x"}) is None
    assert watchdog_interval_s(env={"WATCHDOG_USEC": "0"}) is None
    pid = str(os.getpid())
    assert watchdog_interval_s(env={"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": pid}) == 1.0
    assert watchdog_interval_s(env={"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}) is None
