"""The client side of mtpoold's JSON-RPC, for the CLI and `mtpoold.client`: the one owner of
building requests, reading replies and mapping failures, over both transports.

* Websocket (trio): `WebSocketSession` keeps one connection and runs many calls on it at
  once, matched by id; a call whose caller is cancelled sends ``cancel`` for its id. `call`
  is the CLI's one-shot form (one connection, one call: ``status --watch`` reconnects each
  time, so a dead or restarted daemon is noticed at once and reported as unreachable).
* HTTP POST (no trio, no asyncio inside): `HttpCodec` is the sans-IO part (h11) of one
  ``POST /rpc`` exchange, one connection per exchange (``Connection: close``);
  `mtpoold.client` drives it over a blocking socket or asyncio streams.

Failures: `RemoteError` (an `mtpoold._rpc.RpcError`) for every error the daemon answered,
JSON-RPC errors and HTTP refusals alike (`AuthRejected` for 401/403 is one);
`DaemonUnreachable` when no answer came.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final
from urllib.parse import urlsplit

import attrs
import h11
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    wrap_client_stream,
)

from ._errors import leaves
from ._listen import parse_listen
from ._rpc import INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, RpcError

__all__ = [
    "AuthRejected",
    "ClientError",
    "DaemonUnreachable",
    "HttpCodec",
    "RemoteError",
    "Target",
    "WebSocketSession",
    "call",
    "open_session",
    "parse_target",
    "request_object",
    "result_of",
    "target_from_listen",
]

MAX_REPLY_BYTES: Final = 64 * 2**20  # 64 MiB: a status reply of a large pool still fits
DEFAULT_TIMEOUT_S: Final = 30.0
HTTP_PATH: Final = "/rpc"
_CLOSE_WAIT_S: Final = 1.0  # the close handshake after the reply, at most
_CANCEL_WAIT_S: Final = 1.0  # sending ``cancel`` for a call its caller gave up, at most
_ids = itertools.count(1)


class ClientError(Exception):
    """Base of every failure a client call raises."""


class DaemonUnreachable(ClientError):
    """No daemon answered at the target (refused, no such socket, timeout, connection lost)."""


class RemoteError(RpcError, ClientError):
    """An error the daemon answered: a JSON-RPC error object, or an HTTP refusal (its body is
    one; ``http_status`` says which).

    Attributes (beyond `mtpoold._rpc.RpcError`'s ``code``, ``message``, ``error_class``,
    ``retry_after_s`` in seconds, ``account``, ``attempts``, ``problems``):
        data: The error's ``data`` member as sent (``{"class", "retry_after_s", "account",
            "attempts", ...}``), ``{}`` when absent.
        http_status: The HTTP status of an HTTP reply or refused websocket upgrade, else None.
    """

    def __init__(
        self,
        code: int,
        message: str,
        *,
        data: Mapping[str, Any] | None = None,
        http_status: int | None = None,
    ) -> None:
        base = RpcError.from_object({"code": code, "message": message, "data": data or {}})
        super().__init__(
            base.code,
            base.message,
            error_class=base.error_class,
            retry_after_s=base.retry_after_s,
            account=base.account,
            attempts=base.attempts,
            problems=base.problems,
        )
        self.data: dict[str, Any] = dict(data or {})
        self.http_status = http_status

    @classmethod
    def from_error(cls, obj: object, *, http_status: int | None = None) -> RemoteError:
        """Build one from a reply's ``error`` member; malformed members never raise."""
        if not isinstance(obj, Mapping):
            return cls(INTERNAL_ERROR, f"malformed error object: {obj!r}", http_status=http_status)
        code, data = obj.get("code"), obj.get("data")
        return cls(
            code if isinstance(code, int) else INTERNAL_ERROR,
            str(obj.get("message", "")),
            data=data if isinstance(data, Mapping) else None,
            http_status=http_status,
        )


class AuthRejected(RemoteError):
    """The daemon refused the token (401) or the browser origin (403).

    Attributes:
        status: The HTTP status code (as ``http_status``).
    """

    def __init__(self, status: int, message: str) -> None:
        error_class = "UNAUTHORIZED" if status == 401 else "ORIGIN_NOT_ALLOWED"
        super().__init__(INVALID_REQUEST, message, data={"class": error_class}, http_status=status)
        self.status = status

    def __str__(self) -> str:
        return self.message


def _not_json_number(value: object, path: str) -> tuple[str, float] | None:
    """The path and value of the first float in ``value`` JSON cannot write (NaN, infinity)."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, value)
    if isinstance(value, Mapping):
        items: Any = ((f"{path}.{k}", v) for k, v in value.items())
    elif isinstance(value, list | tuple):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for sub_path, sub in items:
        if (found := _not_json_number(sub, sub_path)) is not None:
            return found
    return None


def request_object(
    request_id: int, method: str, params: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The JSON-RPC 2.0 request object (``params`` left out when None).

    Raises:
        RemoteError: INVALID_ARGUMENT (-32602) naming the member (``params.options.deadline_ms:
            inf is not a JSON number``) when ``params`` holds NaN or an infinity, which JSON
            cannot write: refused here, before sending, as the daemon refuses ``1e400``
            (shared case 002). Sent as ``NaN``, the daemon could only answer PARSE_ERROR
            without the request's id, which a websocket session cannot match to its call.
    """
    request: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        request["params"] = dict(params)
        if (found := _not_json_number(request["params"], "params")) is not None:
            path, value = found
            raise RemoteError(
                INVALID_PARAMS,
                f"{path}: {value!r} is not a JSON number (NaN and infinities cannot be sent)",
                data={"class": "INVALID_ARGUMENT"},
            )
    return request


def result_of(reply: object, *, http_status: int | None = None) -> Any:
    """The ``result`` of a decoded reply object.

    Raises:
        RemoteError: if it carries an ``error`` (or is not a reply object at all).
    """
    if not isinstance(reply, Mapping):
        raise RemoteError(
            INTERNAL_ERROR, f"not a JSON-RPC reply: {type(reply).__name__}", http_status=http_status
        )
    if "error" in reply:
        raise RemoteError.from_error(reply["error"], http_status=http_status)
    return reply.get("result")


# --- targets --------------------------------------------------------------------------------------


@attrs.frozen
class Target:
    """Where the daemon is.

    Attributes:
        host: TCP host, or None for a unix socket.
        port: TCP port, or None for a unix socket.
        path: Unix socket path, or None for TCP.
        resource: The HTTP path of the websocket upgrade request.
    """

    host: str | None = None
    port: int | None = None
    path: str | None = None
    resource: str = "/"

    def __str__(self) -> str:
        if self.path is not None:
            return f"unix:{self.path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"ws://{host}:{self.port}{self.resource}"


def parse_target(url: str) -> Target:
    """Parse ``ws://HOST:PORT[/path]``, ``http://HOST:PORT[/rpc]``, ``HOST:PORT`` or
    ``unix:/path`` (the same daemon serves the websocket and HTTP POST on one address).

    Raises:
        ValueError: if ``url`` is none of these.
    """
    if url.startswith("unix:"):
        if not url[5:]:
            raise ValueError(f"{url!r}: empty unix socket path")
        return Target(path=url[5:])
    if "://" not in url:
        url = "ws://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "http"):
        raise ValueError(f"{url!r}: only ws://, http:// and unix: are supported")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r}: bad port") from None
    if not parts.hostname or port is None:
        raise ValueError(f"{url!r}: expected ws://HOST:PORT")
    resource = (parts.path or "/") if parts.scheme == "ws" else "/"
    return Target(host=parts.hostname, port=port, resource=resource)


def target_from_listen(listen: str) -> Target:
    """The target a client uses for the daemon's ``listen`` address.

    A wildcard bind (``0.0.0.0``, ``::``, empty) is reached on the loopback address.

    Raises:
        ValueError: if ``listen`` is malformed.
    """
    if listen.startswith("unix:"):
        return parse_target(listen)
    address = parse_listen(listen)  # the server's own parser
    host, port = address.host or "", address.port
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return parse_target(f"ws://{host}:{port}/")


# --- websocket (trio) -----------------------------------------------------------------------------


async def _open_stream(target: Target) -> trio.SocketStream:
    if target.path is not None:
        return await trio.open_unix_socket(target.path)
    assert target.host is not None and target.port is not None
    return await trio.open_tcp_stream(target.host, target.port)


@attrs.define(eq=False)
class _Waiter:
    done: trio.Event = attrs.field(factory=trio.Event)
    reply: dict[str, Any] | None = None


@attrs.define(eq=False)
class WebSocketSession:
    """One websocket connection carrying many calls at once (`open_session` makes one)."""

    target: Target
    _ws: WebSocketConnection
    _waiting: dict[int, _Waiter] = attrs.field(factory=dict)
    _lost: str | None = None  # why the connection is gone, once it is

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """Send one request and wait for its reply; the ``result`` member.

        No deadline of its own (the caller's cancel scope is one; so is the job's
        ``options.deadline_ms`` in the daemon). A caller cancelled while the job runs sends
        ``cancel`` for it (at most `_CANCEL_WAIT_S`), so the daemon stops the job too.

        Raises:
            RemoteError: the daemon's error reply.
            DaemonUnreachable: the connection is or went away before the reply.
        """
        if self._lost is not None:
            raise DaemonUnreachable(self._lost)
        request_id = next(_ids)
        waiter = self._waiting[request_id] = _Waiter()
        try:
            try:
                await self._ws.send_message(json.dumps(request_object(request_id, method, params)))
            except ConnectionClosed:
                raise DaemonUnreachable(f"connection to {self.target} lost") from None
            try:
                await waiter.done.wait()
            except trio.Cancelled:
                with trio.move_on_after(_CANCEL_WAIT_S, shield=True):
                    cancel = request_object(next(_ids), "cancel", {"id": request_id})
                    try:
                        await self._ws.send_message(json.dumps(cancel))
                    except ConnectionClosed:
                        pass
                raise
        finally:
            del self._waiting[request_id]
        if waiter.reply is None:
            raise DaemonUnreachable(self._lost or f"connection to {self.target} lost")
        return result_of(waiter.reply)

    async def _read(self) -> None:
        try:
            while True:
                message = json.loads(await self._ws.get_message())
                if not isinstance(message, dict):
                    continue
                request_id = message.get("id")
                waiter = self._waiting.get(request_id) if isinstance(request_id, int) else None
                if waiter is not None:
                    waiter.reply = message
                    waiter.done.set()
                elif request_id is None and "error" in message:
                    raise _Unanswerable(RemoteError.from_error(message["error"]))
        except ConnectionClosed as exc:
            self._lose(_closed_why(self.target, exc))
        except json.JSONDecodeError:
            self._lose(f"{self.target} sent a reply that is not JSON")
        except _Unanswerable as exc:
            self._lose(f"{self.target} answered an unreadable request: {exc.error}")

    def _lose(self, why: str) -> None:
        self._lost = why
        for waiter in self._waiting.values():
            waiter.done.set()


class _Unanswerable(Exception):
    def __init__(self, error: RemoteError) -> None:
        super().__init__(str(error))
        self.error = error


@asynccontextmanager
async def open_session(
    target: Target, token: str, *, connect_timeout_s: float = DEFAULT_TIMEOUT_S
) -> AsyncIterator[WebSocketSession]:
    """Connect to the daemon's websocket and authenticate; close it on the way out.

    Args:
        target: Where the daemon listens.
        token: The bearer token.
        connect_timeout_s: Seconds for the connection and the upgrade together.

    Raises:
        AuthRejected: the daemon refused the token or the origin.
        DaemonUnreachable: no daemon answered (refused, missing socket, timeout, closed).
    """
    stream: trio.SocketStream | None = None
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(connect_timeout_s):
                stream = await _open_stream(target)
                ws = await wrap_client_stream(
                    nursery,
                    stream,
                    target.host or "localhost",
                    target.resource,
                    extra_headers=[(b"Authorization", b"Bearer " + token.encode("utf-8"))],
                    max_message_size=MAX_REPLY_BYTES,
                )
            session = WebSocketSession(target, ws)
            nursery.start_soon(session._read)
            try:
                yield session
            finally:
                with trio.move_on_after(_CLOSE_WAIT_S, shield=True):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    except trio.TooSlowError:
        raise DaemonUnreachable(f"no answer from {target} within {connect_timeout_s:g} s") from None
    except BaseException as exc:  # noqa: BLE001 - mapped, or re-raised as it was
        _raise_mapped(exc, target)
        raise
    finally:
        # trio-websocket does not close the stream when the server closed first: we own it.
        if stream is not None:
            await trio.aclose_forcefully(stream)


async def call(
    target: Target,
    token: str,
    method: str,
    params: dict[str, Any] | None = None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Any:
    """Make one JSON-RPC call on a connection of its own and return its ``result``.

    Args:
        target: Where the daemon listens.
        token: The bearer token.
        method: The JSON-RPC method.
        params: Its parameters, or None.
        timeout_s: Seconds for connecting, the call and the reply together.

    Returns:
        The reply's ``result`` member.

    Raises:
        RemoteError: if the daemon answered with an error object (an `RpcError`).
        AuthRejected: if the daemon refused the token or the origin.
        DaemonUnreachable: if no daemon answered (refused, missing socket, timeout, closed).
    """
    try:
        with trio.fail_after(timeout_s):
            async with open_session(target, token, connect_timeout_s=math.inf) as session:
                return await session.call(method, params)
    except trio.TooSlowError:
        raise DaemonUnreachable(f"no reply from {target} within {timeout_s:g} s") from None


#: Close codes the daemon sends, and what the client did to get them (RFC 6455 §7.4.1).
_CLOSED_BECAUSE: Final = {
    1007: "a request that is not UTF-8 text",
    1009: "a request larger than its daemon.max_frame_bytes",
}


def _closed_why(target: Target, exc: ConnectionClosed) -> str:
    """Why the connection ended, as the daemon said in its close frame (1009: the request
    was too large, not a daemon gone away)."""
    code = getattr(exc.reason, "code", None)
    because = _CLOSED_BECAUSE.get(code) if isinstance(code, int) else None
    if because is None:
        return f"connection to {target} lost before a reply"
    return f"{target} closed the connection ({code}) before a reply: {because}"


def _raise_mapped(exc: BaseException, target: Target) -> None:
    found = [e for e in leaves(exc) if not isinstance(e, trio.Cancelled)]
    if not found:
        return
    first = found[0]
    if isinstance(first, ConnectionRejected):
        status = first.status_code
        body = (first.body or b"").decode("utf-8", "replace").strip()
        message = f"{target} refused the connection: HTTP {status} {body}".rstrip()
        if status in (401, 403):
            raise AuthRejected(status, message) from None
        raise DaemonUnreachable(message) from None
    if isinstance(first, OSError):
        raise DaemonUnreachable(f"cannot connect to {target}: {first.strerror or first}") from None
    if isinstance(first, ConnectionClosed | HandshakeError | trio.BrokenResourceError):
        raise DaemonUnreachable(f"connection to {target} lost before a reply") from None
    if isinstance(exc, BaseExceptionGroup) and len(found) == 1:
        raise first from None


# --- HTTP POST (sans-IO) --------------------------------------------------------------------------


@attrs.define(eq=False)
class HttpCodec:
    """One ``POST /rpc`` exchange, sans-IO (h11): `request` gives the bytes to send, `feed`
    takes what came back until it returns the decoded reply.

    Args:
        target: Where the daemon listens (the ``Host`` header).
        token: The bearer token.
        max_reply_bytes: Largest reply body accepted, bytes.
    """

    target: Target
    token: str = attrs.field(repr=False)
    max_reply_bytes: int = MAX_REPLY_BYTES
    _conn: h11.Connection = attrs.field(factory=lambda: h11.Connection(h11.CLIENT))
    _status: int = 0
    _body: bytearray = attrs.field(factory=bytearray)

    def request(self, payload: object) -> bytes:
        """The whole request (head and JSON body) carrying ``payload``."""
        body = json.dumps(payload, ensure_ascii=False, allow_nan=False).encode("utf-8")
        t = self.target
        host = "localhost" if t.host is None else f"[{t.host}]" if ":" in t.host else t.host
        if t.port is not None:
            host += f":{t.port}"
        head = h11.Request(
            method="POST",
            target=HTTP_PATH,
            headers=[
                (b"Host", host.encode("idna")),
                (b"Authorization", b"Bearer " + self.token.encode("utf-8")),
                (b"Content-Type", b"application/json"),
                (b"Content-Length", str(len(body)).encode()),
                (b"Connection", b"close"),
            ],
        )
        return b"".join(
            [self._conn.send(head), self._conn.send(h11.Data(data=body)) or b"",
             self._conn.send(h11.EndOfMessage()) or b""]
        )  # fmt: skip

    def feed(self, data: bytes) -> tuple[int, Any] | None:
        """Take bytes received (``b""`` at EOF); ``(HTTP status, decoded JSON body)`` once
        the response is complete, else None.

        Raises:
            DaemonUnreachable: the response is not HTTP, not JSON, too large, or cut short.
        """
        self._conn.receive_data(data)
        while True:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise DaemonUnreachable(f"{self.target} sent a broken HTTP reply: {exc}") from None
            if event is h11.NEED_DATA:
                return None
            if isinstance(event, h11.Response):
                self._status = event.status_code
            elif isinstance(event, h11.Data):
                self._body += event.data
                if len(self._body) > self.max_reply_bytes:
                    raise DaemonUnreachable(f"{self.target} sent a reply over the size limit")
            elif isinstance(event, h11.EndOfMessage):
                try:
                    return self._status, json.loads(self._body)
                except ValueError:
                    raise DaemonUnreachable(
                        f"{self.target} sent an HTTP {self._status} reply that is not JSON"
                    ) from None
            elif isinstance(event, h11.ConnectionClosed):
                raise DaemonUnreachable(f"connection to {self.target} lost before a reply")

    def result(self, status: int, reply: object) -> Any:
        """The ``result`` of a single request's reply (`result_of`, with the HTTP status;
        401/403 raise `AuthRejected`)."""
        if status in (401, 403):
            message = ""
            if isinstance(reply, Mapping) and isinstance(reply.get("error"), Mapping):
                message = str(reply["error"].get("message", ""))
            raise AuthRejected(
                status, f"{self.target} refused the request: HTTP {status} {message}"
            )
        return result_of(reply, http_status=status)
