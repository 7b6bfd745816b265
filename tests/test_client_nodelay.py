"""Nagle is off on every account connection, through a proxy too (python-socks opens its
socket with protocol 0, so asyncio would not set TCP_NODELAY; see _wire._set_nodelay)."""

from __future__ import annotations

import socket
from pathlib import Path

import trio_asyncio

from mtpoold._client import telethon_client_factory
from mtpoold.testing import open_dc, open_proxy

from _e2e import fleet_config, proxy_entry


async def test_TelethonClient_sets_tcp_nodelay_through_a_socks5_proxy_and_direct(
    tmp_path: Path,
) -> None:
    async with open_dc() as dc, open_proxy("socks5") as proxy, trio_asyncio.open_loop():
        config = fleet_config(
            tmp_path,
            dc,
            proxies=[proxy_entry("s1", proxy)],
            accounts={"via-proxy": ("15550000001", "s1"), "direct": ("15550000002", None)},
        )
        factory = telethon_client_factory(config)
        for account in config.accounts:
            client = factory(account)
            await client.connect()
            try:
                writer = client._tg._sender._connection._writer  # type: ignore[union-attr]
                sock = writer.get_extra_info("socket")
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1, account.id
                assert (await client.call("help.GetNearestDc", {}))["_"] == "NearestDc"
            finally:
                await client.disconnect()
