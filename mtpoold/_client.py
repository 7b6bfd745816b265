"""The Telethon adapter: one account's MTProto client, driven from Trio.

`TelethonClient` implements the ``Client`` protocol of ``docs/CONTRACTS.md`` for one account.
It builds a ``telethon.TelegramClient`` with everything Telethon would otherwise do on its own
turned off — no flood sleeping, one request attempt, no auto-reconnect, no updates, no
keepalive loop, no DC switch (`_GatedTelegramClient`) — because the pool owns retries,
cooldowns, reconnects and the gate: Telethon makes no connection, reconnect or request the
lane did not admit (the account worker sends the keepalive pings, see `keepalive_ping`).
Every Telethon coroutine runs through `mtpoold._aiobridge.run_aio` on the daemon's
trio-asyncio loop: the account worker's cancel scope reaches the asyncio side, and a side
that does not finish within `mtpoold._aiobridge.AIO_CANCEL_WAIT_S` of its cancellation is
abandoned (the connection is rebuilt for the next call) instead of holding the job.

The connection itself is watched by a `mtpoold._wire.WireMonitor`: its phase (who is blamed
for a failure), its byte counts, and the wire governor (every MTProto message Telethon puts
on the wire, its own resends, acks and pings included, against the ``[telegram]`` ceilings
``wire_max_messages_per_call`` and ``wire_max_extra_messages_per_s``).

Resource handling:
    A client holds at most one Telethon connection (plus the asyncio tasks Telethon runs for
    it: send/receive loops). `disconnect` closes it, ends those tasks and reads the futures
    Telethon leaves behind; it is shielded, bounded by `DISCONNECT_TIMEOUT_S`, never raises,
    and may be called at any time — also after a call was cancelled mid-flight, when
    Telethon's sender state may be half-updated. `connect` may be called again after
    `disconnect`.

Error handling:
    - A connect that fails before the DC ever answered on the connection (refused, reset,
      closed early, a failed proxy handshake, an MTProxy hanging up on its header) raises
      `mtpoold._errors.ProxyUnavailable` with the phase: the proxy's fault.
    - The wire governor, a reply that fails to decrypt (msg_key mismatch, wrong session id)
      and a corrupted transport packet raise `mtpoold._errors.ProtocolViolation` for the
      call in flight at once; the connection is closed first.
    - Everything else from Telethon and python-socks propagates unchanged for
      `mtpoold._classify.classify`. Bad job arguments raise `JobFailed` (INVALID_ARGUMENT),
      which the pool reports without retrying.

Secrets (api_hash, session strings, auth keys, proxy passwords, MTProxy secrets) never appear
in a repr or a log line written here.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import random
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, final

import attrs
import trio
import trio_asyncio
from telethon import TelegramClient
from telethon import errors as tl_errors
from telethon import utils as tl_utils
from telethon.sessions import MemorySession, SQLiteSession, StringSession
from telethon.sessions.abstract import Session
from telethon.tl import functions as tl_functions
from telethon.tl.tlobject import TLObject

from ._account import DISCONNECT_TIMEOUT_S
from ._aiobridge import AIO_CANCEL_WAIT_S, run_aio
from ._aiolog import AioContext, aio_context
from ._classify import request_tl_name
from ._config import NO_PROXY, AccountConfig, Config, ProxyConfig, TelegramConfig, proxy_key
from ._errors import ConfigError, ProtocolViolation, ProxyUnavailable, StartMissed, redact
from ._logformat import log_event
from ._lookup import PeerLookup, peers_in
from ._peermemory import AccountPeers
from ._secrets import SecretUnavailable, load_string_session
from ._sessionfiles import DEVICE_FIELDS, read_device_params
from ._startup import server_address, startup_problems, telethon_proxy
from ._tljson import build_request, to_json
from ._wire import WireMonitor, install_sender_hooks, monitored_connection

__all__ = [
    "DISCONNECT_TIMEOUT_S",
    "TelethonClient",
    "telethon_client_factory",
]

log = logging.getLogger("mtpoold.client")

#: Seconds the server keeps the connection after a keepalive ping (``ping_delay_disconnect``,
#: as Telethon's own keepalive; the worker pings every 60 s).
PING_DISCONNECT_DELAY_S: Final = 75
CONNECTION_RETRIES: Final = 0  # Telethon connect attempts beyond the first (the pool retries)


# --- the client -----------------------------------------------------------------------------


class _NoReconnectNoise(logging.Filter):
    """Drops Telethon's ERROR "Automatic reconnection failed 0 time(s)": with reconnects off
    (the pool reconnects, through the gate) Telethon logs it on every dropped connection
    although it attempted nothing; the pool's own judgement of the drop is what is logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.msg == "Automatic reconnection failed %d time(s)" and record.args == (0,)
        )


_NO_RECONNECT_NOISE: Final = _NoReconnectNoise()


#: The RPC errors after which Telethon's ``_call`` (telethon/client/users.py) sleeps 2 s
#: before its next attempt, also after its last one (``request_retries=1``): Telegram's
#: internal errors (500 and the like) and ``TIMEOUT``.
_TELETHON_SLEEPS_AFTER: Final = (
    tl_errors.ServerError,
    tl_errors.RpcCallFailError,
    tl_errors.RpcMcgetFailError,
    tl_errors.InterdcCallErrorError,
    tl_errors.TimedOutError,
    tl_errors.InterdcCallRichErrorError,
)


class _Unslept(Exception):
    """Carries one of `_TELETHON_SLEEPS_AFTER` past Telethon's ``_call`` (which would sleep
    on it), to be raised again, unchanged, by `_GatedTelegramClient._call`."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(type(error).__name__)
        self.error = error


async def _unslept(future: Awaitable[Any]) -> Any:
    try:
        return await future
    except _TELETHON_SLEEPS_AFTER as exc:
        raise _Unslept(exc) from None


class _UnsleptSender:
    """The MTProto sender as Telethon's ``_call`` sees it: ``send`` hands back an awaitable
    that raises `_Unslept` instead of the errors Telethon would sleep on. Lists (Telethon's
    batched requests, never sent by mtpoold) pass unchanged, so no wrapper can be left
    unawaited; everything else is the sender's own."""

    def __init__(self, sender: Any) -> None:
        self._sender = sender

    def send(self, request: Any, ordered: bool = False) -> Any:
        sent = self._sender.send(request, ordered=ordered)
        return sent if isinstance(sent, list) else _unslept(sent)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sender, name)


class _GatedTelegramClient(TelegramClient):  # type: ignore[misc]
    """``TelegramClient`` that does nothing on the network the pool did not ask for.

    - no keepalive loop: the account worker pings through the lane's gate
      (`keepalive_ping`), Telethon's own loop (every 60 s) bypassed it;
    - no update loop: ``receive_updates=False`` already; the loop would still send
      ``updates.getDifference`` on its own timer. Updates Telethon queues anyway (its own
      results) are drained and dropped, so the queue cannot grow;
    - no DC switch: on ``*_MIGRATE`` Telethon would reconnect to another DC by itself; the
      migrate error is raised instead (classified by `mtpoold._classify.classify`);
    - no request the request guard refused: every request Telethon sends on a call's behalf
      (ours, and its own look-ups such as ``get_input_entity``'s ResolveUsername) asks
      ``request_guard.admit`` first (`mtpoold._budget.RequestGuard`; ``RateClassBlocked``:
      nothing is sent). The requests of `connect` itself (initConnection's help.getConfig,
      sent on the sender directly; users.getUsers of self; updates.getState/getDifference)
      are the connect's own traffic, not a job's: no rate class refuses them (a class flood
      must not make the account unable to connect), the wire governor counts their
      messages, and a FLOOD_WAIT answered to one cools the whole account (the pool judges
      connect failures account-wide);
    - no sleep after Telegram's internal errors: Telethon's ``_call`` sleeps 2 s after a
      500-class error or ``TIMEOUT`` even on its last attempt; the error is raised at once
      instead (`_UnsleptSender`), for the pool to classify and reroute;
    - every result is shown to ``on_result`` (the peer memory's harvest).
    """

    #: Asked before every request (`mtpoold._account.RequestGuardLike`), or None.
    request_guard: Any = None
    #: Called with every result Telethon receives, its own look-ups' included
    #: (`TelethonClient._seen`: the peer memory's harvest), or None.
    on_result: Callable[[Any], None] | None = None
    #: True while `connect` runs: its requests are connect traffic, not guarded.
    connecting: bool = False

    async def connect(self) -> None:
        self.connecting = True
        try:
            await super().connect()
        finally:
            self.connecting = False

    async def _call(
        self, sender: Any, request: Any, ordered: bool = False, flood_sleep_threshold: Any = None
    ) -> Any:
        guard = self.request_guard
        if guard is not None and not self.connecting:
            for r in request if tl_utils.is_list_like(request) else (request,):
                guard.admit(request_tl_name(r) or type(r).__name__)
        # Where Telethon feeds every result to its session cache (process_entities).
        try:
            result = await super()._call(
                _UnsleptSender(sender), request, ordered, flood_sleep_threshold
            )
        except _Unslept as unslept:
            raise unslept.error from None
        if self.on_result is not None:
            self.on_result(result)
        return result

    async def _keepalive_loop(self) -> None:
        return None

    async def _update_loop(self) -> None:
        queue = self._updates_queue
        while True:
            await queue.get()

    async def _switch_dc(self, new_dc: int) -> None:
        current = sys.exc_info()[1]
        if isinstance(current, tl_errors.RPCError):
            raise current  # the *_MIGRATE error Telethon is handling
        raise ConnectionError(
            f"Telegram asked to switch to DC {new_dc}; mtpoold does not follow DC migrations"
        )


def _wrap_result(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if isinstance(value, list):
        return {"_": "Vector", "value": value}
    if isinstance(value, bool):
        return {"_": "Bool", "value": value}
    if isinstance(value, int):
        return {"_": "Int", "value": value}
    return {"_": type(value).__name__, "value": value}


@final
@attrs.define(eq=False, repr=False)
class TelethonClient:
    """One account's Telethon client, used from Trio (the ``Client`` protocol).

    Must be used inside ``trio_asyncio.open_loop()``; one call at a time (the account worker
    holds a lock). The ``TelegramClient`` is built on the first `connect` and reused after
    `disconnect`, so its entity cache survives reconnects.

    Args:
        account: The account's config.
        telegram: The server settings for this account (``config.telegram_for(account)``).
        proxy: The account's proxy (``config.proxy_for(account)``), or None.
        proxy_key: Key of the proxy for log context (`mtpoold._config.proxy_key`).
        disconnect_timeout_s: Seconds `disconnect` waits for Telethon before giving up.
        session: Use this Telethon session instead of the account's configured one
            (``mtpoold authorize`` logs in on a memory session and writes the file only on
            success).
    """

    account: AccountConfig
    telegram: TelegramConfig
    proxy: ProxyConfig | None
    proxy_key: str = NO_PROXY
    disconnect_timeout_s: float = DISCONNECT_TIMEOUT_S
    session: Session | None = attrs.field(default=None, repr=False)
    _tg: TelegramClient | None = attrs.field(init=False, default=None)
    _guard: Any = attrs.field(init=False, default=None)
    _connect_errors: list[BaseException] = attrs.field(init=False, factory=list)
    #: The current connection's phase, byte counts and wire governor.
    monitor: WireMonitor = attrs.field(init=False)
    #: An asyncio call did not finish within AIO_CANCEL_WAIT_S of its cancellation: the
    #: TelegramClient is given up and rebuilt on the next connect.
    _stale: bool = attrs.field(init=False, default=False)
    #: `resolve`, `get_messages` and ``call``'s peer arguments, over `_invoke`.
    _lookup: PeerLookup = attrs.field(init=False)
    #: This account's peer memory (`set_peer_book`), or None.
    _book: AccountPeers | None = attrs.field(init=False, default=None)
    #: Connects that succeeded on this client (the next one logs ``reconnect``).
    _connects: int = attrs.field(init=False, default=0)
    #: When (trio clock, s) the current connection came up; None while there is none.
    _up_since: float | None = attrs.field(init=False, default=None)
    #: The `AioContext` calls run in when the account worker set none (`_log_context`).
    _aio_ctx: AioContext | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self._lookup = PeerLookup(
            invoke=self._invoke,
            input_entity=self._input_entity,
            cached_entity=self._cached_entity,
        )
        self.monitor = WireMonitor(
            proxy=self.proxy.name if self.proxy is not None else None,
            max_messages_per_call=self.telegram.wire_max_messages_per_call,
            max_extra_messages_per_s=self.telegram.wire_max_extra_messages_per_s,
        )

    def __repr__(self) -> str:
        proxy = f"{self.proxy.name}({self.proxy_key})" if self.proxy is not None else "none"
        return (
            f"<TelethonClient account={self.account.id} proxy={proxy}"
            f" connected={self.is_connected()}>"
        )

    def set_open_by(self, at: float | None) -> None:
        """The latest trio clock instant (s) the next connect may open its TCP connection, or
        None (no limit); later, `connect` raises `mtpoold._errors.StartMissed` having sent
        nothing (`mtpoold._account.SupportsOpenBy`)."""
        self.monitor.open_by = at

    def set_peer_book(self, book: AccountPeers) -> None:
        """Use this account's peer memory (`mtpoold._account.SupportsPeerBook`): known peers
        cost no look-up, and every user and channel with an access hash in any result is
        remembered. Called by the account worker right after it builds the client."""
        self._book = book
        self._lookup.book = book

    # -- lifecycle ------------------------------------------------------------------------

    def is_connected(self) -> bool:
        """Whether the connection is up and usable (no I/O): Telethon considers it up, no
        protocol fault was recorded on it and no asyncio call on it was abandoned."""
        return (
            self._tg is not None
            and not self._stale
            and self.monitor.fault is None
            and bool(self._tg.is_connected())
        )

    def connect_blame(self, what: str) -> ProxyUnavailable | None:
        """The proxy's failure if the last connect ends now (``what`` happened to it) before
        the DC ever answered on it; None once it has (see `WireMonitor.blame`)."""
        return self.monitor.blame(what)

    async def connect(self) -> None:
        """Connect: TCP, proxy handshake, auth key (if the session has none), initConnection.

        Returns at once if already connected. Telethon's connect also sends ``users.getUsers``
        (self) and, when authorized, ``updates.getState`` + ``updates.getDifference``: a
        connect is about four requests. If the connect fails or is cancelled, the partial
        connection is closed (see `disconnect`) before the exception propagates.

        Raises:
            ConfigError: the account's session cannot be loaded (e.g. its environment
                variable is unset).
            ProxyUnavailable: the connection failed before the DC ever answered on it
                (refused, closed, a failed proxy handshake), with the phase it was in.
            ProtocolViolation: the wire governor or a security error ended the connect.
            Exception: Telegram's error once the DC answered, for `classify`
                (``ConnectionError`` / ``OSError`` for streams, Telethon RPC errors).
        """
        if self.is_connected():
            return
        if self._tg is not None and (self._stale or self.monitor.fault is not None):
            await self.disconnect()
        if self._tg is None:
            self._tg = self._build(self.session)
        self._apply_server(self._tg.session)
        self._connect_errors.clear()
        event = "reconnect" if self._connects else "connect"
        started_at = trio.current_time()
        try:
            await self._aio(self._tg.connect)
            self._check_owner(self._tg)
        except BaseException as exc:
            # Half-done connects (sender loops running, initConnection unanswered) are closed
            # here, so a failed or cancelled connect leaves no connection and no task behind.
            phase = self.monitor.phase.value
            await self.disconnect()
            cause = self._connect_failure(exc) if isinstance(exc, Exception) else exc
            log_event(
                log,
                # a connect held back from its socket past its start window sent nothing:
                # routine in cluster mode (another slot is taken), not a fault
                logging.INFO if isinstance(cause, StartMissed) else logging.WARNING,
                event,
                account=self.account.id,
                proxy=self.proxy_key,
                phase=phase,
                elapsed_ms=round((trio.current_time() - started_at) * 1000.0, 1),
                outcome="cancelled" if isinstance(exc, trio.Cancelled) else type(cause).__name__,
                error=redact(str(cause)) if isinstance(exc, Exception) else None,
            )
            if not isinstance(exc, Exception) or cause is exc:
                raise
            raise cause from exc
        finally:
            self._connect_errors.clear()
        self._connects += 1
        self._up_since = trio.current_time()
        log_event(
            log,
            logging.INFO,
            event,
            account=self.account.id,
            proxy=self.proxy_key,
            phase=self.monitor.phase.value,
            elapsed_ms=round((self._up_since - started_at) * 1000.0, 1),
            outcome="ok",
        )

    def _check_owner(self, tg: TelegramClient) -> None:
        """Tell the peer memory which user this session logs in as (Telethon knows it after
        connect: from the session file, or its ``users.getUsers`` of self)."""
        self_id = getattr(getattr(tg, "_mb_entity_cache", None), "self_id", None)
        if self._book is not None and isinstance(self_id, int):
            self._book.check_owner(self_id)

    def _seen(self, result: Any) -> None:
        """Remember the users and channels in a result (`mtpoold._lookup.peers_in`); runs
        inside Telethon's ``_call``, so it never raises."""
        book = self._book
        if book is None:
            return
        try:
            book.learn(peers_in(result, self.account.id))
        except Exception as exc:  # noqa: BLE001 - a harvest must never fail the call
            log_event(
                log,
                logging.WARNING,
                "peer_harvest_failed",
                account=self.account.id,
                error=type(exc).__name__,
            )

    def _connect_failure(self, exc: Exception) -> Exception:
        """The error a failed connect raises: the proxy's if the DC never answered."""
        if isinstance(exc, ProxyUnavailable | ProtocolViolation | StartMissed):
            return exc
        if self.monitor.fault is not None:
            return self.monitor.fault
        for recorded in reversed(self._connect_errors):
            if isinstance(recorded, ProxyUnavailable):
                return recorded
        if not isinstance(exc, tl_errors.RPCError):
            what = "closed the connection"
            if not isinstance(exc, ConnectionError | asyncio.IncompleteReadError):
                what = f"broke the connection ({type(exc).__name__})"
            blamed = self.monitor.blame(what)
            if blamed is not None:
                return blamed
        cause = self._connect_errors[-1] if self._connect_errors else None
        if isinstance(exc, ConnectionError) and isinstance(cause, Exception) and cause is not exc:
            return cause
        return exc

    async def disconnect(self) -> None:
        """Close the connection and end Telethon's tasks; safe to call any time, never raises.

        Shielded from cancellation and bounded by ``disconnect_timeout_s`` (by
        `AIO_CANCEL_WAIT_S` for a client whose asyncio side was abandoned, which is then
        forgotten: the next `connect` builds a new one). Futures Telethon leaves with an
        exception (its ``disconnected`` future, a reconnect task) are read here.
        """
        tg = self._tg
        if tg is None:
            return
        if self._up_since is not None:
            log_event(
                log,
                logging.INFO,
                "disconnect",
                account=self.account.id,
                proxy=self.proxy_key,
                # the connection had gone away before we closed it (a proxy or the DC)
                dropped=not tg.is_connected() or self.monitor.fault is not None,
                up_s=round(trio.current_time() - self._up_since, 3),
                bytes_sent=self.monitor.bytes_sent,
                bytes_received=self.monitor.bytes_received,
            )
            self._up_since = None
        stale = self._stale
        timeout_s = (
            min(self.disconnect_timeout_s, AIO_CANCEL_WAIT_S)
            if stale
            else (self.disconnect_timeout_s)
        )
        with trio.CancelScope(shield=True):
            with trio.move_on_after(timeout_s) as scope:
                try:
                    await self._aio(_aio_disconnect, tg, call=False)
                except Exception as exc:  # a failing disconnect must not hide the real error
                    log_event(
                        log,
                        logging.WARNING,
                        "disconnect_failed",
                        account=self.account.id,
                        proxy=self.proxy_key,
                        error=type(exc).__name__,
                    )
            if scope.cancelled_caught:
                log_event(
                    log,
                    logging.WARNING,
                    "disconnect_timeout",
                    account=self.account.id,
                    proxy=self.proxy_key,
                    timeout_s=timeout_s,
                )
        _read_leftovers(tg)
        if stale or scope.cancelled_caught:
            self._tg = None
            self._stale = False

    async def keepalive_ping(self, disconnect_delay_s: float | None = None) -> None:
        """Send one ``ping_delay_disconnect`` (disconnect delay ``disconnect_delay_s``, s,
        rounded up to whole seconds; default `PING_DISCONNECT_DELAY_S`; cluster mode passes
        ``[cluster] lease_s``) and wait for the pong, then save the session's entities (what
        Telethon's own keepalive loop did every 60 s). The account worker calls it through a
        lane slot.

        Raises:
            ConnectionError: if not connected.
            Exception: the connection's failure, as for a call.
        """
        tg = self._connected()
        ping_id = random.randrange(-(2**63), 2**63)
        await self._invoke(
            tl_functions.PingDelayDisconnectRequest(
                ping_id,
                PING_DISCONNECT_DELAY_S
                if disconnect_delay_s is None
                else max(1, math.ceil(disconnect_delay_s)),
            )
        )
        await self._aio(_aio_save_session, tg, call=False)

    # -- calls ---------------------------------------------------------------------------

    async def call(self, method: str, args: Mapping[str, Any]) -> dict[str, Any]:
        """Invoke a raw TL function by name with JSON arguments.

        Args:
            method: TL method name (``"contacts.resolveUsername"``, see
                `mtpoold._tljson.function_by_name`).
            args: Its arguments as JSON; peer fields may be ``"@name"``, t.me links or ids,
                resolved with this account's entity cache (or ``contacts.resolveUsername``).

        Returns:
            The result as JSON (`mtpoold._tljson.to_json`); results that are not objects
            are wrapped: ``{"_": "Vector", "value": [...]}``, ``{"_": "Bool", "value": b}``,
            ``{"_": "Int", "value": n}``.

        Raises:
            JobFailed: INVALID_ARGUMENT for an unknown method or bad arguments.
            Exception: Telethon's errors, for `classify`.
        """
        result = await self._lookup.send(
            lambda resolve_peer: build_request(method, args, resolve_peer=resolve_peer)
        )
        return _wrap_result(to_json(result))

    async def resolve(self, link_or_username: str) -> dict[str, Any]:
        """Resolve a username, link, invite or id to a peer summary: `PeerLookup.resolve`.

        Raises:
            JobFailed: INVALID_ARGUMENT if the input names no peer.
            ConnectionError: if not connected.
            Exception: Telethon's errors, for `classify`.
        """
        return await self._lookup.resolve(link_or_username)

    async def get_messages(self, peer: str | int, ids: Sequence[int]) -> dict[str, Any]:
        """Fetch messages of one chat by id and summarize them: `PeerLookup.get_messages`.

        Raises:
            JobFailed: INVALID_ARGUMENT for bad ids or peer.
            ConnectionError: if not connected.
            Exception: Telethon's errors, for `classify`.
        """
        return await self._lookup.get_messages(peer, ids)

    # -- internals ------------------------------------------------------------------------

    def _build(self, session: Session | None = None) -> TelegramClient:
        """Build the ``TelegramClient``: this account's proxy, server, timeouts and device.

        Device parameters the config leaves unset come from the session's sidecar
        (`read_device_params`), so a session keeps presenting the device it was authorized
        with; Telethon's defaults apply to what neither sets.

        Args:
            session: Use this session instead of the account's configured one (``mtpoold
                authorize`` logs in on a memory session and writes the file on success).

        Raises:
            ConfigError: if the account's session or proxy cannot be used.
        """
        if session is None:
            session = self._session()
        connection, proxy = telethon_proxy(self.proxy)
        acc = self.account
        recorded = read_device_params(acc.session) if acc.session is not None else {}
        device = {f: getattr(acc, f) or recorded.get(f) for f in DEVICE_FIELDS}
        host = self.telegram.dc_host or ""
        # idempotent: a filter already added is not added again
        logging.getLogger("telethon.network.mtprotosender").addFilter(_NO_RECONNECT_NOISE)
        tg = _GatedTelegramClient(
            session,
            acc.api_id,
            acc.api_hash,
            connection=monitored_connection(connection, self.monitor, self._connect_errors.append),
            use_ipv6=":" in host,
            proxy=proxy,
            timeout=self.telegram.connect_timeout_s,
            request_retries=1,
            connection_retries=CONNECTION_RETRIES,
            retry_delay=0,
            auto_reconnect=False,
            flood_sleep_threshold=0,
            raise_last_call_error=True,
            receive_updates=False,
            device_model=device["device_model"],
            system_version=device["system_version"],
            app_version=device["app_version"],
            lang_code=device["lang_code"] or "en",
            system_lang_code=device["system_lang_code"] or "en",
            loop=None,
        )
        install_sender_hooks(tg, self.monitor)
        tg.on_result = self._seen
        tg.request_guard = self._guard
        return tg

    def _session(self) -> Session:
        where = f"accounts.{self.account.id}"
        try:
            text = load_string_session(self.account)
        except SecretUnavailable as exc:
            raise ConfigError([f"{where}: {exc}"]) from None
        if text is not None:
            try:
                return StringSession(text)
            except Exception:  # noqa: BLE001 - ValueError, binascii.Error, struct.error
                raise ConfigError([f"{where}: not a valid Telethon StringSession"]) from None
        if self.account.session is not None:
            return SQLiteSession(str(self.account.session))
        return MemorySession()  # nothing configured (tests): the factory refuses such accounts

    def _apply_server(self, session: Session) -> None:
        address = server_address(self.telegram, session)
        if (
            address is not None
            and (
                session.dc_id,
                session.server_address,
                session.port,
            )
            != address
        ):
            session.set_dc(*address)

    async def _aio(self, fn: Callable[..., Awaitable[Any]], *args: Any, call: bool = True) -> Any:
        """Run a Telethon coroutine through `run_aio` (bounded cancellation).

        With ``call`` (everything but disconnects and session saves) it is one call for
        the wire governor, and a `ProtocolViolation` it ends with drops the connection.
        """
        if trio_asyncio.current_loop.get() is None:
            raise RuntimeError("TelethonClient must be used inside trio_asyncio.open_loop()")
        monitor = self.monitor if call else None
        if monitor is not None:
            monitor.begin_call()
        # this account's log context, unless the account worker set it already
        token = None if aio_context.get() is not None else aio_context.set(self._log_context())
        try:
            return await run_aio(fn, *args, monitor=monitor, on_abandoned=self._abandon)
        except ProtocolViolation as exc:
            log_event(
                log,
                logging.WARNING,
                "protocol_violation",
                account=self.account.id,
                proxy=self.proxy_key,
                detail=redact(exc.detail),
            )
            if token is not None:
                aio_context.reset(token)
                token = None
            await self.disconnect()
            raise
        finally:
            if token is not None:
                aio_context.reset(token)
            if monitor is not None:
                monitor.end_call()

    def _log_context(self) -> AioContext:
        """This account's `AioContext` (built once per account and proxy key)."""
        ctx = self._aio_ctx
        if ctx is None or ctx.account != self.account.id or ctx.proxy_key != self.proxy_key:
            ctx = self._aio_ctx = AioContext(account=self.account.id, proxy_key=self.proxy_key)
        return ctx

    def _abandon(self) -> None:
        log_event(
            log,
            logging.WARNING,
            "aio_call_abandoned",
            account=self.account.id,
            proxy=self.proxy_key,
            wait_s=AIO_CANCEL_WAIT_S,
        )
        self._stale = True

    def telegram_client(self) -> TelegramClient:
        """The connected ``TelegramClient``, for flows the ``Client`` protocol does not cover
        (the login of ``mtpoold authorize``); call its coroutines through `aio`.

        Raises:
            ConnectionError: if not connected.
        """
        return self._connected()

    async def aio(self, fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        """Run a Telethon coroutine function on the trio-asyncio loop with this account's log
        context; cancellation reaches the asyncio side.

        Raises:
            RuntimeError: outside ``trio_asyncio.open_loop()``.
            Exception: whatever ``fn`` raises.
        """
        return await self._aio(functools.partial(fn, *args, **kwargs))

    def _connected(self) -> TelegramClient:
        if self._tg is None or not self._tg.is_connected():
            raise ConnectionError("not connected")
        return self._tg

    def set_request_guard(self, guard: Any) -> None:
        """Ask ``guard.admit(tl_name)`` before every request sent from now on
        (`mtpoold._account.SupportsRequestGuard`); None: no guard."""
        self._guard = guard
        if self._tg is not None:
            self._tg.request_guard = guard

    async def _invoke(self, request: TLObject) -> Any:
        # the guard is asked in _GatedTelegramClient._call, which Telethon's own look-ups
        # (get_input_entity) go through too
        return await self._aio(self._connected(), request)

    def _cached_entity(self, target: Any) -> Any:
        """Telethon's session cache alone (no network): the Input* object, or None."""
        tg = self._tg
        if tg is None:
            return None
        try:
            return tg.session.get_input_entity(target)
        except (ValueError, TypeError, KeyError):
            return None

    async def _input_entity(self, target: Any) -> Any:
        """Telethon's ``get_input_entity``: its entity cache, else a look-up of its own."""
        tg = self._connected()
        return await self._aio(tg.get_input_entity, target)


async def _aio_disconnect(tg: TelegramClient) -> None:
    """asyncio side of `TelethonClient.disconnect` (``TelegramClient.disconnect`` returns a
    shielded future when the loop runs)."""
    result = tg.disconnect()
    if result is not None:
        await result


async def _aio_save_session(tg: TelegramClient) -> None:
    """Save the entities and the session (Telethon's keepalive loop did it every 60 s)."""
    await tg._save_states_and_entities()
    result = tg.session.save()
    if asyncio.iscoroutine(result):
        await result


def _read_leftovers(tg: TelegramClient) -> None:
    """Read the exception of every future Telethon leaves behind after a disconnect.

    ``MTProtoSender._disconnected`` holds the error that ended a connection (set by the
    sender, read by nobody once the keepalive loop is gone) and the reconnect task the
    error that ended a reconnect; unread, each is reported "Future exception was never
    retrieved" when collected.
    """
    sender = getattr(tg, "_sender", None)
    futures = [
        getattr(sender, "_MTProtoSender__disconnected", None),
        getattr(sender, "_reconnect_task", None),
        getattr(tg, "_updates_handle", None),
        getattr(tg, "_keepalive_handle", None),
    ]
    for fut in futures:
        if isinstance(fut, asyncio.Future) and fut.done() and not fut.cancelled():
            fut.exception()


# --- factory -----------------------------------------------------------------------------------


def telethon_client_factory(config: Config) -> Callable[[AccountConfig], TelethonClient]:
    """Check every account's Telethon settings once and return a client factory.

    Registers the configured extra RSA keys with Telethon (once per key per process) and
    checks, for every account, that its session source can be loaded (a session file exists,
    a variable is set, a credential file is present) and its server and proxy can be
    expressed to Telethon — so a broken account fails at start-up, not at its
    first job.

    Args:
        config: The daemon's config.

    Returns:
        ``factory(account) -> TelethonClient`` (a new, unconnected client per call).

    Raises:
        ConfigError: listing every problem found.
    """
    problems = startup_problems(config)
    if problems:
        raise ConfigError(problems)

    def factory(account: AccountConfig) -> TelethonClient:
        proxy = config.proxy_for(account)
        return TelethonClient(
            account=account,
            telegram=config.telegram_for(account),
            proxy=proxy,
            proxy_key=proxy_key(proxy),
        )

    return factory
