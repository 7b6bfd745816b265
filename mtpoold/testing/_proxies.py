"""Real SOCKS5 and HTTP CONNECT proxies on loopback for tests, run as ``pproxy`` subprocesses.

``async with open_proxy("socks5") as proxy:`` starts ``python -m pproxy`` on a free port, waits
until it reports it is serving, and stops it (no leftover process) when the block exits.
``proxy.kill()`` kills it like a crash; ``proxy.restart()`` brings it back on the same port.
"""

from __future__ import annotations

import collections
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Final, Literal, final

import trio

ProxyKind = Literal["socks5", "http"]
STARTUP_TIMEOUT_S: Final = 10.0  # seconds to wait for pproxy to report "Serving on"
_READY_MARKER: Final = b"Serving on"
_LOG_TAIL_LINES: Final = 50


class ProxyStartError(RuntimeError):
    """pproxy exited or stayed silent instead of serving. ``output`` holds what it printed."""

    def __init__(self, message: str, output: str) -> None:
        super().__init__(f"{message}; pproxy said: {output.strip()[-2000:]!r}")
        self.output = output


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


async def _kill_now(process: trio.Process) -> None:
    process.kill()


@final
class Proxy:
    """A running (or killed) pproxy subprocess.

    Attributes:
        kind: ``"socks5"`` or ``"http"``.
        host, port: where it listens (the port stays the same across :meth:`restart`).
        username, password: credentials it demands, or ``None``.
        starts: how many times it was started (1 after open, +1 per restart).
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        kind: ProxyKind,
        host: str,
        port: int,
        username: str | None,
        password: str | None,
        startup_timeout_s: float,
    ) -> None:
        self._nursery = nursery
        self.kind = kind
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.starts = 0
        self._startup_timeout_s = startup_timeout_s
        self._process: trio.Process | None = None
        self._done: trio.Event | None = None
        self._output: collections.deque[bytes] = collections.deque(maxlen=_LOG_TAIL_LINES)

    @property
    def url(self) -> str:
        """``kind://[user:pass@]host:port``."""
        auth = f"{self.username}:{self.password}@" if self.username is not None else ""
        return f"{self.kind}://{auth}{self.host}:{self.port}"

    @property
    def telethon_proxy(self) -> dict[str, Any]:
        """The ``proxy=`` dict for ``TelegramClient`` (python-socks keys, remote DNS)."""
        return {
            "proxy_type": self.kind,
            "addr": self.host,
            "port": self.port,
            "username": self.username,
            "password": self.password,
            "rdns": True,
        }

    @property
    def running(self) -> bool:
        """Whether the subprocess is alive."""
        return self._process is not None and self._process.returncode is None

    @property
    def output(self) -> str:
        """The last lines pproxy printed (for debugging)."""
        return b"".join(self._output).decode(errors="replace")

    def _command(self) -> list[str]:
        listen = f"{self.kind}://{self.host}:{self.port}"
        if self.username is not None:
            listen += f"#{self.username}:{self.password or ''}"
        # --auth 0: never remember an authenticated client IP, check credentials every time.
        return [sys.executable, "-u", "-m", "pproxy", "-l", listen, "--auth", "0"]

    async def _run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        done = self._done = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                process: trio.Process = await nursery.start(
                    partial(
                        trio.run_process,
                        self._command(),
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        check=False,
                        deliver_cancel=_kill_now,
                    )
                )
                self._process = process
                assert process.stdout is not None
                buf = b""
                with trio.move_on_after(self._startup_timeout_s) as timeout:
                    while _READY_MARKER not in buf:
                        chunk = await process.stdout.receive_some(4096)
                        if not chunk:
                            break
                        buf += chunk
                self._output.append(buf)
                if _READY_MARKER not in buf:
                    process.kill()
                    why = "timed out" if timeout.cancelled_caught else "exited"
                    raise ProxyStartError(
                        f"pproxy {why} before serving", buf.decode(errors="replace")
                    )
                self.starts += 1
                task_status.started()
                # Keep draining so a chatty pproxy never blocks on a full pipe.
                async for chunk in process.stdout:
                    self._output.append(bytes(chunk))
        finally:
            done.set()

    async def kill(self) -> None:
        """Kill the proxy (SIGKILL, like a crash) and wait until it is gone.

        Open connections through it break at once. No-op if it is not running.
        """
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
        if self._done is not None:
            await self._done.wait()
        else:
            await trio.lowlevel.checkpoint()

    async def restart(self) -> None:
        """Kill it if running, then start it again on the same host and port.

        Raises:
            ProxyStartError: if it does not come back.
        """
        await self.kill()
        await self._nursery.start(self._run)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Proxy {self.kind} {self.host}:{self.port} {state}, starts={self.starts}>"


@asynccontextmanager
async def open_proxy(
    kind: ProxyKind = "socks5",
    *,
    username: str | None = None,
    password: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout_s: float = STARTUP_TIMEOUT_S,
) -> AsyncIterator[Proxy]:
    """Run a real pproxy SOCKS5 or HTTP CONNECT proxy for the ``async with`` block.

    Args:
        kind: ``"socks5"`` or ``"http"``.
        username, password: require these credentials (both, or neither).
        host: listen address.
        port: listen port; 0 picks a free one.
        startup_timeout_s: seconds to wait for pproxy to start serving.

    Yields:
        The running :class:`Proxy`.

    Raises:
        ValueError: if ``kind`` is unknown or only one of username/password is given.
        ProxyStartError: if pproxy does not start.
    """
    if kind not in ("socks5", "http"):
        raise ValueError(f"unknown proxy kind {kind!r}")
    if (username is None) != (password is None):
        raise ValueError("give both username and password, or neither")
    attempts = 3 if port == 0 else 1
    async with trio.open_nursery() as nursery:
        for attempt in range(attempts):
            proxy = Proxy(
                nursery,
                kind,
                host,
                port or _free_port(host),
                username,
                password,
                startup_timeout_s,
            )
            try:
                await nursery.start(proxy._run)
                break
            except ProxyStartError:
                if attempt == attempts - 1:
                    raise
        try:
            yield proxy
        finally:
            nursery.cancel_scope.cancel()
