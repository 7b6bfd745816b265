"""``status`` of a cluster (`mtpoold._forward.Doors.cluster_status`, `mtpoold._statusview
.render_cluster`): every live node with its rpc address and held accounts, who holds which
account, each node's lanes; through the server's ``status`` reply and at 80 columns."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import cattrs
import trio
import trio.testing
from rich.console import Console
from test_openrpc import DOC, problems

from mtpoold._forward import Doors, NodeDirectory, PeerLinks, node_summary
from mtpoold._server import RpcServer
from mtpoold._statusview import render_cluster, render_status

from _fakepool import FakePool
from _memlisten import MemoryListener, open_client

TOKEN = "cluster-token-0123456789"
ACCOUNTS = {f"acct-{i:02d}": ("main",) for i in range(12)}
HOLDERS: dict[str, str | None] = {
    a: ("node-a", "node-b", "node-c")[i % 3] for i, a in enumerate(sorted(ACCOUNTS))
}
HOLDERS["acct-11"] = None  # its node died: held by nobody until the failover


@attrs.define(eq=False)
class Directory:
    node: str
    holders_of: dict[str, str | None]
    down: bool = False

    def holds(self, account_id: str) -> bool:
        return self.holders_of.get(account_id) == self.node

    async def holders(self, account_ids: Sequence[str]) -> Mapping[str, str | None]:
        await trio.lowlevel.checkpoint()
        return {a: self.holders_of.get(a) for a in account_ids}

    async def statuses(self) -> Mapping[str, Mapping[str, Any]]:
        await trio.lowlevel.checkpoint()
        if self.down:
            raise ConnectionError("redis 127.0.0.1:6379 unreachable (ConnectionRefusedError)")
        pool = FakePool()
        return {
            name: node_summary(
                pool.statistics(),
                node=name,
                rpc=f"10.0.0.{i + 1}:8765",
                held=[a for a, h in self.holders_of.items() if h == name],
            )
            for i, name in enumerate(("node-a", "node-b", "node-c"))
        }


def make_doors(directory: Directory) -> Doors:
    return Doors(
        directory=directory,
        links=PeerLinks(node=directory.node, token=TOKEN),
        accounts=lambda: ACCOUNTS,
        default_deadline_s=60.0,
        refresh_s=5.0,
        failover_s=30.0,
    )


def render(renderable: Any, width: int = 80) -> str:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None, legacy_windows=False).print(renderable)
    return out.getvalue()


async def test_cluster_status_lists_nodes_holders_and_lanes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    doors = make_doors(Directory("node-a", dict(HOLDERS)))
    await doors.refresh()
    await trio.sleep(2.0)
    status = doors.cluster_status()
    assert status["node"] == "node-a"
    assert status["age_s"] == 2.0
    assert status["error"] is None
    assert status["failover_s"] == 30.0
    assert [(n["name"], n["rpc"], n["held"]) for n in status["nodes"]] == [
        ("node-a", "10.0.0.1:8765", 4),
        ("node-b", "10.0.0.2:8765", 4),
        ("node-c", "10.0.0.3:8765", 3),
    ]
    assert status["holders"] == HOLDERS  # every configured account, None: unheld
    [lane] = status["nodes"][0]["lanes"]
    assert lane == {
        "key": "0123456789abcdef",
        "name": "proxy-one",
        "type": "socks5",
        "in_flight": 1,
        "capacity": 2,
        "waiting": 3,
        "calls": 42,
        "cooldown_remaining_s": 0.0,
    }
    json.dumps(status)  # JSON-safe


async def test_cluster_status_keeps_the_last_read_when_redis_is_unreachable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    directory = Directory("node-a", dict(HOLDERS))
    doors = make_doors(directory)
    await doors.refresh()
    directory.down = True
    await trio.sleep(5.0)
    await doors.refresh()
    status = doors.cluster_status()
    assert status["error"] == "ConnectionError"  # no .cause: the exception's type
    assert len(status["nodes"]) == 3
    assert status["age_s"] == 5.0
    text = render(render_cluster(status))
    assert "cluster unreadable, showing the last read: ConnectionError" in text


async def test_cluster_view_fits_80_columns(autojump_clock: trio.testing.MockClock) -> None:
    doors = make_doors(Directory("node-a", dict(HOLDERS)))
    await doors.refresh()
    status = doors.cluster_status()
    for wide in (False, True):
        text = render(render_cluster(status, wide=wide))
        assert max(len(line) for line in text.splitlines()) <= 80, text
    narrow = render(render_cluster(status))
    assert "cluster: this node node-a · 3 live nodes · accounts 12, unheld 1" in narrow
    assert "failover: a dead node's accounts move within 30s" in narrow
    assert "node-a *" in narrow  # this node marked
    assert "10.0.0.2:8765" in narrow
    assert "acct-00, acct-03" in narrow  # node-a's accounts on its row
    assert "held by no live node (1): acct-11" in narrow
    assert narrow.count("proxy-one") == 3  # each node's lane
    wide = render(render_cluster(status, wide=True))
    assert "Accounts by holder (12)" in wide
    assert "acct-11 unheld" in wide


async def test_status_reply_carries_the_cluster(autojump_clock: trio.testing.MockClock) -> None:
    pool = FakePool()
    doors = make_doors(Directory("node-a", dict(HOLDERS)))
    await doors.refresh()
    listener = MemoryListener()
    server = RpcServer(pool, TOKEN, doors=doors)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, [listener])
        auth = [(b"Authorization", b"Bearer " + TOKEN.encode())]
        async with open_client(listener, auth) as ws:
            for i, params in enumerate(({}, {"summary": True})):
                await ws.send_message(
                    json.dumps({"jsonrpc": "2.0", "id": i, "method": "status", "params": params})
                )
                reply = json.loads(await ws.get_message())
                cluster = doors.cluster_status(holders=not params)
                assert reply["result"]["cluster"] == cluster
                assert ("holders" in cluster) is not params  # summary: counts only
                assert (cluster["accounts_total"], cluster["unheld"]) == (12, 1)
                assert reply["result"]["accounts_total"] == 2  # this node's own pool
        nursery.cancel_scope.cancel()
    schema = DOC["components"]["schemas"]["PoolStatistics"]
    assert problems(reply["result"], schema) == []  # docs/openrpc.json describes it
    text = render(render_status(reply["result"]))
    assert "Nodes" in text and "Lanes by node" in text
    assert max(len(line) for line in text.splitlines()) <= 80


async def test_status_without_cluster_is_unchanged() -> None:
    stats = cattrs.unstructure(FakePool().statistics())
    assert "cluster" not in stats
    assert "Nodes" not in render(render_status(stats))


@attrs.define(eq=False)
class FakeBook:
    held: set[str]

    def lease(self, account_id: str) -> object | None:
        return object() if account_id in self.held else None


@attrs.define(eq=False)
class FakeRegistry:
    summaries: dict[str, dict[str, Any]]

    async def statuses(self) -> dict[str, dict[str, Any]]:
        await trio.lowlevel.checkpoint()
        return self.summaries


@attrs.define(eq=False)
class FakeClusterNode:
    """The part of `mtpoold._clusterrun.ClusterNode` `NodeDirectory` reads."""

    node: str
    book: FakeBook
    registry: FakeRegistry
    live_nodes: dict[str, dict[str, Any]]

    async def fetch_holders(self, account_ids: Sequence[str]) -> dict[str, str | None]:
        await trio.lowlevel.checkpoint()
        return dict.fromkeys(account_ids, "node-b")


async def test_node_directory_reads_summaries_with_held_lists_and_rpc_from_node_records(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The cluster task's own summary (``held`` a list of ids, lanes without capacity) with
    the ``rpc`` address from the node records of its heartbeat."""
    summaries = {
        "node-a": {"node": "node-a", "held": ["acct-00"], "lanes": []},
        "node-b": {
            "node": "node-b",
            "held": ["acct-01", "acct-02"],
            "lanes": [{"key": "p1", "name": "p1", "in_flight": 0, "waiting": 0, "calls": 3}],
        },
    }
    cluster = FakeClusterNode(
        node="node-a",
        book=FakeBook({"acct-00"}),
        registry=FakeRegistry(summaries),
        live_nodes={"node-a": {"rpc": "10.0.0.1:8765"}, "node-b": {"rpc": "10.0.0.2:8765"}},
    )
    directory = NodeDirectory(cluster)  # type: ignore[arg-type]
    assert directory.node == "node-a"
    assert directory.holds("acct-00") and not directory.holds("acct-01")
    assert await directory.holders(["acct-01"]) == {"acct-01": "node-b"}
    doors = Doors(
        directory=directory,
        links=PeerLinks(node="node-a", token=TOKEN),
        accounts=lambda: ACCOUNTS,
        default_deadline_s=60.0,
        refresh_s=5.0,
        failover_s=35.0,
    )
    await doors.refresh()
    status = doors.cluster_status()
    assert [(n["name"], n["rpc"], n["held"]) for n in status["nodes"]] == [
        ("node-a", "10.0.0.1:8765", 1),
        ("node-b", "10.0.0.2:8765", 2),
    ]
    assert status["holders"]["acct-02"] == "node-b"
    assert status["unheld"] == 9
    assert doors._candidates(("main",)) == [("node-b", "10.0.0.2:8765")]
    text = render(render_cluster(status))
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "in flight" in text and "0/-" not in text  # the summary left capacity out


async def test_forwarding_prefers_a_peer_whose_matching_accounts_are_not_leaving(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """node-b holds two matching accounts, both draining (on their way to another node);
    node-c one that stays: node-c is asked first."""
    summaries = {
        "node-b": {"held": ["acct-01", "acct-02"], "draining": ["acct-01", "acct-02"]},
        "node-c": {"held": ["acct-03"]},
    }
    cluster = FakeClusterNode(
        node="node-a",
        book=FakeBook(set()),
        registry=FakeRegistry(summaries),
        live_nodes={n: {"rpc": f"{n}:8765"} for n in ("node-a", "node-b", "node-c")},
    )
    doors = make_doors(Directory("node-a", {}))
    doors.directory = NodeDirectory(cluster)  # type: ignore[arg-type]
    await doors.refresh()
    assert doors._candidates(("main",)) == [("node-c", "node-c:8765"), ("node-b", "node-b:8765")]


async def test_cluster_view_says_why_this_node_serves_less_than_its_share(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """``trouble`` (the node's own: quarantine, a node name taken, Redis unreachable) is in
    the reply and on its own line, apart from a failed read of the summaries."""
    doors = make_doors(Directory("node-a", dict(HOLDERS)))
    why = "cluster: epoch quarantine, no account acquired for 12.0 s more (...)"
    doors.trouble = lambda: why
    await doors.refresh()
    status = doors.cluster_status()
    assert status["trouble"] == why
    assert f"this node: {why}" in render(render_cluster(status)).replace("\n", " ")
    doors.trouble = lambda: None
    assert "this node:" not in render(render_cluster(doors.cluster_status()))
