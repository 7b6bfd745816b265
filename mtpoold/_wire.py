"""What one account's Telethon connection does on the wire: its phase, and a governor.

A `WireMonitor` belongs to one `mtpoold._client.TelethonClient` and describes its current
connection (reset by `WireMonitor.new_connection` at each connect):

- **Phase** (`mtpoold._errors.ConnectPhase`): TCP to the proxy, proxy handshake (SOCKS/HTTP
  CONNECT, or the MTProxy header), first bytes to the DC, DC answered (the first complete
  transport packet came back). A failure before ``DC_ANSWERED`` is the proxy's
  (`WireMonitor.blame` builds the `ProxyUnavailable`); after it, the account's or the DC's.
  See the table "Connection phases and blame" in ``docs/ARCHITECTURE.md``.
- **Wire governor**: every MTProto message Telethon writes (requests, its own resends after
  ``bad_server_salt`` / ``bad_msg_notification``, acks, pings, state answers) is counted as
  it is packed, before it is encrypted and sent. Past a ceiling the monitor records a
  `ProtocolViolation` as the connection's `WireMonitor.fault`; the connection refuses to
  send from then on (Telethon drops it and fails what is pending with that error) and the
  waiters registered with `WireMonitor.subscribe` (the asyncio bridge of the call in flight)
  are woken so the call fails at once. Ceilings (``[telegram]`` config keys):

  * ``wire_max_messages_per_call`` (default 32): messages while one call (or one connect)
    is in flight.
  * ``wire_max_extra_messages_per_s`` (default 20): messages in any 1 s window beyond the
    new requests themselves and one ack per new request (or call started) in that window —
    so a warm loop of hundreds of calls per second on an ungated lane, or a login that makes
    several requests per step, never trips it, while Telethon's own resends, pings and
    service messages do.

- **Security errors**: a reply that fails to decrypt or names the wrong session (Telethon
  logs "Security error while unpacking" and drops it) is recorded as a fault the same way.

`install_sender_hooks` attaches a monitor to a ``TelegramClient``'s sender (its
``MTProtoState`` and message handlers); `monitored_connection` builds the Telethon
``Connection`` subclass that tracks the phase, counts bytes and sets TCP_NODELAY.

Everything here runs on the asyncio side (the trio-asyncio loop, in trio's thread); nothing
blocks, nothing raises into Telethon's loops except where Telethon expects it (``send``
raising ``ConnectionError``).
"""

from __future__ import annotations

import asyncio
import collections
import socket
import struct
import time
from collections.abc import Callable
from typing import Any, Final, final

from python_socks._connectors.factory_async import create_connector
from python_socks.async_.asyncio._connect import connect_tcp
from python_socks.async_.asyncio._resolver import Resolver
from python_socks.async_.asyncio._stream import AsyncioSocketStream
from telethon.errors import InvalidChecksumError, SecurityError
from telethon.network.connection.connection import Connection, ObfuscatedConnection
from telethon.network.connection.tcpmtproxy import TcpMTProxy
from telethon.tl import functions as tl_functions
from telethon.tl import types as tl_types
from telethon.tl.core import MessageContainer

from ._config import TelegramConfig
from ._errors import ConnectPhase, ProtocolViolation, ProxyUnavailable, StartMissed, redact

__all__ = [
    "WINDOW_S",
    "WireMonitor",
    "install_sender_hooks",
    "monitored_connection",
]

#: The wire governor's ceilings default to ``[telegram]``'s (defined there once).
_TELEGRAM_DEFAULTS: Final = TelegramConfig()

#: Seconds of the governor's sliding window (the per-second ceiling).
WINDOW_S: Final = 1.0
#: Bodies of recent content-related messages kept to recognise Telethon's resends.
_RECENT_BODIES: Final = 64

_ACK_ID: Final = tl_types.MsgsAck.CONSTRUCTOR_ID
_PING_IDS: Final = frozenset(
    {
        tl_functions.PingRequest.CONSTRUCTOR_ID,
        tl_functions.PingDelayDisconnectRequest.CONSTRUCTOR_ID,
    }
)
_WRAPPER_IDS: Final = frozenset(
    {
        tl_functions.InvokeWithoutUpdatesRequest.CONSTRUCTOR_ID,
        tl_functions.InvokeWithLayerRequest.CONSTRUCTOR_ID,
    }
)
_CONTAINER_ID: Final = MessageContainer.CONSTRUCTOR_ID
_STATE_INFO_ID: Final = tl_types.MsgsStateInfo.CONSTRUCTOR_ID

#: Telethon's handlers whose work makes it send again, and the name a fault message uses.
_REASON_HANDLERS: Final = {
    tl_types.BadServerSalt.CONSTRUCTOR_ID: "bad_server_salt",
    tl_types.BadMsgNotification.CONSTRUCTOR_ID: "bad_msg_notification",
    tl_types.MsgsStateReq.CONSTRUCTOR_ID: "msgs_state_req",
    tl_types.MsgResendReq.CONSTRUCTOR_ID: "msg_resend_req",
}


#: Where each phase comes (``advance`` runs for every packet received).
_PHASE_ORDER: Final = {phase: i for i, phase in enumerate(ConnectPhase)}
_U32_AT: Final = struct.Struct("<I").unpack_from


def message_kind(data: bytes) -> str:
    """The kind of one outgoing MTProto message body: ``"ack"``, ``"ping"``, ``"service"``
    (``msgs_state_info``), ``"container"`` or ``"request"``."""
    if len(data) < 4:
        return "request"
    (cid,) = _U32_AT(data, 0)
    if cid == _ACK_ID:
        return "ack"
    if cid == _CONTAINER_ID:
        return "container"
    if cid == _STATE_INFO_ID:
        return "service"
    if cid in _WRAPPER_IDS and len(data) >= 8:
        (inner,) = _U32_AT(data, 4)
        if inner in _PING_IDS:
            return "ping"
    if cid in _PING_IDS:
        return "ping"
    return "request"


@final
class WireMonitor:
    """Phase, byte counts and the wire governor of one client's current connection.

    Args:
        proxy: The proxy's name for messages (None: the direct lane); never a secret.
        max_messages_per_call: Ceiling of messages while one call is in flight (>= 1).
        max_extra_messages_per_s: Ceiling of messages per `WINDOW_S` beyond the new requests
            and one ack per new request (or call started) in the window (>= 1).
        clock: Seconds, monotonic (tests pass a fake).

    Attributes:
        phase: How far the current connection got.
        bytes_sent: Bytes written to the socket after the TCP connect (proxy handshake
            excluded for SOCKS/HTTP; the MTProxy header included).
        bytes_received: Bytes read from the tunnel (after the proxy handshake).
        messages: Messages counted on this connection, by kind.
        reasons: Why Telethon sent again (``bad_server_salt``, ``bad_msg_notification``,
            ``msg_resend_req`` ...), and ``resend`` for each message it sent twice.
        fault: The `ProtocolViolation` recorded for this connection, or None.
        open_by: Trio clock seconds after which the next connect must not open its TCP
            connection (it raises `StartMissed` instead), or None: no limit. Set for one
            connect by the account (cluster mode, `mtpoold._lane.ProxyLane.slot`).
    """

    def __init__(
        self,
        *,
        proxy: str | None,
        max_messages_per_call: int = _TELEGRAM_DEFAULTS.wire_max_messages_per_call,
        max_extra_messages_per_s: int = _TELEGRAM_DEFAULTS.wire_max_extra_messages_per_s,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.proxy = proxy
        self.max_messages_per_call = max_messages_per_call
        self.max_extra_messages_per_s = max_extra_messages_per_s
        self._clock = clock
        self._listeners: dict[int, Callable[[], None]] = {}
        self._next_listener = 0
        self.open_by: float | None = None
        self.new_connection()

    def __repr__(self) -> str:
        return (
            f"<WireMonitor proxy={self.proxy} phase={self.phase.value}"
            f" sent={self.bytes_sent} received={self.bytes_received}"
            f" messages={sum(self.messages.values())} fault={self.fault is not None}>"
        )

    # -- phase -----------------------------------------------------------------------------

    def new_connection(self) -> None:
        """Forget the previous connection: phase ``PROXY_TCP``, counters at 0, no fault."""
        self.phase = ConnectPhase.PROXY_TCP
        self.bytes_sent = 0
        self.bytes_received = 0
        self.messages: collections.Counter[str] = collections.Counter()
        self.reasons: collections.Counter[str] = collections.Counter()
        self.fault: ProtocolViolation | None = None
        self._window: collections.deque[tuple[float, str]] = collections.deque()
        #: What ``_window`` holds, by kind (kept with it: O(1) per message, not a scan).
        self._in_window: collections.Counter[str] = collections.Counter()
        self._call_started_at: collections.deque[float] = collections.deque()
        self._call_messages: int | None = None
        self._recent: collections.deque[bytes] = collections.deque(maxlen=_RECENT_BODIES)

    def check_open_by(self, now: float) -> None:
        """Raise `StartMissed` if ``now`` (trio clock, s) is past `open_by`."""
        if self.open_by is not None and now > self.open_by:
            raise StartMissed(now - self.open_by)

    def advance(self, phase: ConnectPhase) -> None:
        """Move to ``phase`` (never backwards)."""
        if phase is not self.phase and _PHASE_ORDER[phase] > _PHASE_ORDER[self.phase]:
            self.phase = phase

    @property
    def answered(self) -> bool:
        """Whether the DC has answered on this connection."""
        return self.phase is ConnectPhase.DC_ANSWERED

    def blame(self, what: str) -> ProxyUnavailable | None:
        """The proxy's failure for a connection that ends now, if the DC never answered.

        Args:
            what: What happened, e.g. ``"closed the connection"``, ``"did not answer within
                5 s"``; the byte counts are appended.

        Returns:
            ``ProxyUnavailable(proxy, phase, detail)``, or None once the DC has answered.
        """
        if self.answered:
            return None
        detail = what
        if self.phase is ConnectPhase.DC_FIRST_BYTES:
            detail += f" after {self.bytes_sent} bytes sent, {self.bytes_received} received"
        return ProxyUnavailable(self.proxy, self.phase, redact(detail))

    # -- faults ----------------------------------------------------------------------------

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` when a fault is recorded; returns the unsubscribe function."""
        key = self._next_listener
        self._next_listener += 1
        self._listeners[key] = callback

        def unsubscribe() -> None:
            self._listeners.pop(key, None)

        return unsubscribe

    def report(self, fault: ProtocolViolation) -> None:
        """Record ``fault`` for this connection (the first one wins) and wake the waiters."""
        if self.fault is not None:
            return
        self.fault = fault
        for callback in list(self._listeners.values()):
            callback()

    def note(self, reason: str) -> None:
        """Count one reason Telethon will send again (``bad_server_salt`` ...)."""
        self.reasons[reason] += 1

    # -- the governor ----------------------------------------------------------------------

    def begin_call(self) -> None:
        """A call (or a connect) starts on this connection: its own per-call count.

        Bodies sent before it are no longer taken for resends: the same read asked again
        (``channels.getMessages`` of the same ids, a routine order check on the account that
        knows the channel) is a new request, while Telethon resends what is pending within
        the call. (A request a cancelled call left pending and Telethon resends during the
        next call then counts as new; the per-call ceiling still bounds it.)
        """
        self._call_messages = 0
        self._call_started_at.append(self._clock())
        self._recent.clear()

    def end_call(self) -> None:
        """The call ended; messages sent now (acks, pings) count in the window only."""
        self._call_messages = None

    def count(self, data: bytes) -> None:
        """Count one outgoing message body (called as Telethon packs it).

        Records a fault (see `report`) when a ceiling is passed; never raises.
        """
        kind = message_kind(data)
        if kind == "container":
            return
        counted = kind
        if kind in ("request", "ping"):
            if data in self._recent:
                self.reasons["resend"] += 1
                counted = "resend"
            else:
                self._recent.append(data)
        self.messages[kind] += 1
        now = self._clock()
        self._window.append((now, counted))
        self._in_window[counted] += 1
        horizon_at = now - WINDOW_S
        while self._window and self._window[0][0] <= horizon_at:
            self._in_window[self._window.popleft()[1]] -= 1
        while self._call_started_at and self._call_started_at[0] <= horizon_at:
            self._call_started_at.popleft()
        if self.fault is not None:
            return
        if self._call_messages is not None:
            self._call_messages += 1
            if self._call_messages > self.max_messages_per_call:
                self.report(
                    ProtocolViolation(
                        f"{self._call_messages} messages on the wire for one call"
                        f"{self._why()} (telegram.wire_max_messages_per_call ="
                        f" {self.max_messages_per_call}); connection dropped"
                    )
                )
                return
        # Allowed without limit: each new request (a resend is not one) and one ack per new
        # request or call started; everything else — resends, pings, surplus acks, service
        # answers — is what Telethon sends on its own.
        calls = len(self._call_started_at)
        requests = self._in_window["request"]
        acks = self._in_window["ack"]
        others = len(self._window) - requests - acks
        extra = others + max(0, acks - max(requests, calls))
        if extra > self.max_extra_messages_per_s:
            self.report(
                ProtocolViolation(
                    f"{len(self._window)} messages in {WINDOW_S:g} s for {requests} new"
                    f" requests{self._why()} (telegram.wire_max_extra_messages_per_s ="
                    f" {self.max_extra_messages_per_s}); connection dropped"
                )
            )

    def _why(self) -> str:
        parts = [f"{n} {reason}" for reason, n in self.reasons.most_common() if reason != "resend"]
        resends = self.reasons["resend"]
        if resends and parts:
            return f" ({resends} resends after {', '.join(parts)})"
        if resends:
            return f" ({resends} resends)"
        if parts:
            return f" (after {', '.join(parts)})"
        return ""


# --- the connection ---------------------------------------------------------------------------


def _set_nodelay(writer: Any) -> None:
    """Set TCP_NODELAY on the socket under an asyncio writer, if it is a TCP one.

    python-socks opens the socket to a proxy with protocol number 0, so asyncio does not set
    TCP_NODELAY on it (``asyncio.base_events._set_nodelay`` checks for IPPROTO_TCP): every
    MTProto request through a proxy then waited ~40 ms for Nagle and delayed ACKs
    (measured in bench/RESULTS.md, warm-pool scenario). Setting it here costs nothing.
    """
    sock = writer.get_extra_info("socket") if writer is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:  # pragma: no cover - a socket closed under us: the next read says so
        pass


class _CountingReader:
    """An ``asyncio.StreamReader`` stand-in that counts what is read."""

    def __init__(self, reader: asyncio.StreamReader, monitor: WireMonitor) -> None:
        self._reader = reader
        self._monitor = monitor

    async def readexactly(self, n: int) -> bytes:
        try:
            data = await self._reader.readexactly(n)
        except asyncio.IncompleteReadError as exc:
            self._monitor.bytes_received += len(exc.partial)
            raise
        self._monitor.bytes_received += len(data)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)


class _CountingWriter:
    """An ``asyncio.StreamWriter`` stand-in that counts what is written."""

    def __init__(self, writer: asyncio.StreamWriter, monitor: WireMonitor) -> None:
        self._writer = writer
        self._monitor = monitor

    def write(self, data: bytes) -> None:
        self._monitor.bytes_sent += len(data)
        self._writer.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._writer, name)


def _proxy_failure_text(exc: BaseException) -> str:
    """What a proxy-side connect error means, in a few words (no addresses, no secrets)."""
    name = type(exc).__name__
    if isinstance(exc, ConnectionRefusedError):
        return "refused the connection"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError) or "Timeout" in name:
        return "did not answer in time"
    if isinstance(exc, asyncio.IncompleteReadError | ConnectionResetError | BrokenPipeError):
        return "closed the connection"
    text = str(exc).strip()
    if name in ("ProxyError", "ReplyError", "ConnectionErrorExtra") and text:
        return f"failed the handshake: {text}"
    if isinstance(exc, ConnectionError) and "closed the connection" in text:
        return "closed the connection"
    return f"failed: {name}" + (f": {text}" if text else "")


async def _socks_connect(
    conn: Connection, monitor: WireMonitor, timeout_s: float | None, local_addr: Any
) -> socket.socket:
    """python-socks' connect in two steps, so the phase shows which one failed: TCP to the
    proxy (``PROXY_TCP``), then its SOCKS/HTTP handshake (``PROXY_HANDSHAKE``).

    Uses python-socks' own pieces (private modules: pyproject pins python-socks 3.x).
    """
    proxy = conn._proxy
    parsed = conn._parse_proxy(**proxy) if isinstance(proxy, dict) else conn._parse_proxy(*proxy)
    protocol, host, port, username, password, rdns = parsed
    loop = asyncio.get_running_loop()
    started_at = loop.time()
    monitor.check_open_by(started_at)  # trio-asyncio's loop time is trio's clock
    sock = await asyncio.wait_for(
        connect_tcp(host=host, port=port, loop=loop, local_addr=local_addr), timeout_s
    )
    monitor.advance(ConnectPhase.PROXY_HANDSHAKE)
    remaining = None if timeout_s is None else max(0.0, timeout_s - (loop.time() - started_at))
    stream = AsyncioSocketStream(sock=sock, loop=loop)
    connector = create_connector(
        proxy_type=protocol,
        username=username,
        password=password,
        rdns=rdns,
        resolver=Resolver(loop=loop),
    )
    try:
        await asyncio.wait_for(
            connector.connect(stream=stream, host=conn._ip, port=conn._port), remaining
        )
    except BaseException:
        sock.close()
        raise
    return sock


def monitored_connection(
    base: type[Connection], monitor: WireMonitor, sink: Callable[[BaseException], None]
) -> type[Connection]:
    """A subclass of Telethon's connection class ``base`` that reports to ``monitor``.

    It advances the phase (TCP to the proxy -> handshake -> first bytes -> DC answered),
    counts bytes, sets TCP_NODELAY, refuses to send once the monitor holds a fault (raising
    that `ProtocolViolation`: Telethon's send loop then drops the connection and fails
    what is pending with it), and turns a failed connect into `ProxyUnavailable` with the
    phase and what happened. That error also goes to ``sink``: Telethon swallows
    ``OSError`` from its connect attempts and raises a generic ``ConnectionError`` after
    the last one, and the client re-raises the real cause.
    """
    is_mtproxy = issubclass(base, TcpMTProxy)

    async def connect(
        self: Connection,
        timeout: Any = None,  # noqa: ASYNC109 - overrides Telethon's Connection.connect signature
        ssl: Any = None,
    ) -> None:
        monitor.new_connection()
        monitor.check_open_by(asyncio.get_running_loop().time())
        try:
            await base.connect(self, timeout=timeout, ssl=ssl)
        except StartMissed:
            raise  # nothing was opened: not the proxy's failure
        except Exception as exc:
            # Telethon's disconnect() is a no-op before `_connected` is set, so a connect that
            # failed after the socket opened (an MTProxy hanging up on its header) would leak it.
            writer = self._writer
            if writer is not None and not self._connected:
                writer.close()
            what = _proxy_failure_text(exc)
            if is_mtproxy and "initial payload" in str(exc):
                what = "closed the connection after the MTProxy header (wrong secret or transport?)"
            blamed = monitor.blame(what) or exc
            sink(blamed)
            if blamed is exc:
                raise
            raise blamed from exc
        monitor.advance(ConnectPhase.DC_FIRST_BYTES)

    async def _proxy_connect(self: Connection, timeout: Any = None, local_addr: Any = None) -> Any:  # noqa: ASYNC109
        return await _socks_connect(self, monitor, timeout, local_addr)

    def _init_conn(self: Connection) -> None:
        # The TCP connection (and a SOCKS/HTTP tunnel) is up: count from here on.
        self._reader = _CountingReader(self._reader, monitor)
        self._writer = _CountingWriter(self._writer, monitor)
        _set_nodelay(self._writer)
        monitor.advance(ConnectPhase.PROXY_HANDSHAKE if is_mtproxy else ConnectPhase.DC_FIRST_BYTES)
        base._init_conn(self)

    async def _recv(self: Connection) -> bytes:
        try:
            data: bytes = await base._recv(self)
        except InvalidChecksumError as exc:
            # Telethon hands it to its sender, which logs it and reconnects (off: it just
            # drops); before the DC answered, the failed connect is the proxy's.
            if monitor.answered:
                monitor.report(
                    ProtocolViolation(f"corrupted transport packet from the DC: {redact(str(exc))}")
                )
            raise
        monitor.advance(ConnectPhase.DC_ANSWERED)
        return data

    def send(self: Connection, data: bytes) -> Any:
        if monitor.fault is not None:
            raise monitor.fault
        return base.send(self, data)

    namespace = {
        "connect": connect,
        "_proxy_connect": _proxy_connect,
        "_init_conn": _init_conn,
        "_recv": _recv,
        "send": send,
        "__module__": __name__,
    }
    if issubclass(base, ObfuscatedConnection) and not is_mtproxy:  # pragma: no cover
        del namespace["_init_conn"]  # obfuscated2 to the DC itself: not used by mtpoold
    return type(base.__name__, (base,), namespace)


# --- the sender ---------------------------------------------------------------------------


def install_sender_hooks(tg: Any, monitor: WireMonitor) -> None:
    """Attach ``monitor`` to a ``TelegramClient``'s MTProto sender (instance attributes only).

    - ``MTProtoState.write_data_as_message``: every message Telethon packs is counted
      (`WireMonitor.count`) before it is encrypted and written;
    - ``MTProtoState.decrypt_message_data``: a ``SecurityError`` (msg_key mismatch, wrong
      session id ...) is recorded as a fault, then re-raised for Telethon to log and drop;
    - the sender's handlers for ``bad_server_salt``, ``bad_msg_notification``,
      ``msgs_state_req`` and ``msg_resend_req`` note the reason before Telethon resends.
    """
    sender = tg._sender
    state = sender._state
    write = state.write_data_as_message
    decrypt = state.decrypt_message_data

    def write_data_as_message(
        buffer: Any, data: bytes, content_related: bool, *, after_id: Any = None
    ) -> Any:
        monitor.count(data)
        return write(buffer, data, content_related, after_id=after_id)

    def decrypt_message_data(body: bytes) -> Any:
        try:
            return decrypt(body)
        except SecurityError as exc:
            monitor.report(
                ProtocolViolation(f"security error in a reply from the DC: {redact(str(exc))}")
            )
            raise

    state.write_data_as_message = write_data_as_message
    state.decrypt_message_data = decrypt_message_data
    for cid, reason in _REASON_HANDLERS.items():
        handler = sender._handlers.get(cid)
        if handler is not None:
            sender._handlers[cid] = _noting(handler, monitor, reason)


def _noting(handler: Callable[[Any], Any], monitor: WireMonitor, reason: str) -> Any:
    async def noted(message: Any) -> Any:
        monitor.note(reason)
        return await handler(message)

    return noted
