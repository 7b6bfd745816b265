"""MTProto plumbing of the loopback DC: transports, bad input, service messages, CLI, world."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
import trio
import trio_asyncio
from telethon import functions

import mtpoold.testing
import mtpoold.testing.dc
from mtpoold.testing.dc import DC, World, default_world, load_world, open_dc, open_telethon_client
from mtpoold.testing.dc.__main__ import main
from mtpoold.testing.dc._world import world_from_dict

aio = trio_asyncio.aio_as_trio
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "world.toml"


@pytest.mark.parametrize("transport", ["full", "intermediate", "abridged"])
async def test_DC_key_exchange_on_every_transport(transport: str) -> None:
    async with open_dc() as dc, trio_asyncio.open_loop():
        async with open_telethon_client(dc, transport=transport) as client:
            config = await aio(client)(functions.help.GetConfigRequest())
            pong = await aio(client)(functions.PingRequest(ping_id=77))
            assert config.this_dc == 2 and pong.ping_id == 77
            key = client.session.auth_key.key
        assert dc.is_authorized(key) is None  # a fresh key is known but not logged in
        assert dc.statistics().auth_keys == len(dc.world.users) + 1


async def test_DC_large_results_are_gzipped_and_containers_work() -> None:
    async with open_dc() as dc, trio_asyncio.open_loop():
        async with open_telethon_client(dc, "15550000001") as client:
            # several requests at once: Telethon packs them in one msg_container
            results = await aio(client)([functions.help.GetNearestDcRequest() for _ in range(5)])
            history = await aio(client.get_messages)("mtpoold_news", limit=5)
        assert len(results) == 5 and len(history) == 5


async def _raw_connection(dc: DC) -> trio.SocketStream:
    return await trio.open_tcp_stream(dc.host, dc.port)


async def test_DC_garbage_closes_only_that_connection() -> None:
    async with open_dc() as dc, trio_asyncio.open_loop():
        async with open_telethon_client(dc, "15550000001") as client:
            bad = await _raw_connection(dc)
            await bad.send_all(b"\xee\xee\xee\xee" + struct.pack("<i", 64) + os.urandom(64))
            with trio.fail_after(5):
                data = await bad.receive_some(100)
                while data:  # -404 (unknown key) then EOF
                    data = await bad.receive_some(100)
            await bad.aclose()
            huge = await _raw_connection(dc)
            await huge.send_all(struct.pack("<ii", 1 << 30, 0))  # full transport, absurd length
            with trio.fail_after(5):
                assert await huge.receive_some(100) == b""
            await huge.aclose()
            assert (await aio(client.get_me)()).id == 1001


async def test_DC_unknown_auth_key_gets_minus_404() -> None:
    async with open_dc() as dc:
        stream = await _raw_connection(dc)
        await stream.send_all(b"\xee\xee\xee\xee" + struct.pack("<i", 72) + os.urandom(72))
        with trio.fail_after(5):
            reply = await stream.receive_some(100)
        assert reply == struct.pack("<ii", 4, -404)
        await stream.aclose()


async def test_DC_disconnect_all_and_reconnect() -> None:
    async with open_dc() as dc, trio_asyncio.open_loop():
        async with open_telethon_client(dc, "15550000001") as client:
            before = dc.statistics().connections_total
            dc.disconnect_all()
            # Telethon reconnects by itself and the call goes through
            await aio(client)(functions.help.GetNearestDcRequest())
            assert dc.statistics().connections_total > before


def test_World_example_file_loads() -> None:
    world = load_world(EXAMPLE)
    assert world.user("15551230003").password == "correct horse"
    assert world.by_username("EXAMPLE_NEWS").id == 6001  # type: ignore[union-attr]
    assert world.channel_by_invite("ExampleInvite").private  # type: ignore[union-attr]
    assert world.message(6001, 1).reactions == {"👍": 40, "❤": 7}  # type: ignore[union-attr]


def test_World_errors_keep_validator_messages() -> None:
    with pytest.raises(ValueError) as info:
        world_from_dict({"users": [{"id": 0, "access_hash": 1}], "bogus": 1})
    assert str(info.value).splitlines() == [
        "invalid world:",
        "invalid value ('id' must be > 0: 0) @ $.users[0]",
        "extra fields found (bogus) @ $",
    ]
    with pytest.raises(ValueError, match=r"duplicate username: 'dup_name'"):
        World(
            users=(
                mtpoold.testing.dc.User(id=1, access_hash=1, username="dup_name"),
                mtpoold.testing.dc.User(id=2, access_hash=2, username="Dup_Name"),
            )
        )


def test_default_world_has_the_promised_fixtures() -> None:
    world = default_world()
    assert any(u.bot for u in world.users) and any(u.deactivated for u in world.users)
    assert any(u.password for u in world.users)
    assert {c.megagroup for c in world.channels} == {True, False}
    assert any(c.private and c.username is None for c in world.channels)


def test_exports() -> None:
    for name in ("open_dc", "DC", "default_world", "load_world", "open_proxy", "Proxy"):
        assert getattr(mtpoold.testing, name) is not None
    for name in (
        "rpc_error",
        "delay",
        "drop",
        "blackhole",
        "CallRecord",
        "Faults",
        "World",
        "open_telethon_client",
        "LOGIN_CODE",
    ):
        assert name in dir(mtpoold.testing.dc)


def test_main_rejects_bad_world(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "w.toml"
    bad.write_text("[[users]]\nid = -1\naccess_hash = 1\n")
    assert main(["--world", str(bad)]) == 2
    assert "'id' must be > 0: -1" in capsys.readouterr().err
