"""`mtpoold run` as a background process for tests that also run a Trio loop (a loopback DC)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import trio

#: What the ready line holds, in logfmt (``event=daemon_ready``) and JSON alike.
READY_EVENT = "daemon_ready"
#: Seconds a daemon may take to log ``event=daemon_ready``.
READY_TIMEOUT_S = 30.0


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def async_daemon(config: Path, log: Path, *args: str) -> AsyncIterator[trio.Process]:
    """``mtpoold run`` as a subprocess, yielded once it logged ``event=daemon_ready``, without
    blocking the Trio loop; ``args`` go after ``run`` (``--log-format json``); the caller may
    signal or kill it; anything still running is terminated at exit (killed after 30 s)."""
    with log.open("wb") as err:
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "mtpoold", "run", "--config", str(config), *args], stderr=err
        )
    try:
        with trio.fail_after(READY_TIMEOUT_S):
            while READY_EVENT not in (text := await trio.Path(log).read_text()):
                assert proc.returncode is None, text
                await trio.sleep(0.05)
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
        with trio.move_on_after(30):
            await proc.wait()
        if proc.returncode is None:  # pragma: no cover - a hang is a bug: don't leak it
            proc.kill()
            await proc.wait()


@contextmanager
def daemon_process(config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``mtpoold run`` as a subprocess, yielded once it logged ``event=daemon_ready``; SIGTERM
    at exit."""
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mtpoold", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while READY_EVENT not in log.read_text():
            assert proc.poll() is None, f"daemon exited {proc.returncode}: {log.read_text()}"
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hang is a bug: don't leak it
            proc.kill()
            proc.wait()
