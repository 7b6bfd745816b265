"""The websocket JSON-RPC 2.0 server in front of the pool.

One websocket connection carries many requests at once: every job (``invoke``, ``resolve``,
``get_messages``) runs in its own task in the connection's nursery and is answered, with its
request id, as soon as it completes — replies come in completion order. Control methods
(``ping``, ``status``, ``jobs``, ``cancel``, ``accounts.disable``, ``accounts.enable``,
``accounts.cooldowns``, ``accounts.clear_cooldown``,
``accounts.forget``) never block and are answered inline by the connection's reader, so they
stay available at the in-flight limit. ``reload`` reads a file and may wait for another
reload, so it runs in its own task like a job.

Limits of one connection (the reference for ``[daemon]`` ``max_in_flight`` and
``max_frame_bytes``):

* ``max_in_flight`` counts the connection's jobs (and ``reload``) whose reply is not sent
  yet: running, or finished with the reply waiting for the socket. Past it, a new job is
  answered -32005 at once, by the reader. Backpressure: a client that stops reading stops
  being read — the replies it does not read fill the socket, every send waits, the reader
  waits in its own send, and nothing more is read from that connection — so such a client
  costs at most ``max_in_flight`` waiting replies (and the kernel's socket buffers), however
  much it sends. Other connections are not affected.
* ``max_frame_bytes`` is the size of one message's payload on the wire, in bytes (UTF-8 bytes
  of a text message, not characters). A larger message closes the connection with 1009 and
  creates no job.
* A text message that is not UTF-8 closes the connection with a 1007 close frame (RFC 6455
  §8.1); a malformed frame with 1002. A binary message is read as UTF-8 JSON and answered
  -32700 if it is not.

Methods, parameters and error codes: see `mtpoold._rpc`.

The same listener also answers JSON-RPC over plain HTTP ``POST /rpc`` (`mtpoold._httprpc`):
`_handle_stream` reads each stream's request head and hands a websocket upgrade to
trio-websocket, anything else to `mtpoold._httprpc.serve_http`; both transports go through
the one dispatcher (`_dispatch`), the same door (`RpcServer.refusal`) and the same limits.

Cluster mode (``doors``, `mtpoold._forward.Doors`): a client's job goes through the doors,
which run it on this node's pool or forward it to the node holding its account and answer
with that node's reply; a request carrying the hop marker (``Mtpoold-Forwarded-By``, read by
`mtpoold._httprpc`) is a peer's and runs here only. ``status`` then adds ``cluster`` and
``jobs`` adds ``forwarded``; both stay inline (the doors answer from what they last read).

The server depends only on the pool's public API (`PoolAPI`, as in ``docs/CONTRACTS.md``).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import functools
import hmac
import logging
import math
import os
import socket as stdlib_socket
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Protocol, cast, final

import attrs
import cattrs
import trio
from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
)
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import BytesMessage, CloseConnection, TextMessage

from ._config import DaemonConfig
from ._errors import ConfigError, ErrorClass, JobFailed, redact
from ._forward import Doors, ForwardableJob
from ._httprpc import HeadError, HttpClass, Refusal, ReplayStream, read_head, refuse, serve_http
from ._jobs import JOB_ORIGIN
from ._listen import DEFAULT_LISTEN as DEFAULT_LISTEN
from ._listen import ListenAddress as ListenAddress
from ._listen import parse_listen as parse_listen
from ._logformat import log_event
from ._rpc import (
    CANCELLED,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    RELOAD_FAILED,
    SHUTTING_DOWN,
    TOO_MANY_IN_FLIGHT,
    CancelParams,
    ClearCooldownParams,
    CooldownsParams,
    DisableParams,
    EnableParams,
    ForgetParams,
    GetMessagesParams,
    InvokeParams,
    JobOptions,
    ReloadParams,
    Request,
    RequestId,
    ResolveParams,
    RpcError,
    StatusParams,
    WireClass,
    code_for_error_class,
    encode_error,
    encode_job_result,
    encode_result,
    parse_params,
    parse_request,
)

__all__ = [
    "DEFAULT_LISTEN",
    "ListenAddress",
    "PoolAPI",
    "RpcServer",
    "ServerStatistics",
    "parse_listen",
]

_log = logging.getLogger("mtpoold.server")

# The server's defaults are the ``[daemon]`` table's (`mtpoold._config.DaemonConfig`), defined
# there once: bytes of payload per message, jobs per connection whose reply is not sent yet,
# seconds in-flight jobs may still finish after a shutdown request.
_DAEMON_DEFAULTS: Final = DaemonConfig()
MAX_FRAME_BYTES: Final = _DAEMON_DEFAULTS.max_frame_bytes
MAX_IN_FLIGHT: Final = _DAEMON_DEFAULTS.max_in_flight
SHUTDOWN_GRACE_S: Final = _DAEMON_DEFAULTS.shutdown_grace_s
HANDSHAKE_TIMEOUT_S: Final = 10.0  # seconds a client has to complete the HTTP upgrade
CLOSE_TIMEOUT_S: Final = 2.0  # seconds for final replies and close handshakes after the grace
UNIX_SOCKET_MODE: Final = 0o660
#: Bytes a websocket connection's reader asks the stream for at once: trio-websocket's
#: default, 4 KiB, holds about forty requests of ~100 B, so a burst of a few hundred took that
#: many reads (each a pass through the run loop). Read bytes are parsed at once, not kept.
RECEIVE_BYTES: Final = 64 * 2**10
_JOB_METHODS: Final = frozenset({"invoke", "resolve", "get_messages"})
_TASK_METHODS: Final = _JOB_METHODS | {"reload"}  # answered from their own task

#: ``reload``'s implementation (the daemon's `Reloader`): returns the JSON-safe summary or
#: raises `ConfigError` listing every problem.
ReloadFn = Callable[[], Awaitable[Mapping[str, Any]]]


# --- the pool as the server sees it ---------------------------------------------------------------


class _JobMetaLike(Protocol):
    @property
    def account(self) -> str: ...
    @property
    def proxy_key(self) -> str: ...
    @property
    def attempts(self) -> int: ...
    @property
    def elapsed_ms(self) -> float: ...
    @property
    def shared(self) -> bool: ...
    @property
    def merged(self) -> int: ...
    @property
    def age_s(self) -> float: ...


class _JobResultLike(Protocol):
    @property
    def value(self) -> Mapping[str, Any]: ...
    @property
    def meta(self) -> _JobMetaLike: ...


class PoolAPI(Protocol):
    """The part of `mtpoold._pool.Pool` the server uses (``docs/CONTRACTS.md``)."""

    async def invoke(
        self,
        method: str,
        args: Mapping[str, Any],
        *,
        deadline_s: float | None = None,
        account: str | None = None,
        tags: Sequence[str] = (),
        max_age_s: float = 0.0,
    ) -> _JobResultLike: ...

    async def resolve(
        self,
        link_or_username: str,
        *,
        deadline_s: float | None = None,
        account: str | None = None,
        tags: Sequence[str] = (),
        max_age_s: float = 0.0,
    ) -> _JobResultLike: ...

    async def get_messages(
        self,
        peer: str | int,
        ids: Sequence[int] | None = None,
        *,
        deadline_s: float | None = None,
        account: str | None = None,
        tags: Sequence[str] = (),
        max_age_s: float = 0.0,
    ) -> _JobResultLike: ...

    def statistics(self, *, accounts: bool = True) -> object: ...

    def jobs(self) -> Sequence[object]: ...

    def disable_account(self, account_id: str, reason: str | None = None) -> str: ...

    def enable_account(self, account_id: str, *, force: bool = False) -> None: ...

    def cooldowns(self, account_id: str) -> object: ...

    def clear_cooldown(self, account_id: str, rate_class: str | None = None) -> tuple[str, ...]: ...

    def forget_account(self, account_id: str) -> bool: ...


# --- listen addresses -----------------------------------------------------------------------------


async def _open_unix_listener(path: str) -> trio.SocketListener:
    """Bind a unix stream socket at ``path`` with mode 0660, replacing a stale socket file.

    Raises:
        OSError: EADDRINUSE if a live process listens there; EEXIST if ``path`` is not a socket.
    """
    p = Path(path)
    try:
        st = p.lstat()  # noqa: ASYNC240 - one lstat of a local socket path at bind time
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
        try:
            stream = await trio.open_unix_socket(path)
        except OSError:  # nobody listening: a stale file from an earlier run
            p.unlink(missing_ok=True)  # noqa: ASYNC240 - local socket file, once at bind time
        else:
            await stream.aclose()
            raise OSError(errno.EADDRINUSE, f"another process is listening on {path}")
    sock = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    try:
        await sock.bind(path)
        os.chmod(path, UNIX_SOCKET_MODE)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)


def _listener_address(listener: trio.abc.Listener[trio.abc.Stream]) -> str:
    if not isinstance(listener, trio.SocketListener):
        return repr(listener)
    name = listener.socket.getsockname()
    if listener.socket.family == stdlib_socket.AF_UNIX:
        return f"unix:{name.decode() if isinstance(name, bytes) else name}"
    return str(ListenAddress(host=name[0], port=name[1]))


# --- statistics -----------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ServerStatistics:
    """A snapshot of the `RpcServer`.

    Attributes:
        address: Where it listens (``"127.0.0.1:8765"`` / ``"unix:/path"``), None when not.
        connections: Open websocket connections (accepted handshakes) and HTTP requests in
            progress (`mtpoold._httprpc`).
        in_flight: Jobs running on all connections, final reply not yet sent.
        requests: Requests answered or accepted since start (all methods, errors included).
        rejected_handshakes: Upgrades and HTTP requests refused at the door (bad token,
            browser origin, shutting down).
        draining: Whether a shutdown is in progress.
    """

    address: str | None
    connections: int
    in_flight: int
    requests: int
    rejected_handshakes: int
    draining: bool


# --- per-connection state -------------------------------------------------------------------------


def _key(request_id: RequestId) -> tuple[bool, RequestId]:
    return (isinstance(request_id, str), request_id)  # 1 and "1" are different ids


@attrs.define(eq=False)
class _Call:
    id: RequestId
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    reason: RpcError | None = None  # why its scope was cancelled


@attrs.define(eq=False)
class _Connection:
    """One websocket connection, or one HTTP request's exchange: what the dispatcher needs."""

    remote: str
    send: Callable[[str], Awaitable[None]]  # one reply; never raises for a client gone
    calls: dict[tuple[bool, RequestId], _Call] = attrs.field(factory=dict)  # cancellable ones
    forwarded_by: str | None = None  # the peer node an HTTP request came from (hop marker)
    unsent: int = 0  # what max_in_flight limits (the module docstring)
    reader_scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)


class _WebSocket(WebSocketConnection):
    """trio-websocket's connection, with two rules of RFC 6455 it does not keep by itself.

    * ``max_message_size`` counts payload bytes on the wire: trio-websocket counts ``len()``
      of the decoded text, so a text message of 4-byte characters could be 4x the limit.
    * A frame wsproto fails — a text message that is not UTF-8 (1007), a malformed frame
      (1002) — gets a close frame with that code before the TCP connection closes ("Fail the
      WebSocket Connection", RFC 6455 §7.1.7); trio-websocket only drops the TCP connection.

    Both hook trio-websocket's event handlers (not public API; checked with trio-websocket
    0.12): the 1007 and byte-limit tests of tests/test_server_limits.py catch a version that
    changes them.

    Messages go to the dispatcher from trio-websocket's reader task as it parses them
    (``on_message``), not through its queue of one message that `get_message` reads: the
    queue passes one message per pass of the run loop (a task switch each way), which
    capped the requests a connection could bring in under load. Backpressure holds: the
    reader waits in the dispatcher's own sends (control replies), and reads nothing
    meanwhile.

    Replies go out through `send_text`, which coalesces: replies that come while another
    write holds the stream go out together, as one write of the stream (trio-websocket's
    ``send_message`` makes one write, one system call, per message). It uses the same
    internals as ``send_message`` (the wsproto connection, the stream and its lock).
    """

    def __init__(self, stream: trio.abc.Stream, ws: WSConnection, **kwargs: Any) -> None:
        super().__init__(stream, ws, **kwargs)
        #: The batch that later replies join, or None (the next reply starts one).
        self._open_batch: _Batch | None = None
        #: Where whole messages go, in the reader task, as they are parsed; None:
        #: trio-websocket's queue (`get_message`). Set by `RpcServer._read_loop`.
        self.on_message: Callable[[str | bytes], Awaitable[None]] | None = None

    def take_queued(self) -> str | bytes | None:
        """A message already in trio-websocket's queue (None: none now), without waiting.

        Raises:
            ConnectionClosed: the queue is closed and empty.
        """
        try:
            return self._recv_channel.receive_nowait()
        except trio.WouldBlock:
            return None
        except (trio.ClosedResourceError, trio.EndOfChannel):
            raise ConnectionClosed(self._close_reason) from None

    async def send_text(self, text: str) -> None:
        """Send one text message; return once it is written to the stream.

        The first message while no batch is open starts one and writes it: once it holds
        the stream's lock (FIFO, after the write before it) it closes the batch and writes
        every message in it in one ``send_all``, in the order they came. A message that
        finds a batch open joins it and waits for its write. Backpressure is unchanged: a
        client that does not read blocks the write, and every sender waits. A sender
        cancelled once its message is in a batch leaves the message there: it goes out
        with the others (a batch whose writer is cancelled before the write is written by
        one of its members).

        Raises:
            ConnectionClosed: the connection is closed or closing; the message is not sent.
        """
        if self._close_reason:
            raise ConnectionClosed(self._close_reason)
        batch = self._open_batch
        if batch is None:
            batch = self._open_batch = _Batch(text)
            await self._write_batch(batch)
            return
        batch.texts.append(text)
        while True:
            await batch.done.wait()
            if batch.state is _BatchState.SENT:
                return
            if batch.state is _BatchState.CLOSED:
                raise ConnectionClosed(self._close_reason)
            if batch.state is _BatchState.ORPHANED:
                # its writer was cancelled before it wrote a byte: this member writes it
                batch.state = _BatchState.OPEN
                batch.done = trio.Event()
                await self._write_batch(batch)
                return
            # another member took it over: wait for that write

    async def _write_batch(self, batch: _Batch) -> None:
        started = False
        lock = self._stream_lock
        try:
            # A free lock is taken without the pass through the run loop `acquire` makes
            # (the write's own `send_all` is the checkpoint): one task switch less per batch.
            try:
                lock.acquire_nowait()
            except trio.WouldBlock:
                await lock.acquire()
            try:
                if self._open_batch is batch:
                    self._open_batch = None  # later messages start the next batch
                if self._close_reason or self._wsproto.state is not ConnectionState.OPEN:
                    batch.state = _BatchState.CLOSED
                    raise ConnectionClosed(self._close_reason)
                # cancelled before a byte is written: the batch is another member's to write
                await trio.lowlevel.checkpoint_if_cancelled()
                data = b"".join([self._wsproto.send(TextMessage(data=t)) for t in batch.texts])
                started = True
                try:
                    await self._stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    batch.state = _BatchState.CLOSED
                    await self._abort_web_socket()
                    raise ConnectionClosed(self._close_reason) from None
                batch.state = _BatchState.SENT
            finally:
                lock.release()
        finally:
            if batch.state is _BatchState.OPEN:
                # Cancelled. Before the write: nothing of the batch went out and another
                # member takes it over (a new batch starts unless it was still open). In
                # the write: the stream is broken, the batch is lost.
                if started:
                    batch.state = _BatchState.CLOSED
                else:
                    batch.state = _BatchState.ORPHANED
                    if self._open_batch is batch:
                        self._open_batch = None
            batch.done.set()

    async def _handle_message_event(self, event: BytesMessage | TextMessage) -> None:
        data = event.data
        if isinstance(data, str) and not data.isascii():  # isascii() is O(1) on str
            self._message_size += len(data.encode("utf-8")) - len(data)
        on_message = self.on_message
        if isinstance(data, bytearray):  # a binary message: bytes, as trio-websocket gives
            data = bytes(data)
        if on_message is None or self._message_size + len(data) > self._max_message_size:
            # trio-websocket's own: the queue `get_message` reads, or 1009 past the limit
            await super()._handle_message_event(event)
            return
        if not event.message_finished:
            self._message_size += len(data)
            self._message_parts.append(data)
            return
        message: str | bytes = data
        if self._message_parts:
            parts = [*self._message_parts, data]
            if isinstance(data, bytes):
                message = b"".join(cast("list[bytes]", parts))
            else:
                message = "".join(cast("list[str]", parts))
        self._message_size = 0
        self._message_parts = []
        await on_message(message)

    async def _handle_close_connection_event(self, event: CloseConnection) -> None:
        if self._wsproto.state is ConnectionState.OPEN:
            # No close frame came in: wsproto made this event up from a protocol failure.
            self._close_reason = CloseReason(event.code, event.reason or None)
            # bounded: replies to a client that does not read may hold the send lock
            with contextlib.suppress(ConnectionClosed), trio.move_on_after(CLOSE_TIMEOUT_S):
                await self._send(CloseConnection(code=event.code, reason=event.reason))
        await super()._handle_close_connection_event(event)


async def _wrap_server_stream(
    nursery: trio.Nursery, stream: trio.abc.Stream, *, max_message_size: int
) -> WebSocketRequest:
    """`trio_websocket.wrap_server_stream`, with a `_WebSocket`; its reader runs in `nursery`."""
    connection = _WebSocket(
        stream,
        WSConnection(ConnectionType.SERVER),
        max_message_size=max_message_size,
        receive_buffer_size=RECEIVE_BYTES,
    )
    nursery.start_soon(connection._reader_task)
    return await connection._get_request()


class _BatchState(enum.Enum):
    OPEN = enum.auto()  # taking messages, or being written
    SENT = enum.auto()
    CLOSED = enum.auto()  # the connection closed: not sent
    ORPHANED = enum.auto()  # its writer was cancelled before the write: a member takes over


@final
class _Batch:
    """Replies written together by `_WebSocket.send_text`."""

    __slots__ = ("done", "state", "texts")

    def __init__(self, text: str) -> None:
        self.texts = [text]
        self.done = trio.Event()
        self.state = _BatchState.OPEN


async def _ws_send(ws: _WebSocket, text: str) -> None:
    try:
        await ws.send_text(text)
    except ConnectionClosed:
        pass


@attrs.frozen
class _Exchange:
    """`mtpoold._httprpc.Exchange`: the dispatcher, for one HTTP request's `_Connection`."""

    server: RpcServer
    conn: _Connection

    async def dispatch(self, jobs: trio.Nursery, frame: str | bytes) -> None:
        await self.server._dispatch(self.conn, jobs, frame)


def _cancelled_error() -> RpcError:
    return RpcError(CANCELLED, "cancelled by a cancel request", error_class=ErrorClass.CANCELLED)


def _shutting_down_error() -> RpcError:
    return RpcError(
        SHUTTING_DOWN, "the daemon is shutting down", error_class=ErrorClass.SHUTTING_DOWN
    )


def _job_error(exc: JobFailed) -> RpcError:
    return RpcError(
        code_for_error_class(exc.error_class),
        exc.message,
        error_class=exc.error_class,
        retry_after_s=exc.retry_after_s,
        account=exc.account,
        attempts=exc.attempts,
    )


def _internal_error() -> RpcError:
    return RpcError(
        INTERNAL_ERROR,
        "internal error while handling this request (logged by the daemon)",
        error_class=WireClass.INTERNAL_ERROR,
    )


def _remote(stream: trio.abc.Stream) -> str:
    sock = getattr(stream, "socket", None)
    if sock is None:  # an in-memory stream, a TLS stream: no peer address to name
        return type(stream).__name__
    try:
        peer = sock.getpeername()
    except OSError:
        return "?"
    if isinstance(peer, tuple):
        return f"{peer[0]}:{peer[1]}"
    return "unix" if not peer else f"unix:{peer!s}"


# --- the server -----------------------------------------------------------------------------------


@final
@attrs.define(eq=False, repr=False)
class RpcServer:
    """Websocket (and HTTP ``POST /rpc``) JSON-RPC 2.0 server for one `PoolAPI`.

    Args:
        pool: The pool jobs go to.
        token: The bearer token clients must present (``Authorization: Bearer <token>``).
        listen: ``"HOST:PORT"`` (port 0 picks a free one) or ``"unix:/path"``.
        allowed_origins: Browser ``Origin`` values allowed to connect; any other request
            carrying an ``Origin`` header is refused with HTTP 403.
        max_frame_bytes: Largest accepted message payload, bytes; the rule is the module
            docstring's (limits of one connection).
        max_in_flight: Replies one connection may be owed, >= 1; the rule (what counts,
            -32005, backpressure) is the module docstring's.
        shutdown_grace_s: Seconds in-flight jobs may still finish after `request_shutdown`.
        handshake_timeout_s: Seconds a client has to complete the HTTP upgrade.
        reloader: What ``reload`` runs (the daemon re-reads its config file); None answers
            ``reload`` with -32601.
        doors: Cluster mode: routes each job to this node's pool or forwards it to a peer
            (`mtpoold._forward.Doors`; a request carrying the hop marker
            ``Mtpoold-Forwarded-By`` is never forwarded again), and adds ``cluster`` to the
            ``status`` reply. None: one node, every job on ``pool``.

    Resource handling:
        `serve` owns the listeners it is given, every connection and every job task;
        `run` also opens the listening sockets and removes its unix socket file on exit.
        Leaving `serve` (or `run`) leaves nothing running.

    Error handling:
        An exception while handling one request answers that request with -32603 and is
        logged; it never closes the connection or the listener. An exception escaping one
        connection's handling closes that connection only.
    """

    pool: PoolAPI
    token: str = attrs.field(repr=False)
    listen: str = DEFAULT_LISTEN
    allowed_origins: tuple[str, ...] = ()
    max_frame_bytes: int = MAX_FRAME_BYTES
    max_in_flight: int = MAX_IN_FLIGHT
    shutdown_grace_s: float = SHUTDOWN_GRACE_S
    handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S
    reloader: ReloadFn | None = None
    doors: Doors | None = None

    _address: str | None = attrs.field(init=False, default=None)
    _connections: set[_Connection] = attrs.field(init=False, factory=set)
    _in_flight: int = attrs.field(init=False, default=0)
    _requests: int = attrs.field(init=False, default=0)
    _rejected: int = attrs.field(init=False, default=0)
    _draining: bool = attrs.field(init=False, default=False)
    _shutdown_requested: trio.Event = attrs.field(init=False, factory=trio.Event)
    _grace: trio.CancelScope = attrs.field(init=False, factory=trio.CancelScope)
    _changed: trio.Event = attrs.field(init=False, factory=trio.Event)
    _waiting: int = attrs.field(init=False, default=0)  # tasks in `_wait_until`

    def __attrs_post_init__(self) -> None:
        # Limits and the listen address are `DaemonConfig`'s invariants (`from_config`).
        if not self.token:
            raise ValueError("token must not be empty")

    @classmethod
    def from_config(
        cls,
        pool: PoolAPI,
        config: DaemonConfig,
        *,
        token: str,
        reloader: ReloadFn | None = None,
        doors: Doors | None = None,
    ) -> RpcServer:
        """Build a server from the ``[daemon]`` table of the config.

        Args:
            pool: The pool jobs go to.
            config: Supplies listen, allowed_origins, max_frame_bytes, max_in_flight and
                shutdown_grace_s.
            token: The bearer token.
            reloader: What the ``reload`` method runs, or None.
            doors: Cluster mode's job routing (see the class), or None.
        """
        return cls(
            pool,
            token,
            listen=config.listen,
            allowed_origins=tuple(config.allowed_origins),
            max_frame_bytes=config.max_frame_bytes,
            max_in_flight=config.max_in_flight,
            shutdown_grace_s=config.shutdown_grace_s,
            reloader=reloader,
            doors=doors,
        )

    def __repr__(self) -> str:
        return (
            f"<RpcServer address={self._address} connections={len(self._connections)}"
            f" in_flight={self._in_flight} draining={self._draining}>"
        )

    def statistics(self) -> ServerStatistics:
        """Return a `ServerStatistics` snapshot. Never blocks."""
        return ServerStatistics(
            address=self._address,
            connections=len(self._connections),
            in_flight=self._in_flight,
            requests=self._requests,
            rejected_handshakes=self._rejected,
            draining=self._draining,
        )

    def request_shutdown(self) -> None:
        """Start a graceful shutdown; `serve` (and `run`) returns when it is complete. Idempotent.

        At once: stop accepting connections, and answer new requests on open connections
        with SHUTTING_DOWN (-32003). Jobs in flight get ``shutdown_grace_s`` to finish; the
        ones still running then are cancelled and answered with SHUTTING_DOWN. Every
        accepted request gets exactly one final reply; then connections close with 1001.
        """
        self._draining = True
        self._shutdown_requested.set()

    def stop_now(self) -> None:
        """End the shutdown's grace period at once (starting the shutdown if need be).

        Jobs still running are cancelled and answered with SHUTTING_DOWN (-32003), exactly
        as when ``shutdown_grace_s`` runs out; then connections close with 1001. Every
        accepted request still gets exactly one final reply. Idempotent.
        """
        self.request_shutdown()
        self._grace.cancel()

    def _notify(self) -> None:
        # Every job's end calls this; only a shutdown waits (`_wait_until`): no Event per
        # job while nobody does.
        if self._waiting:
            self._changed.set()
            self._changed = trio.Event()

    async def _wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            self._waiting += 1
            try:
                await self._changed.wait()
            finally:
                self._waiting -= 1

    # --- lifecycle --------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on ``listen`` and `serve` until a graceful shutdown completes.

        A thin wrapper around `serve`: opens the TCP listeners (`trio.open_tcp_listeners`)
        or the unix socket (mode 0660; a stale socket file from an earlier run is replaced),
        serves on them, and removes the unix socket file on the way out.

        Args:
            task_status: Receives the listening address (``"127.0.0.1:8765"``,
                ``"unix:/path"``; the real port when 0 was asked) once the socket is bound.

        Raises:
            OSError: if the address cannot be bound (in use, no permission, a non-socket
                file at the unix path).

        Cancelling `run` stops everything at once without final replies; use
        `request_shutdown` for the graceful path.
        """
        address = parse_listen(self.listen)
        listeners: list[trio.SocketListener]
        if address.path is not None:
            listeners = [await _open_unix_listener(address.path)]
        else:
            assert address.port is not None
            listeners = await trio.open_tcp_listeners(address.port, host=address.host)
        try:
            await self.serve(listeners, task_status=task_status)
        finally:
            if address.path is not None:
                _unlink_socket(address.path)  # sync: no checkpoint a cancel could interrupt

    async def serve(
        self,
        listeners: Sequence[trio.abc.Listener[trio.abc.Stream]],
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve JSON-RPC (websocket and HTTP POST) on ``listeners`` until a graceful
        shutdown completes.

        The shape of `trio.serve_listeners`: any `trio.abc.Listener` of streams will do (the
        tests use one of in-memory streams, under the autojump clock). `run` calls this with
        the sockets of ``listen``.

        Args:
            listeners: Where connections come from; at least one. `serve` takes
                responsibility for closing them: at `request_shutdown` (no new connections
                from then on) or when `serve` is left.
            task_status: Receives the address of the first listener (``"127.0.0.1:8765"``,
                ``"unix:/path"``, the ``repr`` of a listener that is not a socket) once
                connections are being accepted.

        Raises:
            ValueError: if ``listeners`` is empty.

        Resource handling:
            Every connection and every job task lives in nurseries `serve` owns; leaving
            `serve` leaves nothing running. Cancelling it stops everything at once without
            final replies; `request_shutdown` is the graceful path, `stop_now` ends its
            grace period.
        """
        if not listeners:
            raise ValueError("serve needs at least one listener")
        self._address = _listener_address(listeners[0])
        try:
            async with trio.open_nursery() as connections:
                async with trio.open_nursery() as accepting:
                    await accepting.start(
                        functools.partial(
                            trio.serve_listeners,
                            self._handle_stream,
                            list(listeners),
                            handler_nursery=connections,
                        )
                    )
                    log_event(_log, logging.INFO, "server_listening", address=str(self._address))
                    task_status.started(self._address)
                    await self._shutdown_requested.wait()
                    accepting.cancel_scope.cancel()  # closes the listeners
                log_event(
                    _log,
                    logging.INFO,
                    "server_draining",
                    connections=len(self._connections),
                    in_flight=self._in_flight,
                    grace_s=self.shutdown_grace_s,
                )
                await self._drain()
                connections.cancel_scope.cancel()
        finally:
            for listener in listeners:  # closed already, unless `serve` never got to them
                await trio.aclose_forcefully(listener)
            self._address = None
            log_event(_log, logging.INFO, "server_stopped", requests=self._requests)

    async def _drain(self) -> None:
        # `stop_now` cancels this scope, before or while it is entered.
        self._grace.deadline = trio.current_time() + self.shutdown_grace_s
        with self._grace:
            await self._wait_until(lambda: self._in_flight == 0)
        late = 0
        for conn in list(self._connections):
            for call in conn.calls.values():
                call.reason = _shutting_down_error()
                call.scope.cancel()
                late += 1
        if late:
            log_event(_log, logging.INFO, "server_grace_expired", cancelled=late)
        with trio.move_on_after(CLOSE_TIMEOUT_S):
            await self._wait_until(lambda: self._in_flight == 0)
        for conn in list(self._connections):
            conn.reader_scope.cancel()
        with trio.move_on_after(CLOSE_TIMEOUT_S):
            await self._wait_until(lambda: not self._connections)

    # --- connections ------------------------------------------------------------------------------

    async def _handle_stream(self, stream: trio.abc.Stream) -> None:
        # The transport hook: the request head says websocket or HTTP POST (`mtpoold._httprpc`).
        remote = _remote(stream)
        try:
            async with trio.open_nursery() as nursery:
                request: WebSocketRequest | None = None
                received = bytearray()
                with trio.move_on_after(self.handshake_timeout_s) as head_wait:
                    try:
                        head = await read_head(stream, received=received)
                    except HeadError as exc:
                        return await refuse(stream, None, exc.refusal)
                    if head is None:
                        return  # closed before a request (a port probe)
                    if not head.is_websocket_upgrade:
                        head_wait.deadline = math.inf  # `serve_http` keeps its own deadlines
                        return await serve_http(self, stream, head, remote)
                    request = await _wrap_server_stream(
                        nursery,
                        ReplayStream(stream, head.raw),
                        max_message_size=self.max_frame_bytes,
                    )
                if request is not None:
                    await self._handle_handshake(request, remote)
                else:
                    log_event(_log, logging.DEBUG, "connection_handshake_timeout", remote=remote)
                if request is None and received:  # half a request: say why it ends
                    timeout = Refusal(
                        408,
                        f"request not received within {self.handshake_timeout_s:g} s",
                        HttpClass.REQUEST_TIMEOUT,
                    )
                    with trio.move_on_after(CLOSE_TIMEOUT_S):
                        await refuse(stream, None, timeout)
                nursery.cancel_scope.cancel()  # the websocket's reader task
        except Exception:
            log_event(_log, logging.ERROR, "connection_crashed", remote=remote, exc_info=True)
        finally:
            await trio.aclose_forcefully(stream)

    # --- the HTTP side's view (`mtpoold._httprpc.HttpEndpoint`) -----------------------------------

    @property
    def max_body_bytes(self) -> int:
        """``max_frame_bytes``: the largest HTTP body, bytes."""
        return self.max_frame_bytes

    @property
    def draining(self) -> bool:
        """Whether a shutdown is in progress (an HTTP reply then closes its connection)."""
        return self._draining

    @property
    def request_timeout_s(self) -> float:
        """Seconds an HTTP request's head and body may take (``handshake_timeout_s``)."""
        return self.handshake_timeout_s

    def refusal(self, headers: Mapping[bytes, bytes], remote: str) -> Refusal | None:
        """The door of both transports: shutting down (503), a browser origin not allowed
        (403), no or a wrong bearer token (401); counted and logged when it refuses.

        Args:
            headers: The request's headers, names in lower case.
            remote: The peer, for the log.
        """
        origin = headers.get(b"origin")
        refusal: Refusal | None = None
        shown_origin: str | None = None
        if self._draining:
            refusal = Refusal(503, "shutting down", HttpClass.SHUTTING_DOWN)
        elif origin is not None and origin.decode("latin-1") not in self.allowed_origins:
            refusal = Refusal(403, "origin not allowed", HttpClass.ORIGIN_NOT_ALLOWED)
            shown_origin = redact(origin.decode("latin-1"))
        else:
            scheme, _, credentials = headers.get(b"authorization", b"").strip().partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(
                credentials.strip(), self.token.encode("utf-8")
            ):
                reason = "missing bearer token" if not credentials else "wrong bearer token"
                refusal = Refusal(
                    401, reason, HttpClass.UNAUTHORIZED, headers=((b"WWW-Authenticate", b"Bearer"),)
                )
        if refusal is not None:
            self._rejected += 1
            log_event(
                _log,
                logging.WARNING,
                "connection_rejected",
                remote=remote,
                status=refusal.status,
                reason=refusal.reason,
                origin=shown_origin,
            )
        return refusal

    @contextlib.asynccontextmanager
    async def exchange(
        self,
        remote: str,
        send: Callable[[str], Awaitable[None]],
        *,
        forwarded_by: str | None = None,
    ) -> AsyncIterator[_Exchange]:
        """One HTTP request's JSON-RPC exchange with the dispatcher, counted as a connection
        while open (a shutdown waits for it as for a websocket). ``forwarded_by``: the hop
        marker's node; its jobs run on this node's pool only."""
        conn = _Connection(remote=remote, send=send, forwarded_by=forwarded_by)
        self._connections.add(conn)
        try:
            # No reader scope: a shutdown does not cut the response to the replies it owes;
            # `_drain` waits CLOSE_TIMEOUT_S for it, then cancels every connection.
            yield _Exchange(self, conn)
        finally:
            self._connections.discard(conn)
            self._notify()

    # --- websocket connections --------------------------------------------------------------------

    async def _handle_handshake(self, request: WebSocketRequest, remote: str) -> None:
        headers: dict[bytes, bytes] = {name.lower(): value for name, value in request.headers}
        refusal = self.refusal(headers, remote)
        if refusal is not None:
            return await request.reject(
                refusal.status,
                extra_headers=list(refusal.headers) or None,
                body=refusal.reason.encode() + b"\n",
            )
        ws = await request.accept()
        assert isinstance(ws, _WebSocket)  # `_wrap_server_stream` made it
        conn = _Connection(remote=remote, send=functools.partial(_ws_send, ws))
        self._connections.add(conn)
        log_event(
            _log,
            logging.DEBUG,
            "connection_open",
            remote=remote,
            connections=len(self._connections),
        )
        try:
            async with trio.open_nursery() as jobs:
                with conn.reader_scope:
                    await self._read_loop(conn, ws, jobs)
                # the client went away (or shutdown is closing it): nobody to answer
                jobs.cancel_scope.cancel()
        finally:
            close = ws.closed  # the client's close code, or 1009, if it was not us
            try:
                with trio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
                    if self._draining:
                        await ws.aclose(1001, "server shutting down")
                    else:
                        await ws.aclose()
            finally:
                code = close.code if close is not None else (1001 if self._draining else 1000)
                log_event(_log, logging.DEBUG, "connection_closed", remote=remote, code=code)
                self._connections.discard(conn)  # only now: `_drain` waits for this
                self._notify()

    async def _read_loop(self, conn: _Connection, ws: _WebSocket, jobs: trio.Nursery) -> None:
        # Messages queued before the reader may dispatch (the first ones may come with the
        # handshake), in order; then, with no checkpoint between the last look at the queue
        # and setting ``on_message``, every later message goes from the reader task straight
        # to the dispatcher, and `get_message` only waits for the connection to close.
        try:
            while (frame := ws.take_queued()) is not None:
                await self._dispatch(conn, jobs, frame)
            ws.on_message = functools.partial(self._dispatch, conn, jobs)
            while True:
                frame = await ws.get_message()
                await self._dispatch(conn, jobs, frame)
        except ConnectionClosed:
            return
        finally:
            ws.on_message = None  # from here on, nothing more is read for this connection

    async def _send(self, conn: _Connection, text: str) -> None:
        await conn.send(text)

    async def _dispatch(self, conn: _Connection, jobs: trio.Nursery, frame: str | bytes) -> None:
        # The one dispatcher of both transports (a websocket frame, an HTTP body or batch item).
        self._requests += 1
        try:
            request = parse_request(frame)
        except RpcError as exc:
            return await self._send(conn, encode_error(exc.request_id, exc))
        try:
            params = parse_params(request.method, request.params)
            key = _key(request.id)
            if key in conn.calls:
                raise RpcError(
                    INVALID_REQUEST,
                    f"id {request.id!r} is already in flight on this connection",
                    error_class=WireClass.INVALID_REQUEST,
                )
            if request.method in _TASK_METHODS:
                if self._draining:
                    raise _shutting_down_error()
                if conn.unsent >= self.max_in_flight:
                    raise RpcError(
                        TOO_MANY_IN_FLIGHT,
                        f"too many requests in flight on this connection (limit"
                        f" {self.max_in_flight}); wait for replies before sending more",
                        error_class=WireClass.TOO_MANY_IN_FLIGHT,
                    )
                call = _Call(id=request.id)
                conn.calls[key] = call
                conn.unsent += 1
                self._in_flight += 1
                jobs.start_soon(self._run_job, conn, call, params, request)
                return None
            reply = encode_result(request.id, self._control(conn, request.method, params))
        except RpcError as exc:
            reply = encode_error(request.id, exc)
        except Exception:
            log_event(_log, logging.ERROR, "request_crashed", method=request.method, exc_info=True)
            reply = encode_error(request.id, _internal_error())
        await self._send(conn, reply)

    def _control(self, conn: _Connection, method: str, params: object) -> object:
        if method == "ping":
            return {"pong": True, "time": time.time()}
        if isinstance(params, StatusParams):
            status = cattrs.unstructure(self.pool.statistics(accounts=not params.summary))
            if self.doors is not None:
                status["cluster"] = self.doors.cluster_status(holders=not params.summary)
            return status
        if method == "jobs":
            jobs: dict[str, Any] = {"jobs": [cattrs.unstructure(job) for job in self.pool.jobs()]}
            if self.doors is not None:
                jobs["forwarded"] = self.doors.forwarding()
            return jobs
        if isinstance(params, CancelParams):
            call = conn.calls.get(_key(params.id))
            if call is None:
                return {"cancelled": False}
            call.reason = _cancelled_error()
            call.scope.cancel()
            return {"cancelled": True}
        if isinstance(params, DisableParams):
            try:
                reason = self.pool.disable_account(params.id, params.reason)
            except KeyError:
                raise _unknown_account(params.id) from None
            return {"account": params.id, "disabled": True, "reason": reason}
        if isinstance(params, EnableParams):
            try:
                self.pool.enable_account(params.id, force=params.force)
            except KeyError:
                raise _unknown_account(params.id) from None
            except ValueError as exc:  # `mtpoold._pool.EnableRefused`: revoked, pass force
                raise RpcError(
                    INVALID_PARAMS, f"params.force: {exc}", error_class="INVALID_ARGUMENT"
                ) from None
            return {"account": params.id, "disabled": False}
        if isinstance(params, CooldownsParams):
            try:
                return cattrs.unstructure(self.pool.cooldowns(params.id))
            except KeyError:
                raise _unknown_account(params.id) from None
        if isinstance(params, ClearCooldownParams):
            try:
                cleared = self.pool.clear_cooldown(params.id, params.rate_class)
            except KeyError:
                raise _unknown_account(params.id) from None
            except ValueError as exc:  # no such rate class
                raise RpcError(
                    INVALID_PARAMS, f"params.rate_class: {exc}", error_class="INVALID_ARGUMENT"
                ) from None
            return {"account": params.id, "cleared": list(cleared)}
        if isinstance(params, ForgetParams):
            try:
                forgotten = self.pool.forget_account(params.id)
            except ValueError as exc:  # still in the config
                raise RpcError(
                    INVALID_PARAMS, f"params.id: {exc}", error_class=ErrorClass.INVALID_ARGUMENT
                ) from None
            if not forgotten:
                raise RpcError(
                    INVALID_PARAMS,
                    f"params.id: no account {params.id!r} in the state store",
                    error_class=ErrorClass.INVALID_ARGUMENT,
                )
            return {"account": params.id, "forgotten": True}
        raise AssertionError(f"not a control method: {params!r}")  # pragma: no cover

    async def _run_job(
        self, conn: _Connection, call: _Call, params: object, request: Request
    ) -> None:
        reply: str | None = None
        JOB_ORIGIN.set((conn.remote, call.id))  # this task's own context: `mtpoold jobs`
        try:
            with call.scope:
                try:
                    result = await self._routed(conn, params, request)
                    encode = encode_job_result if request.method in _JOB_METHODS else encode_result
                    reply = encode(call.id, result)
                except JobFailed as exc:
                    reply = encode_error(call.id, _job_error(exc))
                except RpcError as exc:
                    reply = encode_error(call.id, exc)
                except Exception:
                    log_event(
                        _log, logging.ERROR, "request_crashed", id=repr(call.id), exc_info=True
                    )
                    reply = encode_error(call.id, _internal_error())
            if reply is None:  # our own scope was cancelled: by `cancel` or by the shutdown
                reply = encode_error(call.id, call.reason or _cancelled_error())
            del conn.calls[_key(call.id)]  # from here on `cancel` finds nothing to cancel
            await self._send(conn, reply)  # waits while the client does not read
        finally:
            conn.calls.pop(_key(call.id), None)
            conn.unsent -= 1  # only now: a reply the client has not taken still counts
            self._in_flight -= 1
            self._notify()

    async def _reload(self) -> dict[str, Any]:
        if self.reloader is None:
            raise RpcError(
                METHOD_NOT_FOUND,
                "reload is not available: this server has no config file to re-read",
                error_class=WireClass.METHOD_NOT_FOUND,
            )
        log_event(_log, logging.INFO, "reload_requested", via="rpc")
        try:
            return dict(await self.reloader())
        except ConfigError as exc:
            n = len(exc.problems)
            raise RpcError(
                RELOAD_FAILED,
                f"config not reloaded ({n} problem{'s' if n != 1 else ''}), still running on"
                " the previous one: " + "; ".join(exc.problems),
                error_class=WireClass.CONFIG_INVALID,
                problems=exc.problems,
            ) from None

    async def _routed(self, conn: _Connection, params: object, request: Request) -> Any:
        # Cluster mode: a client's job goes through the doors (here or a peer); a peer's
        # (hop marker) and every non-job task run here.
        doors = self.doors
        if doors is None or conn.forwarded_by is not None or request.method not in _JOB_METHODS:
            return await self._perform(params)
        options: JobOptions = getattr(params, "options", JobOptions())
        job = ForwardableJob(
            method=request.method,
            params=request.params if isinstance(request.params, dict) else {},
            account=options.account,
            tags=options.tags,
            deadline_s=options.deadline_s,
        )
        return await doors.serve(job, functools.partial(self._perform, params))

    async def _perform(self, params: object) -> dict[str, Any]:
        if isinstance(params, ReloadParams):
            return await self._reload()
        if isinstance(params, InvokeParams):
            o = params.options
            result = await self.pool.invoke(
                params.method,
                params.args,
                deadline_s=o.deadline_s,
                account=o.account,
                tags=o.tags,
                **_cache_option(o),
            )
        elif isinstance(params, ResolveParams):
            o = params.options
            result = await self.pool.resolve(
                params.link_or_username,
                deadline_s=o.deadline_s,
                account=o.account,
                tags=o.tags,
                **_cache_option(o),
            )
        elif isinstance(params, GetMessagesParams):
            o = params.options
            result = await self.pool.get_messages(
                params.peer,
                params.ids,
                deadline_s=o.deadline_s,
                account=o.account,
                tags=o.tags,
                **_cache_option(o),
            )
        else:  # pragma: no cover
            raise AssertionError(f"not a job: {params!r}")
        meta = result.meta
        return {
            "result": result.value,
            "meta": {
                "account": meta.account,
                "proxy_key": meta.proxy_key,
                "attempts": meta.attempts,
                "elapsed_ms": meta.elapsed_ms,
                "shared": meta.shared,
                "merged": meta.merged,
                "age_s": meta.age_s,
            },
        }


def _cache_option(options: JobOptions) -> dict[str, float]:
    """``max_age_s`` for the pool when the request gave one (> 0), else nothing."""
    return {"max_age_s": options.max_age_s} if options.max_age_s > 0 else {}


def _unknown_account(account_id: str) -> RpcError:
    return RpcError(
        INVALID_PARAMS,
        f"params.id: unknown account {account_id!r}",
        error_class=ErrorClass.INVALID_ARGUMENT,
    )


def _unlink_socket(path: str) -> None:
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass
