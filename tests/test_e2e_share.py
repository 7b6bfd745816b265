"""Shared and merged read-only jobs, counted AT THE loopback DC (real Telethon, real sockets),
and over the websocket: every accepted job gets exactly one reply.

Figures (requests at the DC, ``pytest -s`` prints them): N identical concurrent jobs and N
same-chat ``get_messages`` jobs, with ``[economy]`` sharing and merging off and on.
"""

from __future__ import annotations

import collections
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from mtpoold._compose import open_pool
from mtpoold._server import RpcServer
from mtpoold.testing import DC, open_dc

from _e2e import PHONES, fleet_config, fleet_world, open_fleet
from _fakeclient import Sleep, World, make_config
from _memlisten import MemoryListener, open_client

N = 10
ACCOUNTS = {f"acc-{i}": (PHONES[i], None) for i in range(3)}
# Peer memory off on both sides: these figures are what sharing and merging alone save.
ON = {"share_identical": True, "merge_get_messages": True, "peer_memory": False}
OFF = {"share_identical": False, "merge_get_messages": False, "peer_memory": False}


@pytest.fixture
async def dc() -> AsyncIterator[DC]:
    async with open_dc(fleet_world()) as dc:
        yield dc


def at_dc(dc: DC) -> collections.Counter[str]:
    """Requests per method the fleet's accounts sent, summed over them."""
    total: collections.Counter[str] = collections.Counter()
    for phone, _ in ACCOUNTS.values():
        total.update(dc.counters(phone))
    return total


def figure(what: str, economy: dict[str, bool], counts: collections.Counter[str]) -> None:
    state = "on" if economy["share_identical"] else "off"
    print(f"\n[figure] {what}, economy {state}: {sum(counts.values())} requests: {dict(counts)}")


@pytest.mark.parametrize("economy", [OFF, ON], ids=["off", "on"])
async def test_identical_in_flight_jobs_make_one_call_at_the_dc(
    tmp_path: Path, dc: DC, economy: dict[str, bool]
) -> None:
    config = fleet_config(tmp_path, dc, proxies=[], accounts=ACCOUNTS, economy=economy)
    results: list[Any] = []
    raw: list[Any] = []
    async with open_fleet(dc, config) as fleet:
        pool = fleet.pool
        # connect every account first, so what follows counts the jobs alone
        for acc in ACCOUNTS:
            await pool.invoke("help.GetNearestDc", {}, account=acc, deadline_s=20)
        before = at_dc(dc)

        async def resolve() -> None:
            results.append(await pool.resolve("@mtpoold_news", deadline_s=20))

        async def invoke() -> None:
            raw.append(
                await pool.invoke(
                    "contacts.ResolveUsername", {"username": "mtpoold_chat"}, deadline_s=20
                )
            )

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for _ in range(N):
                    nursery.start_soon(resolve)
                    nursery.start_soon(invoke)
        counts = at_dc(dc) - before
    figure(f"{N} identical resolve + {N} identical invoke", economy, counts)
    assert len(results) == len(raw) == N
    assert all(r.value["username"] == "mtpoold_news" for r in results)
    assert all(r.value["_"] == "ResolvedPeer" for r in raw)
    if economy["share_identical"]:
        # one look-up for the N resolve jobs, one for the N invoke jobs
        assert counts["contacts.ResolveUsername"] == 2
        assert counts["channels.GetFullChannel"] == 1
        assert sorted(r.meta.shared for r in results) == [False] + [True] * (N - 1)
        assert sorted(r.meta.shared for r in raw) == [False] + [True] * (N - 1)
    else:
        assert counts["contacts.ResolveUsername"] == 2 * N
        assert counts["channels.GetFullChannel"] == N
        assert not any(r.meta.shared for r in results + raw)


@pytest.mark.parametrize("economy", [OFF, ON], ids=["off", "on"])
async def test_merged_get_messages_answer_each_job_with_exactly_its_ids_at_the_dc(
    tmp_path: Path, dc: DC, economy: dict[str, bool]
) -> None:
    config = fleet_config(tmp_path, dc, proxies=[], accounts=ACCOUNTS, economy=economy)
    wanted = [[i] for i in range(1, N)] + [[3, 999]]  # 999: no such message
    answers: dict[int, Any] = {}
    async with open_fleet(dc, config) as fleet:
        pool = fleet.pool
        for acc in ACCOUNTS:  # connected, and each knows the channel: the jobs alone count
            await pool.resolve("@mtpoold_news", account=acc, deadline_s=20)
        before = at_dc(dc)

        async def job(n: int) -> None:
            answers[n] = await pool.get_messages("@mtpoold_news", wanted[n], deadline_s=20)

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for n in range(N):
                    nursery.start_soon(job, n)
        counts = at_dc(dc) - before
    figure(f"{N} get_messages of one channel", economy, counts)
    for n, ids in enumerate(wanted):
        value = answers[n].value
        assert list(value) == [str(i) for i in ids]  # exactly its own ids, in its order
        for i in ids:
            assert value[str(i)]["exists"] is (i <= 5)  # the channel has posts 1..5
    assert answers[N - 1].value["999"] == {"exists": False}
    if economy["merge_get_messages"]:
        assert counts["channels.GetMessages"] == 1
        assert all(a.meta.merged == N for a in answers.values())
    else:
        assert counts["channels.GetMessages"] == N
        assert all(a.meta.merged == 1 for a in answers.values())
    assert counts["contacts.ResolveUsername"] == 0


# -- the websocket: exactly one reply per accepted job ----------------------------------------

TOKEN = "test-token-0123456789"


async def test_every_accepted_job_gets_exactly_one_reply_over_the_websocket(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("a1", Sleep(10, {"n": 1}), *[Sleep(10)] * 10)
    config = make_config(
        tmp_path,
        proxies={"p1": {"interval_s": 0.0, "capacity": 10}},
        accounts={"a1": "p1"},
        economy=ON,
    )
    replies: dict[Any, list[dict[str, Any]]] = collections.defaultdict(list)
    listener = MemoryListener()
    async with open_pool(config, client_factory=world.factory()) as pool:
        server = RpcServer(pool, TOKEN)
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve, [listener])
            async with open_client(
                listener, [(b"Authorization", b"Bearer " + TOKEN.encode())]
            ) as ws:

                async def send(request_id: Any, method: str, params: dict[str, Any]) -> None:
                    await ws.send_message(
                        json.dumps(
                            {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
                        )
                    )

                for i in range(5):  # five identical jobs: one call
                    await send(f"r{i}", "resolve", {"link_or_username": "@xnews"})
                await send(
                    "short",
                    "resolve",
                    {"link_or_username": "@xnews", "options": {"deadline_ms": 2000}},
                )
                for i in range(3):  # merged into one batch behind the resolve
                    await send(f"m{i}", "get_messages", {"peer": "@chan_one", "ids": [i + 1]})
                await send(
                    "bad",
                    "invoke",
                    {
                        "method": "messages.SendMessage",
                        "args": {"peer": "@xnews", "message": "hi", "random_id": 1},
                        "options": {"max_age_s": 5},
                    },
                )
                await trio.testing.wait_all_tasks_blocked()
                await send("c", "cancel", {"id": "r0"})  # the one that started the call
                expected = {*(f"r{i}" for i in range(5)), "short", "m0", "m1", "m2", "bad", "c"}
                with trio.fail_after(120):
                    while set(replies) != expected:
                        reply = json.loads(await ws.get_message())
                        replies[reply["id"]].append(reply)
                await send(
                    "cached",
                    "resolve",
                    {"link_or_username": "@XNews", "options": {"max_age_s": 60}},
                )
                await send(
                    "cached2",
                    "resolve",
                    {"link_or_username": "@xnews", "options": {"max_age_s": 60}},
                )
                for _ in range(2):
                    reply = json.loads(await ws.get_message())
                    replies[reply["id"]].append(reply)
                await trio.sleep(60)  # nothing else comes
                with trio.move_on_after(1):
                    extra = await ws.get_message()
                    raise AssertionError(f"a reply nobody asked for: {extra}")
            nursery.cancel_scope.cancel()
    assert all(len(r) == 1 for r in replies.values()), replies
    one = {k: v[0] for k, v in replies.items()}
    assert one["r0"]["error"]["data"]["class"] == "CANCELLED"
    for i in range(1, 5):
        assert one[f"r{i}"]["result"]["result"] == {"n": 1}
        assert one[f"r{i}"]["result"]["meta"]["shared"] is True
    assert one["short"]["error"]["data"]["class"] == "DEADLINE_EXCEEDED"
    assert one["bad"]["error"]["data"]["class"] == "INVALID_ARGUMENT"
    assert {one[f"m{i}"]["result"]["meta"]["merged"] for i in range(3)} == {3}
    assert (
        "max_age_s: messages.SendMessage is not on the read-only list"
        in one["bad"]["error"]["message"]
    )
    # the second max_age_s job shares the first one's call (or its cached answer)
    assert one["cached2"]["result"]["meta"]["shared"] is True
    # the resolve answered at 10 s; the batch (after it, on the only account) at 20 s
    calls = [kind for _, kind, _ in world.starts if kind == "call"]
    assert len(calls) == 3  # the shared resolve, the merged get_messages, the "cached" one
