"""Real pproxy SOCKS5 / HTTP CONNECT proxies carry a Telethon client to the loopback DC."""

from __future__ import annotations

from typing import Literal

import pytest
import python_socks
import trio
import trio_asyncio
from telethon import functions

from mtpoold.testing import open_proxy
from mtpoold.testing.dc import open_dc, open_telethon_client

aio = trio_asyncio.aio_as_trio


@pytest.mark.parametrize(
    ("kind", "username", "password"),
    [("socks5", None, None), ("socks5", "user", "secret"), ("http", None, None)],
)
async def test_Proxy_client_reaches_dc(
    kind: Literal["socks5", "http"], username: str | None, password: str | None
) -> None:
    async with open_dc() as dc, trio_asyncio.open_loop():
        async with open_proxy(kind, username=username, password=password) as proxy:
            async with open_telethon_client(dc, "15550000001", proxy=proxy.telethon_proxy) as c:
                assert (await aio(c.get_me)()).id == 1001
            assert proxy.running and proxy.starts == 1
        assert not proxy.running


async def test_Proxy_socks5_wrong_password_is_refused() -> None:
    async with open_dc() as dc, trio_asyncio.open_loop():
        async with open_proxy("socks5", username="user", password="secret") as proxy:
            bad = dict(proxy.telethon_proxy, password="wrong")
            # python-socks' own ProxyError, or Telethon's ConnectionError rebinding of it,
            # depending on which of the two modules was imported first in this process
            with pytest.raises((ConnectionError, python_socks.ProxyError)):
                async with open_telethon_client(dc, proxy=bad):
                    pass
        assert dc.statistics().connections_total == 0


async def test_Proxy_kill_breaks_connection_and_restart_restores_it() -> None:
    async with open_dc() as dc, trio_asyncio.open_loop():
        async with open_proxy("socks5") as proxy:
            port = proxy.port
            async with open_telethon_client(dc, "15550000001", proxy=proxy.telethon_proxy) as c:
                await proxy.kill()
                assert not proxy.running

                async def disconnected() -> None:
                    with pytest.raises(ConnectionError):  # the future carries the cause
                        await c.disconnected

                with trio.fail_after(10):
                    await aio(disconnected)()  # Telethon's reconnect fails: it gives up
                assert not c.is_connected()
                await proxy.restart()
                assert proxy.running and proxy.port == port and proxy.starts == 2
                await aio(c.connect)()
                assert (await aio(c)(functions.help.GetNearestDcRequest())).this_dc == 2


async def test_open_proxy_validates_arguments() -> None:
    with pytest.raises(ValueError, match=r"^give both username and password, or neither$"):
        async with open_proxy("socks5", username="u"):
            pass
    with pytest.raises(ValueError, match=r"^unknown proxy kind 'ftp'$"):
        async with open_proxy("ftp"):  # type: ignore[arg-type]
            pass
