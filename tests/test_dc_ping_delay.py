"""The loopback DC closes a connection ``disconnect_delay`` s after its last
``ping_delay_disconnect``, as Telegram's servers do (core.telegram.org/mtproto/service_messages,
"Deferred connection closure + PING"), on trio's clock (MockClock here, jumped by hand)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing
import trio_asyncio
from telethon import TelegramClient, functions

from mtpoold.testing.dc import DC, ConnectionRecord, open_dc, open_telethon_client

aio = trio_asyncio.aio_as_trio
ALICE = "15550000001"


@pytest.fixture
async def dc(mock_clock: trio.testing.MockClock) -> AsyncIterator[DC]:
    async with open_dc() as dc, trio_asyncio.open_loop():
        yield dc


async def _bare(client: TelegramClient, request: Any) -> Any:
    """Send ``request`` as a top-level message (not wrapped in ``invokeWithoutUpdates``)."""
    return await client._sender.send(request)


async def _ping(client: TelegramClient, delay_s: int, *, wrapped: bool) -> None:
    request = functions.PingDelayDisconnectRequest(ping_id=7, disconnect_delay=delay_s)
    if wrapped:  # receive_updates=False: Telethon wraps it, as mtpoold's keepalive is sent
        pong = await aio(client)(request)
    else:
        pong = await aio(_bare)(client, request)
    assert pong.ping_id == 7


def _only_record(dc: DC) -> ConnectionRecord:
    (record,) = dc.connections_of(ALICE)
    return record


async def _settle() -> None:
    """Let the DC act on a jump of the clock (its timers are trio deadlines)."""
    await trio.testing.wait_all_tasks_blocked()


async def _until_closed(record: ConnectionRecord) -> None:
    """Wait (real time, up to 5 s: the client's hang-up travels through the kernel) until the
    DC has closed ``record``'s connection."""
    for _ in range(500):
        await _settle()
        if record.closed_at is not None:
            return
        await trio.to_thread.run_sync(time.sleep, 0.01)
    raise AssertionError(f"connection {record.id} still open")


@pytest.mark.parametrize("wrapped", [True, False], ids=["invokeWithoutUpdates", "bare"])
async def test_DC_closes_the_connection_disconnect_delay_after_the_last_ping(
    dc: DC, mock_clock: trio.testing.MockClock, wrapped: bool
) -> None:
    async with open_telethon_client(dc, ALICE, auto_reconnect=False) as client:
        await _ping(client, 10, wrapped=wrapped)
        mock_clock.jump(9)
        await aio(client)(functions.help.GetNearestDcRequest())  # a call is no ping: no reset
        await _settle()
        assert _only_record(dc).closed_at is None
        mock_clock.jump(1.5)
        await _settle()
        record = _only_record(dc)
        assert record.closed_by == "ping_delay_disconnect"
        assert record.closed_at is not None and record.closed_at - record.opened_at >= 10
        assert dc.statistics().connections == 0


async def test_a_newer_ping_resets_the_timer_and_a_zero_delay_disarms_it(
    dc: DC, mock_clock: trio.testing.MockClock
) -> None:
    async with open_telethon_client(dc, ALICE, auto_reconnect=False) as client:
        await _ping(client, 10, wrapped=True)
        mock_clock.jump(8)
        await _ping(client, 10, wrapped=True)
        mock_clock.jump(8)  # 16 s after the first ping, 8 s after the second
        await _settle()
        assert _only_record(dc).closed_at is None
        await _ping(client, 0, wrapped=True)
        mock_clock.jump(3600)
        await _settle()
        assert _only_record(dc).closed_at is None
        await _ping(client, 5, wrapped=False)
        mock_clock.jump(5.5)
        await _settle()
        assert _only_record(dc).closed_by == "ping_delay_disconnect"


async def test_without_ping_delay_disconnect_a_connection_stays_open(
    dc: DC, mock_clock: trio.testing.MockClock
) -> None:
    async with open_telethon_client(dc, ALICE, auto_reconnect=False) as client:
        await aio(client)(functions.PingRequest(ping_id=1))  # a plain ping arms nothing
        mock_clock.jump(3600)
        await _settle()
        assert _only_record(dc).closed_at is None
    await _until_closed(_only_record(dc))
    assert _only_record(dc).closed_by == "client"
