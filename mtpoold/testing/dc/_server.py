"""The loopback DC: a Trio TCP server speaking MTProto 2.0 to unmodified Telethon clients."""

from __future__ import annotations

import collections
import gzip
import itertools
import logging
import math
import os
import random
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final, Literal, NoReturn, final

import attrs
import trio
from telethon.errors import TypeNotFoundError
from telethon.extensions import BinaryReader
from telethon.sessions import StringSession
from telethon.tl import TLRequest, functions, types
from telethon.tl.alltlobjects import tlobjects

from . import _crypto
from ._faults import (
    UNPARSEABLE_CONSTRUCTOR_ID,
    BlackholeAction,
    CorruptReplyAction,
    DelayAction,
    DropAction,
    Faults,
    RpcErrorAction,
    SaltStormAction,
    UnparseableReplyAction,
    WrongSessionAction,
)
from ._handlers import Answerer, RpcFailure, method_name, unwrap
from ._limits import FLOOD_CODE, Limits
from ._session import MSG_CONTAINER_ID, AuthKeyEntry, ConnectionState, ProtocolError
from ._transport import PeerClosed, ServerTransport, TransportError
from ._world import Channel, User, World, default_world

log = logging.getLogger("mtpoold.testing.dc")

DEFAULT_DC_ID: Final = 2
DEFAULT_SEED: Final = "mtpoold-loopback-dc"
RPC_RESULT_ID: Final = 0xF35C6D01
GZIP_PACKED_ID: Final = 0x3072CFA1
GZIP_THRESHOLD_BYTES: Final = 512  # results larger than this are sent gzip_packed if smaller
MAX_UNZIPPED_BYTES: Final = 4 * 1024 * 1024  # 4 MiB cap on a client's gzip_packed request
_MSGS_ACK_ID: Final = types.MsgsAck.CONSTRUCTOR_ID
_PING_ID: Final = functions.PingRequest.CONSTRUCTOR_ID
_PING_DELAY_ID: Final = functions.PingDelayDisconnectRequest.CONSTRUCTOR_ID
_IGNORED_SERVICE_IDS: Final = frozenset(
    c.CONSTRUCTOR_ID
    for c in (
        types.MsgsStateReq,
        types.MsgResendReq,
        types.MsgsAllInfo,
        types.MsgDetailedInfo,
        types.MsgNewDetailedInfo,
        types.MsgsStateInfo,
    )
)


@attrs.frozen
class CallRecord:
    """One RPC call as it reached the DC (after unwrapping ``invokeWithLayer`` & co).

    Attributes:
        time: ``trio.current_time()`` at arrival, seconds.
        user_id: the user the auth key is logged in as, ``None`` if not logged in.
        auth_key_id: id of the auth key that sent it.
        method: TL name as Telethon spells it, e.g. ``"help.GetConfig"``.
        connection_id: serial number of the TCP connection (1, 2, ... per DC).
        msg_id: the client's msg_id.
    """

    time: float
    user_id: int | None
    auth_key_id: int
    method: str
    connection_id: int
    msg_id: int


@attrs.frozen
class WireMessage:
    """One MTProto message the DC received (containers are unpacked into their messages).

    Attributes:
        time: ``trio.current_time()`` at arrival, seconds.
        connection_id: serial number of the TCP connection.
        auth_key_id: id of the auth key that encrypted it, ``None`` for a plain (unencrypted)
            key-exchange message.
        user_id: the user that key is logged in as, ``None`` if not logged in (or plain).
        msg_id: the client's msg_id (inner msg_id for a message in a container).
        constructor_id: the first 4 bytes of its body (``gzip_packed`` is not unpacked).
        name: the TL class name Telethon uses for it, e.g. ``"MsgsAck"``, ``"PingRequest"``,
            ``"InvokeWithoutUpdatesRequest"``, or ``"#xxxxxxxx"`` if unknown (a ``gzip_packed``
            message is logged as the message it packs).
        method: for an RPC call the method as in :attr:`CallRecord.method` (wrappers such as
            ``invokeWithLayer`` unwrapped), e.g. ``"help.GetNearestDc"``; ``None`` for service
            and plain messages and for messages the DC did not process (bad salt,
            :meth:`DC.blackhole_all`).
    """

    time: float
    connection_id: int
    auth_key_id: int | None
    user_id: int | None
    msg_id: int
    constructor_id: int
    name: str
    method: str | None = None


@attrs.frozen
class WireMessages:
    """A selection of :attr:`DC.wire_log`: ``count`` messages at ``times`` (seconds, ascending).

    Attributes:
        count: how many messages.
        times: their arrival times, ``trio.current_time()`` seconds.
        messages: the :class:`WireMessage` records themselves.
    """

    count: int
    times: list[float]
    messages: list[WireMessage]


#: How a connection ended (:attr:`ConnectionRecord.closed_by`).
ClosedBy = Literal["client", "ping_delay_disconnect", "dc"]


@attrs.define(eq=False)
class ConnectionRecord:
    """One TCP connection the DC accepted: when it was open and which auth keys used it.

    Attributes:
        id: serial number of the connection (as :attr:`CallRecord.connection_id`).
        peer: the client's ``(host, port)`` as the DC sees it (through a relay: the relay's
            :attr:`~mtpoold.testing.RelayConnection.upstream_local`).
        opened_at: ``trio.current_time()`` when accepted, seconds.
        closed_at: when the DC finished with it (socket closed), seconds; ``None`` while open.
        auth_key_ids: ids of the auth keys of the encrypted messages it carried (a key is
            *used* on a connection once one message encrypted with it arrived there, whatever
            the DC then did with the message), in first-use order. Empty for a connection that
            only exchanged a key or carried nothing.
        user_ids: users those keys were logged in as at first use (``None`` entries are left
            out), in first-use order.
        closed_by: ``"client"`` (the client hung up or the socket broke),
            ``"ping_delay_disconnect"`` (the timer of the last ``ping_delay_disconnect`` ran
            out), ``"dc"`` (the DC closed it: :meth:`DC.disconnect_all`, a ``drop`` fault, a
            protocol error, the server stopping); ``None`` while open.
    """

    id: int
    peer: tuple[str, int]
    opened_at: float
    closed_at: float | None = None
    auth_key_ids: list[int] = attrs.field(factory=list)
    user_ids: list[int] = attrs.field(factory=list)
    closed_by: ClosedBy | None = None

    def open_during(self, start: float, end: float) -> bool:
        """Whether it was open at some moment strictly inside ``(start, end)`` (seconds)."""
        closed = self.closed_at if self.closed_at is not None else math.inf
        return self.opened_at < end and start < closed


@attrs.frozen
class AuthKeyOverlap:
    """Two connections that used one auth key and were open at the same time.

    Attributes:
        auth_key_id: the key both used.
        first: the connection opened first (``first.opened_at <= second.opened_at``).
        second: the other; it opened before ``first`` closed (``second.opened_at <
            first.closed_at``, or ``first`` is still open).
        seconds: how long both were open, seconds (up to now for connections still open).
    """

    auth_key_id: int
    first: ConnectionRecord
    second: ConnectionRecord
    seconds: float


def _tl_name(constructor_id: int) -> str:
    if constructor_id == MSG_CONTAINER_ID:
        return "MessageContainer"
    if constructor_id == GZIP_PACKED_ID:
        return "GzipPacked"
    cls = tlobjects.get(constructor_id)
    return cls.__name__ if cls is not None else f"#{constructor_id:08x}"


@attrs.frozen
class DCStatistics:
    """Live counts of a DC.

    Attributes:
        connections: TCP connections open now.
        connections_total: connections accepted since start.
        auth_keys: auth keys known (pre-authorized and exchanged).
        authorized_keys: those logged in as a user.
        calls: RPC calls recorded.
    """

    connections: int
    connections_total: int
    auth_keys: int
    authorized_keys: int
    calls: int


class _Drop(Exception):
    """Close this connection now (the ``drop`` fault)."""


def _rpc_error(req_msg_id: int, code: int, message: str) -> bytes:
    return struct.pack("<Iq", RPC_RESULT_ID, req_msg_id) + bytes(types.RpcError(code, message))


@final
class DC:
    """A loopback Telegram data center.

    Args:
        world: what it serves; :func:`default_world` if ``None``.
        host: address to listen on.
        port: TCP port; 0 picks a free one (see :attr:`port` once serving).
        seed: derives the RSA key (unless ``rsa_private_pem`` is given), the pre-authorized auth
            keys and the server salts. Same world + seed + port = the same sessions work.
        dc_id: the DC id it claims to be (Telethon's default DC is 2).
        rsa_private_pem: a PKCS#1 ``RSA PRIVATE KEY`` PEM to use instead of the seeded key.

    Attributes:
        world, host, port, dc_id: as given (``port`` is the bound port once serving).
        faults: the :class:`Faults` book consulted for every call.
        limits: Telegram's limits (:class:`~mtpoold.testing.dc._limits.Limits`): per-account,
            per-method budgets and floods answering ``FLOOD_WAIT_X`` for that method only,
            slow mode answering ``SLOWMODE_WAIT_X``; loaded from the world when serving
            starts (``limits``, ``floods``, ``Channel.slowmode_s``), settable while running.
            Consulted for every call a fault rule did not take. Its clock is the DC's:
            ``trio.current_time()``.
        calls: every :class:`CallRecord`, in arrival order. Grows without bound: clear it in
            long benchmarks (``dc.calls.clear()``).
        wire_log: every :class:`WireMessage` received, in arrival order: all MTProto messages
            (acks, pings, resends, service messages, calls, plain key-exchange messages), also
            those refused for a bad salt and those swallowed by :meth:`blackhole_all`. Grows
            without bound like ``calls`` (``dc.wire_log.clear()``).
        connection_log: a :class:`ConnectionRecord` for every connection accepted, in accept
            order (open ones too, ``closed_at is None``): its open/close interval and the auth
            keys used on it. :meth:`auth_key_overlaps` reads it. Grows without bound
            (``dc.connection_log.clear()`` forgets them; records of open connections go on
            being updated but are no longer listed).

    Keepalive as Telegram's servers do it (core.telegram.org/mtproto/service_messages,
    "Deferred connection closure + PING"): ``ping_delay_disconnect(ping_id, disconnect_delay)``
    is answered like ``ping`` and (re)arms a timer of the connection; the DC closes the
    connection once ``disconnect_delay`` seconds pass without a newer
    ``ping_delay_disconnect`` on it (other traffic does not reset the timer). Bare or wrapped
    in ``invokeWithoutUpdates`` / ``invokeWithLayer`` alike; a ``disconnect_delay`` <= 0
    disarms the timer (the docs do not say; our choice). The timer runs on trio's clock.

    DC-wide knobs, apart from the fault book (settable while serving, also from the shell:
    ``python -m mtpoold.testing.dc``, :class:`~mtpoold.testing.dc.DCShell`):
    :meth:`set_latency`, :meth:`set_drop_rate`, :meth:`blackhole_all`,
    :meth:`refuse_connections`, :meth:`disconnect_all`, :meth:`revoke`.

    Resource handling: one Trio task per connection plus one per delayed answer, all in the
    nursery of :meth:`serve`; leaving it closes every connection.
    """

    def __init__(
        self,
        world: World | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: str | bytes | int = DEFAULT_SEED,
        dc_id: int = DEFAULT_DC_ID,
        rsa_private_pem: str | bytes | None = None,
    ) -> None:
        self.world = world if world is not None else default_world()
        self.host = host
        self.port = port
        self.dc_id = dc_id
        self._seed = _crypto.seed_bytes(seed)
        self._rsa = (
            _crypto.ServerRsaKey.from_pem(rsa_private_pem)
            if rsa_private_pem is not None
            else _crypto.ServerRsaKey.from_seed(self._seed)
        )
        self.faults = Faults(resolve_user=self._user_id)
        self.limits = Limits(
            resolve_user=self._user_id, resolve_channel=self._channel_id, clock=trio.current_time
        )
        self.calls: list[CallRecord] = []
        self.wire_log: list[WireMessage] = []
        self.connection_log: list[ConnectionRecord] = []
        self._counters: dict[int | None, collections.Counter[str]] = {}
        self._keys: dict[int, AuthKeyEntry] = {}
        self._refusing = False
        self._blackholing = False
        self._latency_ms = 0.0
        self._drop_rate = 0.0
        self._random = random.Random(self._seed)
        self._conn_ids = itertools.count(1)
        self._connections_total = 0
        self._connections: dict[int, _Connection] = {}
        self._answerer: Answerer | None = None
        self._limits_loaded = False
        for user in self.world.users:
            entry = AuthKeyEntry.create(self.auth_key(user.id), 0, user.id)
            entry.salt = self._salt_for(entry.key_id)
            self._keys[entry.key_id] = entry

    # -- public surface -----------------------------------------------------------------------

    @property
    def public_key_pem(self) -> str:
        """The RSA public key (PKCS#1 PEM) for ``telethon.crypto.rsa.add_key(pem, old=False)``."""
        return self._rsa.public_pem

    @property
    def rsa_fingerprint(self) -> int:
        """The fingerprint of :attr:`public_key_pem` as sent in ``resPQ``."""
        return self._rsa.fingerprint

    def _user_id(self, user: int | str | User) -> int:
        if isinstance(user, User):
            return user.id
        return self.world.user(user).id

    def _channel_id(self, channel: int | str | Channel) -> int:
        if isinstance(channel, Channel):
            return channel.id
        found = (
            self.world.channel_by_id(channel)
            if isinstance(channel, int)
            else self.world.by_username(channel)
        )
        if not isinstance(found, Channel):
            raise KeyError(channel)
        return found.id

    def auth_key(self, user: int | str | User) -> bytes:
        """The pre-authorized 256-byte auth key of ``user`` (phone, user id or :class:`User`).

        Raises:
            KeyError: if the user is not in the world.
        """
        u = self.world.user(self._user_id(user))
        return _crypto.derive_auth_key(self._seed, u.phone or f"id:{u.id}")

    def session_string(self, user: int | str | User) -> str:
        """A Telethon ``StringSession`` string already logged in as ``user``. Test-only secret.

        It holds this DC's id, host, port and the user's seeded auth key, so it stays valid for
        a DC restarted with the same world, seed and port.

        Raises:
            KeyError: if the user is not in the world.
        """
        from telethon.crypto import AuthKey

        session = StringSession()
        session.set_dc(self.dc_id, self.host, self.port)
        session.auth_key = AuthKey(self.auth_key(user))
        return str(session.save())

    def counters(self, user: int | str | User | None = None) -> collections.Counter[str]:
        """Calls per method name made by ``user`` (``None``: by keys not logged in).

        The one request counter of the DC: every RPC call that reached it, per (account,
        method), after unwrapping ``invokeWithLayer`` & co, whatever it was answered — calls
        refused with FLOOD_WAIT or SLOWMODE_WAIT by :attr:`limits` included (they were sent;
        ``dc.limits.refused(user)`` counts those apart). A snapshot: subtract two to count a
        phase (``after - before``).

        Raises:
            KeyError: if the user is not in the world.
        """
        user_id = None if user is None else self._user_id(user)
        return collections.Counter(self._counters.get(user_id, {}))

    def total_counters(self) -> collections.Counter[str]:
        """:meth:`counters` summed over every caller (logged in or not): all the calls per
        method that reached this DC."""
        total: collections.Counter[str] = collections.Counter()
        for counter in self._counters.values():
            total.update(counter)
        return total

    def wire_messages(
        self,
        user: int | str | User | None = None,
        *,
        auth_key_id: int | None = None,
        connection_id: int | None = None,
        since: float | None = None,
    ) -> WireMessages:
        """The MTProto messages received, filtered (each ``None`` filter matches everything).

        Args:
            user: only messages of keys logged in as this user (phone, id or :class:`User`).
                ``None``: every message, plain key-exchange ones included.
            auth_key_id: only messages encrypted with this auth key id.
            connection_id: only messages of this TCP connection.
            since: only messages that arrived at or after this ``trio.current_time()``, s.

        Raises:
            KeyError: if the user is not in the world.
        """
        user_id = None if user is None else self._user_id(user)
        picked = [
            m
            for m in self.wire_log
            if (user_id is None or m.user_id == user_id)
            and (auth_key_id is None or m.auth_key_id == auth_key_id)
            and (connection_id is None or m.connection_id == connection_id)
            and (since is None or m.time >= since)
        ]
        return WireMessages(len(picked), [m.time for m in picked], picked)

    def refuse_connections(self, refuse: bool = True) -> None:
        """Close every new TCP connection as soon as it is accepted (existing ones live on)."""
        self._refusing = refuse

    def blackhole_all(self, blackhole: bool = True) -> None:
        """Keep reading every connection but answer nothing at all (handshakes included)."""
        self._blackholing = blackhole

    def set_latency(self, ms: float) -> None:
        """Send every answer to an RPC call ``ms`` milliseconds late (0: at once), results and
        errors alike (FLOOD_WAIT too); the call is acknowledged (``msgs_ack``) at once.

        Unlike a :func:`delay` fault it is not in the fault book: floods, budgets and other
        rules still apply. Pings and handshakes are not delayed.

        Raises:
            ValueError: if ``ms`` is negative or not finite.
        """
        if isinstance(ms, bool) or not math.isfinite(ms) or ms < 0:
            raise ValueError(f"latency must be a number of ms >= 0: {ms!r}")
        self._latency_ms = float(ms)

    @property
    def latency_ms(self) -> float:
        """The latency of :meth:`set_latency`, milliseconds."""
        return self._latency_ms

    def set_drop_rate(self, probability: float) -> None:
        """Close the connection instead of answering, for each RPC call with ``probability``
        (0: never, 1: every call). Drawn from a generator seeded with the DC's seed, so a run
        with the same calls drops the same ones. The call is counted (it reached the DC) and
        takes no fault rule.

        Raises:
            ValueError: unless 0 <= ``probability`` <= 1.
        """
        if isinstance(probability, bool) or not 0.0 <= probability <= 1.0:
            raise ValueError(f"drop probability must be between 0 and 1: {probability!r}")
        self._drop_rate = float(probability)

    @property
    def drop_rate(self) -> float:
        """The probability of :meth:`set_drop_rate`."""
        return self._drop_rate

    @property
    def blackholing(self) -> bool:
        """Whether :meth:`blackhole_all` is on."""
        return self._blackholing

    @property
    def refusing(self) -> bool:
        """Whether :meth:`refuse_connections` is on."""
        return self._refusing

    def revoke(
        self, user: int | str | User | None = None, *, auth_key_id: int | None = None
    ) -> int:
        """Log auth keys out, as when a session is terminated from another device: the next
        calls on them that need a login are answered 401 ``AUTH_KEY_UNREGISTERED``. Open
        connections stay up. A restarted DC (same seed) knows the keys as logged in again.

        Args:
            user: every key logged in as this user (phone, id or :class:`User`).
            auth_key_id: that one key (as in :attr:`CallRecord.auth_key_id`).

        Returns:
            How many keys were logged out (0 if they already were).

        Raises:
            KeyError: if ``user`` is not in the world or no key has ``auth_key_id``.
            ValueError: unless exactly one of ``user`` and ``auth_key_id`` is given.
        """
        if (user is None) == (auth_key_id is None):
            raise ValueError("revoke takes a user or an auth_key_id")
        if auth_key_id is not None:
            entries = [self._keys[auth_key_id]]
        else:
            user_id = self._user_id(user)  # type: ignore[arg-type]
            entries = [e for e in self._keys.values() if e.user_id == user_id]
        revoked = 0
        for entry in entries:
            if entry.user_id is not None:
                entry.user_id = None
                entry.pending_2fa_user = None
                revoked += 1
        return revoked

    def auth_key_ids(self, user: int | str | User) -> list[int]:
        """Ids of the auth keys logged in as ``user`` now.

        Raises:
            KeyError: if the user is not in the world.
        """
        user_id = self._user_id(user)
        return [e.key_id for e in self._keys.values() if e.user_id == user_id]

    def auth_key_overlaps(self) -> list[AuthKeyOverlap]:
        """Every pair of connections of :attr:`connection_log` that used the same auth key and
        were open at the same time: the thing a fleet of daemons sharing accounts must never do
        (Telegram serves one auth key on two connections, but two clients using one key at once
        break each other's msg_id/seq_no and the session).

        A connection counts for a key only if that key was used on it (see
        :attr:`ConnectionRecord.auth_key_ids`); intervals are ``[opened_at, closed_at)`` on the
        DC's (trio's) clock, an open connection's running to now. Connections that touch (one
        closes at the moment the other opens) do not overlap.

        Returns:
            A list of :class:`AuthKeyOverlap` ``(auth_key_id, first, second, seconds)``, by
            ``auth_key_id`` then ``first.opened_at``; empty if none overlapped.
        """
        now = trio.current_time()
        by_key: dict[int, list[ConnectionRecord]] = {}
        for record in self.connection_log:
            for key_id in record.auth_key_ids:
                by_key.setdefault(key_id, []).append(record)
        found: list[AuthKeyOverlap] = []
        for key_id in sorted(by_key):
            records = sorted(by_key[key_id], key=lambda r: (r.opened_at, r.id))
            for i, first in enumerate(records):
                first_end = first.closed_at if first.closed_at is not None else now
                for second in records[i + 1 :]:
                    if second.opened_at >= first_end:
                        break
                    second_end = second.closed_at if second.closed_at is not None else now
                    both = min(first_end, second_end) - second.opened_at
                    found.append(AuthKeyOverlap(key_id, first, second, both))
        return found

    def connections_of(self, user: int | str | User) -> list[ConnectionRecord]:
        """The records of :attr:`connection_log` on which a key logged in as ``user`` (phone,
        id or :class:`User`) was used, in accept order.

        Raises:
            KeyError: if the user is not in the world.
        """
        user_id = self._user_id(user)
        return [r for r in self.connection_log if user_id in r.user_ids]

    def disconnect_all(self) -> None:
        """Close every open client connection now (clients see the server hang up)."""
        for conn in list(self._connections.values()):
            conn.close()

    def is_authorized(self, auth_key: bytes) -> int | None:
        """The user id ``auth_key`` is logged in as, or ``None``."""
        entry = self._keys.get(_crypto.auth_key_id(auth_key))
        return entry.user_id if entry is not None else None

    def statistics(self) -> DCStatistics:
        """Live counts, see :class:`DCStatistics`."""
        return DCStatistics(
            connections=len(self._connections),
            connections_total=self._connections_total,
            auth_keys=len(self._keys),
            authorized_keys=sum(1 for e in self._keys.values() if e.user_id is not None),
            calls=len(self.calls),
        )

    def __repr__(self) -> str:
        return (
            f"<DC {self.dc_id} at {self.host}:{self.port}, {len(self._connections)} connections,"
            f" {len(self.calls)} calls>"
        )

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> NoReturn:
        """Listen and serve until cancelled.

        Calls ``task_status.started(self)`` once the socket is bound (``self.port`` is then
        the real port).

        Raises:
            OSError: if the address cannot be bound.
        """
        listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        listener = listeners[0]
        for extra in listeners[1:]:
            await extra.aclose()
        self.port = listener.socket.getsockname()[1]
        self._answerer = Answerer(
            self.world, self._seed, self.dc_id, self.host, self.port, limits=self.limits
        )
        if not self._limits_loaded:  # once per DC, from its first start
            self._limits_loaded = True
            self.limits.load(
                self.world.limits,
                self.world.floods,
                {c.id: c.slowmode_s for c in self.world.channels if c.slowmode_s},
            )
        task_status.started(self)
        await trio.serve_listeners(self._handle, [listener])

    # -- internals ----------------------------------------------------------------------------

    def _salt_for(self, key_id: int) -> int:
        return _crypto.derive_int64(self._seed, b"salt:" + struct.pack("<Q", key_id))

    def _lookup_key(self, key_id: int) -> AuthKeyEntry | None:
        return self._keys.get(key_id)

    def _register_key(self, key: bytes) -> AuthKeyEntry:
        entry = AuthKeyEntry.create(key, 0)
        existing = self._keys.get(entry.key_id)
        if existing is not None:
            return existing
        entry.salt = self._salt_for(entry.key_id)
        self._keys[entry.key_id] = entry
        return entry

    def _record_wire(
        self,
        entry: AuthKeyEntry | None,
        conn_id: int,
        msg_id: int,
        constructor_id: int,
        method: str | None = None,
    ) -> None:
        self.wire_log.append(
            WireMessage(
                trio.current_time(),
                conn_id,
                entry.key_id if entry is not None else None,
                entry.user_id if entry is not None else None,
                msg_id,
                constructor_id,
                _tl_name(constructor_id),
                method,
            )
        )

    def _record(self, entry: AuthKeyEntry, method: str, conn_id: int, msg_id: int) -> None:
        self.calls.append(
            CallRecord(trio.current_time(), entry.user_id, entry.key_id, method, conn_id, msg_id)
        )
        counter = self._counters.get(entry.user_id)
        if counter is None:
            counter = self._counters[entry.user_id] = collections.Counter()
        counter[method] += 1

    async def _handle(self, stream: trio.SocketStream) -> None:
        if self._refusing:
            await trio.aclose_forcefully(stream)
            return
        conn = _Connection(self, stream, next(self._conn_ids))
        self._connections_total += 1
        self._connections[conn.id] = conn
        self.connection_log.append(conn.record)
        try:
            await conn.run()
        except Exception:  # a connection never takes the server down
            log.exception("connection %d crashed", conn.id)
        finally:
            del self._connections[conn.id]
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)
            conn.record.closed_at = trio.current_time()
            if conn.record.closed_by is None:
                conn.record.closed_by = "dc"


class _Connection:
    """One client TCP connection: read packets, answer them, run delayed answers."""

    def __init__(self, dc: DC, stream: trio.SocketStream, conn_id: int) -> None:
        self.dc = dc
        self.id = conn_id
        self.stream = stream
        self.transport = ServerTransport(stream)
        self.state = ConnectionState(dc._rsa, dc._lookup_key, dc._register_key)
        self.cancel_scope = trio.CancelScope()
        self.record = ConnectionRecord(conn_id, _peer_of(stream), trio.current_time())
        self._send_lock = trio.Lock()
        self._announced_session: int | None = None
        self._nursery: trio.Nursery | None = None
        assert dc._answerer is not None
        self._answerer = dc._answerer
        self._gzip_cache: tuple[bytes, bytes] | None = None
        # replies that must travel alone, in a packet of their own: (fault, message body)
        self._separate: list[tuple[CorruptReplyAction | WrongSessionAction, bytes]] = []
        self._cancelled_by_dc = False

    async def run(self) -> None:
        with self.cancel_scope:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    await self._receive_loop()
                finally:
                    nursery.cancel_scope.cancel()
        if (
            self.record.closed_by is None
            and self.cancel_scope.cancelled_caught
            and not self._cancelled_by_dc
        ):
            self.record.closed_by = "ping_delay_disconnect"

    def close(self) -> None:
        """Close the connection from the DC's side (``closed_by = "dc"``)."""
        self._cancelled_by_dc = True
        self.cancel_scope.cancel()

    def _use_key(self, entry: AuthKeyEntry) -> None:
        """Note that a message encrypted with ``entry``'s key arrived on this connection."""
        if entry.key_id not in self.record.auth_key_ids:
            self.record.auth_key_ids.append(entry.key_id)
        if entry.user_id is not None and entry.user_id not in self.record.user_ids:
            self.record.user_ids.append(entry.user_id)

    def _arm_disconnect_timer(self, disconnect_delay: int) -> None:
        """(Re)arm the ``ping_delay_disconnect`` timer: close in ``disconnect_delay`` s."""
        self.cancel_scope.deadline = (
            trio.current_time() + disconnect_delay if disconnect_delay > 0 else math.inf
        )

    async def _receive_loop(self) -> None:
        try:
            while True:
                packet = await self.transport.receive_packet()
                if self.dc._blackholing:
                    self._log_swallowed(packet)
                    continue
                await self._on_packet(packet)
        except (PeerClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            self.record.closed_by = "client"
            return
        except _Drop:
            self.record.closed_by = "dc"
            return
        except TransportError as exc:
            log.debug("connection %d: transport error: %s", self.id, exc)
        except ProtocolError as exc:
            log.debug("connection %d: protocol error: %s", self.id, exc)
            if exc.transport_code is not None:
                with trio.move_on_after(1):
                    try:
                        frame = self.transport.frame(struct.pack("<i", exc.transport_code))
                        await self.stream.send_all(frame)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass

    def _log_plain(self, packet: bytes) -> None:
        if len(packet) >= 24:
            msg_id = struct.unpack_from("<q", packet, 8)[0]
            self.dc._record_wire(None, self.id, msg_id, struct.unpack_from("<I", packet, 20)[0])

    def _log_messages(self, entry: AuthKeyEntry, msg_id: int, body: bytes) -> None:
        """Log the unprocessed message ``body`` (or its container's), tolerating bad framing."""
        if len(body) < 4:
            return
        cid = struct.unpack_from("<I", body)[0]
        if cid != MSG_CONTAINER_ID or len(body) < 8:
            self.dc._record_wire(entry, self.id, msg_id, cid)
            return
        offset = 8
        for _ in range(struct.unpack_from("<i", body, 4)[0]):
            if offset + 20 > len(body):
                return
            inner_id, _seq, length = struct.unpack_from("<qii", body, offset)
            inner_cid = struct.unpack_from("<I", body, offset + 16)[0]
            self.dc._record_wire(entry, self.id, inner_id, inner_cid)
            if length < 0:
                return
            offset += 16 + length

    def _log_swallowed(self, packet: bytes) -> None:
        """Log the messages of a packet that :meth:`DC.blackhole_all` swallows."""
        if len(packet) < 24:
            return
        if packet[:8] == b"\0" * 8:
            self._log_plain(packet)
            return
        try:
            inc = self.state.decrypt(packet)
        except ProtocolError:
            return
        self._use_key(inc.entry)
        self._log_messages(inc.entry, inc.msg_id, inc.body)

    async def _on_packet(self, packet: bytes) -> None:
        if len(packet) < 24:
            raise ProtocolError("short packet")
        if packet[:8] == b"\0" * 8:
            self._log_plain(packet)
            answer = self.state.handle_plain(packet)
            async with self._send_lock:
                await self.stream.send_all(self.transport.frame(answer))
            return
        inc = self.state.decrypt(packet)
        entry = inc.entry
        self._use_key(entry)
        self.state.set_session(inc.session_id)
        if inc.salt != entry.salt:
            self._log_messages(entry, inc.msg_id, inc.body)
            bad = types.BadServerSalt(inc.msg_id, inc.seq_no, 48, entry.salt)
            await self._send([(bytes(bad), False)])
            return
        out: list[tuple[bytes, bool]] = []
        if inc.session_id != self._announced_session:
            self._announced_session = inc.session_id
            created = types.NewSessionCreated(
                first_msg_id=inc.msg_id,
                unique_id=int.from_bytes(os.urandom(8), "little", signed=True),
                server_salt=entry.salt,
            )
            out.append((bytes(created), False))
        self._process(entry, inc.msg_id, inc.body, out, nested=False)
        if out:
            await self._send(out)
        separate, self._separate = self._separate, []
        for fault, body in separate:
            await self._send_faulty(fault, body)

    async def _send(self, out: list[tuple[bytes, bool]]) -> None:
        async with self._send_lock:
            payload = self.state.encrypt(out)
            await self.stream.send_all(self.transport.frame(payload))

    async def _send_faulty(
        self, fault: CorruptReplyAction | WrongSessionAction, body: bytes
    ) -> None:
        async with self._send_lock:
            if isinstance(fault, WrongSessionAction):
                assert self.state.session_id is not None
                other = (self.state.session_id + 1) & 0x7FFF_FFFF_FFFF_FFFF
                payload = self.state.encrypt([(body, True)], session_id=other)
            else:
                corrupted = bytearray(self.state.encrypt([(body, True)]))
                corrupted[24] ^= 0xFF  # first ciphertext byte: the msg_key check fails
                payload = bytes(corrupted)
            await self.stream.send_all(self.transport.frame(payload))

    def _process(
        self,
        entry: AuthKeyEntry,
        msg_id: int,
        body: bytes,
        out: list[tuple[bytes, bool]],
        *,
        nested: bool,
    ) -> None:
        if len(body) < 4:
            raise ProtocolError("empty message")
        cid = struct.unpack_from("<I", body)[0]
        if cid == MSG_CONTAINER_ID and not nested:
            count = struct.unpack_from("<i", body, 4)[0]
            offset = 8
            for _ in range(count):
                if offset + 16 > len(body):
                    raise ProtocolError("truncated container")
                inner_id, _seq, length = struct.unpack_from("<qii", body, offset)
                offset += 16
                if length < 4 or offset + length > len(body):
                    raise ProtocolError("bad container item length")
                self._process(entry, inner_id, body[offset : offset + length], out, nested=True)
                offset += length
        elif cid == GZIP_PACKED_ID:
            try:
                with BinaryReader(body[4:]) as reader:
                    packed = reader.tgread_bytes()
                data = gzip.decompress(packed)
            except Exception as exc:
                raise ProtocolError(f"bad gzip_packed: {exc!r}") from None
            if len(data) > MAX_UNZIPPED_BYTES:
                raise ProtocolError("gzip_packed too large")
            self._process(entry, msg_id, data, out, nested=nested)
        elif cid == _MSGS_ACK_ID or cid in _IGNORED_SERVICE_IDS:
            self.dc._record_wire(entry, self.id, msg_id, cid)
        elif cid == _PING_ID:
            self.dc._record_wire(entry, self.id, msg_id, cid)
            ping_id = struct.unpack_from("<q", body, 4)[0]
            out.append((bytes(types.Pong(msg_id, ping_id)), False))
        elif cid == _PING_DELAY_ID:
            self.dc._record_wire(entry, self.id, msg_id, cid)
            ping_id, disconnect_delay = struct.unpack_from("<qi", body, 4)
            out.append((bytes(types.Pong(msg_id, ping_id)), False))
            self._arm_disconnect_timer(disconnect_delay)
        else:
            self._call(entry, msg_id, body, out)

    def _call(
        self, entry: AuthKeyEntry, msg_id: int, body: bytes, out: list[tuple[bytes, bool]]
    ) -> None:
        latency_ms = self.dc._latency_ms
        if latency_ms <= 0:
            self._call_now(entry, msg_id, body, out)
            return
        mine: list[tuple[bytes, bool]] = []
        self._call_now(entry, msg_id, body, mine)
        late = [m for m in mine if m[1]]
        out.extend(m for m in mine if not m[1])
        if late:
            out.append((bytes(types.MsgsAck([msg_id])), False))
            assert self._nursery is not None
            self._nursery.start_soon(self._send_later, late, latency_ms)

    async def _send_later(self, messages: list[tuple[bytes, bool]], ms: float) -> None:
        await trio.sleep(ms / 1000)
        try:
            await self._send(messages)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.record.closed_by = self.record.closed_by or "client"
            self.cancel_scope.cancel()

    def _call_now(
        self, entry: AuthKeyEntry, msg_id: int, body: bytes, out: list[tuple[bytes, bool]]
    ) -> None:
        try:
            with BinaryReader(body) as reader:
                request = reader.tgread_object()
        except TypeNotFoundError as exc:
            method = f"#{exc.invalid_constructor_id:08x}"
            self.dc._record_wire(entry, self.id, msg_id, struct.unpack_from("<I", body)[0], method)
            self.dc._record(entry, method, self.id, msg_id)
            out.append((_rpc_error(msg_id, 400, "METHOD_INVALID"), True))
            return
        except Exception as exc:
            self.dc._record_wire(entry, self.id, msg_id, struct.unpack_from("<I", body)[0])
            raise ProtocolError(f"undecodable request: {exc!r}") from None
        if not isinstance(request, TLRequest):
            self.dc._record_wire(entry, self.id, msg_id, request.CONSTRUCTOR_ID)
            out.append((_rpc_error(msg_id, 400, "METHOD_INVALID"), True))
            return
        inner = unwrap(request)
        name = method_name(inner)
        self.dc._record_wire(entry, self.id, msg_id, request.CONSTRUCTOR_ID, name)
        self.dc._record(entry, name, self.id, msg_id)
        if isinstance(inner, functions.PingDelayDisconnectRequest):
            self._arm_disconnect_timer(inner.disconnect_delay)
        if self.dc._drop_rate > 0 and self.dc._random.random() < self.dc._drop_rate:
            raise _Drop()
        action = self.dc.faults.take(entry.user_id, name)
        if action is None:
            refusal = self.dc.limits.admit(entry.user_id, name)
            if refusal is not None:
                out.append((_rpc_error(msg_id, FLOOD_CODE, refusal), True))
                return
            if isinstance(inner, functions.PingRequest | functions.PingDelayDisconnectRequest):
                # a wrapped ping (invokeWithoutUpdates(ping)) is answered as an rpc_result
                pong = bytes(types.Pong(msg_id, inner.ping_id))
                out.append((struct.pack("<Iq", RPC_RESULT_ID, msg_id) + pong, True))
                return
            out.append((self._result(entry, msg_id, inner), True))
        elif isinstance(action, RpcErrorAction):
            out.append((_rpc_error(msg_id, action.code, action.message), True))
        elif isinstance(action, DropAction):
            raise _Drop()
        elif isinstance(action, BlackholeAction):
            out.append((bytes(types.MsgsAck([msg_id])), False))
        elif isinstance(action, DelayAction):
            out.append((bytes(types.MsgsAck([msg_id])), False))
            assert self._nursery is not None
            self._nursery.start_soon(self._answer_later, entry, msg_id, inner, action.ms)
        elif isinstance(action, SaltStormAction):
            entry.salt = int.from_bytes(os.urandom(8), "little", signed=True)
            out.append((bytes(types.BadServerSalt(msg_id, 0, 48, entry.salt)), False))
        elif isinstance(action, CorruptReplyAction | WrongSessionAction):
            self._separate.append((action, self._result(entry, msg_id, inner)))
        elif isinstance(action, UnparseableReplyAction):
            out.append((self._unparseable(entry, msg_id), True))

    def _unparseable(self, entry: AuthKeyEntry, msg_id: int) -> bytes:
        phone, first_name = "15550000000", "Nobody"
        if entry.user_id is not None:
            user = self.dc.world.user(entry.user_id)
            phone, first_name = user.phone or phone, user.first_name or first_name
        body = struct.pack("<I", UNPARSEABLE_CONSTRUCTOR_ID)
        body += _tl_bytes(phone.encode()) + _tl_bytes(first_name.encode())
        return struct.pack("<Iq", RPC_RESULT_ID, msg_id) + body

    async def _answer_later(self, entry: AuthKeyEntry, msg_id: int, inner: Any, ms: float) -> None:
        await trio.sleep(ms / 1000)
        try:
            await self._send([(self._result(entry, msg_id, inner), True)])
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.record.closed_by = self.record.closed_by or "client"
            self.cancel_scope.cancel()

    def _result(self, entry: AuthKeyEntry, msg_id: int, request: Any) -> bytes:
        try:
            data = self._answerer.answer(entry, request)
        except RpcFailure as failure:
            return _rpc_error(msg_id, failure.code, failure.message)
        except Exception:
            log.exception("handler for %s failed", type(request).__name__)
            return _rpc_error(msg_id, 500, "INTERNAL_SERVER_ERROR")
        if len(data) > GZIP_THRESHOLD_BYTES:
            cached = self._gzip_cache
            if cached is not None and cached[0] is data:
                data = cached[1]
            else:
                packed = gzip.compress(data, compresslevel=6)
                if len(packed) + 8 < len(data):
                    zipped = struct.pack("<I", GZIP_PACKED_ID) + _tl_bytes(packed)
                    self._gzip_cache = (data, zipped)
                    data = zipped
        return struct.pack("<Iq", RPC_RESULT_ID, msg_id) + data


def _peer_of(stream: trio.SocketStream) -> tuple[str, int]:
    """The client's ``(host, port)`` of ``stream`` (``("", 0)`` if the socket cannot say)."""
    try:
        peer = stream.socket.getpeername()
    except OSError:
        return ("", 0)
    return (str(peer[0]), int(peer[1]))


def _tl_bytes(data: bytes) -> bytes:
    from telethon.tl import TLObject

    return bytes(TLObject.serialize_bytes(data))


@asynccontextmanager
async def open_dc(
    world: World | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    seed: str | bytes | int = DEFAULT_SEED,
    dc_id: int = DEFAULT_DC_ID,
    rsa_private_pem: str | bytes | None = None,
) -> AsyncIterator[DC]:
    """Run a :class:`DC` for the duration of the ``async with`` block.

    Args: as :class:`DC`.

    Yields:
        The serving DC (``dc.port`` is bound).

    Raises:
        OSError: if the address cannot be bound.
    """
    dc = DC(world, host=host, port=port, seed=seed, dc_id=dc_id, rsa_private_pem=rsa_private_pem)
    async with trio.open_nursery() as nursery:
        await nursery.start(dc.serve)
        try:
            yield dc
        finally:
            nursery.cancel_scope.cancel()
