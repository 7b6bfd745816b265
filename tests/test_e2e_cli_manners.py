"""End to end (real Telethon, the loopback DC, the websocket server): get_messages on a
message link without ``ids``, ``messages.GetHistory`` without its pagination integers, and
"did you mean" for a misspelt TL function, through the pool and over JSON-RPC."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from mtpoold._errors import ErrorClass, JobFailed
from mtpoold._rpc import RpcError
from mtpoold._rpcclient import call, parse_target
from mtpoold._server import RpcServer
from mtpoold.testing import DC, open_dc

from _e2e import fleet_config, fleet_world, open_fleet

TOKEN = "e2e-cli-manners-token-0123456789"


@pytest.fixture
async def dc() -> AsyncIterator[DC]:
    async with open_dc(fleet_world()) as dc:
        yield dc


async def test_message_links_history_defaults_and_suggestions(tmp_path: Path, dc: DC) -> None:
    config = fleet_config(tmp_path, dc, proxies=[], accounts={"acc-1": ("15550000001", None)})
    with trio.fail_after(60):
        async with open_fleet(dc, config) as fleet:
            pool = fleet.pool
            # a message link is its own ids
            got = await pool.get_messages("https://t.me/mtpoold_news/3")
            assert list(got.value) == ["3"]
            assert got.value["3"]["exists"] is True and got.value["3"]["views"] == 3000
            # the channel is known now: its private-link form names the same message
            got = await pool.get_messages("t.me/c/2001/2")
            assert list(got.value) == ["2"] and got.value["2"]["exists"] is True
            with pytest.raises(JobFailed) as info:
                await pool.get_messages("https://t.me/mtpoold_news")
            assert info.value.error_class is ErrorClass.INVALID_ARGUMENT
            assert info.value.message.startswith("ids: required unless peer is a message link")
            # GetHistory without offset_id, add_offset, max_id, min_id, hash: 0 each
            history = await pool.invoke(
                "messages.GetHistory", {"peer": "@mtpoold_news", "limit": 2}
            )
            assert [m["id"] for m in history.value["messages"]] == [5, 4]
            with pytest.raises(JobFailed) as info:
                await pool.invoke("messages.GetHistry", {"peer": "@mtpoold_news", "limit": 2})
            assert info.value.message == (
                'unknown TL function "messages.GetHistry"; did you mean messages.GetHistory?'
            )

            # the same over JSON-RPC
            server = RpcServer(pool, TOKEN, listen="127.0.0.1:0")
            async with trio.open_nursery() as nursery:
                target = parse_target(await nursery.start(server.run))
                reply = await call(
                    target, TOKEN, "get_messages", {"peer": "https://t.me/mtpoold_news/4"}
                )
                assert list(reply["result"]) == ["4"]
                reply = await call(
                    target,
                    TOKEN,
                    "invoke",
                    {
                        "method": "messages.GetHistory",
                        "args": {"peer": "@mtpoold_news", "limit": 1},
                    },
                )
                assert [m["id"] for m in reply["result"]["messages"]] == [5]
                with pytest.raises(RpcError) as rpc_info:
                    await call(target, TOKEN, "invoke", {"method": "messages.getHistry"})
                assert (rpc_info.value.code, rpc_info.value.error_class) == (
                    -32602,
                    "INVALID_ARGUMENT",
                )
                assert rpc_info.value.message.endswith("; did you mean messages.GetHistory?")
                server.request_shutdown()
