"""A real ``redis-server`` for the tests, on a free loopback port in a tmp dir.

``start_redis(tmp_path, aof=True)`` -> `RedisServer` (``.port``, ``.url``, ``.restart()``,
``.stop()``, ``.flushall()``; a sync context manager that stops it on exit).
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType


class RedisServer:
    """One redis-server process; restartable on the same port and dir."""

    port: int
    url: str

    def restart(self) -> None:
        """Stop (SIGTERM, wait) and start again on the same port and dir."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the server (idempotent)."""
        raise NotImplementedError

    def flushall(self) -> None:
        """FLUSHALL (the server keeps running)."""
        raise NotImplementedError

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_redis(tmp_path: Path, aof: bool = True) -> RedisServer:
    """Start a redis-server in ``tmp_path`` (``--appendonly yes --appendfsync always`` when
    ``aof``, no persistence at all otherwise) and wait until it answers PING."""
    raise NotImplementedError
