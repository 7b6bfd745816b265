"""The node's one link to Redis: a `redis.asyncio` client reached from Trio through trio-asyncio.

Every command and script goes through `RedisLink.command` / `RedisLink.run_script`, which bound
each round trip by ``op_timeout_s`` and turn any connection error or timeout into
`ClusterUnavailable` whose ``cause`` names the server but never the password.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, final

__all__ = ["ClusterUnavailable", "RedisLink", "open_redis_link"]


class ClusterUnavailable(Exception):
    """Redis could not be reached (or did not answer) within the link's ``op_timeout_s``.

    Attributes:
        cause: One line for logs, status and job errors, e.g.
            ``"redis 127.0.0.1:6379 unreachable (ConnectionRefusedError)"``. Never contains
            the password.
    """

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


@final
class RedisLink:
    """One `redis.asyncio` client, used from Trio through trio-asyncio.

    Built by `open_redis_link`; not constructed directly.

    Attributes:
        round_trips: Every command and script sent so far (the bench counts Redis round
            trips per job with it; a NOSCRIPT fallback counts twice).
        key_prefix: Prefix of every key (``[cluster] key_prefix``, default ``"mtpoold:"``).
        op_timeout_s: Seconds one round trip may take before it is `ClusterUnavailable`.
    """

    round_trips: int

    def __init__(self, client: Any, *, where: str, key_prefix: str, op_timeout_s: float) -> None:
        self._client = client
        self._where = where
        self.key_prefix = key_prefix
        self.op_timeout_s = op_timeout_s
        self.round_trips = 0

    def key(self, *parts: str) -> str:
        """Return ``key_prefix + ":".join(parts)``, e.g. ``key("lease", "a1")`` ->
        ``"mtpoold:lease:a1"``."""
        return self.key_prefix + ":".join(parts)

    async def run_script(
        self, name: str, keys: Sequence[str], args: Sequence[str | int | float]
    ) -> Any:
        """Run one of `mtpoold._clusterscripts.SCRIPTS` by name: EVALSHA, and on NOSCRIPT
        (a restarted or flushed Redis) SCRIPT LOAD + EVALSHA again.

        Args:
            name: A key of `mtpoold._clusterscripts.SCRIPTS`.
            keys: The script's KEYS.
            args: The script's ARGV.

        Returns:
            What the script returned (redis-py's decoding: bytes, int, list).

        Raises:
            ClusterUnavailable: Redis unreachable, a connection error, or no answer within
                ``op_timeout_s``.
            KeyError: ``name`` is not a known script.
            redis.ResponseError: the script itself failed (a bug, not an outage).
        """
        raise NotImplementedError

    async def command(self, *args: str | int | float) -> Any:
        """Send one Redis command (``GET``, ``MGET``, ``HGETALL``, ...), same bounds as
        `run_script`.

        Raises:
            ClusterUnavailable: as for `run_script`.
            redis.ResponseError: Redis refused the command.
        """
        raise NotImplementedError


@asynccontextmanager
async def open_redis_link(
    *,
    url: str,
    password: str | None,
    key_prefix: str = "mtpoold:",
    op_timeout_s: float = 1.0,
) -> AsyncIterator[RedisLink]:
    """Open a `RedisLink` for the duration of the block; the client is closed on exit.

    Connecting is lazy: opening never fails because Redis is down (the first command raises
    `ClusterUnavailable` instead), and the link reconnects by itself once Redis is back.

    Args:
        url: ``redis://host:port[/db]`` or ``unix:///path/to/redis.sock``. A password in
            the URL is refused (``password`` carries it, from ``[cluster] password_file``).
        password: Redis AUTH password, or None.
        key_prefix: Prefix of every key.
        op_timeout_s: Seconds one round trip may take.

    Raises:
        ValueError: a malformed URL, or one carrying a password.
        RuntimeError: outside a trio-asyncio loop (``_aioloop.open_aio_loop``).
    """
    raise NotImplementedError
    yield  # pragma: no cover
