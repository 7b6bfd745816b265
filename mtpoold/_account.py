"""One Telegram user account: its client, its lock, its connection lifecycle and state."""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar, cast, final, runtime_checkable

import attrs
import trio

from ._errors import ErrorClass, Failure, RateClassBlocked, StartMissed
from ._jobs import JobPhase, JobProgress
from ._lane import LeaseUnconfirmed, NotAtOnce, ProxyCoolingDown, ProxyLane
from ._logformat import log_event
from ._policy import Verdict
from ._stats import AccountState, AccountStatistics, ClassState

if TYPE_CHECKING:
    from ._peermemory import AccountPeers

log = logging.getLogger("mtpoold.account")

T = TypeVar("T")

#: Seconds a disconnect may take before we stop waiting for it (it runs shielded).
DISCONNECT_TIMEOUT_S: Final = 5.0
#: Seconds between keepalive pings on an idle connection (Telethon's own interval).
KEEPALIVE_INTERVAL_S: Final = 60.0
#: A connect cut off (by the job deadline) after running at least this long, or its whole
#: ``connect_timeout_s`` if shorter, before the DC answered is the proxy's failure, seconds.
ABANDONED_CONNECT_MIN_S: Final = 1.0


class Client(Protocol):
    """What the pool needs of one account's MTProto client (see ``docs/CONTRACTS.md``).

    :class:`mtpoold._client.TelethonClient` is the real one; tests use doubles.
    """

    async def connect(self) -> None:
        """TCP, proxy handshake, auth key, initConnection; raises what the Telegram side's
        ``classify`` reads (`mtpoold._pool.TelegramSide`)."""

    async def call(self, method: str, args: Any) -> dict[str, Any]:
        """Invoke TL function ``method`` with JSON ``args``; the result as JSON."""

    async def resolve(self, link_or_username: str) -> dict[str, Any]:
        """A peer summary (kind, id, username, title, counts, flags)."""

    async def get_messages(self, peer: str | int, ids: Any) -> dict[str, Any]:
        """``{str(id): summary}`` for each message id of ``peer``."""

    async def disconnect(self) -> None:
        """Close the connection; safe at any time, the client can connect again."""

    def is_connected(self) -> bool:
        """Whether the MTProto connection is up."""


class SupportsKeepalive(Protocol):
    """A client that can ping its idle connection (the real client does; doubles may not)."""

    async def keepalive_ping(self) -> None:
        """Send one keepalive ping and wait for the pong. Cluster mode passes
        ``disconnect_delay_s`` (the ``ping_delay_disconnect`` delay, s) as a keyword."""


@runtime_checkable
class SupportsPeerBook(Protocol):
    """A client that uses the account's peer memory (`mtpoold._peermemory`; the real client
    does, doubles may not)."""

    def set_peer_book(self, book: AccountPeers) -> None:
        """Use ``book`` for look-ups and remember the peers results show."""


@runtime_checkable
class SupportsOpenBy(Protocol):
    """A client whose connect can refuse to open its socket past a deadline (the real client:
    `mtpoold._wire.WireMonitor.open_by`; doubles may not)."""

    def set_open_by(self, at: float | None) -> None:
        """The next connect opens no socket after ``at`` (trio clock, s; None: no limit)."""


class SupportsBlame(Protocol):
    """A client that knows how far its connect got (see `mtpoold._wire.WireMonitor`)."""

    def connect_blame(self, what: str) -> Exception | None:
        """The proxy's failure (``ProxyUnavailable``) if the DC has not answered yet."""


class RequestGuardLike(Protocol):
    """What a client asks before each TL request (`mtpoold._budget.RequestGuard`)."""

    def admit(self, tl_name: str) -> None:
        """Raise ``RateClassBlocked`` to refuse the request; otherwise it is counted."""


@runtime_checkable
class SupportsRequestGuard(Protocol):
    """A client that asks a request guard before every TL request it sends (the real client
    does; doubles may not). The account worker hands the guard over right after it built
    the client."""

    def set_request_guard(self, guard: RequestGuardLike | None) -> None:
        """Ask ``guard`` before every request from now on (None: no guard)."""


class ConnectTimeoutError(ConnectionError):
    """A connect missed its deadline after the DC had answered (key exchange,
    initConnection): classified STREAM_CLOSED. A connect that times out before the DC
    answered raises ``ProxyUnavailable`` instead (the proxy's failure).
    """


class DeadlinePassed(Exception):  # noqa: N818 - an outcome, as trio.TooSlowError
    """The job deadline a call was handed (`AccountWorker.run`'s ``deadline_at``,
    `mtpoold._dispatch.Dispatcher.acquire`'s ``enforce_deadline``) passed: what the caller's
    own ``move_on_at`` would have caught. Nothing judged; the connection was dropped if a
    connect or call was cut."""


class Judged(Exception):
    """A call failed and was judged; carries the verdict to the pool.

    Attributes:
        failure: The classified failure.
        verdict: What the policy decided for it.
    """

    def __init__(self, failure: Failure, verdict: Verdict) -> None:
        super().__init__(failure.message)
        self.failure = failure
        self.verdict = verdict


#: Error classes that are the caller's problem, not the account's (a peer that does not exist
#: or this account cannot see, a bad argument): counted apart (``caller_errors``), never in
#: the account's failures or its last error. Where the rule comes from: issue 13 (PEER_NOT_FOUND
#: filled the failure counters of healthy accounts); the policy gives them no penalty either
#: (`mtpoold._policy.decide`).
CALLER_ERROR_CLASSES: Final = frozenset({ErrorClass.PEER_NOT_FOUND, ErrorClass.INVALID_ARGUMENT})


#: ``judge(exc) -> (failure, verdict)``: classify and decide, synchronously. The pool's judge
#: also applies a proxy cooldown at once (a failed connect is judged inside its lane slot).
Judge = Callable[[BaseException], tuple[Failure, Verdict]]
#: ``on_abandoned(failure, verdict)``: a connect the caller cancelled was judged anyway.
OnAbandoned = Callable[[Failure, Verdict], None]


def _blame(client: Client, what: str) -> Exception | None:
    blame = getattr(client, "connect_blame", None)
    if blame is None:
        return None
    found: Exception | None = blame(what)
    return found


@final
@attrs.define(eq=False, repr=False)
class AccountWorker:
    """One account: a long-lived client used by one call at a time.

    The client is built lazily and connected on first use. A connect is traffic through the
    proxy, so it takes a slot from the lane like a call does and is bounded by
    ``connect_timeout_s``. While the connection is up and idle, a watcher task that lives in
    ``nursery`` (the pool's) pings it every ``keepalive_interval_s`` through a lane slot under
    the account lock (Telethon's own keepalive loop is off: it bypassed the gate), and
    closes it after ``idle_disconnect_s`` seconds without a call; after a failure
    whose verdict says ``reconnect`` (stream closed, proxy down, deadline) or a call
    cancelled mid-flight, the connection is dropped before the lock is released, so the
    next call starts on a fresh one.

    Scheduling state (``cooldown_until_at``, ``disabled_reason``, ``reserved``, ``retired``,
    ``lane``) lives here but only the dispatcher's verbs change it
    (`mtpoold._dispatch.Dispatcher`; ``tests/test_layers.py`` checks). All times are on the
    trio clock, in seconds.

    Args:
        id: The account id.
        lane: The proxy lane the account's traffic goes through.
        client_factory: Builds the account's client (called once per connection).
        nursery: Where the idle watcher runs.
        connect_timeout_s: Seconds a connect may take after its start slot.
        idle_disconnect_s: Seconds without a call before the connection is closed.
        tags: The account's tags from the config.
        keepalive_interval_s: Seconds between keepalive pings of an idle connection.
        peer_book: The account's peer memory (`mtpoold._peermemory.AccountPeers`), handed
            to each client it builds that takes one (`SupportsPeerBook`); None: off.
        request_guard: Handed to each client it builds (`SupportsRequestGuard`), or None.
        ping_disconnect_delay_s: Cluster mode: the ``ping_delay_disconnect`` delay (s) each
            keepalive ping asks for (the DC closes the connection that long after the last
            ping: `[cluster] lease_s`), and a ping that is due goes before the next call even
            while the account is kept busy; None: the client's own delay, and a busy
            connection needs no ping (single node).
    """

    id: str
    lane: ProxyLane
    client_factory: Callable[[], Client]
    nursery: trio.Nursery
    connect_timeout_s: float = 20.0
    idle_disconnect_s: float = 300.0
    tags: frozenset[str] = frozenset()
    keepalive_interval_s: float = KEEPALIVE_INTERVAL_S
    #: This account's peer memory, handed to every client it builds (None: off).
    peer_book: AccountPeers | None = None
    request_guard: RequestGuardLike | None = None
    ping_disconnect_delay_s: float | None = None
    cooldown_until_at: float = attrs.field(init=False, default=float("-inf"))
    #: The failure behind the latest cooldown (``"FLOOD_WAIT: ..."``), or None.
    cooldown_cause: str | None = attrs.field(init=False, default=None)
    disabled_reason: str | None = attrs.field(init=False, default=None)
    #: Cluster mode: why this node may not use the account now (its lease is elsewhere,
    #: unheld, draining or unconfirmed), or None: held here. Set only by the dispatcher
    #: (`mtpoold._dispatch.Dispatcher.hold_remote` / ``unhold_remote``).
    remote_reason: str | None = attrs.field(init=False, default=None)
    reserved: bool = attrs.field(init=False, default=False)
    retired: bool = attrs.field(init=False, default=False)
    calls_ok: int = attrs.field(init=False, default=0)
    calls_failed: int = attrs.field(init=False, default=0)
    #: Calls that failed for the caller's reasons (`CALLER_ERROR_CLASSES`), counted apart.
    caller_errors: int = attrs.field(init=False, default=0)
    errors_by_class: collections.Counter[str] = attrs.field(init=False, factory=collections.Counter)
    last_error_class: str | None = attrs.field(init=False, default=None)
    last_error_message: str | None = attrs.field(init=False, default=None)
    last_used_at: float | None = attrs.field(init=False, default=None)
    last_ping_at: float = attrs.field(init=False, default=float("-inf"))
    _client: Client | None = attrs.field(init=False, default=None)
    _connecting: bool = attrs.field(init=False, default=False)
    _lock: trio.Lock = attrs.field(init=False, factory=trio.Lock)
    _idle_scope: trio.CancelScope | None = attrs.field(init=False, default=None)
    #: The scope of the connect + call in flight (`cut_off` cancels it), and why it was cut.
    _run_scope: trio.CancelScope | None = attrs.field(init=False, default=None)
    _cut_cause: str | None = attrs.field(init=False, default=None)
    #: When the current connection came up (trio clock, s): cluster mode pings from there.
    _connected_at: float = attrs.field(init=False, default=float("-inf"))
    #: When a keepalive ping last went out (armed the DC's disconnect timer), trio clock s.
    _armed_at: float = attrs.field(init=False, default=float("-inf"))
    _in_call: bool = attrs.field(init=False, default=False)
    #: Set when the call holding the account ends (what the cluster-mode watcher waits for).
    _call_ended: trio.Event = attrs.field(init=False, factory=trio.Event)
    #: The tags, sorted once: statistics of 10,000 accounts must stay cheap.
    sorted_tags: tuple[str, ...] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.sorted_tags = tuple(sorted(self.tags))

    def __repr__(self) -> str:
        return f"<AccountWorker {self.id} lane={self.lane.name} state={self.state()}>"

    # -- scheduling view -------------------------------------------------------------

    def state(self, now: float | None = None) -> AccountState:
        """The account's `AccountState` at ``now`` (trio clock, s; default: now), the first
        that holds of retired, disabled, remote, connecting, busy, cooldown, then ready or
        idle."""
        if self.retired:
            return AccountState.RETIRED
        if self.disabled_reason is not None:
            return AccountState.DISABLED
        if self.remote_reason is not None:
            return AccountState.REMOTE
        if self._connecting:
            return AccountState.CONNECTING
        if self._lock.locked():
            return AccountState.BUSY
        if self.schedulable_at() > (trio.current_time() if now is None else now):
            return AccountState.COOLDOWN
        return AccountState.READY if self.connected else AccountState.IDLE

    def set_tags(self, tags: frozenset[str]) -> None:
        """Replace the account's tags (live reload)."""
        self.tags = tags
        self.sorted_tags = tuple(sorted(tags))

    def schedulable_at(self) -> float:
        """When (trio clock, s) neither the account's own cooldown nor its proxy's holds it
        back; ``inf`` when disabled, retired or remote (cluster: not held here)."""
        if self.out_of_service:
            return float("inf")
        return max(self.cooldown_until_at, self.lane.cooldown_until_at)

    @property
    def out_of_service(self) -> bool:
        """Whether no job may take the account: disabled, retired, or (cluster mode) not
        held by this node (``remote_reason``)."""
        return self.disabled_reason is not None or self.retired or self.remote_reason is not None

    @property
    def connecting(self) -> bool:
        """Whether a connect is under way (a failure judged now is the connect's)."""
        return self._connecting

    @property
    def connected(self) -> bool:
        """Whether the account's MTProto connection is up."""
        return self._client is not None and self._client.is_connected()

    @property
    def busy(self) -> bool:
        """Whether a call holds the account (or a job has reserved it)."""
        return self.reserved or self._lock.locked()

    def ready_at(self) -> float:
        """Earliest time (trio clock, s) this account could start a call, ignoring ``busy``.

        ``inf`` when disabled, retired or remote.
        """
        if self.out_of_service:
            return float("inf")
        return max(self.cooldown_until_at, self.lane.earliest_start_at())

    # -- calls -----------------------------------------------------------------------

    async def run(
        self,
        op: Callable[[Client], Awaitable[T]],
        *,
        call_deadline_s: float,
        judge: Judge,
        on_abandoned: OnAbandoned | None = None,
        progress: JobProgress | None = None,
        deadline_at: float = math.inf,
    ) -> T:
        """Run ``op`` on this account's client, one call at a time.

        Takes the account lock, connects lazily (through a lane slot), takes a lane slot for
        the call and runs ``op(client)`` under the call deadline (``call_deadline_s`` from the
        start slot; past it the call ends with ``trio.TooSlowError``, judged).

        Args:
            op: The call to make with the connected client.
            call_deadline_s: Seconds the call may take after its start slot.
            judge: Classifies an exception and returns ``(failure, verdict)``.
            on_abandoned: Told ``(failure, verdict)`` when the caller cancels a connect that
                had run at least `ABANDONED_CONNECT_MIN_S` (or its whole timeout) before the
                DC ever answered: the proxy's failure all the same (the pool applies it).
            progress: The job's `mtpoold._jobs.JobProgress`, told each hop (lane capacity,
                gate, connecting, in the call), or None.
            deadline_at: The job deadline (trio clock, s) the run itself enforces, on the
                scope it has anyway (a caller then needs no scope of its own for it): the
                connect, the gate and the call end there, as a caller's ``move_on_at``
                would end them (the connection dropped, nothing judged); ``inf``: the
                caller's own scope does it.

        A failure of a class in `CALLER_ERROR_CLASSES` counts in ``caller_errors`` only.

        Returns:
            What ``op`` returned.

        Raises:
            Judged: the connect or the call failed; carries the failure and the verdict.
                The connection has already been dropped when the verdict says ``reconnect``.
            trio.Cancelled: the caller's scope was cancelled (e.g. the job deadline); the
                connection is dropped, since a call may have been left half-done.
            DeadlinePassed: ``deadline_at`` passed; the connection was dropped.
            ProxyCoolingDown: the lane's proxy is cooling down (`ProxyLane.slot`): nothing
                was sent, nothing is judged or counted.
            RateClassBlocked: the request guard refused a request of ``op`` (its rate class
                is cooling down or out of budget): not judged, not counted as a failure.
        """
        # An uncontended lock is taken without a schedule point (`trio.Lock`'s own
        # `acquire` makes one even when free): the lane slot below is the call's checkpoint.
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()
        try:
            self._cut_cause = None
            self._in_call = False
            try:
                if self.remote_reason is not None:
                    # cluster mode: held back (a drain, a cut-off) after this job reserved
                    # the account; nothing may start, not even a connect
                    raise LeaseUnconfirmed(self.id, self.remote_reason)
                client = self._client
                run_scope: trio.CancelScope | None = None
                # Connected, no ping due, and a lane that starts the call at once (single
                # node, ungated, a token free): its slot needs no deadline, so the scope
                # opens at the slot's start with the call deadline (`_call_at_once`).
                if (
                    client is not None
                    and client.is_connected()
                    and self.lane.starts_at_once(trio.current_time())
                    and not self._ping_due()
                ):
                    try:
                        result, run_scope = await self._call_at_once(
                            op, client, progress, call_deadline_s, deadline_at
                        )
                    except NotAtOnce:  # gated meanwhile (a reload): wait as any caller
                        pass
                if run_scope is None:
                    # One scope for the whole run: `cut_off` cancels it (cluster mode), and
                    # from the call's start slot on it carries the call deadline too (what
                    # ``trio.fail_after`` would give, without a second scope per call).
                    with trio.CancelScope(deadline=deadline_at) as run_scope:
                        self._run_scope = run_scope
                        if client is None or not client.is_connected():
                            client = await self._ensure_connected(judge, on_abandoned, progress)
                        if self._ping_due():
                            # cluster mode: a due keepalive goes before the next call, busy
                            # or not
                            if not await self._keepalive():
                                await self._drop_connection()
                                client = await self._ensure_connected(judge, on_abandoned, progress)
                        # the slot's start (trio clock, s): the call deadline counts from it
                        async with self.lane.slot(progress, account=self.id) as started_at:
                            self.last_used_at = started_at
                            self._in_call = True
                            call_until_at = started_at + call_deadline_s
                            if call_until_at < deadline_at:
                                run_scope.deadline = call_until_at
                            result = await op(client)
                if run_scope.cancelled_caught:
                    if self._cut_cause is None:
                        if trio.current_time() >= deadline_at:  # the job's, not the call's
                            await self._drop_connection()
                            raise DeadlinePassed
                        raise trio.TooSlowError  # the call deadline passed
                    # `cut_off`: the lease ran out
                    await self._drop_connection()
                    raise LeaseUnconfirmed(self.id, self._cut_cause, in_call=self._in_call)
            except trio.Cancelled:
                await self._drop_connection()
                raise
            except LeaseUnconfirmed:
                await self._drop_connection()  # no lease: no connection either
                raise
            except (ProxyCoolingDown, RateClassBlocked, DeadlinePassed):
                raise  # nothing was sent: not a failure of the account or the proxy
            except Exception as exc:
                if isinstance(exc, Judged):  # a connect, judged inside its lane slot
                    failure, verdict, cause = exc.failure, exc.verdict, exc.__cause__
                else:
                    failure, verdict = judge(exc)
                    cause = exc
                self._count_failure(failure)
                if verdict.reconnect:
                    await self._drop_connection()
                raise Judged(failure, verdict) from cause
            finally:
                self._run_scope = None
                self._in_call = False
                self._call_ended.set()
            self.calls_ok += 1
            self.last_used_at = trio.current_time()
            return result
        finally:
            self._lock.release()

    async def _call_at_once(
        self,
        op: Callable[[Client], Awaitable[T]],
        client: Client,
        progress: JobProgress | None,
        call_deadline_s: float,
        deadline_at: float,
    ) -> tuple[T, trio.CancelScope]:
        """`run`'s call on a lane that starts it at once (`ProxyLane.starts_at_once`): the
        slot first, with no scope around it (it cannot wait: the token is free, the gate
        ungated, and `cut_off` is cluster mode's), then the call in a scope opened at the
        slot's start with its one deadline, ``min(deadline_at, start + call_deadline_s)``
        (trio clock, s). One deadline per call, and the slot's schedule point outside any
        scope of ours (bench/scale.py, "pool per-job CPU").

        Returns:
            What ``op`` returned (None when the scope caught its deadline), and the scope
            (the caller reads ``cancelled_caught`` first).

        Raises:
            NotAtOnce: the lane was gated meanwhile (a reload): nothing was sent.
        """
        result = cast(T, None)
        async with self.lane.slot(progress, account=self.id, at_once=True) as started_at:
            self.last_used_at = started_at
            self._in_call = True
            with trio.CancelScope(deadline=min(deadline_at, started_at + call_deadline_s)) as scope:
                self._run_scope = scope
                result = await op(client)
        return result, scope

    async def _ensure_connected(
        self, judge: Judge, on_abandoned: OnAbandoned | None, progress: JobProgress | None
    ) -> Client:
        if self._client is not None and self._client.is_connected():
            return self._client
        await self._drop_connection()
        self._connecting = True
        # One client object per account for its lifetime: reconnecting keeps Telethon's
        # entity cache (access hashes) of string sessions.
        if self._client is None:
            self._client = self.client_factory()
            if self.peer_book is not None and isinstance(self._client, SupportsPeerBook):
                self._client.set_peer_book(self.peer_book)
            if self.request_guard is not None and isinstance(self._client, SupportsRequestGuard):
                self._client.set_request_guard(self.request_guard)
        client = self._client
        started_at: float | None = None
        # cluster mode: the socket opens no later than the slot allows (`StartMissed`)
        open_by = client.set_open_by if isinstance(client, SupportsOpenBy) else None
        try:
            while True:
                try:
                    async with self.lane.slot(
                        progress,
                        JobPhase.CONNECTING,
                        account=self.id,
                        connecting=True,
                        on_start=open_by,
                    ):
                        started_at = trio.current_time()
                        try:
                            with trio.move_on_after(self.connect_timeout_s) as scope:
                                await client.connect()
                            if scope.cancelled_caught:
                                what = f"did not answer within {self.connect_timeout_s:g} s"
                                raise _blame(client, what) or ConnectTimeoutError(
                                    f"connect did not finish within {self.connect_timeout_s:g} s"
                                )
                        except (RateClassBlocked, StartMissed):
                            raise  # nothing was sent: not judged, not an attempt
                        except Exception as exc:
                            # Judged while this connect still holds its lane slot, before any
                            # checkpoint: a proxy cooldown the judge applies holds back the
                            # callers queued behind it (ProxyCoolingDown, not a connect).
                            failure, verdict = judge(exc)
                            raise Judged(failure, verdict) from exc
                    break
                except StartMissed:
                    self.lane.note_missed_start()  # the slot went unused: take another
                finally:
                    if open_by is not None:
                        open_by(None)
        except trio.Cancelled:
            ran_s = 0.0 if started_at is None else trio.current_time() - started_at
            if on_abandoned is not None and ran_s >= min(
                ABANDONED_CONNECT_MIN_S, self.connect_timeout_s
            ):
                blamed = _blame(client, f"did not answer within {ran_s:.3g} s (connect cut off)")
                if blamed is not None:
                    failure, verdict = judge(blamed)
                    self._count_failure(failure)
                    on_abandoned(failure, verdict)
            await self._drop_connection()
            raise
        except BaseException:
            await self._drop_connection()
            raise
        finally:
            self._connecting = False
        self.last_used_at = self._connected_at = trio.current_time()
        self._start_idle_watch()
        return client

    def _count_failure(self, failure: Failure) -> None:
        """Count a judged failure: the caller's (`CALLER_ERROR_CLASSES`) in
        ``caller_errors`` only, any other in ``calls_failed``, ``errors_by_class`` and the
        last error."""
        if failure.error_class in CALLER_ERROR_CLASSES:
            self.caller_errors += 1
            return
        name = failure.error_class.value
        self.calls_failed += 1
        self.errors_by_class[name] += 1
        self.last_error_class = name
        self.last_error_message = failure.message

    # -- connection lifecycle ----------------------------------------------------------

    def _start_idle_watch(self) -> None:
        if self._idle_scope is not None:
            self._idle_scope.cancel()
        scope = trio.CancelScope()
        self._idle_scope = scope
        self.nursery.start_soon(self._watch_idle, scope, name=f"idle-watch:{self.id}")

    def _next_idle_event(self) -> float:
        """When the idle watcher must next act (trio clock, s): the idle disconnect or the
        next keepalive ping, whichever comes first."""
        assert self.last_used_at is not None
        idle_at = self.last_used_at + self.idle_disconnect_s
        if self.ping_disconnect_delay_s is not None:  # calls do not reset the DC's timer
            ping_at = max(self._connected_at, self.last_ping_at) + self.keepalive_interval_s
        else:
            ping_at = max(self.last_used_at, self.last_ping_at) + self.keepalive_interval_s
        return min(idle_at, ping_at)

    def quiesce(self) -> None:
        """A disabled account sends nothing more: its idle connection is closed now (at once
        if no call holds the account, else when that call ends), not kept up with keepalive
        pings until ``idle_disconnect_s``. Called by the pool after the dispatcher's
        ``disable``; a no-op without a connection."""
        if self._idle_scope is not None:
            self._start_idle_watch()  # the new watcher sees the account disabled first

    async def _watch_idle(self, scope: trio.CancelScope) -> None:
        """Ping the idle connection every ``keepalive_interval_s``; close it after
        ``idle_disconnect_s`` without a call, or at once for a disabled account (no
        keepalive traffic for an account the pool will not use)."""
        with scope:
            while True:
                if self.disabled_reason is not None:
                    async with self._lock:  # after the call in flight, if any
                        if self.disabled_reason is not None:  # not enabled meanwhile
                            await self._close_from_watcher("disabled_disconnect")
                            return
                await trio.sleep_until(self._next_idle_event())
                now = trio.current_time()
                if now < self._next_idle_event() or self.disabled_reason is not None:
                    continue  # used (or pinged) meanwhile; or disabled: closed above
                assert self.last_used_at is not None
                idle_at = self.last_used_at + self.idle_disconnect_s
                try:
                    self._lock.acquire_nowait()
                except trio.WouldBlock:
                    # A call holds the account (its traffic keeps the connection alive); it
                    # bumps last_used_at when it ends. Cluster mode: the ping stays due and
                    # goes before the next call (`run`).
                    if self.ping_disconnect_delay_s is None:
                        self.last_ping_at = now
                    else:
                        await self._wait_unlocked()
                    if now >= idle_at:
                        await trio.sleep(self.idle_disconnect_s)
                    continue
                try:
                    if now >= self.last_used_at + self.idle_disconnect_s:
                        await self._close_from_watcher(
                            "idle_disconnect", idle_s=self.idle_disconnect_s
                        )
                        return
                    if not await self._keepalive():
                        await self._close_from_watcher(None)
                        return
                finally:
                    self._lock.release()

    async def _close_from_watcher(self, event: str | None, idle_s: float | None = None) -> None:
        """The idle watcher closes the connection (it holds the lock): ``event`` (why) at
        DEBUG first, if any — the client's own disconnect event follows — then the drop,
        which must not cancel the watcher's own scope."""
        if event is not None:
            # idle_s None: left out of the line
            log_event(
                log, logging.DEBUG, event, account=self.id, proxy=self.lane.key, idle_s=idle_s
            )
        self._idle_scope = None
        await self._drop_connection()

    async def _keepalive(self) -> bool:
        """One keepalive ping through a lane slot (the caller holds the lock).

        Returns:
            False if the ping failed (the caller drops the connection).
        """
        client = self._client
        ping = getattr(client, "keepalive_ping", None)
        self.last_ping_at = trio.current_time()
        if client is None or ping is None or not client.is_connected():
            return client is not None and client.is_connected()
        try:
            async with self.lane.slot(account=self.id):
                self.last_ping_at = self._armed_at = trio.current_time()
                with trio.fail_after(self.connect_timeout_s):
                    if self.ping_disconnect_delay_s is None:
                        await ping()
                    else:
                        await ping(disconnect_delay_s=self.ping_disconnect_delay_s)
        except ProxyCoolingDown:
            return True  # no traffic through a cooling proxy; the connection may idle out
        except LeaseUnconfirmed:
            return False  # no lease, no connection: the caller drops it
        except (Exception, trio.TooSlowError) as exc:
            log_event(
                log,
                logging.WARNING,
                "keepalive_failed",
                account=self.id,
                proxy=self.lane.key,
                error=type(exc).__name__,
            )
            return False
        return True

    def _ping_due(self) -> bool:
        """Whether the connection's keepalive ping is due, so it goes before the next call.

        The DC closes a connection ``disconnect_delay`` seconds after its last
        ``ping_delay_disconnect`` unless another arrives, whatever else it carries (MTProto's
        service messages): calls do not keep it open. Cluster mode: due
        ``keepalive_interval_s`` after the last ping or the connect. Single node: once a
        ping armed the DC's timer on this connection (the idle watcher's), due
        ``keepalive_interval_s`` after that ping — else a busy account would lose its
        connection `mtpoold._client.PING_DISCONNECT_DELAY_S` after its one idle ping."""
        if not self.connected:
            return False
        if self.ping_disconnect_delay_s is None:
            if self._armed_at < self._connected_at:
                return False  # no ping on this connection yet: no timer armed
            since_at = self._armed_at
        else:
            since_at = max(self.last_ping_at, self._connected_at)
        return trio.current_time() >= since_at + self.keepalive_interval_s

    async def _wait_unlocked(self) -> None:
        """The idle watcher waits for the call holding the account to end (cluster mode:
        the ping it could not send is due before the next call). It does not queue for the
        lock: a lock handed straight to it would leave the account busy when the pool gives
        it back to the dispatcher."""
        if self._lock.locked():
            event = self._call_ended = trio.Event()
            await event.wait()

    def shield_call(self, until_at: float) -> None:
        """Keep the call in flight (if one is) on the wire whatever happens to the caller's
        task: its cancellation no longer reaches the call, which still ends by its own call
        deadline and by ``until_at`` (trio clock, s; the caller's job deadline), and by
        `cut_off`. For a shared call whose other waiters need its answer
        (`mtpoold._pool.Pool._lead`); `unshield` (the last waiter gone, the pool's
        shutdown) undoes it."""
        scope = self._run_scope
        if scope is not None and self._in_call:
            scope.shield = True
            if until_at < scope.deadline:
                scope.deadline = until_at

    def unshield(self) -> None:
        """Let the caller's cancellation reach the call in flight again (`shield_call`)."""
        if self._run_scope is not None:
            self._run_scope.shield = False

    def cut_off(self, cause: str) -> None:
        """Cluster mode: the account's lease ran out (or was lost): the connect or call in
        flight, if any, is cancelled at once and ends with `LeaseUnconfirmed` (its
        connection dropped); an idle connection is closed by `drop_now`. Synchronous: the
        cluster task calls it when the lease's local validity ends."""
        self._cut_cause = cause or "lease ran out"
        if self._run_scope is not None:
            self._run_scope.cancel()

    async def drop_now(self) -> None:
        """Close the connection now, whoever holds the account (a call in flight is cut off
        first with `cut_off`); shielded, bounded. Cluster mode: the lease ran out."""
        await self._drop_connection()

    async def _drop_connection(self) -> None:
        """Disconnect the client (kept for the next connect); shielded, bounded, safe any time."""
        client = self._client
        if self._idle_scope is not None:
            self._idle_scope.cancel()
            self._idle_scope = None
        if client is None:
            return
        with trio.CancelScope(shield=True):
            with trio.move_on_after(DISCONNECT_TIMEOUT_S):
                try:
                    await client.disconnect()
                except Exception as exc:  # a disconnect failing must not hide the real error
                    log_event(
                        log,
                        logging.WARNING,
                        "disconnect_failed",
                        account=self.id,
                        proxy=self.lane.key,
                        error=type(exc).__name__,
                    )

    async def rebuild(self, client_factory: Callable[[], Client] | None = None) -> None:
        """Once no call holds the account, disconnect and forget the client, so the next
        call builds a new one (live reload: proxy or credentials changed)."""
        async with self._lock:
            await self._drop_connection()
            self._client = None
            if client_factory is not None:
                self.client_factory = client_factory

    async def disconnect_when_free(self) -> None:
        """Once no call holds the account, close its connection (the client is kept).
        Cluster mode: the drain before the lease is released."""
        async with self._lock:
            await self._drop_connection()

    async def aclose(self) -> None:
        """Close the connection at pool shutdown; waits for no lock (the pool is closing)."""
        await self._drop_connection()

    # -- statistics ----------------------------------------------------------------------

    def statistics(
        self,
        *,
        proxy_name: str,
        now: float | None = None,
        rate_classes: tuple[ClassState, ...] = (),
    ) -> AccountStatistics:
        """Return a frozen snapshot of this account's state and counters.

        Args:
            proxy_name: The name of its lane's proxy, for the snapshot.
            now: The trio clock reading to compute remaining times from (the pool passes
                one reading for a whole snapshot of many accounts).
            rate_classes: Its per-class state (the dispatcher and the budgets hold it).
        """
        if now is None:
            now = trio.current_time()
        # The account's own cooldown (its blame); a proxy cooldown shows in its lane's row
        # and in ``state`` (`AccountState.COOLDOWN`).
        cooldown_s = 0.0 if self.disabled_reason else max(0.0, self.cooldown_until_at - now)
        return AccountStatistics(
            id=self.id,
            proxy_key=self.lane.key,
            proxy_name=proxy_name,
            state=self.state(now),
            connected=self.connected,
            cooldown_remaining_s=cooldown_s,
            cooldown_cause=self.cooldown_cause if cooldown_s > 0 else None,
            disabled_reason=self.disabled_reason,
            remote_reason=self.remote_reason,
            calls_ok=self.calls_ok,
            calls_failed=self.calls_failed,
            caller_errors=self.caller_errors,
            errors_by_class=dict(self.errors_by_class) if self.errors_by_class else {},
            last_error_class=self.last_error_class,
            last_error_message=self.last_error_message,
            last_used_s_ago=None if self.last_used_at is None else now - self.last_used_at,
            tags=self.sorted_tags,
            rate_classes=rate_classes,
        )


def count_states(workers: Iterable[AccountWorker], now: float) -> dict[str, int]:
    """How many of ``workers`` are in each `AccountState` at ``now`` (trio clock, s): every
    state's value a key (0 too), the counts adding up to the workers given.

    The same rule as `AccountWorker.state`, in one loop without a method call per account:
    the pool's summary counts 100,000 accounts with it (``tests/test_account.py`` checks it
    against ``state`` account by account).
    """
    counts = dict.fromkeys((s.value for s in AccountState), 0)
    retired = disabled = remote = connecting = busy = cooling = ready = idle = 0
    for w in workers:
        if w.retired:
            retired += 1
        elif w.disabled_reason is not None:
            disabled += 1
        elif w.remote_reason is not None:
            remote += 1
        elif w._connecting:
            connecting += 1
        elif w._lock.locked():
            busy += 1
        elif w.cooldown_until_at > now or w.lane.cooldown_until_at > now:
            cooling += 1
        elif w._client is not None and w._client.is_connected():
            ready += 1
        else:
            idle += 1
    counts[AccountState.RETIRED] += retired
    counts[AccountState.DISABLED] += disabled
    counts[AccountState.REMOTE] += remote
    counts[AccountState.CONNECTING] += connecting
    counts[AccountState.BUSY] += busy
    counts[AccountState.COOLDOWN] += cooling
    counts[AccountState.READY] += ready
    counts[AccountState.IDLE] += idle
    return counts
