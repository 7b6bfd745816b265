"""Clients of a running mtpoold, for trio programs, asyncio programs and plain scripts.

Three flavours, one API (``resolve``, ``get_messages``, ``invoke``, ``status``, ``call``,
``batch``), one exception type for every error the daemon answers (`RpcError`) and one for
no answer (`DaemonUnreachable`)::

    from mtpoold.client import Client, RpcError

    client = Client.discover()                     # ./mtpoold.toml, as the CLI finds it
    peer = client.resolve("@example_news").value   # {"kind": "channel", "id": ..., ...}
    try:
        client.invoke("help.GetConfig", deadline_ms=5000)
    except RpcError as exc:
        if exc.error_class == "FLOOD_WAIT":
            time.sleep(exc.retry_after_s)

* `Client` (plain scripts, threads) and `AsyncioClient` (asyncio programs) speak JSON-RPC
  over HTTP ``POST /rpc`` on the daemon's listener, with the standard library only (a
  blocking socket, asyncio streams) and h11 (already a dependency) for HTTP/1.1: neither
  imports trio-asyncio nor starts trio in the caller's thread or loop. Each call is one
  connection (``Connection: close``); `Client.batch` sends many requests in one POST.
* `TrioClient` (trio programs) keeps one websocket connection and runs any number of
  concurrent calls on it; a call whose caller is cancelled sends ``cancel`` for its job.

Where the daemon is (`Endpoint.discover`, the CLI's rules): an explicit url and token (or
token file) first, then ``MTPOOLD_URL`` / ``MTPOOLD_TOKEN_FILE``, then the config file
(``config``, ``MTPOOLD_CONFIG`` or ``./mtpoold.toml``): where its running daemon listens
(``<state_dir>/daemon.json``), else its ``[daemon] listen``, and the token in
``<state_dir>/token`` (`mtpoold._daemonfile.daemon_location`, shared with the CLI).
Addresses: ``HOST:PORT``, ``http://HOST:PORT``, ``ws://HOST:PORT`` or ``unix:/path`` — one
daemon serves both transports on one address.

Job options, on every job method (the daemon's rules, ``docs/CONTRACTS.md``):
``deadline_ms`` the job's deadline in milliseconds (default the daemon's
``policy.job_deadline_s``), ``account`` one account id only, ``tags`` only accounts with every
tag, ``max_age_s`` seconds old a cached answer may be (read-only functions only).

The method shapes are described machine-readably in ``docs/openrpc.json``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final, Self

import attrs
import trio

from ._config import DaemonConfig
from ._daemonfile import daemon_location
from ._errors import ConfigError
from ._rpc import MAX_DEADLINE_MS
from ._rpcclient import (
    AuthRejected,
    ClientError,
    DaemonUnreachable,
    HttpCodec,
    RemoteError,
    Target,
    WebSocketSession,
    open_session,
    parse_target,
    request_object,
    result_of,
    target_from_listen,
)
from ._token import TokenError as TokenError
from ._token import read_token, token_path

__all__ = [
    "AsyncioClient",
    "AuthRejected",
    "Client",
    "ClientError",
    "DaemonUnreachable",
    "Endpoint",
    "JobReply",
    "RpcError",
    "TokenError",
    "TrioClient",
]

#: The one exception type of every error reply: ``code`` (JSON-RPC), ``message``,
#: ``data`` (the ``data`` member: ``class``, ``retry_after_s``, ``account``, ``attempts``),
#: ``error_class`` and ``retry_after_s`` (seconds) read from it, ``http_status``.
RpcError = RemoteError

DEFAULT_CONFIG: Final = "mtpoold.toml"
#: Seconds a client waits beyond a job's deadline for its reply (the daemon answers at the
#: deadline; this covers the trip).
REPLY_MARGIN_S: Final = 10.0
#: Seconds a call without ``deadline_ms`` waits for its reply: the daemon's default job
#: deadline (``policy.job_deadline_s``, 180 s) plus the margin.
DEFAULT_TIMEOUT_S: Final = 190.0
_READ_BYTES: Final = 65536


@attrs.frozen
class JobReply:
    """The reply to a job (``resolve``, ``get_messages``, ``invoke``).

    Attributes:
        value: The job's result: ``resolve`` a peer summary (``{"kind", "id", "username",
            "title" or "name", ...}``), ``get_messages`` ``{"<id>": {"exists", "views",
            ...}}``, ``invoke`` the TL result as JSON (``{"_": "Config", ...}``).
        meta: How it was served: ``{"account", "proxy_key", "attempts", "elapsed_ms" (ms),
            "shared", "merged", "age_s" (s)}``.
    """

    value: Any
    meta: Mapping[str, Any]

    @classmethod
    def from_result(cls, result: Any) -> JobReply:
        """From the ``result`` member of a job's reply (``{"result", "meta"}``)."""
        if not isinstance(result, Mapping):
            return cls(value=result, meta={})
        meta = result.get("meta")
        return cls(value=result.get("result"), meta=meta if isinstance(meta, Mapping) else {})


# --- where the daemon is --------------------------------------------------------------------------


@attrs.frozen
class Endpoint:
    """A daemon's address and bearer token.

    Attributes:
        target: Where it listens (TCP host and port, or a unix socket path).
        token: The bearer token (never shown in ``repr``).
    """

    target: Target
    token: str = attrs.field(repr=False)

    @classmethod
    def discover(
        cls,
        config: str | os.PathLike[str] | None = None,
        *,
        url: str | None = None,
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
    ) -> Endpoint:
        """Find the daemon the way the ``mtpoold`` CLI does (module docstring: the order).

        Args:
            config: The daemon's config file; None: ``MTPOOLD_CONFIG``, else
                ``./mtpoold.toml`` (absent: the defaults, ``127.0.0.1:8765`` and
                ``state/token``).
            url: The daemon's address; None: ``MTPOOLD_URL``, else the config's listen.
            token: The bearer token itself; None: read ``token_file``.
            token_file: The token file; None: ``MTPOOLD_TOKEN_FILE``, else
                ``<state_dir>/token`` of the config.

        Raises:
            ValueError: a malformed address, or a config that names no daemon (its
                ``daemon.listen`` and ``state_dir`` cannot be read).
            TokenError: the token file is missing or holds no token (`mtpoold._token`).
        """
        url = url or os.environ.get("MTPOOLD_URL")
        if token is None:
            token_file = token_file or os.environ.get("MTPOOLD_TOKEN_FILE")
        defaults = DaemonConfig()
        listen, state_dir = defaults.listen, Path(defaults.state_dir)
        if url is None or (token is None and token_file is None):
            explicit = config or os.environ.get("MTPOOLD_CONFIG")
            path = Path(explicit or DEFAULT_CONFIG)
            if explicit or path.exists():
                try:
                    where = daemon_location(path)
                except ConfigError as exc:
                    raise ValueError(f"{path}: {'; '.join(exc.problems)}") from None
                listen, state_dir = where.listen, where.state_dir
        target = parse_target(url) if url is not None else target_from_listen(listen)
        if token is None:
            token = read_token(Path(token_file) if token_file else token_path(state_dir))
        return cls(target, token)


def _messages_args(peer: str | int, ids: Sequence[int] | None) -> dict[str, Any]:
    """``get_messages``' own params: ``ids`` left out for a message link."""
    return {"peer": peer} if ids is None else {"peer": peer, "ids": list(ids)}


def _job_params(
    params: dict[str, Any],
    deadline_ms: float | None,
    account: str | None,
    tags: Sequence[str],
    max_age_s: float | None,
) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if deadline_ms is not None:
        options["deadline_ms"] = deadline_ms
    if account is not None:
        options["account"] = account
    if tags:
        options["tags"] = list(tags)
    if max_age_s is not None:
        options["max_age_s"] = max_age_s
    if options:
        params["options"] = options
    return params


def _timeout_for(params: Mapping[str, Any] | None, timeout_s: float | None) -> float:
    if timeout_s is not None:
        return timeout_s
    options = (params or {}).get("options") or {}
    deadline_ms = options.get("deadline_ms") if isinstance(options, Mapping) else None
    if isinstance(deadline_ms, int | float) and 0 < deadline_ms <= MAX_DEADLINE_MS:
        return deadline_ms / 1000 + REPLY_MARGIN_S
    # none, or one the daemon refuses at once (INVALID_ARGUMENT): a 400-digit integer would
    # overflow the float of our wait (shared case 002)
    return DEFAULT_TIMEOUT_S


def _batch_results(replies: Any, ids: list[int], codec: HttpCodec, status: int) -> list[Any]:
    if not isinstance(replies, list):  # the whole batch refused (401, 413, ...)
        codec.result(status, replies)
        raise RemoteError(-32603, "the daemon answered a batch with a single reply")
    by_id = {r.get("id"): r for r in replies if isinstance(r, Mapping)}
    out: list[Any] = []
    for request_id in ids:
        try:
            out.append(result_of(by_id.get(request_id), http_status=status))
        except RemoteError as exc:
            out.append(exc)
    return out


# --- plain scripts: HTTP over a blocking socket ---------------------------------------------------


@attrs.define(eq=False)
class _OverHttp:
    """What the two HTTP flavours share: the daemon and the connect timeout (seconds)."""

    endpoint: Endpoint
    connect_timeout_s: float = 10.0

    @classmethod
    def discover(
        cls,
        config: str | os.PathLike[str] | None = None,
        *,
        url: str | None = None,
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
    ) -> Self:
        """A client of the daemon `Endpoint.discover` finds (its arguments and errors)."""
        return cls(Endpoint.discover(config, url=url, token=token, token_file=token_file))


@attrs.define(eq=False)
class Client(_OverHttp):
    """A blocking client (HTTP ``POST /rpc``); safe to share between threads (each call
    opens its own connection).

    Args:
        endpoint: The daemon (`Endpoint.discover` finds it).
        connect_timeout_s: Seconds to connect, at most.
    """

    def _exchange(self, payload: object, timeout_s: float) -> tuple[HttpCodec, int, Any]:
        target = self.endpoint.target
        codec = HttpCodec(target, self.endpoint.token)
        deadline = time.monotonic() + timeout_s
        try:
            if target.path is not None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.connect_timeout_s)
                try:
                    sock.connect(target.path)
                except BaseException:
                    sock.close()
                    raise
            else:
                assert target.host is not None and target.port is not None
                sock = socket.create_connection(
                    (target.host, target.port), timeout=self.connect_timeout_s
                )
        except OSError as exc:
            raise DaemonUnreachable(f"cannot connect to {target}: {exc.strerror or exc}") from None
        with sock:
            try:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                sock.sendall(codec.request(payload))
                while True:
                    sock.settimeout(max(deadline - time.monotonic(), 0.001))
                    answer = codec.feed(sock.recv(_READ_BYTES))
                    if answer is not None:
                        return codec, *answer
            except TimeoutError:
                raise DaemonUnreachable(f"no reply from {target} within {timeout_s:g} s") from None
            except OSError as exc:
                raise DaemonUnreachable(
                    f"connection to {target} lost: {exc.strerror or exc}"
                ) from None

    def call(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        timeout_s: float | None = None,
    ) -> Any:
        """One JSON-RPC request; its ``result`` member.

        Args:
            method: Any method the daemon answers (``docs/openrpc.json``).
            params: Its named parameters.
            timeout_s: Seconds to wait for the reply; None: the job's ``deadline_ms`` plus
                `REPLY_MARGIN_S`, or `DEFAULT_TIMEOUT_S`.

        Raises:
            RpcError: the daemon's error reply (``AuthRejected`` for 401/403).
            DaemonUnreachable: no reply (refused, timeout, connection lost).
        """
        codec, status, reply = self._exchange(
            request_object(1, method, params), _timeout_for(params, timeout_s)
        )
        return codec.result(status, reply)

    def batch(
        self,
        calls: Iterable[tuple[str, Mapping[str, Any] | None]],
        *,
        timeout_s: float | None = None,
    ) -> list[Any]:
        """Many requests in one POST (a JSON-RPC batch); the jobs run at once in the daemon.

        Args:
            calls: ``(method, params)`` pairs.
            timeout_s: Seconds to wait for every reply; None: the longest job's deadline
                plus `REPLY_MARGIN_S`, or `DEFAULT_TIMEOUT_S`.

        Returns:
            In the order of ``calls``: each ``result`` member, or the `RpcError` of a
            request that failed (returned, not raised).

        Raises:
            RpcError: the whole batch was refused (token, size).
            DaemonUnreachable: no reply.
        """
        requests = [request_object(i, m, p) for i, (m, p) in enumerate(calls, start=1)]
        if not requests:
            return []
        timeout = max(_timeout_for(r.get("params"), timeout_s) for r in requests)
        codec, status, replies = self._exchange(requests, timeout)
        return _batch_results(replies, [r["id"] for r in requests], codec, status)

    def resolve(
        self,
        link_or_username: str,
        *,
        deadline_ms: float | None = None,
        account: str | None = None,
        tags: Sequence[str] = (),
        max_age_s: float | None = None,
    ) -> JobReply:
        """Resolve a t.me link, ``@username`` or bare username to a peer summary.

        Returns:
            `JobReply` whose ``value`` is ``{"kind": "user"|"bot"|"channel"|"supergroup"|
            "chat", "id", "peer_id" (marked), "username", "title" or "name",
            "participants_count", "verified", "scam", "fake", "private", "about"}``.

        Raises:
            RpcError: PEER_NOT_FOUND (-32001), FLOOD_WAIT (-32001, ``retry_after_s``),
                NO_ACCOUNT_AVAILABLE (-32002), INVALID_ARGUMENT (-32602), ...
            DaemonUnreachable: no reply.
        """
        params = _job_params(
            {"link_or_username": link_or_username}, deadline_ms, account, tags, max_age_s
        )
        return JobReply.from_result(self.call("resolve", params))

    def get_messages(
        self,
        peer: str | int,
        ids: Sequence[int] | None = None,
        *,
        deadline_ms: float | None = None,
        account: str | None = None,
        tags: Sequence[str] = (),
        max_age_s: float | None = None,
    ) -> JobReply:
        """Messages ``ids`` of ``peer`` (username, link or marked numeric id); without
        ``ids``, ``peer`` must be a message link (``https://t.me/name/123``): its message.

        Returns:
            `JobReply` whose ``value`` maps each id (a string) to ``{"exists": bool,
            "views", "forwards", "date", ...}``.

        Raises:
            RpcError: as `resolve`.
            DaemonUnreachable: no reply.
        """
        params = _job_params(_messages_args(peer, ids), deadline_ms, account, tags, max_age_s)
        return JobReply.from_result(self.call("get_messages", params))

    def invoke(
        self,
        method: str,
        args: Mapping[str, Any] | None = None,
        *,
        deadline_ms: float | None = None,
        account: str | None = None,
        tags: Sequence[str] = (),
        max_age_s: float | None = None,
    ) -> JobReply:
        """A raw TL function by name (``"help.GetConfig"``, ``"messages.GetHistory"``);
        ``args`` its arguments as JSON (peers may be written ``"@name"``).

        Returns:
            `JobReply` whose ``value`` is the TL result as JSON (``{"_": "Config", ...}``).

        Raises:
            RpcError: as `resolve`; INVALID_ARGUMENT (-32602) for an unknown function or
                argument.
            DaemonUnreachable: no reply.
        """
        params = _job_params(
            {"method": method, "args": dict(args or {})}, deadline_ms, account, tags, max_age_s
        )
        return JobReply.from_result(self.call("invoke", params))

    def status(self) -> dict[str, Any]:
        """The daemon's statistics (the ``status`` method: ``{"uptime_s", "proxies",
        "accounts", ...}``, ``docs/CONTRACTS.md``)."""
        result: dict[str, Any] = self.call("status", timeout_s=30.0)
        return result


# --- asyncio programs: HTTP over asyncio streams --------------------------------------------------


class _AsyncJobs:
    """The job methods of the two async flavours, over their ``call`` (one definition: the
    blocking `Client` documents them)."""

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        raise NotImplementedError  # pragma: no cover - each flavour has its own

    async def resolve(
        self,
        link_or_username: str,
        *,
        deadline_ms: float | None = None,
        account: str | None = None,
        tags: Sequence[str] = (),
        max_age_s: float | None = None,
    ) -> JobReply:
        """As `Client.resolve`."""
        params = _job_params(
            {"link_or_username": link_or_username}, deadline_ms, account, tags, max_age_s
        )
        return JobReply.from_result(await self.call("resolve", params))

    async def get_messages(
        self,
        peer: str | int,
        ids: Sequence[int] | None = None,
        *,
        deadline_ms: float | None = None,
        account: str | None = None,
        tags: Sequence[str] = (),
        max_age_s: float | None = None,
    ) -> JobReply:
        """As `Client.get_messages`."""
        params = _job_params(_messages_args(peer, ids), deadline_ms, account, tags, max_age_s)
        return JobReply.from_result(await self.call("get_messages", params))

    async def invoke(
        self,
        method: str,
        args: Mapping[str, Any] | None = None,
        *,
        deadline_ms: float | None = None,
        account: str | None = None,
        tags: Sequence[str] = (),
        max_age_s: float | None = None,
    ) -> JobReply:
        """As `Client.invoke`."""
        params = _job_params(
            {"method": method, "args": dict(args or {})}, deadline_ms, account, tags, max_age_s
        )
        return JobReply.from_result(await self.call("invoke", params))


@attrs.define(eq=False)
class AsyncioClient(_OverHttp, _AsyncJobs):
    """An asyncio client (HTTP ``POST /rpc`` over asyncio streams); each call opens its own
    connection, so concurrent calls (``asyncio.gather``) are fine. Cancelling a call closes
    its connection, which cancels its job in the daemon.

    Args:
        endpoint: The daemon (`Endpoint.discover` finds it).
        connect_timeout_s: Seconds to connect, at most.
    """

    async def _exchange(self, payload: object, timeout_s: float) -> tuple[HttpCodec, int, Any]:
        target = self.endpoint.target
        codec = HttpCodec(target, self.endpoint.token)
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                if target.path is not None:
                    reader, writer = await asyncio.open_unix_connection(target.path)
                else:
                    reader, writer = await asyncio.open_connection(target.host, target.port)
        except (OSError, TimeoutError) as exc:
            why = getattr(exc, "strerror", None) or exc or "timeout"
            raise DaemonUnreachable(f"cannot connect to {target}: {why}") from None
        try:
            async with asyncio.timeout(timeout_s):
                writer.write(codec.request(payload))
                await writer.drain()
                while True:
                    answer = codec.feed(await reader.read(_READ_BYTES))
                    if answer is not None:
                        return codec, *answer
        except TimeoutError:
            raise DaemonUnreachable(f"no reply from {target} within {timeout_s:g} s") from None
        except OSError as exc:
            raise DaemonUnreachable(f"connection to {target} lost: {exc.strerror or exc}") from None
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass

    async def call(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        timeout_s: float | None = None,
    ) -> Any:
        """As `Client.call`."""
        codec, status, reply = await self._exchange(
            request_object(1, method, params), _timeout_for(params, timeout_s)
        )
        return codec.result(status, reply)

    async def batch(
        self,
        calls: Iterable[tuple[str, Mapping[str, Any] | None]],
        *,
        timeout_s: float | None = None,
    ) -> list[Any]:
        """As `Client.batch`."""
        requests = [request_object(i, m, p) for i, (m, p) in enumerate(calls, start=1)]
        if not requests:
            return []
        timeout = max(_timeout_for(r.get("params"), timeout_s) for r in requests)
        codec, status, replies = await self._exchange(requests, timeout)
        return _batch_results(replies, [r["id"] for r in requests], codec, status)

    async def status(self) -> dict[str, Any]:
        """As `Client.status`."""
        result: dict[str, Any] = await self.call("status", timeout_s=30.0)
        return result


# --- trio programs: one websocket, many concurrent calls ------------------------------------------


@attrs.define(eq=False)
class TrioClient(_AsyncJobs):
    """A trio client on one websocket connection; open it with `TrioClient.connect`::

        async with TrioClient.connect() as client:
            async with trio.open_nursery() as nursery:
                for name in names:
                    nursery.start_soon(client.resolve, name)

    Calls run concurrently on the connection (the daemon's ``max_in_flight`` per
    connection applies: -32005 past it). A call has no timeout of its own: the job's
    ``deadline_ms`` bounds it in the daemon, the caller's cancel scope here; a cancelled call
    sends ``cancel`` so the daemon stops its job.
    """

    session: WebSocketSession

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        config: str | os.PathLike[str] | None = None,
        *,
        url: str | None = None,
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
        endpoint: Endpoint | None = None,
        connect_timeout_s: float = 10.0,
    ) -> AsyncIterator[TrioClient]:
        """Connect (``endpoint``, or `Endpoint.discover` with the other arguments) and yield
        a `TrioClient`; the connection closes on the way out.

        Raises:
            AuthRejected: the daemon refused the token.
            DaemonUnreachable: no daemon answered within ``connect_timeout_s`` seconds.
            ValueError, TokenError: as `Endpoint.discover`.
        """
        ep = endpoint or Endpoint.discover(config, url=url, token=token, token_file=token_file)
        async with open_session(ep.target, ep.token, connect_timeout_s=connect_timeout_s) as s:
            yield cls(s)

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """One JSON-RPC request; its ``result`` member.

        Raises:
            RpcError: the daemon's error reply.
            DaemonUnreachable: the connection went away before the reply.
        """
        return await self.session.call(method, params)

    async def batch(self, calls: Iterable[tuple[str, Mapping[str, Any] | None]]) -> list[Any]:
        """Every call at once on the connection; results (or the `RpcError` of a failed
        one, returned) in the order of ``calls``.

        Raises:
            DaemonUnreachable: the connection went away before every reply.
        """
        pending = list(calls)
        out: list[Any] = [None] * len(pending)
        lost: list[DaemonUnreachable] = []

        async def one(i: int, method: str, params: Mapping[str, Any] | None) -> None:
            try:
                out[i] = await self.session.call(method, params)
            except RemoteError as exc:
                out[i] = exc
            except DaemonUnreachable as exc:
                lost.append(exc)

        async with trio.open_nursery() as nursery:
            for i, (method, params) in enumerate(pending):
                nursery.start_soon(one, i, method, params)
        if lost:
            raise lost[0]
        return out

    async def status(self) -> dict[str, Any]:
        """As `Client.status`."""
        result: dict[str, Any] = await self.call("status")
        return result
