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


def test_reloading_goes_out_with_monotonic_usec(tmp_path: Path) -> None:
    """sd_notify(3): RELOADING=1 must carry MONOTONIC_USEC=, CLOCK_MONOTONIC in µs."""
    import time

    from mtpoold._sdnotify import monotonic_usec

    path = str(tmp_path / "notify.sock")
    with _receiver(path) as rx:
        low = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert sd_notify("RELOADING=1", env={"NOTIFY_SOCKET": path}) is True
        high = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        reloading, stamp = rx.recv(4096).decode().split("\n")
        assert reloading == "RELOADING=1"
        key, _, value = stamp.partition("=")
        assert key == "MONOTONIC_USEC" and low <= int(value) <= high
        # given by the caller: kept as it is; other states get none
        assert sd_notify("RELOADING=1\nMONOTONIC_USEC=5", env={"NOTIFY_SOCKET": path})
        assert rx.recv(4096) == b"RELOADING=1\nMONOTONIC_USEC=5"
        assert sd_notify("READY=1", env={"NOTIFY_SOCKET": path})
        assert rx.recv(4096) == b"READY=1"
    assert low <= monotonic_usec()


async def test_daemon_reload_sends_reloading_with_monotonic_usec(tmp_path: Path) -> None:
    """`run_daemon` on SIGHUP: systemd receives RELOADING=1 with MONOTONIC_USEC, then
    READY=1 — from a real datagram socket as NOTIFY_SOCKET."""
    import signal
    import time
    from collections.abc import AsyncIterator
    from contextlib import asynccontextmanager
    from typing import Any

    import trio

    from mtpoold._config import parse_config
    from mtpoold._daemon import run_daemon
    from mtpoold._pool import ReloadSummary

    from _fakepool import FakePool

    class ReloadablePool(FakePool):
        async def reload(self, config: Any) -> ReloadSummary:
            return ReloadSummary(generation=2, added=(), removed=(), reconnected=())

    @asynccontextmanager
    async def factory(cfg: Any, *, store: Any) -> AsyncIterator[FakePool]:
        yield ReloadablePool()

    notify = tmp_path / "notify.sock"
    listen = f"unix:{tmp_path}/mtpoold.sock"
    text = f'[daemon]\nlisten = "{listen}"\nstate_dir = "{tmp_path / "state"}"\n'
    config_path = tmp_path / "mtpoold.toml"
    config_path.write_text(text)
    config = parse_config(
        {"daemon": {"listen": listen, "state_dir": str(tmp_path / "state")}}, base_dir=tmp_path
    )
    received: list[str] = []
    with (
        pytest.MonkeyPatch.context() as mp,
        _receiver(str(notify)) as rx,
        trio.fail_after(20),
    ):
        mp.setenv("NOTIFY_SOCKET", str(notify))
        rx.setblocking(False)

        async def until(predicate: Any) -> None:
            while not predicate():
                try:
                    received.append(rx.recv(4096).decode())
                except BlockingIOError:
                    await trio.sleep(0.01)

        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: run_daemon(
                    config, config_path=config_path, pool_factory=factory, task_status=task_status
                )
            )
            await until(lambda: any(m.startswith("READY=1") for m in received))
            before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            os.kill(os.getpid(), signal.SIGHUP)
            await until(lambda: received[-1] == "READY=1")
            os.kill(os.getpid(), signal.SIGTERM)
    [reloading] = [m for m in received if m.startswith("RELOADING=1")]
    key, _, value = reloading.split("\n")[1].partition("=")
    assert key == "MONOTONIC_USEC" and before <= int(value)
