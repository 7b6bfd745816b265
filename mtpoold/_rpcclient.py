"""The CLI's side of the websocket API: connect, authenticate, one request, one reply.

Deliberately small: the CLI makes one call per connection (``status --watch`` reconnects each
time), so a dead or restarted daemon is noticed at once and reported as unreachable.
"""

from __future__ import annotations

import itertools
import json
from typing import Any, Final
from urllib.parse import urlsplit

import attrs
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError, wrap_client_stream

from ._errors import leaves
from ._listen import parse_listen
from ._rpc import RpcError

__all__ = [
    "AuthRejected",
    "DaemonUnreachable",
    "Target",
    "call",
    "parse_target",
    "target_from_listen",
]

MAX_REPLY_BYTES: Final = 64 * 2**20  # 64 MiB: a status reply of a large pool still fits
DEFAULT_TIMEOUT_S: Final = 30.0
_CLOSE_WAIT_S: Final = 1.0  # the close handshake after the reply, at most
_ids = itertools.count(1)


class DaemonUnreachable(Exception):
    """No daemon answered at the target (refused, no such socket, timeout, connection lost)."""


class AuthRejected(Exception):
    """The daemon refused the websocket upgrade (401 wrong/missing token, 403 origin).

    Attributes:
        status: The HTTP status code.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@attrs.frozen
class Target:
    """Where the daemon is.

    Attributes:
        host: TCP host, or None for a unix socket.
        port: TCP port, or None for a unix socket.
        path: Unix socket path, or None for TCP.
        resource: The HTTP path of the upgrade request.
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
    """Parse ``ws://HOST:PORT[/path]``, ``HOST:PORT`` or ``unix:/path``.

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
    if parts.scheme != "ws":
        raise ValueError(f"{url!r}: only ws:// and unix: are supported")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r}: bad port") from None
    if not parts.hostname or port is None:
        raise ValueError(f"{url!r}: expected ws://HOST:PORT")
    return Target(host=parts.hostname, port=port, resource=parts.path or "/")


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


async def _open_stream(target: Target) -> trio.SocketStream:
    if target.path is not None:
        return await trio.open_unix_socket(target.path)
    assert target.host is not None and target.port is not None
    return await trio.open_tcp_stream(target.host, target.port)


async def call(
    target: Target,
    token: str,
    method: str,
    params: dict[str, Any] | None = None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Any:
    """Make one JSON-RPC call to the daemon and return its ``result``.

    Args:
        target: Where the daemon listens.
        token: The bearer token.
        method: The JSON-RPC method.
        params: Its parameters, or None.
        timeout_s: Seconds for connecting, the call and the reply together.

    Returns:
        The reply's ``result`` member.

    Raises:
        RpcError: if the daemon answered with an error object.
        AuthRejected: if the daemon refused the token or the origin.
        DaemonUnreachable: if no daemon answered (refused, missing socket, timeout, closed).
    """
    request_id = next(_ids)
    request: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        request["params"] = params
    reply: dict[str, Any] | None = None
    stream: trio.SocketStream | None = None
    try:
        with trio.fail_after(timeout_s):
            stream = await _open_stream(target)
            async with trio.open_nursery() as nursery:
                ws = await wrap_client_stream(
                    nursery,
                    stream,
                    target.host or "localhost",
                    target.resource,
                    extra_headers=[(b"Authorization", b"Bearer " + token.encode("utf-8"))],
                    max_message_size=MAX_REPLY_BYTES,
                )
                try:
                    await ws.send_message(json.dumps(request))
                    while reply is None:
                        message = json.loads(await ws.get_message())
                        if isinstance(message, dict) and message.get("id") in (request_id, None):
                            reply = message
                finally:
                    with trio.move_on_after(_CLOSE_WAIT_S, shield=True):
                        await ws.aclose()
                nursery.cancel_scope.cancel()
    except trio.TooSlowError:
        raise DaemonUnreachable(f"no reply from {target} within {timeout_s:g} s") from None
    except BaseException as exc:  # noqa: BLE001 - mapped, or re-raised as it was
        _raise_mapped(exc, target)
        raise
    finally:
        # trio-websocket does not close the stream when the server closed first: we own it.
        if stream is not None:
            await trio.aclose_forcefully(stream)
    assert reply is not None
    if "error" in reply:
        raise RpcError.from_object(reply["error"])
    return reply.get("result")


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
    if isinstance(first, json.JSONDecodeError):
        raise DaemonUnreachable(f"{target} sent a reply that is not JSON") from None
    if isinstance(exc, BaseExceptionGroup) and len(found) == 1:
        raise first from None
