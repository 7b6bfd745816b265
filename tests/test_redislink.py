"""RedisLink on a real redis-server: round trips counted, outages as ClusterUnavailable, no
secret in a cause, recovery by itself."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from _redisserver import RedisServer, start_redis

from mtpoold._aioloop import open_aio_loop
from mtpoold._clustergate import SharedGate
from mtpoold._clusternodes import NodeRegistry
from mtpoold._leases import LeaseBook
from mtpoold._redislink import ClusterUnavailable, RedisLink, open_redis_link

PASSWORD = "s3cret-redis-pass"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with start_redis(tmp_path, password=PASSWORD) as srv:
        yield srv


@asynccontextmanager
async def linked(server: RedisServer, **kw: Any) -> AsyncIterator[RedisLink]:
    async with open_aio_loop(), AsyncExitStack() as stack:
        yield await stack.enter_async_context(
            open_redis_link(url=server.url, password=server.password, op_timeout_s=0.5, **kw)
        )


async def test_commands_and_scripts_count_their_round_trips(server: RedisServer) -> None:
    async with linked(server, key_prefix="t:") as link:
        assert link.key("lease", "a1") == "t:lease:a1"
        assert await link.command("SET", "k", "v") is True
        assert await link.command("MGET", "k", "nope") == ["v", None]
        assert link.round_trips == 2
        gate = [link.key("gate", "p")] * 4
        await link.run_script("reserve", gate, ["", 0, 0, 0, 0, 0])
        assert link.round_trips == 4  # NOSCRIPT, then EVAL
        await link.run_script("reserve", gate, ["", 0, 0, 0, 0, 0])
        assert link.round_trips == 5  # cached: one EVALSHA
        server.restart()  # AOF keeps the data, not the script cache
        with pytest.raises(ClusterUnavailable):  # the pooled connection died with it
            await link.command("GET", "k")
        assert await link.command("GET", "k") == "v"
        before = link.round_trips
        await link.run_script("reserve", gate, ["", 0, 0, 0, 0, 0])
        assert link.round_trips == before + 2


async def test_every_call_is_cluster_unavailable_while_redis_is_down(
    server: RedisServer,
) -> None:
    async with linked(server) as link:
        import random

        gate = SharedGate(link, "p1", 0.1, (0.0, 0.0), random.Random(1))
        book = LeaseBook(link, "n1", lease_s=1.0, disconnect_delay_s=0.5)
        nodes = NodeRegistry(link, "n1", lease_s=1.0, info={"rpc": "127.0.0.1:1"})
        await link.command("SET", link.key("epoch"), "e1|0")
        assert await book.acquire(["a1"])
        server.stop()
        calls = [
            lambda: link.command("GET", "x"),
            lambda: link.run_script("reserve", ["k"] * 4, ["", 0, 0, 0, 0]),
            lambda: gate.reserve(book.lease("a1")),
            lambda: book.acquire(["a2"]),
            lambda: book.renew(set()),
            lambda: nodes.heartbeat(),
            lambda: nodes.holders(["a1"]),
            lambda: nodes.statuses(),
            lambda: book.release(["a1"]),
        ]
        for call in calls:
            with pytest.raises(ClusterUnavailable) as info:
                await call()
            cause = info.value.cause
            assert cause.startswith(f"redis 127.0.0.1:{server.port} unreachable ("), cause
            assert PASSWORD not in cause and PASSWORD not in repr(info.value)
        assert book.last_cause is not None and PASSWORD not in book.last_cause
        server.start()
        assert await nodes.heartbeat() == {"n1": {"rpc": "127.0.0.1:1"}}
        assert await link.command("PING") is True


async def test_a_frozen_redis_times_out_and_the_link_recovers(server: RedisServer) -> None:
    async with linked(server) as link:
        for _ in range(100):  # many round trips first: the loop's timers must still fire
            await link.command("PING")
        server.pause()
        try:
            with pytest.raises(ClusterUnavailable) as info:
                await link.command("GET", "x")
            assert info.value.cause == f"redis 127.0.0.1:{server.port} did not answer within 0.5 s"
        finally:
            server.resume()
        assert await link.command("PING") is True


async def test_password_refused_and_missing_name_no_secret(server: RedisServer) -> None:
    async with open_aio_loop():
        for password in ("wrong-pass-123", None):
            async with open_redis_link(url=server.url, password=password) as link:
                with pytest.raises(ClusterUnavailable) as info:
                    await link.command("PING")
                assert "refused" in info.value.cause
                assert "wrong-pass-123" not in info.value.cause


async def test_unix_socket_url(server: RedisServer) -> None:
    if server.unix_path is None:
        pytest.skip("tmp path too long for a unix socket")
    async with (
        open_aio_loop(),
        open_redis_link(url=f"unix://{server.unix_path}", password=PASSWORD) as link,
    ):
        assert link.where == f"unix:{server.unix_path}"
        assert await link.command("PING") is True


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"redis://:{PASSWORD}@127.0.0.1:6379/0", "must not carry credentials"),
        (f"redis://user:{PASSWORD}@127.0.0.1/0", "must not carry credentials"),
        ("http://127.0.0.1:6379", "scheme must be"),
        ("redis://127.0.0.1:6379/x", "the path is the db number"),
        ("redis://127.0.0.1:99999", "malformed"),
        ("unix://", "needs a socket path"),
    ],
)
async def test_bad_urls_are_refused_without_repeating_them(url: str, message: str) -> None:
    async with open_aio_loop():
        with pytest.raises(ValueError, match=message) as info:
            async with open_redis_link(url=url, password=None):
                pass  # pragma: no cover
        assert PASSWORD not in str(info.value)


async def test_outside_a_trio_asyncio_loop_is_refused() -> None:
    with pytest.raises(RuntimeError, match="trio-asyncio"):
        async with open_redis_link(url="redis://127.0.0.1:1", password=None):
            pass  # pragma: no cover


def test_the_cluster_modules_import_redis_only_when_a_link_opens() -> None:
    import subprocess
    import sys

    code = (
        "import sys, mtpoold._redislink, mtpoold._leases, mtpoold._clustergate, "
        "mtpoold._clusternodes; assert 'redis' not in sys.modules, 'redis imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
