"""A misbehaving relay for tests: an in-process Trio SOCKS5 server or TCP forwarder on loopback.

``async with open_relay(target=(dc.host, dc.port), protocol="socks5") as relay:`` serves on a free
port of 127.0.0.1 in the caller's Trio run (so it works next to a pool run under trio-asyncio,
and on trio's ``MockClock``). Fault modes are switched at run time on the :class:`Relay`:

- ``pass``: forward both ways (the default);
- ``refuse``: the listening socket is closed, new connections get ECONNREFUSED;
- ``reset``: accept, then reset the connection at once (RST, no byte sent);
- ``blackhole``: accept, read and discard everything, never send or forward anything;
- ``blackhole_after_handshake``: finish the SOCKS5 handshake (and the upstream connect), then
  forward nothing either way;
- ``close_after``: after the handshake forward up to ``n_bytes`` client->server, then close
  both sides;
- ``corrupt``: flip bit 0 of server->client bytes from offset ``after_bytes`` on;
- ``stall``: forward nothing either way for ``seconds``, then go back to the mode set before.

A mode applies to connections accepted while it is set and to every chunk of data of every open
connection (``refuse`` and ``reset`` act on new connections only; open ones keep forwarding).

**Bursts.** The relay logs when clients start talking: a *burst* begins when bytes from a client
arrive (any bytes: SOCKS5 handshake included, whatever the mode) and the previous bytes from any
client of this relay arrived more than ``burst_gap_s`` seconds earlier (or never). Each connection
keeps the same log for its own bytes (silence measured on that connection only). Times are
``trio.current_time()`` seconds, so MockClock time in autojump tests. A test asserts a lane's
rate gate with ``min(relay.burst_spacings()) >= interval_s``.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Final, Literal, final

import attrs
import trio

log = logging.getLogger("mtpoold.testing.relay")

RelayProtocol = Literal["socks5", "tcp"]
RelayMode = Literal[
    "pass",
    "refuse",
    "reset",
    "blackhole",
    "blackhole_after_handshake",
    "close_after",
    "corrupt",
    "stall",
]
DEFAULT_BURST_GAP_S: Final = 0.05
CONNECT_TIMEOUT_S: Final = 10.0  # seconds the relay waits for its upstream connect
HANDSHAKE_TIMEOUT_S: Final = 30.0  # seconds a client may take over the SOCKS5 handshake
CHUNK_BYTES: Final = 64 * 1024

_SOCKS_VERSION: Final = 5
_NO_AUTH: Final = 0x00
_USER_PASS: Final = 0x02
_NO_METHOD: Final = 0xFF
_CMD_CONNECT: Final = 1
_ATYP_IPV4: Final = 1
_ATYP_DOMAIN: Final = 3
_ATYP_IPV6: Final = 4
_REP_OK: Final = 0
_REP_FAILURE: Final = 1
_REP_HOST_UNREACHABLE: Final = 4
_REP_REFUSED: Final = 5
_REP_CMD_UNSUPPORTED: Final = 7
_REP_ATYP_UNSUPPORTED: Final = 8


class _Close(Exception):
    """End this client connection now; the message (if any) says why (``RelayConnection.error``)."""


@final
@attrs.define(eq=False)
class RelayConnection:
    """What the relay saw of one accepted client connection.

    Attributes:
        id: serial number on this relay (1, 2, ...).
        accepted_at: ``trio.current_time()`` when accepted, seconds.
        closed_at: when it ended, seconds, or ``None`` while open.
        requested: the ``(host, port)`` a SOCKS5 client asked for, ``None`` before the request
            (and always for ``protocol="tcp"``).
        upstream: the ``(host, port)`` the relay connected to, ``None`` if it did not.
        upstream_local: the relay's own ``(host, port)`` of that upstream connection (what the
            upstream server sees as its peer, e.g. :attr:`~mtpoold.testing.dc.ConnectionRecord.peer`
            at the loopback DC), ``None`` if it did not connect.
        handshake_done: whether the SOCKS5 handshake (or, for ``tcp``, the upstream connect)
            succeeded.
        bytes_from_client: bytes received from the client (handshake included).
        bytes_up: payload bytes forwarded client->server.
        bytes_down: payload bytes forwarded server->client.
        bursts: start times of client bursts on this connection, seconds (see the module doc).
        closed_by: ``"client"``, ``"server"`` (upstream), ``"fault"`` (close_after/reset),
            ``"error"`` (handshake or upstream connect failed), ``"relay"`` (relay shut down),
            ``None`` while open.
        error: why the relay refused it (``closed_by == "error"``), e.g. ``"bad credentials"``,
            ``"upstream refused"``, ``"unknown protocol tag"``; ``None`` otherwise.
        transport: MTProxy only: ``"abridged"``, ``"intermediate"`` or ``"padded"`` once the
            obfuscated2 header is read.
        dc_id: MTProxy only: the DC id from the obfuscated2 header.
    """

    id: int
    accepted_at: float
    closed_at: float | None = None
    requested: tuple[str, int] | None = None
    upstream: tuple[str, int] | None = None
    upstream_local: tuple[str, int] | None = None
    handshake_done: bool = False
    bytes_from_client: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    bursts: list[float] = attrs.field(factory=list)
    closed_by: str | None = None
    error: str | None = None
    transport: str | None = None
    dc_id: int | None = None
    _last_client_data: float | None = attrs.field(default=None, alias="last_client_data")

    def reset_counters(self) -> None:
        """Zero the byte counts and clear the burst log (the silence clock keeps running)."""
        self.bytes_from_client = self.bytes_up = self.bytes_down = 0
        self.bursts.clear()


def _same(data: bytes) -> bytes:
    return data


@attrs.define(eq=False)
class _Link:
    """An open upstream and the byte transforms of each direction (identity for plain relays)."""

    stream: trio.SocketStream
    up: Callable[[bytes], bytes] = _same
    down: Callable[[bytes], bytes] = _same


class _FaultyServer:
    """What every relay kind shares: listening, fault modes, forwarding, counters, bursts.

    Subclasses implement :meth:`_open_link` (the handshake and the upstream connect).

    Attributes:
        host, port: where it listens (the port stays the same across ``refuse``).
        burst_gap_s: client silence, seconds, that makes the next client bytes a new burst.
        connections: every :class:`RelayConnection` since start (or since
            :meth:`reset_counters`, which keeps only the open ones), in accept order.
        accepted: connections accepted (``reset`` ones included).
        bytes_up, bytes_down: payload bytes forwarded client->server / server->client.
        bursts: start times of bursts across all connections, seconds.
    """

    def __init__(self, nursery: trio.Nursery, *, host: str, port: int, burst_gap_s: float) -> None:
        self._nursery = nursery
        self.host = host
        self.port = port
        self.burst_gap_s = burst_gap_s
        self.connections: list[RelayConnection] = []
        self.accepted = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self.bursts: list[float] = []
        self._last_client_data: float | None = None
        self._next_id = 1
        self._mode: RelayMode = "pass"
        self._close_after = 0
        self._corrupt_from = 0
        self._corrupt_bytes: int | None = None
        self._stall_until = 0.0
        self._stall_resume: trio.Event = trio.Event()
        self._listen_scope: trio.CancelScope | None = None
        self._listener_socket: socket.socket | None = None

    # -- public surface -----------------------------------------------------------------------

    @property
    def mode(self) -> RelayMode:
        """The mode in force now (``"stall"`` while a stall lasts)."""
        if self._stall_until > trio.current_time():
            return "stall"
        return self._mode

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` it listens on."""
        return (self.host, self.port)

    @property
    def open_connections(self) -> list[RelayConnection]:
        """The connections still open."""
        return [c for c in self.connections if c.closed_at is None]

    def burst_spacings(self) -> list[float]:
        """Seconds between consecutive :attr:`bursts` (empty with fewer than two bursts)."""
        return [b - a for a, b in zip(self.bursts, self.bursts[1:], strict=False)]

    def connection_starts(self) -> list[float]:
        """Start times of every connection's bursts, merged and sorted, seconds.

        Unlike :attr:`bursts` (where bytes of two clients closer than ``burst_gap_s`` make one
        burst), two connections that start talking 1 ms apart give two entries 1 ms apart; bytes
        on one connection closer than ``burst_gap_s`` (a request and Telethon's ``msgs_ack``
        after it, a SOCKS5 handshake and the first MTProto packet) stay one start. So each entry
        is one call start through this proxy: a lane's rate gate holds if consecutive entries
        are ``interval_s`` apart (minus the wire's own jitter).
        """
        return sorted(t for conn in self.connections for t in conn.bursts)

    def reset_counters(self) -> None:
        """Zero :attr:`accepted`, the byte counts and burst logs; forget closed connections.

        Open connections stay listed with their counters zeroed.
        """
        self.accepted = 0
        self.bytes_up = self.bytes_down = 0
        self.bursts.clear()
        self.connections = self.open_connections
        for conn in self.connections:
            conn.reset_counters()

    def pass_through(self) -> None:
        """Mode ``pass``: forward everything (also ends a stall and reopens a refusing port)."""
        self._set("pass")

    def refuse(self) -> None:
        """Mode ``refuse``: close the listening socket, new connects get ECONNREFUSED.

        Open connections keep forwarding. Any other mode binds the same port again.
        """
        self._set("refuse")

    def reset(self) -> None:
        """Mode ``reset``: accept new connections and reset them at once (RST)."""
        self._set("reset")

    def blackhole(self) -> None:
        """Mode ``blackhole``: accept, never answer or forward; open connections go silent."""
        self._set("blackhole")

    def blackhole_after_handshake(self) -> None:
        """Mode ``blackhole_after_handshake``: finish the handshake, then forward nothing."""
        self._set("blackhole_after_handshake")

    def close_after(self, n_bytes: int) -> None:
        """Mode ``close_after``: after the handshake, forward the first ``n_bytes`` a client
        sends, then close both sides (at once when ``n_bytes`` is 0 or already forwarded).

        Raises:
            ValueError: if ``n_bytes`` < 0.
        """
        if n_bytes < 0:
            raise ValueError(f"n_bytes must be >= 0: {n_bytes}")
        self._close_after = n_bytes
        self._set("close_after")

    def corrupt(self, after_bytes: int = 0, n_bytes: int | None = None) -> None:
        """Mode ``corrupt``: flip bit 0 of each server->client payload byte at offsets
        ``after_bytes`` .. ``after_bytes + n_bytes - 1`` of a connection (``None``: to the end).
        Offsets count payload bytes sent to the client after the handshake. The connection
        stays up.

        Raises:
            ValueError: if ``after_bytes`` < 0 or ``n_bytes`` < 1.
        """
        if after_bytes < 0:
            raise ValueError(f"after_bytes must be >= 0: {after_bytes}")
        if n_bytes is not None and n_bytes < 1:
            raise ValueError(f"n_bytes must be >= 1 or None: {n_bytes}")
        self._corrupt_from = after_bytes
        self._corrupt_bytes = n_bytes
        self._set("corrupt")

    def stall(self, seconds: float) -> None:
        """Mode ``stall``: forward nothing either way for ``seconds``, then resume in the mode
        set before (data that arrives meanwhile is delivered afterwards, in order).

        Raises:
            ValueError: if ``seconds`` < 0.
        """
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0: {seconds}")
        self._stall_until = trio.current_time() + seconds
        self._stall_resume = trio.Event()

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.host}:{self.port} mode={self.mode},"
            f" {len(self.open_connections)} open, accepted={self.accepted}>"
        )

    # -- listening ----------------------------------------------------------------------------

    def _set(self, mode: RelayMode) -> None:
        self._stall_until = 0.0
        self._stall_resume.set()
        self._mode = mode
        if mode == "refuse":
            self._stop_listening()
        elif self._listen_scope is None:
            self._start_listening()

    def _start_listening(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(128)
        except BaseException:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        self._listener_socket = sock
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        scope = self._listen_scope = trio.CancelScope()
        self._nursery.start_soon(self._accept_loop, listener, scope)

    def _stop_listening(self) -> None:
        if self._listen_scope is not None:
            self._listen_scope.cancel()
            self._listen_scope = None
        if self._listener_socket is not None:
            # close now (not when the accept task notices the cancel), so connects are refused
            # from this call on; wake the accept task first, as trio requires
            trio.lowlevel.notify_closing(self._listener_socket)
            self._listener_socket.close()
            self._listener_socket = None

    async def _accept_loop(self, listener: trio.SocketListener, scope: trio.CancelScope) -> None:
        with scope:
            try:
                while True:
                    try:
                        stream = await listener.accept()
                    except OSError as exc:
                        if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                            await trio.sleep(0.01)
                            continue
                        raise
                    self._nursery.start_soon(self._handle, stream)
            except (trio.ClosedResourceError, OSError):
                return  # the socket was closed under us by refuse()
            finally:
                with trio.CancelScope(shield=True):
                    await trio.aclose_forcefully(listener)

    # -- one connection -----------------------------------------------------------------------

    async def _handle(self, client: trio.SocketStream) -> None:
        conn = RelayConnection(self._next_id, trio.current_time())
        self._next_id += 1
        self.accepted += 1
        self.connections.append(conn)
        link: _Link | None = None
        try:
            if self._mode == "reset":
                conn.closed_by = "fault"
                client.socket.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                return
            if self._mode == "blackhole":
                await self._discard(conn, client)
                return
            reader = _Reader(self, conn, client)
            with trio.fail_after(HANDSHAKE_TIMEOUT_S):
                link = await self._open_link(conn, reader)
            conn.handshake_done = True
            await self._forward(conn, client, link, reader.buffered())
        except (_Close, _Upstream, trio.TooSlowError) as exc:
            if conn.closed_by is None:
                conn.closed_by = "error"
                if isinstance(exc, _Upstream):
                    conn.error = "upstream refused" if _is_refusal(exc.cause) else "upstream failed"
                elif isinstance(exc, trio.TooSlowError):
                    conn.error = "handshake timed out"
                else:
                    conn.error = str(exc) or None
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            if conn.closed_by is None:
                conn.closed_by = "client"
        except Exception:  # one connection never takes the relay down
            log.exception("relay connection %d crashed", conn.id)
            conn.closed_by = conn.closed_by or "error"
        finally:
            if conn.closed_by is None:
                conn.closed_by = "relay"
            conn.closed_at = trio.current_time()
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(client)
                if link is not None:
                    await trio.aclose_forcefully(link.stream)

    def _note_client_data(self, conn: RelayConnection, n: int) -> None:
        now = trio.current_time()
        conn.bytes_from_client += n
        if conn._last_client_data is None or now - conn._last_client_data > self.burst_gap_s:
            conn.bursts.append(now)
        conn._last_client_data = now
        if self._last_client_data is None or now - self._last_client_data > self.burst_gap_s:
            self.bursts.append(now)
        self._last_client_data = now

    async def _discard(self, conn: RelayConnection, client: trio.SocketStream) -> None:
        while True:
            data = await client.receive_some(CHUNK_BYTES)
            if not data:
                conn.closed_by = "client"
                return
            self._note_client_data(conn, len(data))

    async def _connect(self, conn: RelayConnection, address: tuple[str, int]) -> trio.SocketStream:
        with trio.move_on_after(CONNECT_TIMEOUT_S):
            try:
                stream = await trio.open_tcp_stream(*address)
            except OSError as exc:
                raise _Upstream(exc) from None
            conn.upstream = address
            local = stream.socket.getsockname()
            conn.upstream_local = (str(local[0]), int(local[1]))
            return stream
        raise _Upstream(TimeoutError("upstream connect timed out"))

    async def _open_link(self, conn: RelayConnection, r: _Reader) -> _Link:
        """Do the client's handshake and connect upstream.

        Raises:
            _Close: to refuse the client (its message goes to ``conn.error``).
            _Upstream: if the upstream connect failed.
        """
        raise NotImplementedError

    async def _wait_stall(self) -> None:
        while self._stall_until > trio.current_time():
            with trio.move_on_at(self._stall_until):
                await self._stall_resume.wait()

    def _silent(self) -> bool:
        return self._mode in ("blackhole", "blackhole_after_handshake")

    async def _forward(
        self,
        conn: RelayConnection,
        client: trio.SocketStream,
        link: _Link,
        early: bytes,
    ) -> None:
        if self._mode == "close_after" and self._close_after == 0:
            conn.closed_by = "fault"
            return
        upstream = link.stream
        async with trio.open_nursery() as nursery:

            async def up() -> None:
                # transform every chunk as it arrives, forwarded or not, so a stateful
                # transform (MTProxy's AES-CTR) stays in step with the client
                data = link.up(early) if early else b""
                while True:
                    if not data:
                        data = await client.receive_some(CHUNK_BYTES)
                        if not data:
                            conn.closed_by = conn.closed_by or "client"
                            break
                        self._note_client_data(conn, len(data))
                        data = link.up(data)
                    await self._wait_stall()
                    if self._silent():
                        data = b""
                        continue
                    limit = self._close_after - conn.bytes_up
                    closing = self._mode == "close_after" and len(data) >= limit
                    if closing:
                        data = data[: max(limit, 0)]
                    if data:
                        await upstream.send_all(data)
                        conn.bytes_up += len(data)
                        self.bytes_up += len(data)
                    data = b""
                    if closing:
                        conn.closed_by = conn.closed_by or "fault"
                        break
                nursery.cancel_scope.cancel()

            async def down() -> None:
                while True:
                    data = await upstream.receive_some(CHUNK_BYTES)
                    if not data:
                        conn.closed_by = conn.closed_by or "server"
                        break
                    await self._wait_stall()
                    if self._silent():
                        continue
                    if self._mode == "corrupt":
                        data = self._flip(conn.bytes_down, data)
                    n = len(data)
                    await client.send_all(link.down(data))
                    conn.bytes_down += n
                    self.bytes_down += n
                nursery.cancel_scope.cancel()

            async def guarded(pump: Any, side: str) -> None:
                try:
                    await pump()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    conn.closed_by = conn.closed_by or side
                    nursery.cancel_scope.cancel()

            nursery.start_soon(guarded, up, "client")
            nursery.start_soon(guarded, down, "server")

    def _flip(self, offset: int, data: bytes) -> bytes:
        start = max(self._corrupt_from - offset, 0)
        end = len(data)
        if self._corrupt_bytes is not None:
            end = min(end, self._corrupt_from + self._corrupt_bytes - offset)
        if start >= end:
            return data
        out = bytearray(data)
        for i in range(start, end):
            out[i] ^= 0x01
        return bytes(out)


@final
class Relay(_FaultyServer):
    """A running SOCKS5 / TCP relay (see the module doc for modes and bursts).

    Build it with :func:`open_relay`.

    Attributes:
        kind: ``"socks5"`` or ``"tcp"`` (the protocol; named like :class:`Proxy.kind`).
        host, port: where it listens (the port stays the same across ``refuse``).
        target: where it connects, or ``None`` (SOCKS5: the address the client asks for).
        username, password: SOCKS5 credentials it demands (RFC 1929), or ``None``.
        burst_gap_s: client silence, seconds, that makes the next client bytes a new burst.
        connections: every :class:`RelayConnection` since start (or since
            :meth:`reset_counters`, which keeps only the open ones), in accept order.
        accepted: connections accepted (``reset`` ones included).
        bytes_up, bytes_down: payload bytes forwarded client->server / server->client.
        bursts: start times of bursts across all connections, seconds.
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        protocol: RelayProtocol,
        target: tuple[str, int] | None,
        host: str,
        port: int,
        username: str | None,
        password: str | None,
        burst_gap_s: float,
    ) -> None:
        super().__init__(nursery, host=host, port=port, burst_gap_s=burst_gap_s)
        self.kind: RelayProtocol = protocol
        self.target = target
        self.username = username
        self.password = password

    @property
    def url(self) -> str:
        """``socks5://[user:pass@]host:port`` or ``tcp://host:port``."""
        auth = f"{self.username}:{self.password}@" if self.username is not None else ""
        return f"{self.kind}://{auth}{self.host}:{self.port}"

    @property
    def telethon_proxy(self) -> dict[str, Any]:
        """The ``proxy=`` dict for ``TelegramClient`` (SOCKS5 only; python-socks keys).

        Raises:
            ValueError: for a ``tcp`` relay (point the session's DC address at it instead).
        """
        if self.kind != "socks5":
            raise ValueError("a tcp relay is no proxy: point the client's DC address at it")
        return {
            "proxy_type": "socks5",
            "addr": self.host,
            "port": self.port,
            "username": self.username,
            "password": self.password,
            "rdns": True,
        }

    def __repr__(self) -> str:
        return (
            f"<Relay {self.kind} {self.host}:{self.port} mode={self.mode},"
            f" {len(self.open_connections)} open, accepted={self.accepted}>"
        )

    async def _open_link(self, conn: RelayConnection, r: _Reader) -> _Link:
        if self.kind == "tcp":
            assert self.target is not None
            return _Link(await self._connect(conn, self.target))
        version, n_methods = await r.take(2)
        if version != _SOCKS_VERSION:
            raise _Close("not SOCKS5")
        methods = set(await r.take(n_methods))
        wanted = _USER_PASS if self.username is not None else _NO_AUTH
        if wanted not in methods:
            await r.send(bytes((_SOCKS_VERSION, _NO_METHOD)))
            raise _Close("no acceptable auth method")
        await r.send(bytes((_SOCKS_VERSION, wanted)))
        if wanted == _USER_PASS:
            (auth_version,) = await r.take(1)
            user = await r.take((await r.take(1))[0])
            password = await r.take((await r.take(1))[0])
            ok = (
                auth_version == 1
                and user == (self.username or "").encode()
                and password == (self.password or "").encode()
            )
            await r.send(bytes((1, 0 if ok else 1)))
            if not ok:
                raise _Close("bad credentials")
        version, cmd, _rsv, atyp = await r.take(4)
        if version != _SOCKS_VERSION:
            raise _Close("not SOCKS5")
        if atyp == _ATYP_IPV4:
            host = str(ipaddress.IPv4Address(await r.take(4)))
        elif atyp == _ATYP_IPV6:
            host = str(ipaddress.IPv6Address(await r.take(16)))
        elif atyp == _ATYP_DOMAIN:
            host = (await r.take((await r.take(1))[0])).decode("ascii", errors="replace")
        else:
            await r.send(_socks_reply(_REP_ATYP_UNSUPPORTED))
            raise _Close("address type not supported")
        (port,) = struct.unpack(">H", await r.take(2))
        conn.requested = (host, port)
        if cmd != _CMD_CONNECT:
            await r.send(_socks_reply(_REP_CMD_UNSUPPORTED))
            raise _Close("command not supported")
        try:
            upstream = await self._connect(conn, self.target or (host, port))
        except _Upstream as exc:
            refused = _is_refusal(exc.cause)
            await r.send(_socks_reply(_REP_REFUSED if refused else _REP_HOST_UNREACHABLE))
            raise _Close("upstream refused" if refused else "upstream failed") from None
        try:
            bound = upstream.socket.getsockname()
            await r.send(_socks_reply(_REP_OK, bound[0], bound[1]))
        except BaseException:
            await trio.aclose_forcefully(upstream)
            raise
        return _Link(upstream)


class _Upstream(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(repr(cause))
        self.cause = cause


def _is_refusal(exc: BaseException | None) -> bool:
    """Whether a connect failure was a refusal (trio wraps the per-address errors)."""
    while exc is not None:
        if isinstance(exc, ConnectionRefusedError):
            return True
        if isinstance(exc, BaseExceptionGroup):
            return any(_is_refusal(e) for e in exc.exceptions)
        exc = exc.__cause__
    return False


def _socks_reply(rep: int, host: str = "0.0.0.0", port: int = 0) -> bytes:
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        addr = ipaddress.IPv4Address("0.0.0.0")
    atyp = _ATYP_IPV4 if addr.version == 4 else _ATYP_IPV6
    return bytes((_SOCKS_VERSION, rep, 0, atyp)) + addr.packed + struct.pack(">H", port)


class _Reader:
    """Exact reads from the client during the handshake (counted as client data)."""

    def __init__(
        self, relay: _FaultyServer, conn: RelayConnection, stream: trio.SocketStream
    ) -> None:
        self._relay = relay
        self._conn = conn
        self._stream = stream
        self._buf = bytearray()

    async def take(self, n: int) -> bytes:
        while len(self._buf) < n:
            data = await self._stream.receive_some(CHUNK_BYTES)
            if not data:
                self._conn.closed_by = "client"
                raise _Close()
            self._relay._note_client_data(self._conn, len(data))
            self._buf += data
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    async def send(self, data: bytes) -> None:
        await self._stream.send_all(data)

    def buffered(self) -> bytes:
        """Bytes read past the handshake (the client's first payload), handed to forwarding."""
        out = bytes(self._buf)
        self._buf.clear()
        return out


@asynccontextmanager
async def open_relay(
    target: tuple[str, int] | None = None,
    *,
    protocol: RelayProtocol = "socks5",
    username: str | None = None,
    password: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    burst_gap_s: float = DEFAULT_BURST_GAP_S,
) -> AsyncIterator[Relay]:
    """Run a :class:`Relay` in the caller's Trio run for the ``async with`` block.

    Args:
        target: ``(host, port)`` to connect every client to; required for ``"tcp"``; for
            ``"socks5"`` ``None`` means the address each client asks for.
        protocol: ``"socks5"`` (RFC 1928 CONNECT, IPv4/IPv6/domain) or ``"tcp"`` (plain
            forwarder).
        username, password: require RFC 1929 username/password auth (SOCKS5 only; both or
            neither).
        host: listen address (IPv4).
        port: listen port; 0 picks a free one.
        burst_gap_s: client silence, seconds, that starts a new burst (see the module doc).

    Yields:
        The serving relay in mode ``pass``. Leaving the block closes every connection.

    Raises:
        ValueError: on a bad combination of arguments.
        OSError: if the address cannot be bound.
    """
    if protocol not in ("socks5", "tcp"):
        raise ValueError(f"unknown relay protocol {protocol!r}")
    if protocol == "tcp" and target is None:
        raise ValueError("a tcp relay needs a target")
    if (username is None) != (password is None):
        raise ValueError("give both username and password, or neither")
    if protocol == "tcp" and username is not None:
        raise ValueError("username/password are for socks5 relays")
    if burst_gap_s < 0:
        raise ValueError(f"burst_gap_s must be >= 0: {burst_gap_s}")
    async with trio.open_nursery() as nursery:
        relay = Relay(
            nursery,
            protocol=protocol,
            target=target,
            host=host,
            port=port,
            username=username,
            password=password,
            burst_gap_s=burst_gap_s,
        )
        relay._start_listening()
        try:
            yield relay
        finally:
            relay._stop_listening()
            nursery.cancel_scope.cancel()
