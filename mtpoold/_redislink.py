"""The node's one link to Redis: a `redis.asyncio` client reached from Trio through trio-asyncio.

Every command and script goes through `RedisLink.command` / `RedisLink.run_script`, which bound
each round trip by ``op_timeout_s`` and turn any connection error or timeout into
`ClusterUnavailable`, whose ``cause`` names the server but never the password. redis-py's own
retries are off (a retried script could run twice); a connection that broke is dropped and the
next call opens a fresh one, so the link recovers by itself once Redis is back.

``redis`` is imported only when a link is opened: a daemon without ``[cluster]`` never loads it.

Resource handling: one connection pool per link, closed when `open_redis_link` exits. A call
cancelled from Trio cancels its asyncio task; redis-py then drops that connection (a reply
half read can never be handed to the next command).

Time: the bound is on the trio-asyncio loop's clock, which is trio's. Under an
``autojump_clock`` a real Redis round trip looks like a blocked task and the clock jumps past
``op_timeout_s``: test with the real clock against a real server.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, final

import trio
import trio_asyncio

from ._aiobridge import run_aio
from ._clusterscripts import SCRIPTS
from ._redisurl import parse_redis_url

__all__ = ["ClusterUnavailable", "RedisLink", "open_redis_link"]

#: Seconds `open_redis_link` waits for the pool to close on exit.
CLOSE_WAIT_S: Final = 1.0
#: Seconds past ``op_timeout_s`` before the Trio side gives up on a call, and seconds its
#: cancelled asyncio task may then take.
_BACKSTOP_S: Final = 0.05
_CANCEL_WAIT_S: Final = 0.1


class ClusterUnavailable(Exception):
    """Redis could not be reached (or did not answer) within the link's ``op_timeout_s``.

    Attributes:
        cause: One line for logs, status and job errors, e.g.
            ``"redis 127.0.0.1:6379 unreachable (ConnectionRefusedError)"``. Built from the
            server's address and exception class names only: never the password.
    """

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


def _root_name(exc: BaseException) -> str:
    """The class name of the innermost exception under ``exc`` (the OS error redis-py wraps)."""
    seen = exc
    for _ in range(5):
        inner = seen.__cause__ or seen.__context__
        if inner is None:
            break
        seen = inner
    return type(seen).__name__


@final
class RedisLink:
    """One `redis.asyncio` client, used from Trio through trio-asyncio.

    Built by `open_redis_link`; not constructed directly. Safe to use from many Trio tasks
    at once (each call takes a pooled connection). Replies are decoded as UTF-8 ``str``
    (``decode_responses=True``): GET gives ``str | None``, HGETALL ``dict[str, str]``, a
    script's integers ``int``.

    Attributes:
        round_trips: Every command and script sent so far, failed ones included (the bench
            counts Redis round trips per job with it; a NOSCRIPT fallback counts two).
        key_prefix: Prefix of every key (``[cluster] key_prefix``, default ``"mtpoold:"``).
        op_timeout_s: Seconds one round trip may take before it is `ClusterUnavailable`.
        where: The server for messages: ``"host:port"`` or ``"unix:/path"``.
    """

    round_trips: int

    def __init__(self, client: Any, *, where: str, key_prefix: str, op_timeout_s: float) -> None:
        self._client = client
        self.where = where
        self.key_prefix = key_prefix
        self.op_timeout_s = op_timeout_s
        self.round_trips = 0
        self._shas = {
            name: hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
            for name, source in SCRIPTS.items()
        }

    def __repr__(self) -> str:
        return f"<RedisLink {self.where} prefix={self.key_prefix!r} round_trips={self.round_trips}>"

    def key(self, *parts: str) -> str:
        """Return ``key_prefix + ":".join(parts)``, e.g. ``key("lease", "a1")`` ->
        ``"mtpoold:lease:a1"``."""
        return self.key_prefix + ":".join(parts)

    async def run_script(
        self, name: str, keys: Sequence[str], args: Sequence[str | int | float]
    ) -> Any:
        """Run one of `mtpoold._clusterscripts.SCRIPTS` by name: EVALSHA, and on NOSCRIPT
        (a restarted or flushed Redis, or the first call) EVAL of the source, which also
        caches it. One round trip (two after NOSCRIPT).

        Args:
            name: A key of `mtpoold._clusterscripts.SCRIPTS`.
            keys: The script's KEYS.
            args: The script's ARGV.

        Returns:
            What the script returned (decoded: ``str``, ``int``, ``list``, None).

        Raises:
            ClusterUnavailable: Redis unreachable, a connection error, a refused password,
                Redis still loading its data, or no answer within ``op_timeout_s``.
            KeyError: ``name`` is not a known script.
            redis.ResponseError: the script itself failed (a bug, not an outage).
        """
        import redis.exceptions

        sha = self._shas[name]
        try:
            return await self._send(
                lambda: self._client.evalsha(sha, len(keys), *keys, *args),
            )
        except redis.exceptions.NoScriptError:
            return await self._send(
                lambda: self._client.eval(SCRIPTS[name], len(keys), *keys, *args),
            )

    async def command(self, *args: str | int | float) -> Any:
        """Send one Redis command (``GET``, ``MGET``, ``HGETALL``, ...), same bounds as
        `run_script`. ``args[0]`` is the command name.

        Raises:
            ClusterUnavailable: as for `run_script`.
            redis.ResponseError: Redis refused the command.
        """
        return await self._send(lambda: self._client.execute_command(*args))

    async def _send(self, call: Callable[[], Awaitable[Any]]) -> Any:
        import redis.exceptions

        self.round_trips += 1
        timeout_s = self.op_timeout_s

        async def bounded() -> Any:
            async with asyncio.timeout(timeout_s):
                return await call()

        try:
            # The asyncio-side timeout ends the call itself; the Trio-side one is a backstop
            # (a task that ignores its cancellation is abandoned after `_CANCEL_WAIT_S`).
            with trio.move_on_after(timeout_s + _BACKSTOP_S):
                return await run_aio(bounded, cancel_wait_s=_CANCEL_WAIT_S)
            raise TimeoutError
        except (TimeoutError, redis.exceptions.TimeoutError):
            raise ClusterUnavailable(
                f"redis {self.where} did not answer within {timeout_s} s"
            ) from None
        except redis.exceptions.AuthenticationError as exc:
            raise ClusterUnavailable(
                f"redis {self.where} refused the password ({type(exc).__name__})"
            ) from None
        except redis.exceptions.BusyLoadingError as exc:
            raise ClusterUnavailable(
                f"redis {self.where} is loading its data ({type(exc).__name__})"
            ) from None
        except (redis.exceptions.ConnectionError, OSError) as exc:
            raise ClusterUnavailable(
                f"redis {self.where} unreachable ({_root_name(exc)})"
            ) from None
        except redis.exceptions.ResponseError as exc:
            # NOAUTH: the server wants a password we do not have (or the other way round).
            if str(exc).startswith(("NOAUTH", "WRONGPASS")):
                raise ClusterUnavailable(
                    f"redis {self.where} refused the connection ({str(exc).split(' ')[0]})"
                ) from None
            raise


@asynccontextmanager
async def open_redis_link(
    *,
    url: str,
    password: str | None,
    key_prefix: str = "mtpoold:",
    op_timeout_s: float = 1.0,
) -> AsyncIterator[RedisLink]:
    """Open a `RedisLink` for the duration of the block; its pool is closed on exit.

    Connecting is lazy: opening never fails because Redis is down (the first call raises
    `ClusterUnavailable` instead), and the link reconnects by itself once Redis is back.

    Args:
        url: ``redis://host:port[/db]`` (port default 6379) or ``unix:///path/redis.sock``
            (``?db=N`` optional). Credentials in the URL are refused: ``password`` carries
            the secret, from ``[cluster] password_file``.
        password: Redis AUTH password, or None.
        key_prefix: Prefix of every key.
        op_timeout_s: Seconds one round trip (connect included) may take, > 0.

    Raises:
        ValueError: a malformed URL, one carrying credentials, or ``op_timeout_s`` <= 0. The
            message never repeats the URL.
        RuntimeError: outside a trio-asyncio loop (``_aioloop.open_aio_loop``).
    """
    if not op_timeout_s > 0:
        raise ValueError(f"op_timeout_s must be > 0, got {op_timeout_s!r}")
    kwargs, where = parse_redis_url(url)
    if trio_asyncio.current_loop.get() is None:
        raise RuntimeError("open_redis_link must be used inside a trio-asyncio loop")
    import redis.asyncio
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    client = redis.asyncio.Redis(
        **kwargs,
        password=password,
        socket_connect_timeout=op_timeout_s,
        socket_timeout=op_timeout_s,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )
    link = RedisLink(client, where=where, key_prefix=key_prefix, op_timeout_s=op_timeout_s)
    try:
        yield link
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_WAIT_S):
            await run_aio(client.aclose)
