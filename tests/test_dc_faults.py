"""Scripted faults of the loopback DC produce what Telethon really raises."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
import trio
import trio_asyncio
from telethon import errors, functions

from mtpoold.testing.dc import (
    DC,
    UNPARSEABLE_CONSTRUCTOR_ID,
    blackhole,
    corrupt_reply,
    delay,
    drop,
    open_dc,
    open_telethon_client,
    rpc_error,
    salt_storm,
    unparseable_reply,
    wrong_session,
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
        (420, "FROZEN_METHOD_INVALID", errors.FrozenMethodInvalidError),
        (303, "PHONE_MIGRATE_4", errors.PhoneMigrateError),
        (303, "NETWORK_MIGRATE_3", errors.NetworkMigrateError),
        (303, "FILE_MIGRATE_5", errors.FileMigrateError),
        (303, "STATS_MIGRATE_1", errors.StatsMigrateError),
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
        if message.startswith("FLOOD_WAIT"):
            assert info.value.seconds == 37
        if code == 420:
            assert isinstance(info.value, errors.FloodError)
        if code == 303:
            assert isinstance(info.value, errors.InvalidDCError)
            # Telethon names the field new_dc, except STATS_MIGRATE's dc
            new_dc = getattr(info.value, "new_dc", getattr(info.value, "dc", None))
            assert new_dc == int(message.rsplit("_", 1)[1])
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


async def test_Faults_user_migrate_makes_Telethon_switch_dc_on_its_own(dc: DC) -> None:
    # USER_MIGRATE_X is not raised to the caller: Telethon looks DC 3 up in help.getConfig
    # (the loopback DC only lists itself) to reconnect there, and fails with a ValueError.
    async with open_telethon_client(dc, ALICE) as client:
        dc.faults.add(rpc_error(303, "USER_MIGRATE_3"), method="contacts.ResolveUsername")
        with pytest.raises(ValueError, match=r"^Failed to get DC 3"):
            await aio(client)(functions.contacts.ResolveUsernameRequest("mtpoold_news"))


async def test_Faults_salt_storm_resends_until_the_rule_runs_out(dc: DC) -> None:
    async with open_telethon_client(dc, ALICE) as client:
        await aio(client)(NEAREST())
        since = trio.current_time()
        dc.faults.add(salt_storm(), method="help.GetNearestDc", times=5)
        assert (await aio(client)(NEAREST())).this_dc == 2
    assert dc.counters(ALICE)["help.GetNearestDc"] == 1 + 6  # 5 storms + the answered resend
    wire = dc.wire_messages(ALICE, since=since)
    nearest = [m for m in wire.messages if m.method == "help.GetNearestDc"]
    assert len(nearest) == 6 and wire.count >= 6 and wire.times == sorted(wire.times)


async def test_Faults_salt_storm_forever_floods_the_wire_until_cleared(dc: DC) -> None:
    async with open_telethon_client(dc, ALICE) as client:
        await aio(client)(NEAREST())
        since = trio.current_time()
        dc.faults.add(salt_storm(), method="help.GetNearestDc", times=None)
        async with trio.open_nursery() as nursery:
            done = trio.Event()

            async def call() -> None:
                await aio(client)(NEAREST())
                done.set()

            nursery.start_soon(call)
            while dc.wire_messages(ALICE, since=since).count < 100:  # noqa: ASYNC110 - the DC's wire log has no event
                await trio.sleep(0.01)
            assert not done.is_set()
            dc.faults.clear()  # the next resend is answered
            with trio.fail_after(5):
                await done.wait()


async def test_Faults_corrupt_reply_is_dropped_by_Telethon(
    dc: DC, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_telethon_client(dc, ALICE) as client:
        dc.faults.add(corrupt_reply(), method="help.GetNearestDc")
        with trio.move_on_after(0.5) as scope:
            await aio(client)(NEAREST())
        assert scope.cancelled_caught  # the call hangs: Telethon never resends it
        assert "Security error while unpacking a received message" in caplog.text
        assert (await aio(client.get_me)()).id == 1001  # the connection lives on
    assert dc.counters(ALICE)["help.GetNearestDc"] == 1


async def test_Faults_wrong_session_is_dropped_by_Telethon(
    dc: DC, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_telethon_client(dc, ALICE) as client:
        dc.faults.add(wrong_session(), method="help.GetNearestDc")
        with trio.move_on_after(0.5) as scope:
            await aio(client)(NEAREST())
        assert scope.cancelled_caught
        records = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("wrong session ID" in text for text in records), records
        assert (await aio(client.get_me)()).id == 1001


async def test_Faults_unparseable_reply_raises_TypeNotFoundError(dc: DC) -> None:
    alice = dc.world.user(ALICE)
    async with open_telethon_client(dc, ALICE) as client:
        dc.faults.add(unparseable_reply(), method="help.GetNearestDc")
        with pytest.raises(errors.TypeNotFoundError) as info:
            await aio(client)(NEAREST())
        assert info.value.invalid_constructor_id == UNPARSEABLE_CONSTRUCTOR_ID
        # the personal-looking bytes ride in the error: mtpoold must never pass them on
        assert alice.phone is not None and alice.phone.encode() in info.value.remaining
        assert alice.first_name.encode() in info.value.remaining
        assert alice.phone in str(info.value)
        assert (await aio(client)(NEAREST())).this_dc == 2


async def test_DC_wire_messages_count_every_message(dc: DC) -> None:
    async with open_telethon_client(dc) as fresh:  # a key exchange: plain messages
        await aio(fresh)(functions.help.GetConfigRequest())
    plain = [m for m in dc.wire_log if m.auth_key_id is None]
    assert [m.name for m in plain] == [
        "ReqPqMultiRequest",
        "ReqDHParamsRequest",
        "SetClientDHParamsRequest",
    ]
    async with open_telethon_client(dc, ALICE) as client:
        await aio(client)(NEAREST())
        await aio(client)(functions.PingRequest(ping_id=1))
        await aio(client)([NEAREST() for _ in range(3)])  # one container
    alice = dc.wire_messages(ALICE)
    names = [m.name for m in alice.messages]
    methods = [m.method for m in alice.messages]
    assert methods.count("help.GetNearestDc") == 4 and "Ping" in methods
    assert "MsgsAck" in names  # Telethon's acks ride along in containers
    assert "InvokeWithLayerRequest" in names  # the connection's first call
    assert "InvokeWithoutUpdatesRequest" in names  # receive_updates=False wraps the others
    assert all(m.method is None for m in alice.messages if m.name == "MsgsAck")
    by_conn = {m.connection_id for m in alice.messages}
    assert len(by_conn) == 1
    (conn_id,) = by_conn
    assert dc.wire_messages(connection_id=conn_id).count == alice.count
    key_id = alice.messages[0].auth_key_id
    assert key_id is not None and dc.wire_messages(auth_key_id=key_id).count == alice.count
    assert dc.wire_messages().count == len(dc.wire_log) > alice.count


async def test_DC_wire_messages_count_what_blackhole_all_swallows(dc: DC) -> None:
    async with open_telethon_client(dc, ALICE) as client:
        await aio(client)(NEAREST())
        before = dc.wire_messages(ALICE).count
        dc.blackhole_all(True)
        with trio.move_on_after(0.3):
            await aio(client)(NEAREST())
        assert dc.wire_messages(ALICE).count > before
        dc.blackhole_all(False)
