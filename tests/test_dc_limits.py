"""The loopback DC's model of Telegram's limits: per-method budgets and floods (FLOOD_WAIT_X
for that method only), slow mode (SLOWMODE_WAIT_X per user and chat), the request counter.

The e2e tests run real Telethon against the DC in-process on pytest-trio's ``mock_clock``
(rate 0: time stands still unless a test jumps it), so a window of an hour or a flood of a
day is crossed with ``mock_clock.jump``; sockets still work, as I/O needs no time to pass.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing
import trio_asyncio
from telethon import errors, functions, types

from mtpoold.testing.dc import (
    DC,
    Channel,
    Flood,
    Limit,
    Limits,
    World,
    default_world,
    load_world,
    method_spelling,
    open_dc,
    open_telethon_client,
    rpc_error,
    synthetic_channel_username,
    synthetic_world,
    world_from_dict,
)

aio = trio_asyncio.aio_as_trio
ALICE, BOB = "15550000001", "15550000002"
RESOLVE = "contacts.ResolveUsername"
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "world.toml"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _limits(clock: FakeClock) -> Limits:
    world = default_world()

    def channel(key: object) -> int:
        for c in world.channels:
            if key in (c.id, c.username):
                return c.id
        raise KeyError(key)

    return Limits(resolve_user=lambda u: world.user(u).id, resolve_channel=channel, clock=clock)


# -- the rules, on a fake clock ---------------------------------------------------------------


def test_budget_answers_flood_wait_until_the_window_frees_and_refusals_do_not_count() -> None:
    clock = FakeClock()
    limits = _limits(clock)
    limits.add("contacts.resolveUsername", 2, 60.0)  # the schema's spelling is accepted
    assert limits.admit(1001, RESOLVE) is None
    clock.now += 10
    assert limits.admit(1001, RESOLVE) is None
    clock.now += 5
    assert limits.admit(1001, RESOLVE) == "FLOOD_WAIT_45"  # the first call leaves at +60
    clock.now += 44.5
    assert limits.admit(1001, RESOLVE) == "FLOOD_WAIT_1"  # rounded up, never 0
    clock.now += 0.5  # refused calls did not count: the window frees as first announced
    assert limits.admit(1001, RESOLVE) is None
    assert limits.admit(1001, RESOLVE) == "FLOOD_WAIT_10"  # the second call leaves at +70
    assert limits.refused(1001) == {RESOLVE: 3}


def test_budget_is_per_account_and_per_method() -> None:
    clock = FakeClock()
    limits = _limits(clock)
    limits.add(RESOLVE, 1, 3600.0)
    assert limits.admit(1001, RESOLVE) is None
    assert limits.admit(1001, RESOLVE) == "FLOOD_WAIT_3600"
    assert limits.admit(1001, "channels.GetMessages") is None  # other methods are served
    assert limits.admit(1002, RESOLVE) is None  # other accounts have their own count
    assert limits.admit(None, RESOLVE) is None  # keys not logged in are not limited


def test_budget_for_one_user_and_several_windows_take_the_longest_wait() -> None:
    clock = FakeClock()
    limits = _limits(clock)
    limits.add(RESOLVE, 2, 60.0, user=ALICE)
    limits.add(RESOLVE, 3, 3600.0, user=ALICE)
    for _ in range(2):
        assert limits.admit(1001, RESOLVE) is None
    assert limits.admit(1001, RESOLVE) == "FLOOD_WAIT_60"
    clock.now += 60
    assert limits.admit(1001, RESOLVE) is None
    clock.now += 60  # the minute window is free again, the hour is full
    assert limits.admit(1001, RESOLVE) == "FLOOD_WAIT_3480"
    assert limits.flood_left(ALICE, RESOLVE) == pytest.approx(3480)
    for _ in range(5):
        assert limits.admit(1002, RESOLVE) is None  # bob has no budget


def test_flood_one_account_on_one_method_for_a_day() -> None:
    clock = FakeClock()
    limits = _limits(clock)
    limits.flood(ALICE, "contacts.resolveUsername", 86400)
    assert limits.admit(1001, RESOLVE) == "FLOOD_WAIT_86400"
    clock.now += 3600.2
    assert limits.admit(1001, RESOLVE) == "FLOOD_WAIT_82800"
    assert limits.admit(1001, "channels.GetMessages") is None
    assert limits.admit(1002, RESOLVE) is None
    limits.unflood(ALICE)
    assert limits.admit(1001, RESOLVE) is None
    limits.flood(ALICE, RESOLVE, 5)
    clock.now += 5
    assert limits.admit(1001, RESOLVE) is None  # over on time


def test_slowmode_is_per_user_and_chat() -> None:
    clock = FakeClock()
    limits = _limits(clock)
    limits.set_slowmode("mtpoold_chat", 30)
    send = "messages.SendMessage"
    assert limits.admit_send(1001, 2002, send) is None
    clock.now += 10
    assert limits.admit_send(1001, 2002, send) == "SLOWMODE_WAIT_20"
    assert limits.admit_send(1002, 2002, send) is None  # another user
    assert limits.admit_send(1001, 2001, send) is None  # another chat (no slow mode)
    clock.now += 20  # the refused send did not restart the wait
    assert limits.admit_send(1001, 2002, send) is None
    assert limits.refused(ALICE) == {send: 1}


def test_bad_names_and_numbers_are_refused() -> None:
    limits = _limits(FakeClock())
    with pytest.raises(ValueError, match="not a TL function name"):
        limits.add("contacts.NoSuchThing", 1, 1.0)
    with pytest.raises(ValueError, match="requests"):
        limits.add(RESOLVE, 0, 1.0)
    with pytest.raises(ValueError, match="window_s"):
        limits.add(RESOLVE, 1, 0)
    with pytest.raises(ValueError, match="seconds"):
        limits.flood(ALICE, RESOLVE, -1)
    with pytest.raises(KeyError):
        limits.flood("15559999999", RESOLVE, 1)
    with pytest.raises(ValueError, match="slow mode"):
        limits.set_slowmode(2002, -1)
    assert method_spelling("channels.getMessages") == "channels.GetMessages"


# -- the world file ---------------------------------------------------------------------------


def test_world_file_limits_floods_and_slowmode() -> None:
    world = load_world(EXAMPLE)
    assert [(lim.method, lim.requests, lim.window_s, lim.user) for lim in world.limits] == [
        (RESOLVE, 50, 3600.0, None),
        (RESOLVE, 200, 86400.0, None),
        ("channels.GetFullChannel", 10, 60.0, 5002),
    ]
    assert [(f.user, f.method, f.seconds) for f in world.floods] == [
        ("15551230005", RESOLVE, 86400.0)
    ]
    group = world.by_username("example_group")
    assert isinstance(group, Channel) and group.slowmode_s == 30


def test_world_file_errors_name_the_place() -> None:
    with pytest.raises(ValueError, match=r"not a TL function name.*\$\.limits\[0\]"):
        world_from_dict({"limits": [{"method": "nope.Nope", "requests": 1, "window_s": 1}]})
    with pytest.raises(ValueError, match=r"floods\[0\]: no user 7"):
        world_from_dict({"floods": [{"user": 7, "method": RESOLVE, "seconds": 1}]})
    with pytest.raises(ValueError, match=r"slowmode_s"):
        world_from_dict({"channels": [{"id": 1, "access_hash": 1, "title": "t", "slowmode_s": -1}]})


def test_synthetic_world_is_deterministic() -> None:
    a, b = (
        synthetic_world(users=3, channels=5, messages=4),
        synthetic_world(users=3, channels=5, messages=4),
    )
    assert a == b
    assert len(a.users) == 3 and len(a.channels) == 5
    ch = a.by_username(synthetic_channel_username(4))
    assert isinstance(ch, Channel) and [m.id for m in ch.messages] == [1, 2, 3, 4]
    assert len({u.phone for u in a.users}) == 3


# -- real Telethon against the DC, on the mock clock ------------------------------------------


def _world_with_limits() -> World:
    base = default_world()
    channels = tuple(
        attrs.evolve(c, slowmode_s=30) if c.username == "mtpoold_chat" else c for c in base.channels
    )
    return attrs.evolve(
        base,
        channels=channels,
        limits=(Limit(method="contacts.resolveUsername", requests=2, window_s=3600),),
        floods=(Flood(user=BOB, method="channels.getFullChannel", seconds=86400),),
    )


@pytest.fixture
async def dc(mock_clock: trio.testing.MockClock) -> AsyncIterator[DC]:
    async with open_dc(_world_with_limits()) as dc, trio_asyncio.open_loop():
        yield dc


async def test_telethon_gets_flood_wait_for_that_method_only(
    dc: DC, mock_clock: trio.testing.MockClock
) -> None:
    async with open_telethon_client(dc, ALICE) as client:
        before = dc.counters(ALICE)
        resolve = functions.contacts.ResolveUsernameRequest
        found = await aio(client)(resolve("mtpoold_news"))
        await aio(client)(resolve("mtpoold_chat"))
        with pytest.raises(errors.FloodWaitError) as info:
            await aio(client)(resolve("mtpoold_news"))
        assert info.value.seconds == 3600
        # the account is still served on other methods
        channel = types.InputChannel(found.chats[0].id, found.chats[0].access_hash)
        got = await aio(client)(
            functions.channels.GetMessagesRequest(channel, [types.InputMessageID(1)])
        )
        assert got.messages[0].id == 1
        # every request reached the counter, the refused one too
        spent = dc.counters(ALICE) - before
        assert spent[RESOLVE] == 3 and spent["channels.GetMessages"] == 1
        assert dc.total_counters()[RESOLVE] == dc.counters(ALICE)[RESOLVE]
        assert dc.limits.refused(ALICE) == {RESOLVE: 1}
        mock_clock.jump(3600)
        await aio(client)(resolve("mtpoold_news"))  # the window freed


async def test_flood_from_world_and_from_python(dc: DC, mock_clock: trio.testing.MockClock) -> None:
    async with open_telethon_client(dc, BOB) as client:
        found = await aio(client)(functions.contacts.ResolveUsernameRequest("mtpoold_news"))
        channel = types.InputChannel(found.chats[0].id, found.chats[0].access_hash)
        with pytest.raises(errors.FloodWaitError) as info:
            await aio(client)(functions.channels.GetFullChannelRequest(channel))
        assert info.value.seconds == 86400  # from the world file's [[floods]]
        dc.limits.flood(BOB, RESOLVE, 24 * 3600)
        with pytest.raises(errors.FloodWaitError) as info:
            await aio(client)(functions.contacts.ResolveUsernameRequest("mtpoold_chat"))
        assert info.value.seconds == 86400
        mock_clock.jump(86400)
        await aio(client)(functions.channels.GetFullChannelRequest(channel))
        await aio(client)(functions.contacts.ResolveUsernameRequest("mtpoold_chat"))


async def test_scripted_faults_come_before_limits(dc: DC) -> None:
    async with open_telethon_client(dc, ALICE) as client:
        dc.faults.add(rpc_error(400, "USERNAME_INVALID"), user=ALICE, method=RESOLVE, times=3)
        for _ in range(3):
            with pytest.raises(errors.UsernameInvalidError):
                await aio(client)(functions.contacts.ResolveUsernameRequest("mtpoold_news"))
        for _ in range(2):  # the budget of 2 is untouched by the faulted calls
            await aio(client)(functions.contacts.ResolveUsernameRequest("mtpoold_news"))


async def test_slowmode_wait_per_user_and_chat(dc: DC, mock_clock: trio.testing.MockClock) -> None:
    async with (
        open_telethon_client(dc, ALICE) as alice,
        open_telethon_client(dc, BOB) as bob,
    ):
        chat = await aio(alice.get_input_entity)("mtpoold_chat")
        news = await aio(alice.get_input_entity)("mtpoold_news")
        bob_chat = await aio(bob.get_input_entity)("mtpoold_chat")

        def send(peer: object, text: str) -> functions.messages.SendMessageRequest:
            return functions.messages.SendMessageRequest(peer, text)

        first = await aio(alice)(send(chat, "one"))
        assert isinstance(first, types.Updates)
        with pytest.raises(errors.SlowModeWaitError) as info:
            await aio(alice)(send(chat, "two"))
        assert info.value.seconds == 30
        await aio(bob)(send(bob_chat, "bob's"))  # another user in the same chat
        with pytest.raises(errors.ChatWriteForbiddenError):
            await aio(alice)(send(news, "not an admin"))  # a broadcast channel
        mock_clock.jump(29.5)
        with pytest.raises(errors.SlowModeWaitError) as info:
            await aio(alice)(send(chat, "three"))
        assert info.value.seconds == 1
        mock_clock.jump(0.5)
        second = await aio(alice)(send(chat, "four"))
        ids = [u.id for u in second.updates if isinstance(u, types.UpdateMessageID)]
        assert ids == [first.updates[0].id + 2]  # bob's message took one id
        dc.limits.set_slowmode("mtpoold_chat", 0)
        await aio(alice)(send(chat, "five"))  # slow mode off
        assert dc.limits.refused(ALICE) == {"messages.SendMessage": 2}
