"""The loopback DC's connection log: each connection's open/close interval and the auth keys
used on it, and ``dc.auth_key_overlaps()``, any two connections that used one key at once."""

from __future__ import annotations

import trio
import trio_asyncio
from telethon import functions

from mtpoold.testing import open_relay
from mtpoold.testing.dc import ConnectionRecord, open_dc, open_telethon_client

from _e2e import wait_until

aio = trio_asyncio.aio_as_trio
ALICE, BOB = "15550000001", "15550000002"


async def _until_closed(*records: ConnectionRecord) -> None:
    await wait_until(lambda: all(r.closed_at is not None for r in records), what="the close")


async def test_two_connections_on_one_auth_key_at_once_are_an_overlap() -> None:
    async with open_dc() as dc, trio_asyncio.open_loop():
        (alice_key,) = dc.auth_key_ids(ALICE)
        async with open_telethon_client(dc, ALICE) as first:
            await aio(first)(functions.help.GetNearestDcRequest())
            async with open_telethon_client(dc, ALICE) as second, open_telethon_client(dc, BOB):
                await aio(second)(functions.help.GetNearestDcRequest())
        records = dc.connections_of(ALICE)
        await _until_closed(*records)
        (overlap,) = dc.auth_key_overlaps()
        assert overlap.auth_key_id == alice_key
        assert (overlap.first.id, overlap.second.id) == (records[0].id, records[1].id)
        assert overlap.first.opened_at <= overlap.second.opened_at
        assert 0 < overlap.seconds <= overlap.second.closed_at - overlap.second.opened_at  # type: ignore[operator]
        assert overlap.first.auth_key_ids == [alice_key]


async def test_one_key_used_in_turn_and_connections_without_it_are_no_overlap() -> None:
    async with open_dc() as dc, trio_asyncio.open_loop():
        for _ in range(2):
            async with open_telethon_client(dc, ALICE) as client:
                await aio(client)(functions.help.GetNearestDcRequest())
            await _until_closed(*dc.connections_of(ALICE))
        async with open_telethon_client(dc, ALICE) as client:
            idle = await trio.open_tcp_stream(dc.host, dc.port)  # opened, no key used on it
            async with open_telethon_client(dc) as fresh:  # a key exchange: another key
                await aio(fresh)(functions.help.GetNearestDcRequest())
            await idle.aclose()
        await _until_closed(*dc.connection_log)
        assert dc.auth_key_overlaps() == []
        assert len(dc.connections_of(ALICE)) == 3
        assert [r.auth_key_ids for r in dc.connection_log if not r.user_ids][0] == []
        assert all(r.closed_by == "client" for r in dc.connection_log)


async def test_an_open_connection_counts_to_now_and_a_relay_names_its_peer() -> None:
    async with open_dc() as dc, trio_asyncio.open_loop():
        async with open_relay(target=(dc.host, dc.port), protocol="socks5") as relay:
            proxy = {"proxy_type": "socks5", "addr": relay.host, "port": relay.port}
            async with (
                open_telethon_client(dc, ALICE, proxy=proxy, auto_reconnect=False) as a,
                open_telethon_client(dc, ALICE, auto_reconnect=False) as b,
            ):
                await aio(a)(functions.help.GetNearestDcRequest())
                await aio(b)(functions.help.GetNearestDcRequest())
                (overlap,) = dc.auth_key_overlaps()
                assert overlap.second.closed_at is None and overlap.seconds > 0
                (through_relay,) = relay.connections
                peers = {r.peer for r in dc.connections_of(ALICE)}
                assert through_relay.upstream_local in peers
                dc.disconnect_all()
                await _until_closed(*dc.connections_of(ALICE))
        assert {r.closed_by for r in dc.connections_of(ALICE)} == {"dc"}


async def test_relay_counts_every_connections_start_even_when_bursts_merge() -> None:
    async with (
        open_dc() as dc,
        open_relay(target=(dc.host, dc.port), protocol="tcp") as relay,
    ):
        first = await trio.open_tcp_stream(relay.host, relay.port)
        second = await trio.open_tcp_stream(relay.host, relay.port)
        await first.send_all(b"\xee\xee\xee\xee")  # intermediate transport tags, nothing more
        await second.send_all(b"\xee\xee\xee\xee")
        await wait_until(
            lambda: len(relay.connections) == 2 and all(c.bursts for c in relay.connections)
        )
        assert len(relay.bursts) == 1  # both within burst_gap_s: one burst of the relay
        starts = relay.connection_starts()
        assert len(starts) == 2 and starts == sorted(starts)
        assert all(c.upstream_local is not None for c in relay.connections)
        await first.aclose()
        await second.aclose()
