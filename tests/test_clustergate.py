"""SharedGate on a real redis-server: spaced FIFO starts across nodes, one round trip each,
the lease checked atomically, the PHP throttle key honoured (migration mode)."""

from __future__ import annotations

import random
import re
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio
from _redisserver import RedisServer, start_redis

from mtpoold._aioloop import open_aio_loop
from mtpoold._clustergate import LeaseLost, SharedGate
from mtpoold._leases import Lease, LeaseBook
from mtpoold._redislink import RedisLink, open_redis_link

INTERVAL_S = 0.05
JITTER_S = (0.01, 0.02)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with start_redis(tmp_path) as srv:
        srv.command("SET", "mtpoold:epoch", "e1|0")  # no quarantine: an epoch already exists
        yield srv


@asynccontextmanager
async def linked(server: RedisServer, n: int) -> AsyncIterator[list[RedisLink]]:
    async with open_aio_loop(), AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(open_redis_link(url=server.url, password=None))
            for _ in range(n)
        ]


async def test_reservers_on_separate_links_get_spaced_fifo_starts_in_one_round_trip(
    server: RedisServer,
) -> None:
    nodes = 6
    async with linked(server, nodes) as links:
        books = [
            LeaseBook(link, f"n{i}", lease_s=5.0, disconnect_delay_s=1.0)
            for i, link in enumerate(links)
        ]
        leases = [(await book.acquire([f"a{i}"]))[f"a{i}"] for i, book in enumerate(books)]
        gates = [
            SharedGate(link, "p1", INTERVAL_S, JITTER_S, random.Random(i))
            for i, link in enumerate(links)
        ]
        for gate in gates:  # load the script on every link (NOSCRIPT costs a second trip)
            await gate.reserve(None)
        await trio.sleep(INTERVAL_S)
        # MONITOR shows the order in which the reservations arrived at Redis.
        monitor = socket.create_connection(("127.0.0.1", server.port))
        monitor.sendall(b"MONITOR\r\n")
        assert monitor.makefile("rb").readline() == b"+OK\r\n"
        before = [link.round_trips for link in links]
        starts: dict[int, list[int]] = {i: [] for i in range(nodes)}

        async def reserver(i: int) -> None:
            for _ in range(3):
                delay = await gates[i].reserve(leases[i], window_s=(i + 1) / 1000)
                assert delay >= 0
                assert gates[i].last_start_ms is not None
                starts[i].append(gates[i].last_start_ms)

        async with trio.open_nursery() as nursery:
            for i in range(nodes):
                nursery.start_soon(reserver, i)
        assert [link.round_trips - b for link, b in zip(links, before, strict=True)] == [3] * 6
        arrivals: list[int] = []
        reader = monitor.makefile("rb")
        monitor.settimeout(5)
        while len(arrivals) < 3 * nodes:
            line = reader.readline().decode()
            if found := re.search(r'"n(\d+)\|e1\|\d+"', line):
                arrivals.append(int(found[1]))
        monitor.close()
        ordered = [starts[i].pop(0) for i in arrivals]
        gaps = [b - a for a, b in zip(ordered, ordered[1:], strict=False)]
        assert all(gap >= INTERVAL_S * 1000 for gap in gaps), gaps  # FIFO: all positive, too
        # Saturated, the jitter is inside the max: every gap is exactly the interval plus
        # the window the earlier start may use (node i asked for i + 1 ms).
        spaced = [round(INTERVAL_S * 1000) + i + 1 for i in arrivals[:-1]]
        exact = sum(1 for gap, want in zip(gaps, spaced, strict=True) if gap == want)
        assert exact >= len(gaps) - 1, (gaps, spaced)


async def test_an_idle_gate_adds_only_the_jitter(server: RedisServer) -> None:
    async with linked(server, 1) as (link,):
        gate = SharedGate(link, "p2", 2.0, JITTER_S, random.Random(3))
        delay = await gate.reserve(None)
        assert JITTER_S[0] - 0.001 <= delay <= JITTER_S[1] + 0.001
        second = await gate.reserve(None)
        assert second >= 2.0 - 0.01  # counted from the first start, not from now


async def test_a_wrong_or_expired_lease_reserves_nothing(server: RedisServer) -> None:
    async with linked(server, 1) as (link,):
        book = LeaseBook(link, "n1", lease_s=0.3, disconnect_delay_s=0.1)
        lease = (await book.acquire(["a1"]))["a1"]
        gate = SharedGate(link, "p3", INTERVAL_S, JITTER_S, random.Random(1))
        forged = Lease("a1", "n2", lease.epoch, lease.token)
        for wrong in (forged, Lease("a1", "n1", lease.epoch, lease.token + 1)):
            with pytest.raises(LeaseLost) as info:
                await gate.reserve(wrong, connecting=True, conn_ttl_ms=1000)
            assert info.value.account_id == "a1"
        assert await link.command("GET", link.key("gate", "p3")) is None
        assert await link.command("EXISTS", link.key("conn", "a1")) == 0
        await trio.sleep(0.35)  # the lease expires in Redis
        with pytest.raises(LeaseLost):
            await gate.reserve(lease)
        assert await link.command("GET", link.key("gate", "p3")) is None


async def test_a_connecting_reservation_sets_the_conn_key(server: RedisServer) -> None:
    async with linked(server, 1) as (link,):
        book = LeaseBook(link, "n1", lease_s=2.0, disconnect_delay_s=1.0)
        lease = (await book.acquire(["a1"]))["a1"]
        gate = SharedGate(link, "p4", INTERVAL_S, JITTER_S, random.Random(1))
        await gate.reserve(lease, connecting=True, conn_ttl_ms=book.conn_ttl_ms)
        assert await link.command("GET", link.key("conn", "a1")) == lease.value
        assert 2000 < await link.command("PTTL", link.key("conn", "a1")) <= 3000


async def test_migration_mode_waits_out_and_sets_the_php_throttle_key(
    server: RedisServer,
) -> None:
    async with linked(server, 1) as (link,):
        php_key = "laravel_cache:tg:proxy:throttle:p5"
        gate = SharedGate(
            link,
            "p5",
            0.3,
            (0.0, 0.0),
            random.Random(1),
            php_keys=True,
            php_prefix="laravel_cache:",
        )
        # PHP's Cache::add holds the proxy for 400 ms more.
        assert await link.command("SET", php_key, "1", "PX", 400, "NX") is True
        delay = await gate.reserve(None)
        # (less the reply's own travel time, which a loaded machine makes tens of ms)
        assert 0.3 <= delay <= 0.4 + 0.005
        # Our slot (start .. start + interval) holds the PHP key: PHP's add fails in it.
        assert await link.command("PTTL", php_key) > (delay + 0.3 - 0.05) * 1000
        assert await link.command("SET", php_key, "1", "PX", 2000, "NX") is None
        # The next reservation counts from ours, not only from the PHP key.
        assert await gate.reserve(None) >= delay + 0.3 - 0.01
