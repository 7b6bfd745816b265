"""NodeRegistry on a real redis-server (heartbeat, live nodes, holders, statuses) and
preferred_node and assign_accounts (pure, no Redis)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import hypothesis
import pytest
import trio
from _redisserver import RedisServer, start_redis
from hypothesis import strategies as st

from mtpoold._aioloop import open_aio_loop
from mtpoold._clusternodes import NodeNameTaken, NodeRegistry, assign_accounts, preferred_node
from mtpoold._leases import LeaseBook
from mtpoold._redislink import ClusterUnavailable, RedisLink, open_redis_link

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


def test_preferred_node_is_stable_and_only_the_dead_nodes_accounts_move() -> None:
    placed = {a: preferred_node(a, NODES) for a in ACCOUNTS}
    assert placed == {a: preferred_node(a, list(reversed(NODES))) for a in ACCOUNTS}
    assert preferred_node("a01", []) is None
    for dead in NODES:
        alive = [n for n in NODES if n != dead]
        after = {a: preferred_node(a, alive) for a in ACCOUNTS}
        moved = {a for a in ACCOUNTS if after[a] != placed[a]}
        assert moved == {a for a in ACCOUNTS if placed[a] == dead}


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(
    accounts=st.sets(st.text(min_size=1, max_size=8), max_size=60),
    nodes=st.sets(st.text(min_size=1, max_size=6), min_size=1, max_size=6),
)
def test_assign_accounts_loads_differ_by_at_most_one_whatever_the_names(
    accounts: set[str], nodes: set[str]
) -> None:
    placed = assign_accounts(accounts, nodes)
    assert set(placed) == accounts and set(placed.values()) <= nodes
    loads = Counter(placed.values())
    counts = [loads.get(n, 0) for n in nodes]
    assert max(counts) - min(counts) <= 1, loads
    # Every node computes the same answer, whatever order it lists accounts and nodes in.
    assert assign_accounts(sorted(accounts, reverse=True), sorted(nodes, reverse=True)) == placed


def test_assign_accounts_spreads_the_test_fleet_and_moves_little_when_a_node_leaves() -> None:
    placed = assign_accounts(ACCOUNTS, NODES)
    assert sorted(Counter(placed.values()).values()) == [4, 4, 4]
    assert assign_accounts(ACCOUNTS, []) == {}
    for dead in NODES:
        alive = [n for n in NODES if n != dead]
        after = assign_accounts(ACCOUNTS, alive)
        assert sorted(Counter(after.values()).values()) == [6, 6]
        orphaned = {a for a in ACCOUNTS if placed[a] == dead}
        moved = {a for a in ACCOUNTS if after[a] != placed[a]}
        assert orphaned <= moved
        # Bounded loads may move a few live accounts to make room; never most of them.
        assert len(moved - orphaned) <= len(ACCOUNTS) // 4, (moved, orphaned)
        assert assign_accounts(ACCOUNTS, NODES) == placed


def test_many_accounts_spread_evenly() -> None:
    counts = Counter(assign_accounts([f"acct{i}" for i in range(3000)], NODES).values())
    assert sorted(counts.values()) == [1000, 1000, 1000]


async def test_a_second_process_with_a_live_nodes_name_writes_nothing_until_the_key_is_gone(
    tmp_path: Path,
) -> None:
    """Two daemons given one ``[cluster] node`` name: the one that came second is refused
    (NodeNameTaken naming the other's rpc and pid) and the first one's key is untouched,
    also by the second one's `leave`; once the first leaves (or its key expires, a killed
    node), the second takes the name."""
    with start_redis(tmp_path) as server:
        async with linked(server, 2) as (one, two):
            first = NodeRegistry(one, "n1", lease_s=0.5, info={"rpc": "127.0.0.1:1", "pid": 1})
            second = NodeRegistry(two, "n1", lease_s=0.5, info={"rpc": "127.0.0.1:2", "pid": 2})
            assert await first.heartbeat() == {"n1": first.info}
            with pytest.raises(NodeNameTaken) as taken:
                await second.heartbeat({"lanes": 2})
            assert taken.value.other == first.info
            assert "'n1'" in taken.value.cause and "127.0.0.1:1" in taken.value.cause
            assert isinstance(taken.value, ClusterUnavailable)
            await second.leave()
            assert await first.heartbeat() == {"n1": first.info}
            assert await first.statuses() == {"n1": {}}
            await first.leave()
            assert await second.heartbeat() == {"n1": second.info}
            await trio.sleep(0.6)  # a killed node: its key expires
            assert await first.heartbeat() == {"n1": first.info}
