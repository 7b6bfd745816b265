"""JSON-RPC over plain HTTP ``POST``, on the websocket's own listener (port or unix socket).

The rules (``docs/CONTRACTS.md``, "HTTP transport", repeats them for clients):

* Every accepted stream starts with an HTTP/1.1 request head, read here with h11
  (`read_head`). A websocket upgrade (``GET`` with ``Upgrade: websocket``) goes on to
  trio-websocket with the bytes already read replayed (`ReplayStream`); everything else is
  served here (`serve_http`).
* ``POST /rpc`` (or ``POST /``) with ``Content-Type: application/json`` carries one JSON-RPC
  request, or a batch (a JSON array of requests), in its body; the reply body is one JSON-RPC
  reply, or an array of replies (completion order; match them by ``id``). Every request goes
  through the server's one dispatcher, the websocket's: the same methods, parameters, error
  codes and limits.
* The same token as the websocket (``Authorization: Bearer TOKEN``) and the same browser
  ``Origin`` rule; the same ``max_frame_bytes`` (the body's size, bytes) and ``max_in_flight``
  (the jobs of one HTTP request — one body — whose replies are not ready, -32005 past it).
* HTTP status: 200 for every reply the dispatcher made, except a single request that was not
  JSON or not a JSON-RPC request (-32700, -32600: 400) or that came while the daemon shuts
  down (-32003: 503). Refused at the door, with a JSON-RPC error body (code -32600, the
  ``data.class`` below): 401 no or wrong token, 403 origin, 404 path, 405 method, 408 the head
  and body took longer than ``handshake_timeout_s``, 411 no length, 413 body larger than
  ``max_frame_bytes``, 415 not ``application/json``, 431 head too large, 400 malformed HTTP,
  503 shutting down. A refused request closes the connection.
* Keep-alive: after a reply the connection waits up to ``handshake_timeout_s`` for the next
  request (and its body); idle, it is closed without a reply.
* A client that disconnects (EOF or reset) while its jobs run cancels them, as a websocket
  close does; no reply is written.
* Cluster mode: a request with the hop marker header `HOP_HEADER` (``Mtpoold-Forwarded-By:
  <node>``) was forwarded by that node (`mtpoold._forward`); its jobs run here only.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, Protocol

import attrs
import h11
import trio

from ._logformat import log_event
from ._rpc import INVALID_REQUEST, PARSE_ERROR, SHUTTING_DOWN, RpcError, encode_error

__all__ = [
    "HEAD_LIMIT_BYTES",
    "HOP_HEADER",
    "RPC_PATHS",
    "Exchange",
    "HeadError",
    "HttpClass",
    "HttpEndpoint",
    "Refusal",
    "ReplayStream",
    "RequestHead",
    "read_head",
    "refuse",
    "serve_http",
    "split_batch",
]

_log = logging.getLogger("mtpoold.server")

#: Bytes of a request head (request line and headers) buffered while incomplete (h11's
#: ``max_incomplete_event_size``); more: 431. A head read whole in one receive (at most
#: `_READ_BYTES` more) is parsed.
HEAD_LIMIT_BYTES: Final = 16 * 1024
#: The hop marker of cluster mode (`mtpoold._forward`): a request carrying it was forwarded by
#: the node it names, and its jobs run on this node's own accounts, never forwarded again.
HOP_HEADER: Final = "Mtpoold-Forwarded-By"
#: The paths a JSON-RPC ``POST`` may go to.
RPC_PATHS: Final = frozenset({b"/", b"/rpc"})
_READ_BYTES: Final = 65536
#: Seconds a refused client gets to stop sending (its unread body is discarded) before the
#: connection closes: closing with unread data would reset it and lose the refusal.
_LINGER_S: Final = 1.0
#: Bytes of a next request a client may send while its jobs run (HTTP pipelining) before the
#: server stops reading it (and with it, stops noticing a disconnect) until the reply is out.
_PIPELINE_BYTES: Final = 64 * 1024
#: JSON-RPC codes of a single request's reply that change the HTTP status (else 200).
_STATUS_OF_CODE: Final[Mapping[int, int]] = {
    PARSE_ERROR: 400,
    INVALID_REQUEST: 400,
    SHUTTING_DOWN: 503,
}


class HttpClass(enum.StrEnum):
    """``data.class`` of the JSON-RPC error body of a request refused at the HTTP level (code
    -32600); the HTTP status goes with it."""

    BAD_HTTP = "BAD_HTTP"  # 400
    UNAUTHORIZED = "UNAUTHORIZED"  # 401
    ORIGIN_NOT_ALLOWED = "ORIGIN_NOT_ALLOWED"  # 403
    NOT_FOUND = "NOT_FOUND"  # 404
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"  # 405
    REQUEST_TIMEOUT = "REQUEST_TIMEOUT"  # 408
    LENGTH_REQUIRED = "LENGTH_REQUIRED"  # 411
    BODY_TOO_LARGE = "BODY_TOO_LARGE"  # 413
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"  # 415
    HEAD_TOO_LARGE = "HEAD_TOO_LARGE"  # 431
    SHUTTING_DOWN = "SHUTTING_DOWN"  # 503


@attrs.frozen
class Refusal:
    """A request refused before any JSON-RPC: an HTTP status and why.

    Attributes:
        status: The HTTP status code.
        reason: One line for humans (no secret, no header value but a browser origin).
        error_class: ``data.class`` of the JSON-RPC error body.
        headers: Extra response headers (``WWW-Authenticate`` for 401, ``Allow`` for 405).
    """

    status: int
    reason: str
    error_class: HttpClass
    headers: tuple[tuple[bytes, bytes], ...] = ()

    def body(self) -> bytes:
        """The JSON-RPC error reply (``"id": null``), UTF-8."""
        error = RpcError(INVALID_REQUEST, self.reason, error_class=self.error_class)
        return encode_error(None, error).encode("utf-8")


# --- the server as the HTTP side sees it ----------------------------------------------------------


class Exchange(Protocol):
    """What the HTTP side needs of one JSON-RPC exchange: dispatching requests, once per
    HTTP request (`HttpEndpoint.exchange`)."""

    async def dispatch(self, jobs: trio.Nursery, frame: str | bytes) -> None:
        """Answer one JSON-RPC request text through the server's dispatcher: exactly one
        reply, given to the exchange's ``send`` (at once, or from a job task in ``jobs``)."""
        ...


class HttpEndpoint(Protocol):
    """The part of `mtpoold._server.RpcServer` `serve_http` uses."""

    @property
    def max_body_bytes(self) -> int:
        """``max_frame_bytes``: the largest body, bytes."""
        ...

    @property
    def draining(self) -> bool:
        """Whether a shutdown is in progress: a reply closes its connection."""
        ...

    @property
    def request_timeout_s(self) -> float:
        """Seconds a request's head and body may take to arrive (``handshake_timeout_s``)."""
        ...

    def refusal(self, headers: Mapping[bytes, bytes], remote: str) -> Refusal | None:
        """The websocket handshake's checks (shutting down, origin, token) on a request's
        headers (lower-case names); counted and logged when it refuses."""
        ...

    def exchange(
        self,
        remote: str,
        send: Callable[[str], Awaitable[None]],
        *,
        forwarded_by: str | None = None,
    ) -> contextlib.AbstractAsyncContextManager[Exchange]:
        """One HTTP request's JSON-RPC exchange, registered with the server while open
        (shutdown waits for it); replies go to ``send``. ``forwarded_by``: the node named by
        the request's hop marker (`HOP_HEADER`), whose jobs are never forwarded again."""
        ...


# --- reading the head -----------------------------------------------------------------------------


@attrs.frozen
class RequestHead:
    """The head of an HTTP request and every byte read to get it.

    Attributes:
        connection: The h11 server connection that parsed it (it holds any body bytes read
            with the head).
        request: The parsed request line and headers.
        raw: Every byte read from the stream so far (what `ReplayStream` replays).
    """

    connection: h11.Connection
    request: h11.Request
    raw: bytes

    def header(self, name: bytes) -> bytes | None:
        """The value of header ``name`` (lower case), the first if repeated, or None."""
        return next((v for k, v in self.request.headers if k == name), None)

    @property
    def is_websocket_upgrade(self) -> bool:
        """Whether this is a websocket opening handshake (RFC 6455 §4.1: ``GET`` with
        ``Upgrade: websocket``); the websocket library checks the rest."""
        upgrade = self.header(b"upgrade") or b""
        return self.request.method == b"GET" and b"websocket" in upgrade.lower()


class HeadError(Exception):
    """The bytes before the head's end are not an HTTP/1.1 request head (or too many).

    Attributes:
        refusal: What to answer.
    """

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal


async def read_head(
    stream: trio.abc.Stream,
    connection: h11.Connection | None = None,
    *,
    received: bytearray | None = None,
) -> RequestHead | None:
    """Read the next request head from ``stream``, without a deadline (the caller sets one).

    Args:
        stream: The accepted stream.
        connection: The h11 connection of a kept-alive stream (its next cycle started), or
            None for a fresh one.
        received: Where the bytes read go as they come (the caller's view when its
            deadline interrupts the read: nothing yet, or half a head); None: a new buffer.

    Returns:
        The head, or None when the client closed the connection before sending a byte.

    Raises:
        HeadError: malformed HTTP (400) or a head over `HEAD_LIMIT_BYTES` (431).
        trio.BrokenResourceError: the connection broke.
    """
    conn = connection or h11.Connection(h11.SERVER, max_incomplete_event_size=HEAD_LIMIT_BYTES)
    raw = bytearray() if received is None else received
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            if exc.error_status_hint == 431:
                raise HeadError(
                    Refusal(431, "request head too large", HttpClass.HEAD_TOO_LARGE)
                ) from None
            raise HeadError(Refusal(400, "malformed HTTP request", HttpClass.BAD_HTTP)) from None
        if isinstance(event, h11.Request):
            return RequestHead(connection=conn, request=event, raw=bytes(raw))
        if event is h11.NEED_DATA:
            data = await stream.receive_some(_READ_BYTES)
            if not data and not raw and conn.their_state is h11.IDLE:
                return None  # closed (or kept alive and then closed) without a request
            raw += data
            conn.receive_data(bytes(data))
            continue
        if isinstance(event, h11.ConnectionClosed):
            return None
        raise HeadError(Refusal(400, "malformed HTTP request", HttpClass.BAD_HTTP))


@attrs.define(eq=False)
class ReplayStream(trio.abc.Stream):
    """``stream``, whose first bytes received are ``prefix`` again (the head `read_head` has
    read), for the websocket library to read the handshake itself."""

    stream: trio.abc.Stream
    prefix: bytes

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self.prefix:
            n = len(self.prefix) if max_bytes is None else max_bytes
            data, self.prefix = self.prefix[:n], self.prefix[n:]
            await trio.lowlevel.checkpoint()
            return data
        return bytes(await self.stream.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.stream.aclose()


# --- serving --------------------------------------------------------------------------------------


def _route(head: RequestHead) -> Refusal | None:
    request = head.request
    path = request.target.split(b"?", 1)[0]
    if path not in RPC_PATHS:
        return Refusal(404, "not found: JSON-RPC is POST /rpc", HttpClass.NOT_FOUND)
    if request.method != b"POST":
        return Refusal(
            405,
            "JSON-RPC over HTTP takes POST (or a websocket upgrade)",
            HttpClass.METHOD_NOT_ALLOWED,
            headers=((b"Allow", b"POST"),),
        )
    return None


def _content_refusal(head: RequestHead, max_bytes: int) -> Refusal | None:
    media = (head.header(b"content-type") or b"").split(b";", 1)[0].strip().lower()
    if media != b"application/json":
        return Refusal(
            415, "Content-Type must be application/json", HttpClass.UNSUPPORTED_MEDIA_TYPE
        )
    length = head.header(b"content-length")
    if length is not None and int(length) > max_bytes:  # h11 checked it is digits
        return Refusal(413, f"body larger than {max_bytes} bytes", HttpClass.BODY_TOO_LARGE)
    if length is None and head.header(b"transfer-encoding") is None:
        return Refusal(411, "a body needs Content-Length or chunked", HttpClass.LENGTH_REQUIRED)
    return None


class _BodyTooLarge(Exception):
    pass


async def _read_body(stream: trio.abc.Stream, conn: h11.Connection, max_bytes: int) -> bytes:
    if conn.client_is_waiting_for_100_continue:
        await stream.send_all(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(_READ_BYTES)
            if not data:
                raise trio.BrokenResourceError("closed in the middle of the body")
            conn.receive_data(bytes(data))
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > max_bytes:
                raise _BodyTooLarge
        elif isinstance(event, h11.EndOfMessage):
            return bytes(body)
        else:  # pragma: no cover - h11 gives nothing else inside a body
            raise h11.RemoteProtocolError(f"unexpected {event!r} in a body")


def split_batch(body: bytes) -> list[str] | None:
    """The request texts of a batch body (a JSON array), or None when ``body`` is not an
    array (it is one request then, or not JSON: the dispatcher says which).

    Each element is cut out of the body as written, so the dispatcher reads it as it would a
    websocket frame (the same number rules, the same errors). A body that starts like an
    array but is not valid JSON (or not UTF-8) is None too: one text, which the dispatcher
    answers -32700.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None  # one text: the dispatcher answers -32700, not UTF-8
    start = len(text) - len(text.lstrip(_JSON_SPACE))
    if not text.startswith("[", start):
        return None
    decoder = json.JSONDecoder()
    parts: list[str] = []
    i = start + 1
    try:
        while True:
            while i < len(text) and text[i] in _JSON_SPACE:
                i += 1
            if text.startswith("]", i) and not parts:
                i += 1
                break
            _obj, end = decoder.raw_decode(text, i)
            parts.append(text[i:end])
            i = end
            while i < len(text) and text[i] in _JSON_SPACE:
                i += 1
            if text.startswith(",", i):
                i += 1
                continue
            if text.startswith("]", i):
                i += 1
                break
            raise ValueError("expected , or ]")
    except (ValueError, RecursionError):
        return None
    if text[i:].strip(_JSON_SPACE):
        return None
    return parts


#: What JSON calls whitespace (RFC 8259 §2): not U+00A0, U+2028 and the rest `str.isspace`
#: takes.
_JSON_SPACE: Final = " \t\n\r"


def _status_of(reply: str) -> int:
    # Error replies are short; a long reply is a result.
    if len(reply) > 4096:
        return 200
    error = json.loads(reply).get("error")
    return _STATUS_OF_CODE.get(error["code"], 200) if isinstance(error, dict) else 200


def _response(
    conn: h11.Connection,
    status: int,
    body: bytes,
    *,
    close: bool,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> bytes:
    fields = [
        (b"Content-Type", b"application/json"),
        (b"Content-Length", str(len(body)).encode()),
        *headers,
    ]
    if close:
        fields.append((b"Connection", b"close"))
    return b"".join(
        [
            conn.send(
                h11.Response(
                    status_code=status, headers=fields, reason=_reason_phrase(status).encode()
                )
            ),
            conn.send(h11.Data(data=body)) or b"",
            conn.send(h11.EndOfMessage()) or b"",
        ]
    )


def _raw_refusal(refusal: Refusal) -> bytes:
    """A refusal for a stream h11 cannot answer (no request line was read)."""
    body = refusal.body()
    return (
        f"HTTP/1.1 {refusal.status} {_reason_phrase(refusal.status)}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


def _reason_phrase(status: int) -> str:
    """The reason phrase of ``status`` (``"Bad Request"``), from the standard library."""
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


async def _linger(stream: trio.abc.Stream) -> None:
    """Stop sending, then discard what the client still sends for up to `_LINGER_S`."""
    with trio.move_on_after(_LINGER_S):
        send_eof = getattr(stream, "send_eof", None)
        if send_eof is not None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await send_eof()
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while await stream.receive_some(_READ_BYTES):
                pass


async def refuse(stream: trio.abc.Stream, head: RequestHead | None, refusal: Refusal) -> None:
    """Answer ``refusal`` and close politely (the stream itself is closed by the caller)."""
    conn = head.connection if head is not None else None
    if conn is not None and conn.our_state is h11.SEND_RESPONSE:
        data = _response(conn, refusal.status, refusal.body(), close=True, headers=refusal.headers)
    else:
        data = _raw_refusal(refusal)
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send_all(data)
    await _linger(stream)


@attrs.define(eq=False)
class _Replies:
    texts: list[str] = attrs.field(factory=list)

    async def send(self, text: str) -> None:
        self.texts.append(text)
        await trio.lowlevel.checkpoint()


async def _watch_disconnect(
    stream: trio.abc.Stream, conn: h11.Connection, gone: trio.CancelScope
) -> None:
    """Cancel ``gone`` when the client closes or breaks the connection; bytes of a next
    request it sends meanwhile go to ``conn`` (up to `_PIPELINE_BYTES`)."""
    seen = 0
    while seen <= _PIPELINE_BYTES:
        try:
            data = await stream.receive_some(_READ_BYTES)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if not data:
            gone.cancel()
            return
        seen += len(data)
        conn.receive_data(bytes(data))
    await trio.sleep_forever()


async def _answer(
    endpoint: HttpEndpoint,
    stream: trio.abc.Stream,
    conn: h11.Connection,
    remote: str,
    body: bytes,
    forwarded_by: str | None = None,
) -> bool:
    """Run the body's request(s) through the dispatcher and send the response; False when
    the client went away first (its jobs are cancelled, nothing is sent).

    The exchange stays registered until the response is written: a shutdown waits for it.
    """
    batch = split_batch(body)
    frames: list[str | bytes] = [body] if batch is None else list(batch)
    replies = _Replies()
    gone = trio.CancelScope()
    async with endpoint.exchange(remote, replies.send, forwarded_by=forwarded_by) as exchange:
        async with trio.open_nursery() as watching:
            watching.start_soon(_watch_disconnect, stream, conn, gone)
            with gone:
                async with trio.open_nursery() as jobs:
                    for frame in frames:
                        await exchange.dispatch(jobs, frame)
            watching.cancel_scope.cancel()
        if gone.cancelled_caught:
            return False
        if batch is None:
            [reply] = replies.texts
            status, data = _status_of(reply), reply.encode("utf-8")
        elif not batch:  # ``[]``: one error (JSON-RPC 2.0 §6)
            error = RpcError(INVALID_REQUEST, "empty batch", error_class="INVALID_REQUEST")
            status, data = 400, encode_error(None, error).encode("utf-8")
        else:
            status, data = 200, ("[" + ",".join(replies.texts) + "]").encode("utf-8")
        keep = (
            conn.their_state is h11.DONE
            and conn.our_state is h11.SEND_RESPONSE
            and not endpoint.draining
        )
        await stream.send_all(_response(conn, status, data, close=not keep))
        return True


async def serve_http(
    endpoint: HttpEndpoint,
    stream: trio.abc.Stream,
    head: RequestHead,
    remote: str,
) -> None:
    """Serve JSON-RPC ``POST`` requests on ``stream``, starting with the one of ``head``,
    until the client or a refusal closes the connection (module docstring: the rules).

    Args:
        endpoint: The server.
        stream: The accepted stream; the caller closes it.
        head: The first request's head (read by `read_head`).
        remote: The peer's address, for the log.

    Never raises for anything the client does; a broken connection just ends it.
    """
    conn = head.connection
    deadline = trio.current_time() + endpoint.request_timeout_s
    try:
        while True:
            refusal = (
                _route(head)
                or endpoint.refusal(dict(head.request.headers), remote)
                or _content_refusal(head, endpoint.max_body_bytes)
            )
            body: bytes | None = None
            if refusal is None:
                with trio.move_on_at(deadline):
                    try:
                        body = await _read_body(stream, conn, endpoint.max_body_bytes)
                    except _BodyTooLarge:
                        refusal = Refusal(
                            413,
                            f"body larger than {endpoint.max_body_bytes} bytes",
                            HttpClass.BODY_TOO_LARGE,
                        )
                    except h11.RemoteProtocolError:
                        refusal = Refusal(400, "malformed HTTP body", HttpClass.BAD_HTTP)
                if body is None and refusal is None:
                    refusal = Refusal(
                        408,
                        f"request not received within {endpoint.request_timeout_s:g} s",
                        HttpClass.REQUEST_TIMEOUT,
                    )
            if refusal is not None:
                log_event(
                    _log,
                    logging.DEBUG,
                    "http_refused",
                    remote=remote,
                    status=refusal.status,
                    reason=refusal.reason,
                )
                return await refuse(stream, head, refusal)
            assert body is not None
            hop = head.header(HOP_HEADER.lower().encode("ascii"))
            forwarded_by = hop.decode("utf-8", "replace") if hop is not None else None
            if not await _answer(endpoint, stream, conn, remote, body, forwarded_by):
                log_event(_log, logging.DEBUG, "http_client_gone", remote=remote)
                return
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return  # Connection: close (theirs or ours), HTTP/1.0
            conn.start_next_cycle()
            deadline = trio.current_time() + endpoint.request_timeout_s
            next_head: RequestHead | None = None
            with trio.move_on_at(deadline):
                try:
                    next_head = await read_head(stream, conn)
                except HeadError as exc:
                    return await refuse(stream, None, exc.refusal)
            if next_head is None:
                return  # closed, idle or shutting down: no reply owed
            head = next_head
            if head.is_websocket_upgrade:
                return await refuse(
                    stream,
                    head,
                    Refusal(
                        400, "a websocket upgrade must open its connection", HttpClass.BAD_HTTP
                    ),
                )
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return
