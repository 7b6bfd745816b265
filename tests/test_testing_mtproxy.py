"""The loopback MTProxy carries real Telethon MTProxy connections, and refuses as MTProxy does."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import os
from collections.abc import AsyncIterator

import pytest
import trio
import trio_asyncio
from telethon import functions
from telethon.crypto import AESModeCTR
from trio.testing import MockClock

from mtpoold.testing import MTProxy, MTProxyMode, open_mtproxy
from mtpoold.testing.dc import DC, open_dc, open_telethon_client

aio = trio_asyncio.aio_as_trio
ALICE = "15550000001"

#: Telethon transport (open_telethon_client name), secret kind -> modes it gets through.
#: Telethon 1.45 strips a "dd" prefix from the secret (``TcpMTProxy.normalize_secret``), so
#: its dd check in ``MTProxyIO.init_header`` never fires: the codec alone picks the transport.
OUTCOMES: dict[tuple[str, str], set[str]] = {
    ("mtproxy_abridged", "plain"): {"classic", "any"},
    ("mtproxy_abridged", "dd"): {"classic", "any"},
    ("mtproxy_intermediate", "plain"): {"classic", "any"},
    ("mtproxy_intermediate", "dd"): {"classic", "any"},
    ("mtproxy_randomized", "plain"): {"secure", "any"},
    ("mtproxy_randomized", "dd"): {"secure", "any"},
}
CASES = [
    (transport, secret, mode, mode in modes)
    for (transport, secret), modes in OUTCOMES.items()
    for mode in ("classic", "secure", "any")
]


#: Telethon (1.45) leaks the connection of a failed MTProxy connect: ``TcpMTProxy._connect``
#: calls ``disconnect()`` when the proxy hangs up, which does nothing before ``connect()`` has
#: finished (and a dd secret with the wrong codec raises after the TCP connect), so each
#: attempt's asyncio ``StreamWriter`` is dropped unclosed. Tests of failing connects expect
#: those ResourceWarnings (and the fixture collects the rest before the test ends).
TELETHON_LEAKS = pytest.mark.filterwarnings(
    r"ignore:unclosed <StreamWriter:ResourceWarning",
    r"ignore:unclosed transport <_SelectorSocketTransport:ResourceWarning",
    r"ignore:unclosed <socket\.socket:ResourceWarning",
    r"ignore:loop is closed:ResourceWarning",
)


class _FormatNow(logging.Filter):
    """Format log records at once, so captured records hold no exception (and so no frames)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = record.getMessage(), None
        return True


@pytest.fixture
def clock(autojump_clock: MockClock) -> MockClock:
    """Telethon waits 2 s after the MTProxy header for the proxy to hang up: on the autojump
    clock that costs nothing (every socket is a loopback one of this Trio run). A test must ask
    for it itself (pytest-trio only takes a clock from the test's own arguments)."""
    return autojump_clock


@pytest.fixture
async def dc() -> AsyncIterator[DC]:
    # Telethon logs each failed connect attempt with the exception as an argument: captured
    # by pytest, that record would keep the leaked connection alive past the test.
    sender_log = logging.getLogger("telethon.network.mtprotosender")
    format_now = _FormatNow()
    sender_log.addFilter(format_now)
    try:
        async with open_dc() as dc, trio_asyncio.open_loop():
            yield dc
    finally:
        sender_log.removeFilter(format_now)
    gc.collect()  # within the test, where TELETHON_LEAKS applies


def plain_secret() -> bytes:
    """A random secret Telethon takes as a plain one: it strips a leading ``dd``/``ee`` from the
    hex it is handed (then wants 16 bytes), so a random secret starting with byte 0xdd or 0xee
    (2 in 256) cannot be handed to it plain."""
    while (secret := os.urandom(16))[0] in (0xDD, 0xEE):
        pass
    return secret


def proxy_arg(proxy: MTProxy, secret: str) -> tuple[str, int, str]:
    return proxy.telethon_proxy_dd if secret == "dd" else proxy.telethon_proxy


@TELETHON_LEAKS
@pytest.mark.parametrize(("transport", "secret", "mode", "ok"), CASES)
async def test_MTProxy_telethon_transports_by_mode(
    dc: DC, clock: MockClock, transport: str, secret: str, mode: MTProxyMode, ok: bool
) -> None:
    async with open_mtproxy({2: (dc.host, dc.port)}, mode=mode, secret=plain_secret()) as proxy:
        proxy_tuple = proxy_arg(proxy, secret)
        if ok:
            async with open_telethon_client(
                dc, ALICE, transport=transport, proxy=proxy_tuple
            ) as client:
                config = await aio(client)(functions.help.GetConfigRequest())
                assert config.this_dc == 2
            (conn,) = proxy.connections
            assert conn.transport == transport.removeprefix("mtproxy_").replace(
                "randomized", "padded"
            )
            assert conn.dc_id == 2 and conn.upstream == (dc.host, dc.port)
            assert proxy.bytes_up > 0 and proxy.bytes_down > 0 and proxy.bursts
            assert dc.counters(ALICE)["help.GetConfig"] >= 1
        else:
            with pytest.raises(ConnectionError):
                async with open_telethon_client(dc, ALICE, transport=transport, proxy=proxy_tuple):
                    pass
            assert proxy.connections[0].closed_by == "error"
            assert proxy.connections[0].error == (
                f"{proxy.connections[0].transport} transport refused in {mode} mode"
            )
            assert dc.statistics().connections_total == 0


@TELETHON_LEAKS
async def test_MTProxy_wrong_secret_is_closed(dc: DC, clock: MockClock) -> None:
    async with open_mtproxy({2: (dc.host, dc.port)}, secret=b"k" * 16) as proxy:
        wrong = (proxy.host, proxy.port, (b"x" * 16).hex())
        with pytest.raises(ConnectionError):
            async with open_telethon_client(
                dc, ALICE, transport="mtproxy_intermediate", proxy=wrong
            ):
                pass
        assert proxy.connections[0].error == "unknown protocol tag"
        assert dc.statistics().connections_total == 0


@TELETHON_LEAKS
async def test_MTProxy_unknown_dc_is_closed(dc: DC, clock: MockClock) -> None:
    async with open_mtproxy({4: (dc.host, dc.port)}, secret=plain_secret()) as proxy:
        with pytest.raises(ConnectionError):
            async with open_telethon_client(
                dc, ALICE, transport="mtproxy_intermediate", proxy=proxy.telethon_proxy
            ):
                pass
        assert proxy.connections[0].error == "unknown DC" and proxy.connections[0].dc_id == 2


async def test_MTProxy_fresh_key_exchange_and_calls(dc: DC, clock: MockClock) -> None:
    async with open_mtproxy({2: (dc.host, dc.port)}, mode="secure") as proxy:
        async with open_telethon_client(
            dc, transport="mtproxy_randomized", proxy=proxy.telethon_proxy_dd
        ) as client:
            config = await aio(client)(functions.help.GetConfigRequest())  # a gzipped result
            pong = await aio(client)(functions.PingRequest(ping_id=5))
        assert config.this_dc == 2 and pong.ping_id == 5


@TELETHON_LEAKS
async def test_MTProxy_fault_modes(dc: DC, clock: MockClock) -> None:
    async with open_mtproxy({2: (dc.host, dc.port)}) as proxy:
        proxy.refuse()
        with pytest.raises(OSError):
            async with open_telethon_client(
                dc, ALICE, transport="mtproxy_intermediate", proxy=proxy.telethon_proxy
            ):
                pass
        proxy.blackhole_after_handshake()
        with trio.move_on_after(10) as scope:
            async with open_telethon_client(
                dc, ALICE, transport="mtproxy_intermediate", proxy=proxy.telethon_proxy
            ):
                pass
        assert scope.cancelled_caught
        assert proxy.connections[-1].handshake_done and proxy.connections[-1].bytes_up == 0
        proxy.close_after(64)
        with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
            async with open_telethon_client(
                dc,
                ALICE,
                transport="mtproxy_intermediate",
                proxy=proxy.telethon_proxy,
                auto_reconnect=False,
            ) as client:
                await aio(client)(functions.help.GetConfigRequest())
        assert proxy.connections[-1].bytes_up <= 64
        proxy.pass_through()
        async with open_telethon_client(
            dc, ALICE, transport="mtproxy_intermediate", proxy=proxy.telethon_proxy
        ) as client:
            assert (await aio(client.get_me)()).id == 1001


async def test_MTProxy_raw_header_layout() -> None:
    """A hand-built obfuscated2 header (not Telethon's code) gets through to an echo server."""
    secret = os.urandom(16)
    received = bytearray()

    async def echo(stream: trio.SocketStream) -> None:
        async for data in stream:
            received.extend(data)
            await stream.send_all(data)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, echo, 0)
        port = listeners[0].socket.getsockname()[1]
        async with open_mtproxy({-3: ("127.0.0.1", port)}, secret=secret.hex()) as proxy:
            header = bytearray(os.urandom(64))
            header[0] = 0x11
            enc = AESModeCTR(hashlib.sha256(bytes(header[8:40]) + secret).digest(),
                             bytes(header[40:56]))  # fmt: skip
            rev = bytes(header[55:7:-1])
            dec = AESModeCTR(hashlib.sha256(rev[:32] + secret).digest(), rev[32:48])
            header[56:60] = b"\xee\xee\xee\xee"
            header[60:62] = (-3).to_bytes(2, "little", signed=True)
            header[56:64] = enc.encrypt(bytes(header))[56:64]
            stream = await trio.open_tcp_stream(proxy.host, proxy.port)
            await stream.send_all(bytes(header) + enc.encrypt(b"hello"))
            got = b""
            with trio.fail_after(5):
                while len(got) < 9:
                    got += await stream.receive_some(100)
            # the DC side gets the plain tag first, then the plain stream; the echo comes back
            assert bytes(received) == b"\xee\xee\xee\xeehello"
            assert dec.encrypt(got) == b"\xee\xee\xee\xeehello"
            assert proxy.connections[0].dc_id == -3
            await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_open_mtproxy_validates_arguments() -> None:
    with pytest.raises(ValueError, match=r"^the MTProxy secret must be 16 bytes or 32 hex"):
        async with open_mtproxy({2: ("127.0.0.1", 1)}, secret="abcd"):
            pass
    with pytest.raises(ValueError, match=r"^unknown MTProxy mode 'fast'$"):
        async with open_mtproxy({2: ("127.0.0.1", 1)}, mode="fast"):  # type: ignore[arg-type]
            pass
    with pytest.raises(ValueError, match=r"^give at least one DC address$"):
        async with open_mtproxy({}):
            pass
    async with open_mtproxy({2: ("127.0.0.1", 1)}, secret="dd" + "ab" * 16) as proxy:
        assert proxy.secret == b"\xab" * 16 and proxy.dd_secret_hex == "dd" + "ab" * 16
