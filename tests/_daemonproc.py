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

from mtpoold.testing import DC

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


@asynccontextmanager
async def dc_daemon(tmp_path: Path, *, listen: str | None = None) -> AsyncIterator[tuple[Path, DC]]:
    """A loopback DC (in this Trio loop) and ``mtpoold run`` (a subprocess) on it with one
    real account (Telethon, direct lane); yields (the config path, the DC) once the daemon
    is ready. ``listen``: the daemon's address (default a free loopback port)."""
    import json

    from mtpoold.testing import open_dc

    async with open_dc() as dc:
        config = tmp_path / "mtpoold.toml"
        config.write_text(
            f'[daemon]\nlisten = "{listen or f"127.0.0.1:{free_port()}"}"\n'
            f'state_dir = "{tmp_path}/state"\nshutdown_grace_s = 2\n\n'
            "[direct]\ninterval_s = 0.05\n\n"
            f'[telegram]\ndc_host = "{dc.host}"\ndc_port = {dc.port}\n'
            f"rsa_keys = [{json.dumps(dc.public_key_pem)}]\n\n"
            f'[[accounts]]\nid = "acc"\napi_id = 1\napi_hash = "{"ab" * 16}"\n'
            f'session_string = "{dc.session_string("15550000001")}"\n'
        )
        config.chmod(0o600)
        async with async_daemon(config, tmp_path / "daemon.log"):
            yield config, dc
