"""The misbehaving relay: a real SOCKS5 server / TCP forwarder whose faults tests switch on."""

from __future__ import annotations

import asyncio
import struct
from functools import partial

import pytest
import python_socks
import trio
import trio.testing
import trio_asyncio
from telethon import functions
from telethon.crypto import AuthKey
from telethon.sessions import StringSession

from mtpoold.testing import Relay, open_relay
from mtpoold.testing.dc import DC, open_dc, open_telethon_client

aio = trio_asyncio.aio_as_trio
ALICE = "15550000001"
NEAREST = functions.help.GetNearestDcRequest


class Echo:
    """An upstream TCP server that records what each connection sent and echoes it back."""

    def __init__(self) -> None:
        self.received: list[bytearray] = []
        self.closed: list[trio.Event] = []
        self.port = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        got = bytearray()
        closed = trio.Event()
        self.received.append(got)
        self.closed.append(closed)
        try:
            async for data in stream:
                got += data
                await stream.send_all(data)
        except trio.BrokenResourceError:
            pass
        finally:
            closed.set()


@pytest.fixture
async def echo(nursery: trio.Nursery) -> Echo:
    server = Echo()
    listeners = await nursery.start(partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
    server.port = listeners[0].socket.getsockname()[1]
    return server


async def receive_exactly(stream: trio.SocketStream, n: int) -> bytes:
    out = b""
    with trio.fail_after(5):
        while len(out) < n:
            data = await stream.receive_some(n - len(out))
            assert data, f"EOF after {len(out)} of {n} bytes"
            out += data
    return out


async def socks5_connect(
    relay: Relay,
    request: bytes,
    *,
    methods: bytes = b"\x00",
    auth: bytes | None = None,
) -> tuple[trio.SocketStream, bytes]:
    """Greet ``relay``, optionally authenticate, send a CONNECT ``request`` (ATYP.. PORT);
    returns the stream and the reply's first 4 bytes (VER REP RSV ATYP)."""
    stream = await trio.open_tcp_stream(relay.host, relay.port)
    await stream.send_all(bytes((5, len(methods))) + methods)
    method = await receive_exactly(stream, 2)
    if method[1] == 0xFF:
        return stream, method
    if auth is not None:
        await stream.send_all(auth)
        status = await receive_exactly(stream, 2)
        if status[1] != 0:
            return stream, status
    await stream.send_all(b"\x05\x01\x00" + request)
    head = await receive_exactly(stream, 4)
    await receive_exactly(stream, 6 if head[3] == 1 else 18)  # BND.ADDR + BND.PORT
    return stream, head


def ipv4(port: int) -> bytes:
    return b"\x01\x7f\x00\x00\x01" + struct.pack(">H", port)


def relayed_session(dc: DC, relay: Relay, phone: str) -> StringSession:
    """A logged-in session whose DC address is the tcp relay in front of ``dc``."""
    session = StringSession()
    session.set_dc(dc.dc_id, relay.host, relay.port)
    session.auth_key = AuthKey(dc.auth_key(phone))
    return session


async def test_Relay_socks5_carries_telethon_and_counts() -> None:
    async with open_dc() as dc, trio_asyncio.open_loop(), open_relay() as relay:
        async with open_telethon_client(dc, ALICE, proxy=relay.telethon_proxy) as client:
            assert (await aio(client.get_me)()).id == 1001
            (conn,) = relay.open_connections
            assert conn.requested == (dc.host, dc.port) == conn.upstream
            assert conn.handshake_done and relay.mode == "pass"
        assert relay.accepted == 1 and relay.connections[0].closed_by == "client"
        assert relay.bytes_up == conn.bytes_up > 0 and relay.bytes_down == conn.bytes_down > 0
        assert conn.bytes_from_client > conn.bytes_up  # the SOCKS5 handshake came first
        assert relay.bursts and conn.bursts
        relay.reset_counters()
        assert relay.accepted == relay.bytes_up == 0 and not relay.connections


async def test_Relay_socks5_username_password() -> None:
    async with open_dc() as dc, trio_asyncio.open_loop():
        async with open_relay(username="user", password="secret") as relay:
            assert relay.url == f"socks5://user:secret@127.0.0.1:{relay.port}"
            async with open_telethon_client(dc, ALICE, proxy=relay.telethon_proxy) as client:
                assert (await aio(client.get_me)()).id == 1001
            bad = dict(relay.telethon_proxy, password="wrong")
            with pytest.raises((ConnectionError, python_socks.ProxyError)):
                async with open_telethon_client(dc, proxy=bad):
                    pass
            assert dc.statistics().connections_total == 1
            assert relay.connections[-1].closed_by == "error"


async def test_Relay_socks5_protocol_details(echo: Echo) -> None:
    async with open_relay(username="u", password="p") as relay:
        stream, reply = await socks5_connect(relay, ipv4(echo.port))  # no-auth offered only
        assert reply == b"\x05\xff"
        await stream.aclose()
        stream, reply = await socks5_connect(
            relay, ipv4(echo.port), methods=b"\x00\x02", auth=b"\x01\x01u\x01x"
        )
        assert reply == b"\x01\x01"  # RFC 1929 failure
        with trio.fail_after(5):
            assert await stream.receive_some(10) == b""  # closed after the error was noted
        assert relay.connections[-1].error == "bad credentials"
        await stream.aclose()
    async with open_relay() as relay:
        domain = b"\x03\x09localhost" + struct.pack(">H", echo.port)
        stream, reply = await socks5_connect(relay, domain)
        assert reply[:2] == b"\x05\x00"
        await stream.send_all(b"ping")
        assert await receive_exactly(stream, 4) == b"ping"
        assert relay.connections[-1].requested == ("localhost", echo.port)
        await stream.aclose()
        stream = await trio.open_tcp_stream(relay.host, relay.port)  # BIND is not supported
        await stream.send_all(b"\x05\x01\x00")
        await receive_exactly(stream, 2)
        await stream.send_all(b"\x05\x02\x00" + ipv4(echo.port))
        assert (await receive_exactly(stream, 2))[1] == 7
        await stream.aclose()
        with trio.socket.socket() as s:  # a port nobody listens on
            await s.bind(("127.0.0.1", 0))
            free = s.getsockname()[1]
        stream, reply = await socks5_connect(relay, ipv4(free))
        assert reply[1] == 5  # connection refused
        await stream.aclose()


async def test_Relay_socks5_fixed_target_overrides_request(echo: Echo) -> None:
    async with open_relay(target=("127.0.0.1", echo.port)) as relay:
        stream, reply = await socks5_connect(relay, b"\x03\x07example" + struct.pack(">H", 443))
        assert reply[1] == 0
        await stream.send_all(b"abc")
        assert await receive_exactly(stream, 3) == b"abc"
        conn = relay.connections[0]
        assert conn.requested == ("example", 443) and conn.upstream == ("127.0.0.1", echo.port)
        await stream.aclose()


async def test_Relay_tcp_forwards_the_direct_lane() -> None:
    async with open_dc() as dc, trio_asyncio.open_loop():
        async with open_relay((dc.host, dc.port), protocol="tcp") as relay:
            assert relay.url == f"tcp://127.0.0.1:{relay.port}"
            session = relayed_session(dc, relay, ALICE)
            async with open_telethon_client(dc, session=session) as client:
                assert (await aio(client.get_me)()).id == 1001
            assert relay.accepted == 1 and relay.bytes_up > 0
            assert relay.connections[0].bytes_from_client == relay.bytes_up
            with pytest.raises(ValueError):
                relay.telethon_proxy  # noqa: B018


async def test_Relay_refuse_closes_the_port_and_pass_reopens_it(echo: Echo) -> None:
    async with open_relay(("127.0.0.1", echo.port), protocol="tcp") as relay:
        kept = await trio.open_tcp_stream(*relay.address)
        port = relay.port
        relay.refuse()
        assert relay.mode == "refuse"
        with pytest.raises(OSError):
            await trio.open_tcp_stream(*relay.address)
        await kept.send_all(b"still")  # open connections keep forwarding
        assert await receive_exactly(kept, 5) == b"still"
        relay.pass_through()
        assert relay.port == port
        again = await trio.open_tcp_stream(*relay.address)
        await again.send_all(b"x")
        assert await receive_exactly(again, 1) == b"x"
        await kept.aclose()
        await again.aclose()
        assert relay.accepted == 2


async def test_Relay_reset_resets_new_connections(echo: Echo) -> None:
    async with open_relay(("127.0.0.1", echo.port), protocol="tcp") as relay:
        relay.reset()
        stream = await trio.open_tcp_stream(*relay.address)
        with trio.fail_after(5), pytest.raises(trio.BrokenResourceError):
            while await stream.receive_some(10):
                pass
        await stream.aclose()
        assert relay.connections[0].closed_by == "fault" and not echo.received


async def test_Relay_blackhole_telethon_connect_hangs() -> None:
    async with open_dc() as dc, trio_asyncio.open_loop(), open_relay() as relay:
        relay.blackhole()
        with trio.move_on_after(0.5) as scope:
            async with open_telethon_client(dc, proxy=relay.telethon_proxy):
                pass
        assert scope.cancelled_caught
        assert relay.accepted == 1 and relay.connections[0].bytes_from_client > 0
        assert not relay.connections[0].handshake_done
        assert dc.statistics().connections_total == 0


async def test_Relay_blackhole_after_handshake() -> None:
    async with open_dc() as dc, trio_asyncio.open_loop(), open_relay() as relay:
        relay.blackhole_after_handshake()
        with trio.move_on_after(0.5) as scope:
            async with open_telethon_client(dc, proxy=relay.telethon_proxy):
                pass
        assert scope.cancelled_caught
        (conn,) = relay.connections
        assert conn.handshake_done and conn.bytes_up == 0 and conn.bytes_from_client > 10
        assert dc.statistics().connections_total == 1 and not dc.calls


async def test_Relay_blackhole_silences_open_connections(echo: Echo) -> None:
    async with open_relay(("127.0.0.1", echo.port), protocol="tcp") as relay:
        stream = await trio.open_tcp_stream(*relay.address)
        await stream.send_all(b"a")
        assert await receive_exactly(stream, 1) == b"a"
        relay.blackhole()
        await stream.send_all(b"b")
        with trio.move_on_after(0.2):
            await stream.receive_some(10)
            pytest.fail("a blackholed relay answered")
        relay.pass_through()
        await stream.send_all(b"c")
        assert await receive_exactly(stream, 1) == b"c"  # "b" was swallowed
        assert bytes(echo.received[0]) == b"ac"
        await stream.aclose()


async def test_Relay_close_after_n_bytes(echo: Echo) -> None:
    async with open_relay(("127.0.0.1", echo.port), protocol="tcp") as relay:
        relay.close_after(64)
        stream = await trio.open_tcp_stream(*relay.address)
        await stream.send_all(b"x" * 40)
        await stream.send_all(b"y" * 40)
        with trio.fail_after(5):
            got = b""
            while data := await stream.receive_some(100):
                got += data
            await echo.closed[0].wait()
        assert bytes(echo.received[0]) == b"x" * 40 + b"y" * 24
        conn = relay.connections[0]
        assert conn.bytes_up == 64 and conn.closed_by == "fault"
        await stream.aclose()
        with pytest.raises(ValueError, match=r"^n_bytes must be >= 0: -1$"):
            relay.close_after(-1)


async def test_Relay_close_after_64_bytes_breaks_telethon() -> None:
    async with open_dc() as dc, trio_asyncio.open_loop(), open_relay() as relay:
        relay.close_after(64)
        with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
            async with open_telethon_client(dc, proxy=relay.telethon_proxy, auto_reconnect=False):
                pass
        assert relay.connections[0].bytes_up <= 64
        assert relay.connections[0].closed_by in ("fault", "client")


async def test_Relay_corrupt_flips_server_bytes(echo: Echo) -> None:
    async with open_relay(("127.0.0.1", echo.port), protocol="tcp") as relay:
        relay.corrupt(after_bytes=3, n_bytes=2)
        stream = await trio.open_tcp_stream(*relay.address)
        await stream.send_all(b"\x00\x00")
        assert await receive_exactly(stream, 2) == b"\x00\x00"
        await stream.send_all(b"\x00\x00\x00\x00")
        assert await receive_exactly(stream, 4) == b"\x00\x01\x01\x00"  # offsets 3 and 4
        relay.corrupt()
        await stream.send_all(b"\x10\x20")
        assert await receive_exactly(stream, 2) == b"\x11\x21"
        assert bytes(echo.received[0]) == b"\x00" * 6 + b"\x10\x20"  # upstream sees it clean
        await stream.aclose()


async def test_Relay_stall_holds_data_then_resumes(echo: Echo) -> None:
    async with open_relay(("127.0.0.1", echo.port), protocol="tcp") as relay:
        stream = await trio.open_tcp_stream(*relay.address)
        relay.stall(0.3)
        assert relay.mode == "stall"
        start = trio.current_time()
        await stream.send_all(b"late")
        assert await receive_exactly(stream, 4) == b"late"
        assert trio.current_time() - start >= 0.3
        assert relay.mode == "pass"
        relay.stall(60)
        relay.pass_through()  # ends the stall at once
        await stream.send_all(b"now")
        assert await receive_exactly(stream, 3) == b"now"
        await stream.aclose()


async def test_Relay_bursts(echo: Echo, autojump_clock: trio.testing.MockClock) -> None:
    async with open_relay(("127.0.0.1", echo.port), protocol="tcp", burst_gap_s=0.05) as relay:
        a = await trio.open_tcp_stream(*relay.address)
        b = await trio.open_tcp_stream(*relay.address)
        t0 = trio.current_time()
        await a.send_all(b"1")
        await receive_exactly(a, 1)
        await b.send_all(b"2")  # no silence on the relay: same burst, but b's first
        await receive_exactly(b, 1)
        await trio.sleep(0.04)
        await a.send_all(b"3")  # 0.04 s later: still the same burst
        await receive_exactly(a, 1)
        await trio.sleep(1.0)
        await b.send_all(b"4")
        await receive_exactly(b, 1)
        await trio.sleep(0.5)
        await a.send_all(b"5")
        await receive_exactly(a, 1)
        assert relay.bursts == [t0, t0 + 1.04, t0 + 1.54]
        assert relay.burst_spacings() == pytest.approx([1.04, 0.5])
        assert relay.connections[0].bursts == [t0, t0 + 1.54]
        assert relay.connections[1].bursts == [t0, t0 + 1.04]
        await a.aclose()
        await b.aclose()


async def test_Relay_bursts_of_telethon_calls() -> None:
    async with open_dc() as dc, trio_asyncio.open_loop(), open_relay() as relay:
        async with open_telethon_client(dc, ALICE, proxy=relay.telethon_proxy) as client:
            await aio(client)(NEAREST())
            relay.reset_counters()
            for _ in range(3):
                await trio.sleep(0.2)
                await aio(client)(NEAREST())
        assert len(relay.bursts) == 3
        assert min(relay.burst_spacings()) >= 0.2


async def test_open_relay_validates_arguments() -> None:
    with pytest.raises(ValueError, match=r"^a tcp relay needs a target$"):
        async with open_relay(protocol="tcp"):
            pass
    with pytest.raises(ValueError, match=r"^give both username and password, or neither$"):
        async with open_relay(username="u"):
            pass
    with pytest.raises(ValueError, match=r"^unknown relay protocol 'http'$"):
        async with open_relay(protocol="http"):  # type: ignore[arg-type]
            pass
