"""Scripted faults of the loopback DC produce what Telethon really raises."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import trio
import trio_asyncio
from telethon import errors, functions

from mtpoold.testing.dc import (
    DC,
    blackhole,
    delay,
    drop,
    open_dc,
    open_telethon_client,
    rpc_error,
)

aio = trio_asyncio.aio_as_trio
ALICE, BOB = "15550000001", "15550000002"
NEAREST = functions.help.GetNearestDcRequest


@pytest.fixture
async def dc() -> AsyncIterator[DC]:
    async with open_dc() as dc, trio_asyncio.open_loop():
        yield dc


@pytest.mark.parametrize(
    ("code", "message", "exc_type"),
    [
        (420, "FLOOD_WAIT_37", errors.FloodWaitError),
        (400, "PEER_FLOOD", errors.PeerFloodError),
        (401, "AUTH_KEY_UNREGISTERED", errors.AuthKeyUnregisteredError),
        (401, "USER_DEACTIVATED_BAN", errors.UserDeactivatedBanError),
        (406, "AUTH_KEY_DUPLICATED", errors.AuthKeyDuplicatedError),
        (500, "INTERNAL_SERVER_ERROR", errors.ServerError),
        (400, "USERNAME_NOT_OCCUPIED", errors.UsernameNotOccupiedError),
    ],
)
async def test_Faults_rpc_error(dc: DC, code: int, message: str, exc_type: type) -> None:
    async with open_telethon_client(dc, ALICE) as client:
        # Telethon retries 500s once on its own (request_retries=1): script enough of them
        dc.faults.add(rpc_error(code, message), method="contacts.ResolveUsername", times=None)
        with pytest.raises(exc_type) as info:
            await aio(client)(functions.contacts.ResolveUsernameRequest("mtpoold_news"))
        assert info.value.code == code
        if code == 420:
            assert info.value.seconds == 37
        dc.faults.clear()
        await aio(client)(functions.contacts.ResolveUsernameRequest("mtpoold_news"))


async def test_Faults_match_user_and_method_in_order(dc: DC) -> None:
    async with open_telethon_client(dc, BOB) as bob, open_telethon_client(dc, ALICE) as alice:
        dc.faults.add(
            rpc_error(420, "FLOOD_WAIT_1"), user=ALICE, method="help.GetNearestDc", times=2
        )
        dc.faults.add(rpc_error(420, "FLOOD_WAIT_2"), user=1001)
        await aio(bob)(NEAREST())  # Bob is not scripted
        waits = []
        for _ in range(3):
            with pytest.raises(errors.FloodWaitError) as info:
                await aio(alice)(NEAREST())
            waits.append(info.value.seconds)
        await aio(alice)(NEAREST())
    assert waits == [1, 1, 2]
    assert dc.counters(ALICE)["help.GetNearestDc"] == 4
    assert dc.counters(BOB)["help.GetNearestDc"] == 1


async def test_Faults_delay(dc: DC) -> None:
    async with open_telethon_client(dc, ALICE) as client:
        dc.faults.add(delay(300), method="help.GetNearestDc")
        start = trio.current_time()
        await aio(client)(NEAREST())
        assert trio.current_time() - start >= 0.3


async def test_Faults_blackhole_never_answers(dc: DC) -> None:
    async with open_telethon_client(dc, ALICE) as client:
        dc.faults.add(blackhole(), method="help.GetNearestDc")
        with trio.move_on_after(0.3) as scope:
            await aio(client)(NEAREST())
        assert scope.cancelled_caught
        # the connection still serves other calls
        assert (await aio(client.get_me)()).id == 1001


async def test_Faults_drop_closes_connection_and_Telethon_resends(dc: DC) -> None:
    async with open_telethon_client(dc, ALICE) as client:
        dc.faults.add(drop(), method="help.GetNearestDc")
        await aio(client)(NEAREST())  # auto-reconnect resends on a new connection
    calls = [c for c in dc.calls if c.method == "help.GetNearestDc"]
    assert len(calls) == 2 and calls[0].connection_id != calls[1].connection_id


async def test_Faults_drop_without_auto_reconnect_raises(dc: DC) -> None:
    async with open_telethon_client(dc, ALICE, auto_reconnect=False) as client:
        dc.faults.add(drop(), method="help.GetNearestDc")
        # what Telethon surfaces when the server hangs up (EOF or reset), no auto-reconnect
        with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
            await aio(client)(NEAREST())


async def test_DC_refuse_connections(dc: DC) -> None:
    dc.refuse_connections(True)
    # A fresh key: the hang-up inside the handshake escapes Telethon (EOF or reset).
    # (With an existing key, Telethon's connect() waits forever on its first request.)
    with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
        async with open_telethon_client(dc):
            pass
    dc.refuse_connections(False)
    async with open_telethon_client(dc, ALICE) as client:
        assert (await aio(client.get_me)()).id == 1001


async def test_DC_blackhole_all(dc: DC) -> None:
    async with open_telethon_client(dc, ALICE) as client:
        dc.blackhole_all(True)
        with trio.move_on_after(0.3) as scope:
            await aio(client)(NEAREST())
        assert scope.cancelled_caught
        with trio.move_on_after(0.3) as scope:
            async with open_telethon_client(dc):  # even the key exchange hangs
                pass
        assert scope.cancelled_caught
        dc.blackhole_all(False)
        await aio(client)(NEAREST())


async def test_Faults_add_validates(dc: DC) -> None:
    with pytest.raises(KeyError):
        dc.faults.add(drop(), user="nobody")
    with pytest.raises(ValueError, match=r"^times must be >= 1 or None: 0$"):
        dc.faults.add(drop(), times=0)
    with pytest.raises(ValueError, match=r"^delay must be >= 0 ms: -1$"):
        delay(-1)
