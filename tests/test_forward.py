"""One pool, many doors (`mtpoold._forward`): nodes of a cluster, each an `RpcServer` with its
`Doors` on in-memory streams (tests/_memlisten.py) over the fake pool (tests/_fakepool.py),
the cluster's directory a test double (who holds which account, the nodes' summaries), under
the autojump clock. Jobs come in over the websocket of node a; forwarded ones go over
`PeerLinks`' keep-alive ``POST /rpc`` to the holder's server."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from rich.console import Console
from test_openrpc import METHODS as DOC_METHODS
from test_openrpc import problems
from trio_websocket import WebSocketConnection

from mtpoold._errors import ErrorClass, JobFailed
from mtpoold._forward import (
    DEADLINE_GRACE_S,
    Doors,
    ForwardableJob,
    PeerLinks,
    node_summary,
    rpc_address,
)
from mtpoold._rpc import CANCELLED, JOB_FAILED, NO_ACCOUNT_AVAILABLE
from mtpoold._server import RpcServer
from mtpoold._statusview import render_jobs

from _fakepool import FakePool
from _memlisten import MemoryListener, open_client

TOKEN = "cluster-token-0123456789"
AUTH = [(b"Authorization", b"Bearer " + TOKEN.encode())]
LEASE_S = 15.0
REFRESH_S = LEASE_S / 3
FAILOVER_S = 2 * LEASE_S
#: Every node's config: account id -> tags (b1, b2 tagged "big").
ACCOUNTS: dict[str, tuple[str, ...]] = {
    "a1": ("main",),
    "b1": ("main", "big"),
    "b2": ("main", "big"),
    "c1": ("main",),
}


class Unavailable(Exception):
    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


@attrs.define(eq=False)
class Shared:
    """What Redis would hold: leases and the live nodes' summaries."""

    holders: dict[str, str | None]
    live: dict[str, FakePool] = attrs.field(factory=dict)
    redis_down: bool = False
    lookups: int = 0


@attrs.define(eq=False)
class FakeDirectory:
    node: str
    shared: Shared

    def holds(self, account_id: str) -> bool:
        return self.shared.holders.get(account_id) == self.node and not self.shared.redis_down

    async def holders(self, account_ids: Sequence[str]) -> Mapping[str, str | None]:
        await trio.lowlevel.checkpoint()
        if self.shared.redis_down:
            raise Unavailable("redis 127.0.0.1:6379 unreachable (ConnectionRefusedError)")
        self.shared.lookups += 1
        return {a: self.shared.holders.get(a) for a in account_ids}

    async def statuses(self) -> Mapping[str, Mapping[str, Any]]:
        await trio.lowlevel.checkpoint()
        if self.shared.redis_down:
            raise Unavailable("redis 127.0.0.1:6379 unreachable (ConnectionRefusedError)")
        return {
            name: node_summary(
                pool.statistics(),
                node=name,
                rpc=f"mem:{name}",
                held=[a for a, h in self.shared.holders.items() if h == name],
            )
            for name, pool in self.shared.live.items()
        }


class NoAccountPool(FakePool):
    """A node none of whose accounts can serve: NO_ACCOUNT_AVAILABLE at once, no attempt."""

    async def invoke(self, method: str, args: Mapping[str, Any], **kw: Any) -> Any:
        self.calls.append(("invoke", (method, dict(args)), kw))
        await trio.lowlevel.checkpoint()
        raise JobFailed(
            ErrorClass.NO_ACCOUNT_AVAILABLE, "no account matches tags big", retry_after_s=None
        )


@attrs.define(eq=False)
class Node:
    name: str
    pool: FakePool
    listener: MemoryListener
    doors: Doors
    server: RpcServer
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)

    def kill(self) -> None:
        """SIGKILL, as seen from the wire: every connection and the listener close."""
        self.scope.cancel()


@attrs.define(eq=False)
class Cluster:
    shared: Shared
    nodes: dict[str, Node] = attrs.field(factory=dict)
    nursery: trio.Nursery | None = None

    async def connect(self, rpc: str) -> trio.abc.Stream:
        node = self.nodes.get(rpc.removeprefix("mem:"))
        if node is None:
            raise ConnectionRefusedError(111, f"nothing listens at {rpc}")
        return await node.listener.connect()

    async def add(self, name: str, pool: FakePool | None = None, token: str = TOKEN) -> Node:
        pool = FakePool() if pool is None else pool
        links = PeerLinks(node=name, token=TOKEN, connect=self.connect)
        doors = Doors(
            directory=FakeDirectory(name, self.shared),
            links=links,
            accounts=lambda: ACCOUNTS,
            default_deadline_s=60.0,
            refresh_s=REFRESH_S,
            failover_s=FAILOVER_S,
        )
        listener = MemoryListener(name=f"mem:{name}")
        node = Node(name, pool, listener, doors, RpcServer(pool, token, doors=doors))
        self.nodes[name] = node
        self.shared.live[name] = pool
        assert self.nursery is not None
        await self.nursery.start(self._run, node)
        return node

    async def _run(self, node: Node, *, task_status: trio.TaskStatus[None]) -> None:
        with node.scope:
            async with trio.open_nursery() as nursery:
                await nursery.start(node.server.serve, [node.listener])
                await nursery.start(node.doors.run)
                task_status.started()
        self.shared.live.pop(node.name, None)
        self.nodes.pop(node.name, None)


@asynccontextmanager
async def cluster(
    holders: dict[str, str | None],
    pools: Mapping[str, FakePool] | None = None,
    tokens: Mapping[str, str] | None = None,
) -> AsyncIterator[Cluster]:
    """Nodes a, b and c (their pools from ``pools``, else fake pools; their tokens from
    ``tokens``, else the shared one)."""
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            c = Cluster(Shared(holders=dict(holders)), nursery=nursery)
            for name in ("a", "b", "c"):
                await c.add(name, (pools or {}).get(name), (tokens or {}).get(name, TOKEN))
            for node in c.nodes.values():
                await node.doors.refresh()
            yield c
            nursery.cancel_scope.cancel()


HELD = {"a1": "a", "b1": "b", "b2": "b", "c1": "c"}


async def rpc(ws: WebSocketConnection, request_id: int, method: str, params: Any) -> None:
    await ws.send_message(
        json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
    )


async def recv(ws: WebSocketConnection) -> dict[str, Any]:
    reply: dict[str, Any] = json.loads(await ws.get_message())
    return reply


async def job(ws: WebSocketConnection, params: Any, method: str = "invoke") -> dict[str, Any]:
    await rpc(ws, 1, method, params)
    return await recv(ws)


async def cancelled(pool: FakePool) -> None:
    """Wait until a job was cancelled in ``pool``."""
    while pool.cancelled < 1:
        await pool._changed.wait()


def render_text(renderable: Any) -> str:
    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(renderable)
    return out.getvalue()


def invoke(method: str = "echo", **options: Any) -> dict[str, Any]:
    return {"method": method, "args": {"x": 1}, "options": options}


# --- pinned jobs ---------------------------------------------------------------------------------


async def test_pinned_job_runs_where_its_account_is_held(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with cluster(HELD) as c:
        a, b = c.nodes["a"], c.nodes["b"]
        async with open_client(a.listener, AUTH) as ws:
            local = await job(ws, invoke(account="a1"))
            remote = await job(ws, invoke(account="b1", deadline_ms=20_000))
        assert local["result"]["result"] == {"_": "echo", "args": {"x": 1}}
        # the peer's reply as it sent it: its result and its meta
        assert remote["result"] == {
            "result": {"_": "echo", "args": {"x": 1}},
            "meta": {
                "account": "a1",  # the fake pool's meta
                "proxy_key": "no_proxy",
                "attempts": 1,
                "elapsed_ms": 12.5,
                "shared": False,
                "merged": 1,
                "age_s": 0.0,
            },
        }
        assert [k for k, *_ in a.pool.calls] == ["invoke"]
        [(kind, args, kw)] = b.pool.calls
        assert (kind, args[0], kw["account"]) == ("invoke", "echo", "b1")
        # the remaining deadline went along (no time passed: all of it)
        assert kw["deadline_s"] == pytest.approx(20.0)
        assert a.doors.forwarded == {"ok": 1}
        assert c.shared.lookups == 1  # one MGET of the lease key; the held one needed none


async def test_forwarded_request_is_never_forwarded_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """b believes a holds b1, a believes b does (a lease moving): the job goes a -> b once,
    and b, seeing the hop marker, runs it on its own pool instead of sending it back."""
    async with cluster(HELD) as c:
        a, b = c.nodes["a"], c.nodes["b"]
        c.shared.holders["b1"] = "b"
        b.doors.directory = FakeDirectory("b", Shared(holders={"b1": "a"}, live=c.shared.live))
        async with open_client(a.listener, AUTH) as ws:
            reply = await job(ws, invoke(account="b1"))
        assert "result" in reply
        assert len(b.pool.calls) == 1
        assert a.pool.calls == []
        assert b.doors.forwarded == {}


async def test_keep_alive_connection_per_peer_is_reused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with cluster(HELD) as c:
        a, b = c.nodes["a"], c.nodes["b"]
        async with open_client(a.listener, AUTH) as ws:
            for i in range(3):
                await rpc(ws, i, "invoke", invoke(account="b2"))
                assert "result" in await recv(ws)
                await trio.sleep(1.0)
        assert (a.doors.links.opened, a.doors.links.reused) == (1, 2)
        assert b.listener.accepted == 1
        assert len(b.pool.calls) == 3


async def test_peer_error_reply_is_passed_on_as_sent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with cluster(HELD) as c:
        async with open_client(c.nodes["a"].listener, AUTH) as ws:
            reply = await job(ws, invoke("fail:FLOOD_WAIT", account="b1"))
        assert reply["error"] == {
            "code": JOB_FAILED,
            "message": "fake FLOOD_WAIT",
            "data": {"class": "FLOOD_WAIT", "retry_after_s": 37.0, "account": "a1", "attempts": 2},
        }


async def test_peer_dying_mid_job_answers_stream_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The holder is killed while the forwarded call runs: the job is answered -32001
    STREAM_CLOSED (outcome unknown) with the failover bound, never left without a reply."""
    async with cluster(HELD) as c:
        b = c.nodes["b"]
        async with open_client(c.nodes["a"].listener, AUTH) as ws:
            await rpc(ws, 7, "invoke", invoke("hang", account="b1"))
            await b.pool.wait_waiting(1)
            b.kill()
            reply = await recv(ws)
        assert reply["id"] == 7
        error = reply["error"]
        assert (error["code"], error["data"]["class"]) == (JOB_FAILED, "STREAM_CLOSED")
        assert error["data"]["retry_after_s"] == FAILOVER_S
        assert error["data"]["account"] == "b1"
        assert error["data"]["attempts"] == 1
        assert "node b went away mid-job" in error["message"]
        assert c.nodes["a"].doors.forwarded == {"lost": 1}


async def test_cancel_of_the_original_job_cancels_the_forwarded_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with cluster(HELD) as c:
        a, b = c.nodes["a"], c.nodes["b"]
        async with open_client(a.listener, AUTH) as ws:
            await rpc(ws, 1, "invoke", invoke("hang", account="b1"))
            await b.pool.wait_waiting(1)
            await rpc(ws, 2, "cancel", {"id": 1})
            replies = {r["id"]: r for r in [await recv(ws), await recv(ws)]}
        assert replies[2]["result"] == {"cancelled": True}
        assert replies[1]["error"]["code"] == CANCELLED
        with trio.fail_after(1):
            await cancelled(b.pool)
        assert b.pool.waiting == 0
        assert a.doors.links.idle_connections() == 0  # a cancelled exchange is not reused


async def test_jobs_lists_the_forwarded_jobs_waiting_for_their_peer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with cluster(HELD) as c:
        a, b = c.nodes["a"], c.nodes["b"]
        async with open_client(a.listener, AUTH) as ws:
            await rpc(ws, 1, "invoke", invoke("wait", account="b1"))
            await b.pool.wait_waiting(1)
            await trio.sleep(3.0)
            await rpc(ws, 2, "jobs", {})
            listing = await recv(ws)
            b.pool.release.set()
            assert "result" in await recv(ws)
            await rpc(ws, 3, "jobs", {})
            after = await recv(ws)
        assert listing["result"]["forwarded"] == [
            {"method": "invoke", "account": "b1", "node": "b", "age_s": 3.0}
        ]
        assert after["result"]["forwarded"] == []
        schema = DOC_METHODS["jobs"]["result"]["schema"]
        assert problems(listing["result"], schema) == []
        text = render_text(render_jobs(listing["result"]))
        assert "Forwarded to other nodes, waiting for their reply (1)" in text
        assert max(len(line) for line in text.splitlines()) <= 80


async def test_deadline_of_the_original_job_ends_the_forwarded_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A peer that does not answer by the deadline (+ the grace): DEADLINE_EXCEEDED, and its
    job is cancelled by the closed connection."""
    async with cluster(HELD) as c:
        a, b = c.nodes["a"], c.nodes["b"]
        async with open_client(a.listener, AUTH) as ws:
            start = trio.current_time()
            reply = await job(ws, invoke("hang", account="b1", deadline_ms=5000))
            waited = trio.current_time() - start
        assert reply["error"]["data"]["class"] == "DEADLINE_EXCEEDED"
        assert waited == pytest.approx(5.0 + DEADLINE_GRACE_S)
        with trio.fail_after(1):
            await cancelled(b.pool)


async def test_pinned_account_held_nowhere_waits_for_its_failover(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """b1 is unheld (its node just died): looked up every renew interval; once c takes it,
    the job is forwarded there."""
    async with cluster({**HELD, "b1": None}) as c:

        async def failover() -> None:
            await trio.sleep(12.0)
            c.shared.holders["b1"] = "c"

        async with trio.open_nursery() as nursery:
            nursery.start_soon(failover)
            async with open_client(c.nodes["a"].listener, AUTH) as ws:
                start = trio.current_time()
                reply = await job(ws, invoke(account="b1", deadline_ms=30_000))
                waited = trio.current_time() - start
        assert "result" in reply
        assert len(c.nodes["c"].pool.calls) == 1
        assert waited == pytest.approx(3 * REFRESH_S)  # looked up at 0, 5, 10, 15 s


async def test_pinned_account_held_nowhere_until_the_deadline_is_no_account_available(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with cluster({**HELD, "b1": None}) as c:
        async with open_client(c.nodes["a"].listener, AUTH) as ws:
            reply = await job(ws, invoke(account="b1", deadline_ms=12_000))
        error = reply["error"]
        assert error["code"] == NO_ACCOUNT_AVAILABLE
        assert error["data"]["retry_after_s"] == FAILOVER_S
        assert error["data"]["account"] == "b1"
        assert "account b1 is held by no live node" in error["message"]


async def test_pinned_account_held_nowhere_names_why_this_node_could_not_take_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Migration mode: a PHP worker holds the account's lock, so no node acquires it; the
    answer at the deadline names the lock, not only "held by no live node"."""
    async with cluster({**HELD, "b1": None}) as c:
        c.nodes["a"].doors.refusal = lambda account: "PHP lock held" if account == "b1" else None
        async with open_client(c.nodes["a"].listener, AUTH) as ws:
            reply = await job(ws, invoke(account="b1", deadline_ms=12_000))
        error = reply["error"]
        assert error["code"] == NO_ACCOUNT_AVAILABLE
        assert "account b1 is held by no live node (PHP lock held)" in error["message"]


async def test_pinned_account_of_an_unreachable_node_is_looked_up_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """b's lease on b1 is still in Redis but b is gone (nothing sent): the job waits for the
    account to move instead of failing at once."""
    async with cluster(HELD) as c:
        c.nodes["b"].kill()
        await trio.sleep(0.1)
        c.shared.live["b"] = FakePool()  # its summary has not expired yet

        async def failover() -> None:
            await trio.sleep(7.0)
            c.shared.holders["b1"] = "a"

        async with trio.open_nursery() as nursery:
            nursery.start_soon(failover)
            async with open_client(c.nodes["a"].listener, AUTH) as ws:
                reply = await job(ws, invoke(account="b1"))
        assert "result" in reply
        assert len(c.nodes["a"].pool.calls) == 1  # a holds it now
        assert c.nodes["a"].doors.forwarded == {"unreachable": 2}


async def test_a_node_with_another_token_refuses_forwarded_jobs_loudly(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with cluster(HELD, tokens={"b": "not-the-cluster-token"}) as c:
        async with open_client(c.nodes["a"].listener, AUTH) as ws:
            reply = await job(ws, invoke(account="b1", deadline_ms=8000))
        error = reply["error"]
        assert error["code"] == NO_ACCOUNT_AVAILABLE
        assert "held by node b: node at mem:b refused the request: HTTP 401" in error["message"]
        assert c.nodes["b"].pool.calls == []
        refused = [r for r in caplog.records if "peer_refused" in r.getMessage()]
        assert len(refused) == 2 and refused[0].levelname == "ERROR"  # at 0 s and 5 s


async def test_pinned_job_while_redis_is_unreachable_goes_to_the_local_pool(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with cluster(HELD) as c:
        c.shared.redis_down = True
        async with open_client(c.nodes["a"].listener, AUTH) as ws:
            await job(ws, invoke(account="b1"))
        assert [kw["account"] for _, _, kw in c.nodes["a"].pool.calls] == ["b1"]
        assert c.nodes["b"].pool.calls == []


async def test_unknown_account_goes_to_the_local_pool(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with cluster(HELD) as c:
        async with open_client(c.nodes["a"].listener, AUTH) as ws:
            await job(ws, invoke(account="nobody"))
        assert len(c.nodes["a"].pool.calls) == 1
        assert c.shared.lookups == 0


# --- tagged and free jobs ------------------------------------------------------------------------


async def test_free_job_uses_local_accounts_first(autojump_clock: trio.testing.MockClock) -> None:
    async with cluster(HELD) as c:
        async with open_client(c.nodes["a"].listener, AUTH) as ws:
            await job(ws, invoke(tags=["main"]))
        assert len(c.nodes["a"].pool.calls) == 1
        assert c.nodes["b"].pool.calls == c.nodes["c"].pool.calls == []


async def test_tagged_job_no_local_account_can_serve_goes_to_a_node_holding_matching_ones(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with cluster(HELD, pools={"a": NoAccountPool()}) as c:
        async with open_client(c.nodes["a"].listener, AUTH) as ws:
            reply = await job(ws, invoke(tags=["big"], deadline_ms=9000))
        assert "result" in reply
        assert len(c.nodes["a"].pool.calls) == 1  # tried first
        [(_, _, kw)] = c.nodes["b"].pool.calls  # b holds b1, b2: the only "big" ones
        assert kw["tags"] == ("big",)
        assert c.nodes["c"].pool.calls == []


async def test_tagged_job_is_not_forwarded_while_redis_is_unreachable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with cluster(HELD, pools={"a": NoAccountPool()}) as c:
        c.shared.redis_down = True
        await c.nodes["a"].doors.refresh()
        async with open_client(c.nodes["a"].listener, AUTH) as ws:
            reply = await job(ws, invoke(tags=["big"]))
        assert reply["error"]["message"] == "no account matches tags big"  # the local answer
        assert c.nodes["b"].pool.calls == []


async def test_tagged_job_that_made_attempts_is_not_forwarded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with cluster(HELD) as c:
        async with open_client(c.nodes["a"].listener, AUTH) as ws:
            reply = await job(ws, invoke("fail:NO_ACCOUNT_AVAILABLE", tags=["big"]))
        assert reply["error"]["code"] == NO_ACCOUNT_AVAILABLE  # local: 2 attempts made
        assert c.nodes["b"].pool.calls == []


async def test_tagged_job_no_node_can_serve_answers_the_last_no_account_available(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pools = {"a": NoAccountPool(), "b": NoAccountPool(), "c": NoAccountPool()}
    async with cluster(HELD, pools=pools) as c:
        async with open_client(c.nodes["a"].listener, AUTH) as ws:
            reply = await job(ws, invoke(tags=["main"]))
        assert reply["error"]["code"] == NO_ACCOUNT_AVAILABLE
        # b holds 2 matching accounts, c 1: b first, then c; each exactly once
        assert [len(c.nodes[n].pool.calls) for n in "abc"] == [1, 1, 1]


async def test_tagged_job_skips_a_node_that_is_shutting_down(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pools = {"a": NoAccountPool()}
    async with cluster({**HELD, "c1": "b"}, pools=pools) as c:
        c.nodes["b"].server.request_shutdown()
        await trio.sleep(0.1)
        c.shared.live["b"] = c.nodes["b"].pool if "b" in c.nodes else FakePool()
        c.shared.holders.update(b1="c", b2="b")
        await c.nodes["a"].doors.refresh()
        async with open_client(c.nodes["a"].listener, AUTH) as ws:
            reply = await job(ws, invoke(tags=["big"]))
        assert "result" in reply
        assert len(c.nodes["c"].pool.calls) == 1


# --- Doors.serve on its own ---------------------------------------------------------------------


async def test_serve_without_peers_raises_the_local_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    shared = Shared(holders={})
    doors = Doors(
        directory=FakeDirectory("solo", shared),
        links=PeerLinks(node="solo", token=TOKEN),
        accounts=lambda: ACCOUNTS,
        default_deadline_s=60.0,
        refresh_s=REFRESH_S,
        failover_s=FAILOVER_S,
    )
    failure = JobFailed(ErrorClass.NO_ACCOUNT_AVAILABLE, "none", retry_after_s=3.0)

    async def local() -> Any:
        await trio.lowlevel.checkpoint()
        raise failure

    await doors.refresh()
    with pytest.raises(JobFailed) as caught:
        await doors.serve(ForwardableJob("invoke", {"method": "echo"}, tags=("big",)), local)
    assert caught.value is failure


@pytest.mark.parametrize(
    ("listen", "advertised"),
    [
        ("0.0.0.0:8765", "node-1.example:8765"),
        ("[::]:8765", "node-1.example:8765"),
        ("10.0.0.2:8765", "10.0.0.2:8765"),
        ("[::1]:8765", "[::1]:8765"),
        ("unix:/run/mtpoold/rpc.sock", "unix:/run/mtpoold/rpc.sock"),
    ],
)
def test_rpc_address_advertises_a_reachable_host(listen: str, advertised: str) -> None:
    assert rpc_address(listen, host="node-1.example") == advertised


async def test_peer_links_on_real_sockets_reuse_and_drop_a_connection_the_peer_closed() -> None:
    """TCP on loopback: a kept-alive connection is reused; one the peer closed while idle
    (its ``handshake_timeout_s``) is seen closed before use and replaced, the call unharmed."""
    pool = FakePool()
    server = RpcServer(pool, TOKEN, listen="127.0.0.1:0", handshake_timeout_s=0.3)
    links = PeerLinks(node="a", token=TOKEN)
    request = {"jsonrpc": "2.0", "id": 1, "method": "invoke", "params": invoke()}
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            address = await nursery.start(server.run)
            for _ in range(2):
                assert "result" in await links.call(address, request)
            assert (links.opened, links.reused) == (1, 1)
            await trio.sleep(1.0)  # > handshake_timeout_s: the server closed it, idle
            assert server.statistics().connections == 0
            assert "result" in await links.call(address, request)
            assert (links.opened, links.reused) == (2, 1)
            await links.aclose()
            nursery.cancel_scope.cancel()
    assert len(pool.calls) == 3


class DrainedPool(FakePool):
    """A node that has just let its accounts go (a drain): "not held by this node"."""

    async def invoke(self, method: str, args: Mapping[str, Any], **kw: Any) -> Any:
        self.calls.append(("invoke", (method, dict(args)), kw))
        await trio.lowlevel.checkpoint()
        raise JobFailed(
            ErrorClass.NO_ACCOUNT_AVAILABLE,
            f'account "{kw["account"]}" is not held by this node: moving to another node',
        )


async def test_pinned_job_follows_an_account_its_holder_just_drained(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with cluster(HELD, pools={"b": DrainedPool()}) as c:

        async def moved() -> None:
            await trio.sleep(1.0)
            c.shared.holders["b1"] = "c"  # released by b, taken by c

        async with trio.open_nursery() as nursery:
            nursery.start_soon(moved)
            async with open_client(c.nodes["a"].listener, AUTH) as ws:
                reply = await job(ws, invoke(account="b1"))
        assert "result" in reply
        assert (len(c.nodes["b"].pool.calls), len(c.nodes["c"].pool.calls)) == (1, 1)


async def test_pinned_job_refused_twice_by_its_holder_gets_the_holders_answer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with cluster(HELD, pools={"b": DrainedPool()}) as c:
        async with open_client(c.nodes["a"].listener, AUTH) as ws:
            start = trio.current_time()
            reply = await job(ws, invoke(account="b1"))
            waited = trio.current_time() - start
        assert reply["error"]["code"] == NO_ACCOUNT_AVAILABLE
        assert "is not held by this node" in reply["error"]["message"]
        assert len(c.nodes["b"].pool.calls) == 2
        assert waited == pytest.approx(REFRESH_S)
