"""A real ``redis-server`` for the tests, on a free loopback port in a tmp dir.

``start_redis(tmp_path, aof=True)`` -> `RedisServer`::

    with start_redis(tmp_path) as server:      # or server = start_redis(...); server.stop()
        server.url                             # "redis://127.0.0.1:PORT/0"
        server.restart()                       # same port, same dir (AOF replayed if aof)
        server.flushall()

``aof=True`` runs ``--appendonly yes --appendfsync always`` (every write on disk before the
reply: what the README asks of a cluster's Redis); ``aof=False`` keeps nothing at all (no AOF,
no RDB), so a restart comes back empty. It talks RESP over a plain socket, so it needs no
client library and works from sync or async tests alike (the calls block for milliseconds).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Final

__all__ = ["RedisServer", "start_redis"]

#: Seconds a start or a restart may take until the server answers PING with PONG.
START_TIMEOUT_S: Final = 10.0

#: Longest unix socket path the kernel takes (sun_path is 108 bytes, NUL included).
_SUN_PATH_MAX: Final = 107


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _encode(*args: str) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class RedisServer:
    """One ``redis-server`` process on ``127.0.0.1:port`` in ``dir``; restartable on the
    same port and dir.

    Attributes:
        port: The TCP port (loopback only).
        url: ``redis://127.0.0.1:{port}/0``.
        unix_path: Its unix socket (``unix://`` + this is a URL too), or None when the tmp
            path is too long for one.
        password: The ``requirepass`` it was started with, or None.
        aof: Whether it persists (AOF, fsync on every write).
        dir: Its working directory (AOF files, ``redis.log``).
    """

    def __init__(self, dir: Path, *, aof: bool, password: str | None) -> None:
        self.dir = dir
        self.aof = aof
        self.password = password
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        sock = dir / "redis.sock"
        self.unix_path: str | None = str(sock) if len(str(sock)) <= _SUN_PATH_MAX else None
        self._proc: subprocess.Popen[bytes] | None = None

    def _argv(self) -> list[str]:
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        argv = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        argv += ["--daemonize", "no", "--save", "", "--logfile", str(self.dir / "redis.log")]
        if self.aof:
            argv += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            argv += ["--appendonly", "no"]
        if self.unix_path is not None:
            argv += ["--unixsocket", self.unix_path, "--unixsocketperm", "700"]
        if self.password is not None:
            argv += ["--requirepass", self.password]
        return argv

    def start(self) -> None:
        """Start the process (if not running) and wait until it answers PING.

        Raises:
            RuntimeError: it exited or did not answer within `START_TIMEOUT_S`.
        """
        if self._proc is not None and self._proc.poll() is None:
            return
        self._proc = subprocess.Popen(
            self._argv(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited {self._proc.returncode}: {self._log()}")
            try:
                if self.command("PING") == b"+PONG":
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer PING: {self._log()}")
            time.sleep(0.02)

    def _log(self) -> str:
        try:
            return (self.dir / "redis.log").read_text()[-2000:]
        except OSError:
            return "(no log)"

    def command(self, *args: str) -> bytes:
        """Send one command on a fresh connection (AUTH first if the server has a password)
        and return the first line of its reply, e.g. ``b"+OK"``, ``b":3"``, ``b"$5"``.

        Raises:
            OSError: the server is not reachable.
        """
        with socket.create_connection(("127.0.0.1", self.port), timeout=2.0) as sock:
            payload = _encode(*args)
            if self.password is not None:
                payload = _encode("AUTH", self.password) + payload
            sock.sendall(payload)
            reader = sock.makefile("rb")
            if self.password is not None:
                reader.readline()
            return reader.readline().rstrip(b"\r\n")

    def flushall(self) -> None:
        """FLUSHALL: Redis forgets every key (the server keeps running)."""
        reply = self.command("FLUSHALL")
        assert reply == b"+OK", reply

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server (SIGTERM, or SIGKILL with ``kill``) and wait for it. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def restart(self, *, kill: bool = False) -> None:
        """Stop (SIGTERM, or SIGKILL with ``kill``) and start again on the same port and dir:
        with ``aof`` every acknowledged write survives, without it Redis comes back empty."""
        self.stop(kill=kill)
        self.start()

    def pause(self) -> None:
        """SIGSTOP the server: connections stay open, nothing answers (a frozen Redis)."""
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after `pause`."""
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGCONT)

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def __repr__(self) -> str:
        return f"<RedisServer port={self.port} aof={self.aof} running={self.running}>"

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_redis(tmp_path: Path, aof: bool = True, *, password: str | None = None) -> RedisServer:
    """Start a ``redis-server`` with its files in ``tmp_path / "redis"`` and wait until it
    answers PING.

    Args:
        tmp_path: The test's tmp dir.
        aof: ``--appendonly yes --appendfsync always`` if true; no persistence at all if not.
        password: ``--requirepass`` (then `RedisServer.command` authenticates).

    Returns:
        The running server; stop it with `RedisServer.stop` or use it as a context manager.

    Raises:
        RuntimeError: it did not start within `START_TIMEOUT_S` (its log in the message).
    """
    dir = tmp_path / "redis"
    dir.mkdir(parents=True, exist_ok=True)
    server = RedisServer(dir, aof=aof, password=password)
    server.start()
    return server
