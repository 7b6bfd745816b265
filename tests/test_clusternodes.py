"""NodeRegistry on a real redis-server (heartbeat, live nodes, holders, statuses) and
preferred_node's spread (pure, no Redis)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import trio
from _redisserver import RedisServer, start_redis

from mtpoold._aioloop import open_aio_loop
from mtpoold._clusternodes import NodeRegistry, preferred_node
from mtpoold._leases import LeaseBook
from mtpoold._redislink import RedisLink, open_redis_link

NODES = ["n1", "n2", "n3"]
ACCOUNTS = [f"a{i:02d}" for i in range(1, 13)]


@asynccontextmanager
async def linked(server: RedisServer, n: int) -> AsyncIterator[list[RedisLink]]:
    async with open_aio_loop(), AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(open_redis_link(url=server.url, password=None))
            for _ in range(n)
        ]


async def test_heartbeat_lists_live_nodes_and_prunes_dead_ones(tmp_path: Path) -> None:
    with start_redis(tmp_path) as server:
        async with linked(server, 2) as (one, two):
            first = NodeRegistry(one, "n1", lease_s=0.3, info={"rpc": "127.0.0.1:1", "pid": 1})
            second = NodeRegistry(two, "n2", lease_s=0.3, info={"rpc": "127.0.0.1:2", "pid": 2})
            assert await first.heartbeat({"lanes": 1}) == {"n1": first.info}
            before = one.round_trips
            assert await first.heartbeat() == {"n1": first.info}
            assert one.round_trips == before + 1
            assert await second.heartbeat({"lanes": 2}) == {"n1": first.info, "n2": second.info}
            assert await first.statuses() == {"n1": {"lanes": 1}, "n2": {"lanes": 2}}
            await trio.sleep(0.2)
            await second.heartbeat({"lanes": 2})  # n1 goes quiet
            await trio.sleep(0.2)
            assert await second.heartbeat({"lanes": 2}) == {"n2": second.info}
            assert await two.command("SMEMBERS", two.key("nodes")) == {"n2"}
            assert await second.statuses() == {"n2": {"lanes": 2}}


async def test_holders_reads_the_lease_keys(tmp_path: Path) -> None:
    with start_redis(tmp_path) as server:
        server.command("SET", "mtpoold:epoch", "e1|0")
        async with linked(server, 1) as (link,):
            book = LeaseBook(link, "n1", lease_s=1.0, disconnect_delay_s=0.5)
            await book.acquire(["a01"])
            await link.command("SET", link.key("lease", "a02"), "garbage")
            registry = NodeRegistry(link, "n1", lease_s=1.0, info={})
            holders = await registry.holders(["a01", "a02", "a03"])
            assert holders == {"a01": "n1", "a02": None, "a03": None}
            assert await registry.holders([]) == {}


async def test_a_status_that_is_not_json_is_an_empty_one(tmp_path: Path) -> None:
    with start_redis(tmp_path) as server:
        async with linked(server, 1) as (link,):
            registry = NodeRegistry(link, "n1", lease_s=1.0, info={"rpc": "x"})
            await registry.heartbeat()
            await link.command("SET", link.key("status", "n1"), "{not json")
            assert await registry.statuses() == {"n1": {}}


def test_preferred_node_is_stable_and_spreads_the_test_fleet_evenly() -> None:
    placed = {a: preferred_node(a, NODES) for a in ACCOUNTS}
    assert placed == {a: preferred_node(a, list(reversed(NODES))) for a in ACCOUNTS}
    counts = Counter(placed.values())
    assert set(counts) == set(NODES)
    assert all(abs(n - 4) <= 1 for n in counts.values()), counts
    assert preferred_node("a01", []) is None


def test_only_the_dead_nodes_accounts_move() -> None:
    placed = {a: preferred_node(a, NODES) for a in ACCOUNTS}
    for dead in NODES:
        alive = [n for n in NODES if n != dead]
        after = {a: preferred_node(a, alive) for a in ACCOUNTS}
        moved = {a for a in ACCOUNTS if after[a] != placed[a]}
        assert moved == {a for a in ACCOUNTS if placed[a] == dead}
        assert all(abs(n - 6) <= 1 for n in Counter(after.values()).values())
        # ... and back when it returns.
        assert {a: preferred_node(a, NODES) for a in ACCOUNTS} == placed


def test_many_accounts_spread_near_evenly() -> None:
    counts = Counter(preferred_node(f"acct{i}", NODES) for i in range(3000))
    assert all(abs(n - 1000) < 100 for n in counts.values()), counts
