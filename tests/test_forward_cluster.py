"""The doors on real pools: two nodes, each a core pool with its cluster task
(`mtpoold._clusterrun.ClusterNode`) over the in-memory Redis double of tests/test_clusterrun.py,
fake Telegram clients (tests/_fakeclient.py), and an `RpcServer` with `Doors.for_cluster` on
in-memory streams; MockClock. Jobs go to node a's websocket; whatever node b holds is served
by node b's pool, through the forwarding."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from test_clusterrun import (
    ACCOUNTS,
    LEASE_S,
    FakeGate,
    FakeRedis,
    FakeRegistry,
    _assign,
    _config,
    _node,
    _running,
)
from trio_websocket import WebSocketConnection

import mtpoold._clusterrun as clusterrun
from mtpoold._aioloop import open_aio_loop
from mtpoold._clusterrun import ClusterNode
from mtpoold._forward import Doors, configured_accounts
from mtpoold._pool import Pool
from mtpoold._rpc import JOB_FAILED
from mtpoold._server import RpcServer

from _fakeclient import Sleep, World
from _memlisten import MemoryListener, open_client

TOKEN = "cluster-token-0123456789"
AUTH = [(b"Authorization", b"Bearer " + TOKEN.encode())]


@pytest.fixture(autouse=True)
def _doubles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clusterrun, "SharedGate", FakeGate)
    monkeypatch.setattr(clusterrun, "assign_accounts", _assign)


class Registry:
    """`FakeRegistry`'s semantics plus the node records' ``rpc`` and the status summaries of
    every node (``summaries``, shared by the nodes of one test)."""

    def __init__(self, r: FakeRedis, node: str, summaries: dict[str, Any]) -> None:
        self.r, self.node, self.summaries = r, node, summaries
        fake = FakeRegistry(r, node, LEASE_S)
        self.holders, self.leave = fake.holders, fake.leave

    async def heartbeat(self, status: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        await trio.lowlevel.checkpoint()
        self.r.check()
        now = trio.current_time()
        self.r.nodes[self.node] = now + LEASE_S
        self.summaries[self.node] = status
        return {n: {"rpc": f"mem:{n}"} for n, end in sorted(self.r.nodes.items()) if end > now}

    async def statuses(self) -> dict[str, dict[str, Any]]:
        await trio.lowlevel.checkpoint()
        self.r.check()
        now = trio.current_time()
        return {
            n: dict(s or {}) for n, s in self.summaries.items() if self.r.nodes.get(n, -1.0) > now
        }


@attrs.define(eq=False)
class Door:
    node: ClusterNode
    pool: Pool
    doors: Doors
    listener: MemoryListener


@attrs.define(eq=False)
class Doorways:
    listeners: dict[str, MemoryListener] = attrs.field(factory=dict)
    summaries: dict[str, Any] = attrs.field(factory=dict)

    async def connect(self, rpc: str) -> trio.abc.Stream:
        listener = self.listeners.get(rpc.removeprefix("mem:"))
        if listener is None or listener.closed:
            raise ConnectionRefusedError(111, f"nothing listens at {rpc}")
        return await listener.connect()


def _cluster_node(r: FakeRedis, name: str, ways: Doorways) -> ClusterNode:
    node = _node(r, name)
    node.registry = Registry(r, name, ways.summaries)  # type: ignore[assignment]
    return node


@asynccontextmanager
async def door(
    tmp_path: Path, r: FakeRedis, name: str, world: World, ways: Doorways
) -> AsyncIterator[Door]:
    config = _config(tmp_path / name)
    node = _cluster_node(r, name, ways)
    async with _running(config, node, world) as pool:
        doors = Doors.for_cluster(
            node,
            token=TOKEN,
            accounts=configured_accounts(lambda: config),
            default_deadline_s=config.policy.job_deadline_s,
        )
        doors.links.connect = ways.connect
        listener = MemoryListener(name=f"mem:{name}")
        ways.listeners[name] = listener
        server = RpcServer(pool, TOKEN, doors=doors)
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve, [listener])
            await nursery.start(doors.run)
            yield Door(node, pool, doors, listener)
            nursery.cancel_scope.cancel()


async def call(ws: WebSocketConnection, request_id: int, params: Any) -> dict[str, Any]:
    await ws.send_message(
        json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "invoke", "params": params})
    )
    reply: dict[str, Any] = json.loads(await ws.get_message())
    return reply


async def test_any_node_serves_every_account(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    r = FakeRedis()
    world = World()
    ways = Doorways()
    async with open_aio_loop():
        async with door(tmp_path, r, "node-a", world, ways) as a:
            async with door(tmp_path, r, "node-b", world, ways) as b:
                await trio.sleep(3 * LEASE_S)  # both live, spread settled, summaries read
                held_b = set(b.node.held)
                assert held_b and set(a.node.held) | held_b == set(ACCOUNTS)
                async with open_client(a.listener, AUTH) as ws:
                    for i, account in enumerate(sorted(ACCOUNTS)):
                        params = {"method": "help.GetConfig", "options": {"account": account}}
                        reply = await call(ws, i, params)
                        assert "result" in reply, reply
                        assert reply["result"]["meta"]["account"] == account
                status = a.doors.cluster_status()
                assert {n["name"]: n["rpc"] for n in status["nodes"]} == {
                    "node-a": "mem:node-a",
                    "node-b": "mem:node-b",
                }
                assert {acc for acc, n in status["holders"].items() if n == "node-b"} == held_b
                assert a.doors.forwarded == {"ok": len(held_b)}
                # b's accounts ran on b's pool: its jobs counted there
                assert b.pool.statistics().jobs_ok == len(held_b)


async def test_a_node_killed_mid_job_answers_stream_closed_then_its_accounts_move(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    r = FakeRedis()
    world = World()
    ways = Doorways()
    async with open_aio_loop():
        async with door(tmp_path, r, "node-a", world, ways) as a:
            async with trio.open_nursery() as nursery:
                b_scope = trio.CancelScope()
                b_up = trio.Event()
                held_b: set[str] = set()

                async def run_b() -> None:
                    with b_scope:
                        async with door(tmp_path, r, "node-b", world, ways) as b:

                            async def no_hand_over() -> None:  # SIGKILL: nothing released
                                return None

                            b.node._hand_over_all = no_hand_over  # type: ignore[method-assign]
                            await trio.sleep(3 * LEASE_S)
                            held_b.update(b.node.held)
                            b_up.set()
                            await trio.sleep_forever()

                nursery.start_soon(run_b)
                await b_up.wait()
                victim = sorted(held_b)[0]
                world.script(victim, Sleep(3.0))
                async with open_client(a.listener, AUTH) as ws:
                    params = {"method": "help.GetConfig", "options": {"account": victim}}
                    await ws.send_message(
                        json.dumps(
                            {"jsonrpc": "2.0", "id": 1, "method": "invoke", "params": params}
                        )
                    )
                    await trio.sleep(0.5)
                    b_scope.cancel()  # node b is gone mid-call
                    reply = json.loads(await ws.get_message())
                    assert reply["error"]["code"] == JOB_FAILED
                    assert reply["error"]["data"]["class"] == "STREAM_CLOSED"
                    # then the account is a's within the failover bound, and served here
                    params["options"]["deadline_ms"] = 4000
                    for _ in range(40):
                        if victim in a.node.held:
                            break
                        await trio.sleep(LEASE_S / 3)
                    reply = await call(ws, 2, params)
                    assert reply["result"]["meta"]["account"] == victim
