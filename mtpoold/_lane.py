"""One proxy as a lane: a capacity limiter, a rate gate, a cooldown and counters."""

from __future__ import annotations

import collections
import math
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, final

import attrs
import trio

# NO_PROXY: key and name of the lane shared by accounts with no proxy (the host's own address
# is rate-limited by Telegram too); defined with `proxy_key`.
from ._config import NO_PROXY as NO_PROXY
from ._errors import ErrorClass
from ._gate import DEFAULT_JITTER_S, RateGate
from ._jobs import JobPhase
from ._latency import Histogram
from ._promptwake import PromptWake
from ._stats import LaneStatistics

if TYPE_CHECKING:
    from ._jobs import JobProgress
    from ._startwindow import StartWindow


class ProxyCoolingDown(Exception):
    """A lane slot came free while the proxy was cooling down: nothing was sent.

    Raised by `ProxyLane.slot` instead of a start, so a caller that queued for the proxy's
    capacity before the proxy failed never puts traffic through it (nor counts another
    failure of it); the pool gives the account back and schedules the job again (another
    lane, a wait, or NO_ACCOUNT_AVAILABLE when none can start before the deadline).

    Args:
        proxy: The lane's (proxy's) name.
        until_at: When its cooldown ends, trio clock seconds.
    """

    def __init__(self, proxy: str, until_at: float) -> None:
        super().__init__(f"proxy {proxy} is cooling down")
        self.proxy = proxy
        self.until_at = until_at


class NotAtOnce(Exception):
    """`ProxyLane.slot` with ``at_once``: the gate would make the caller wait after all (the
    lane was gated meanwhile, by a reload). Raised before any wait, the capacity token given
    back; nothing was sent. The caller asks again without ``at_once``."""


class LeaseUnconfirmed(Exception):
    """Cluster mode: this node's lease on the account is not confirmed (lost, expired on the
    local clock, or Redis could not be asked), so the call or connect does not start (or,
    ``in_call``, the call in flight was cut off when the lease ran out). Nothing was sent
    unless ``in_call``. Not a failure of the account or the proxy: the pool reroutes the
    job (or answers NO_ACCOUNT_AVAILABLE naming ``cause``).

    Args:
        account_id: The account.
        cause: Why, one line without secrets (``"lease on account a1 lost"``, ``"cluster:
            redis 10.0.0.5:6379 unreachable (TimeoutError); leases unconfirmed"``).
        in_call: The call had started and was cut off (it may have reached Telegram).
    """

    def __init__(self, account_id: str, cause: str, *, in_call: bool = False) -> None:
        super().__init__(cause)
        self.account_id = account_id
        self.cause = cause
        self.in_call = in_call


class SharedStart(Protocol):
    """Cluster mode: a lane's start slots from the gate every node shares (in Redis,
    `mtpoold._clustergate.SharedGate`, adapted by `mtpoold._clusterrun`), checked against the
    account's lease. The scheduling core knows only this protocol."""

    #: The node's start window (`mtpoold._startwindow.StartWindow`), shared by its lanes.
    window: StartWindow

    def clock_spread_s(self) -> float:
        """How far apart (s) the earliest and latest local instants of a slot are now: the
        uncertainty of the node's view of Redis's clock (`mtpoold._redisclock.RedisClock
        .spread_s`), ``inf`` while unknown. A start's window is this plus the allowance its
        wake-up needs (`ProxyLane._shared_slot`)."""
        ...

    async def reserve(
        self, account_id: str | None, *, connecting: bool, interval_s: float, window_s: float
    ) -> tuple[float, float]:
        """Reserve a start in one round trip; return ``(start_at, earliest_at)``, trio clock
        seconds: when to start (never before the slot) and the earliest the slot can have
        been on this clock (`mtpoold._clustergate.SharedGate.reserve_at`).

        Args:
            account_id: The account the start is for (its lease is checked atomically), or
                None (no check).
            connecting: The start opens the account's connection (marks it connected in
                Redis).
            interval_s: The lane's ``interval_s`` now (a reload may change it).
            window_s: How late after ``earliest_at`` the start may go (s; 0 on an ungated
                lane): Redis keeps the next slot ``interval_s + window_s`` after this one.

        Raises:
            LeaseUnconfirmed: the lease is not this node's, or Redis could not be asked.
        """
        ...

    def confirm(self, account_id: str | None) -> None:
        """Just before the start (after the sleep): raise `LeaseUnconfirmed` unless the
        account's lease is still valid on the local trio clock (None: no check)."""
        ...


@final
@attrs.define(eq=False, repr=False)
class ProxyLane:
    """Everything that goes through one proxy: calls *and* connects.

    A slot is a capacity token (``capacity`` concurrent calls, FIFO, a
    :class:`trio.CapacityLimiter`) followed by a start from the :class:`RateGate` (at most
    one start per ``interval_s`` seconds). The token is taken first, so a start slot is
    never reserved by a caller that would then wait for capacity. Connects take a slot like
    calls do: TCP, the proxy handshake and the MTProto key exchange are traffic through the
    proxy too, so a reconnect storm can never burst it.

    The lane also carries the proxy cooldown (set when the proxy itself fails:
    PROXY_UNAVAILABLE) and its counters.

    Args:
        key: The proxy key (see :func:`mtpoold._config.proxy_key`) or ``"no_proxy"``.
        name: Proxy name from the config.
        type: ``socks5``, ``socks4``, ``http``, ``mtproxy`` or ``direct``.
        capacity: Concurrent calls allowed (>= 1).
        interval_s: Minimum seconds between two starts.
        jitter_s: ``(low, high)`` seconds of start jitter.
        rng: Source of the jitter.
        shared: Cluster mode: the start slots come from the gate every node shares
            (`SharedStart`) instead of the local `RateGate`; the local queue then only
            serialises the reservations in arrival order (one round trip each) — the next
            local caller reserves while the first one sleeps until its start.
        wake: How the lane sleeps until a start slot, on time (`mtpoold._promptwake`): the
            pool's, shared by its lanes, so its spin budget is the node's.
    """

    key: str
    name: str
    type: str
    capacity: int = 1
    interval_s: float = 2.0
    jitter_s: tuple[float, float] = DEFAULT_JITTER_S
    rng: random.Random = attrs.field(factory=random.Random)
    shared: SharedStart | None = None
    wake: PromptWake = attrs.field(factory=PromptWake)
    #: End of the proxy cooldown (trio clock, s); set only by the dispatcher
    #: (`mtpoold._dispatch.Dispatcher.cool_down_lane`).
    cooldown_until_at: float = attrs.field(init=False, default=float("-inf"))
    #: The failure behind the latest proxy cooldown, or None (set with ``cooldown_until_at``).
    cooldown_cause: str | None = attrs.field(init=False, default=None)
    _consecutive_failures: int = attrs.field(init=False, default=0)
    calls: int = attrs.field(init=False, default=0)
    errors_by_class: collections.Counter[str] = attrs.field(init=False, factory=collections.Counter)
    _limiter: trio.CapacityLimiter = attrs.field(init=False)
    _gate: RateGate = attrs.field(init=False)
    #: Seconds from asking for a slot to its start, per start (`LaneStatistics.gate_wait`).
    _gate_wait: Histogram = attrs.field(init=False, factory=Histogram)
    #: Seconds each started slot was held (`LaneStatistics.call_latency`).
    _call_latency: Histogram = attrs.field(init=False, factory=Histogram)
    #: The last snapshot of the lane at rest and what it was taken from (`statistics`).
    _rest: tuple[tuple[object, ...], LaneStatistics] | None = attrs.field(init=False, default=None)
    # cluster mode (``shared``): reservations in arrival order, the latest reserved start
    # (trio clock, s), callers between arrival and start, starts
    _reserving: trio.Lock = attrs.field(init=False, factory=trio.Lock)
    _shared_last_start_at: float = attrs.field(init=False, default=float("-inf"))
    _shared_waiting: int = attrs.field(init=False, default=0)
    _shared_starts: int = attrs.field(init=False, default=0)
    #: Cluster mode: reserved slots left unused because the start would have been later than
    #: its window (`_shared_slot`, `mtpoold._startwindow`) or reached its socket too late.
    late_reservations: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        self._limiter = trio.CapacityLimiter(self.capacity)
        self._gate = RateGate(
            interval_s=self.interval_s, jitter_s=self.jitter_s, rng=self.rng, wake=self.wake
        )

    def __repr__(self) -> str:
        lim = self._limiter.statistics()
        return (
            f"<ProxyLane {self.name} key={self.key} in_flight={lim.borrowed_tokens}/"
            f"{lim.total_tokens} waiting={lim.tasks_waiting + self._gate.waiting}>"
        )

    def slot(
        self,
        progress: JobProgress | None = None,
        phase: JobPhase = JobPhase.IN_CALL,
        *,
        account: str | None = None,
        connecting: bool = False,
        on_start: Callable[[float], None] | None = None,
        at_once: bool = False,
    ) -> _Slot:
        """Hold one capacity token and start at the gate's next slot.

        Args:
            progress: The job's `mtpoold._jobs.JobProgress`, told each hop: waiting for a
                token, at the gate, then ``phase`` (the block: a call or a connect).
            account: The account the start is for (cluster mode: its lease is checked at
                the reservation and again just before the start).
            connecting: The start opens the account's connection (cluster mode).
            on_start: Cluster mode: told, just before the block, the latest trio clock
                instant (s) the start's first bytes may leave (its window after the
                earliest its slot can have been, `_shared_slot`); the account hands it to
                the client's socket (`mtpoold._wire.WireMonitor.open_by`). Not called in
                single-node mode.
            at_once: The caller found `starts_at_once` true and set its deadlines by it: if
                the gate would make it wait after all, `NotAtOnce` is raised first.

        Returns:
            An async context manager; ``async with`` gives the start time on the trio clock
            (seconds). The token is held until the block exits; the block is the call (or
            connect) itself.

        Raises:
            ProxyCoolingDown: the proxy is cooling down when the token, or the start slot,
                comes free (it may have started cooling while this caller queued).
            LeaseUnconfirmed: cluster mode: the account's lease is not confirmed at the
                reservation or just before the start; nothing was sent.
        """
        return _Slot(self, progress, phase, account, connecting, on_start, at_once)

    def starts_at_once(self, now: float) -> bool:
        """Whether a caller asking now (``now``: a reading of the trio clock, s) gets its
        start with no wait: single-node mode, a capacity token free, an ungated gate with
        nobody queued (`RateGate.opens_at_once`), no proxy cooldown. The token is taken
        before the slot's schedule point, so only a reload can make it wrong (`NotAtOnce`).
        """
        return (
            self.shared is None
            and self._limiter.available_tokens > 0
            and self._gate.opens_at_once()
            and self.cooldown_until_at <= now
        )

    async def _shared_slot(
        self,
        shared: SharedStart,
        progress: JobProgress | None,
        account: str | None,
        connecting: bool,
    ) -> tuple[float, float]:
        """Cluster mode: reserve in arrival order (one round trip under the local FIFO
        lock), sleep until the slot outside it, confirm the lease; ``(start time, latest
        start)``, trio clock seconds (the latest: ``earliest_at`` + the start's window).

        The slot is on Redis's clock; `SharedStart.reserve` maps it onto ours as
        ``(start_at, earliest_at)``. The start goes at ``start_at`` (never before the slot)
        and only if it is at most its window after ``earliest_at``: the spread of the node's
        Redis-clock bounds when it reserves (`SharedStart.clock_spread_s`: the slot's own
        uncertainty, which the sleep until ``start_at`` spends) plus the allowance for its
        wake-up (`mtpoold._startwindow.StartWindow`, the node's, which learns each
        wake-up's lateness beyond that spread); a later wake-up (a
        busy loop, a frozen process) would otherwise crowd the next slot, reserved
        ``interval_s`` + that window after ours. A start found too late is not made: the
        slot is left unused and a new one reserved (counted in ``late_reservations``). On
        an ungated lane (``interval_s`` 0) the window is 0 in Redis and lateness is moot.
        """
        arrival_at = trio.current_time()
        if progress is not None:
            progress.enter(JobPhase.WAITING_GATE, arrival_at)
        self._shared_waiting += 1
        try:
            while True:
                gated = self.interval_s > 0
                window_s = spread_s = 0.0
                if gated:
                    window_s, spread_s = shared.window.reserving(
                        self.interval_s, shared.clock_spread_s()
                    )
                async with self._reserving:  # trio.Lock is fair: FIFO
                    start_at, earliest_at = await shared.reserve(
                        account,
                        connecting=connecting,
                        interval_s=self.interval_s,
                        window_s=window_s,
                    )
                    self._shared_last_start_at = max(self._shared_last_start_at, start_at)
                await self.wake.sleep_until(start_at)
                shared.confirm(account)
                if not gated:
                    window_s = math.inf
                    break
                late_s = trio.current_time() - earliest_at
                if shared.window.observe(late_s - spread_s, window_s - spread_s):
                    break
                self.late_reservations += 1
        finally:
            self._shared_waiting -= 1
        self._shared_starts += 1
        return trio.current_time(), earliest_at + window_s

    def note_missed_start(self) -> None:
        """Cluster mode: a connect reached its socket too late and sent nothing
        (`mtpoold._errors.StartMissed`); its slot was left unused (``late_reservations``).
        The slot still counts in ``calls`` (a monotonic metric): it held the token and the
        start."""
        self.late_reservations += 1

    def _check_not_cooling(self, since_at: float) -> None:
        """Raise `ProxyCoolingDown` if the proxy cools down now. ``since_at``: a reading of
        the trio clock (s) taken before now; a cooldown that ended by then needs no reading
        of the clock (the common case).
        """
        until_at = self.cooldown_until_at
        if until_at > since_at and until_at > trio.current_time():
            raise ProxyCoolingDown(self.name, until_at)

    def reconfigure(self, *, capacity: int, interval_s: float) -> None:
        """Apply a changed capacity or interval (live reload) without dropping waiters."""
        self.capacity = capacity
        self._limiter.total_tokens = capacity
        self.interval_s = interval_s
        self._gate.set_interval(interval_s)

    def earliest_start_at(self) -> float:
        """Lower bound of when a new caller could start on this lane (trio clock, seconds).

        Accounts for the proxy cooldown, the callers queued for a capacity token and those
        queued at the gate. Time spent by calls already holding every token is unknown and
        not counted.
        """
        waiting_for_token = self._token_waiters()
        if self.shared is not None:  # the local view of the shared gate: a lower bound
            ahead = self._shared_waiting + waiting_for_token
            low = self.jitter_s[0] if self.interval_s > 0 else 0.0
            first_at = max(trio.current_time() + low, self._shared_last_start_at + self.interval_s)
            return max(self.cooldown_until_at, first_at + ahead * max(self.interval_s, low))
        return max(self.cooldown_until_at, self._gate.earliest_start_at(behind=waiting_for_token))

    def _token_waiters(self) -> int:
        # A free token means nobody waits for one (a released token goes straight to the
        # first waiter): no statistics snapshot, a copy of the borrowers, per scheduling pick.
        limiter = self._limiter
        return 0 if limiter.available_tokens > 0 else limiter.statistics().tasks_waiting

    def gate_eta(self, turn: object) -> tuple[int, float] | None:
        """`RateGate.eta` of this lane's gate: (1-based position, seconds to the slot); None
        in cluster mode (the queue is in Redis)."""
        return self._gate.eta(turn)

    @property
    def capacity_waiting(self) -> int:
        """Callers waiting for a capacity token (not yet at the gate)."""
        return self._limiter.statistics().tasks_waiting

    @property
    def in_flight(self) -> int:
        """Capacity tokens held now (calls and connects)."""
        return self._limiter.statistics().borrowed_tokens

    @property
    def last_start_at(self) -> float:
        """Trio time (seconds) of the last start on this lane, ``-inf`` before the first
        (cluster mode: the latest start this node reserved, which may lie ahead)."""
        if self.shared is not None:
            return self._shared_last_start_at
        return self._gate.last_start_at

    @property
    def consecutive_failures(self) -> int:
        """PROXY_UNAVAILABLE failures in a row (the proxy cooldown's backoff counts them)."""
        return self._consecutive_failures

    def restore_failure_run(self, count: int) -> None:
        """Take up a run of ``count`` consecutive proxy failures (from the state store)."""
        self._consecutive_failures = count

    def record_outcome(self, error_class: ErrorClass | None) -> None:
        """Count one finished call: ``None`` for success, else its error class.

        A success, or any failure that is not the proxy's own, ends a run of consecutive
        PROXY_UNAVAILABLE failures (the proxy carried traffic to Telegram).
        """
        if error_class is None:
            self._consecutive_failures = 0
            return
        self.errors_by_class[error_class.value] += 1
        if error_class is ErrorClass.PROXY_UNAVAILABLE:
            self._consecutive_failures += 1
        else:
            self._consecutive_failures = 0

    def statistics(self, now: float | None = None) -> LaneStatistics:
        """Return a frozen snapshot of load, queue, next slot, counters and cooldown, at
        ``now`` (trio clock, s; default: now; the pool passes one reading for every lane).

        A lane at rest (nothing in flight or waiting, its interval and cooldown over) whose
        counters have not moved since its last snapshot at rest gives that snapshot again:
        the same values, not rebuilt (a summary of 10,000 proxies, bench/scale.py).
        """
        gate, limiter = self._gate, self._limiter
        if now is None:
            now = trio.current_time()
        in_flight = limiter.borrowed_tokens
        waiting = gate.waiting
        if in_flight >= limiter.total_tokens:  # only then can a task wait for a token
            waiting += limiter.statistics().tasks_waiting
        next_slot_s = gate.next_slot_in_s(now)
        starts = gate.starts
        if self.shared is not None:  # cluster mode: the starts Redis reserved for this lane
            waiting += self._shared_waiting
            next_slot_s = max(0.0, self._shared_last_start_at + self.interval_s - now)
            starts = self._shared_starts
        cooldown_s = max(0.0, self.cooldown_until_at - now)
        gate_wait = self._gate_wait.statistics()  # the same objects until an observation
        call_latency = self._call_latency.statistics()
        at_rest = not (in_flight or waiting or next_slot_s or cooldown_s)
        if at_rest:
            made_of = (
                self.key, self.name, self.type, self.capacity, self.interval_s, self.calls,
                starts, self._consecutive_failures, sum(self.errors_by_class.values()),
                self.cooldown_cause, gate_wait, call_latency,
            )  # fmt: skip
            rest = self._rest
            if rest is not None and rest[0] == made_of:  # elements compared by identity first
                return rest[1]
        snapshot = LaneStatistics(
            key=self.key,
            name=self.name,
            type=self.type,
            capacity=self.capacity,
            in_flight=in_flight,
            waiting=waiting,
            next_slot_in_s=next_slot_s,
            interval_s=self.interval_s,
            calls=self.calls,
            errors_by_class=dict(self.errors_by_class),
            cooldown_remaining_s=cooldown_s,
            cooldown_cause=self.cooldown_cause if cooldown_s > 0 else None,
            consecutive_failures=self.consecutive_failures,
            gate_wait=gate_wait,
            call_latency=call_latency,
        )
        if at_rest:
            self._rest = (made_of, snapshot)
        return snapshot


@final
class _Slot:
    """`ProxyLane.slot`'s async context manager: a plain class, not a generator's (it is
    entered once per call and per connect). Takes the capacity token (the limiter's
    acquire is the start's schedule point), then the start slot; gives the token back on
    exit."""

    __slots__ = (
        "_account",
        "_at_once",
        "_connecting",
        "_lane",
        "_on_start",
        "_phase",
        "_progress",
        "_started_at",
    )

    def __init__(
        self,
        lane: ProxyLane,
        progress: JobProgress | None,
        phase: JobPhase,
        account: str | None,
        connecting: bool,
        on_start: Callable[[float], None] | None,
        at_once: bool = False,
    ) -> None:
        self._at_once = at_once
        self._lane = lane
        self._progress = progress
        self._phase = phase
        self._account = account
        self._connecting = connecting
        self._on_start = on_start
        self._started_at = 0.0

    async def __aenter__(self) -> float:
        lane, progress = self._lane, self._progress
        asked_at = trio.current_time()
        if progress is not None and not (
            progress.phase is JobPhase.WAITING_LANE_CAPACITY and progress.lane is lane
        ):  # (the pool's attempt entered it just before, naming the account too)
            progress.enter(JobPhase.WAITING_LANE_CAPACITY, asked_at, lane=lane)
        await lane._limiter.acquire()
        try:
            lane._check_not_cooling(asked_at)
            if lane.shared is None:
                if self._at_once and not lane._gate.opens_at_once():
                    raise NotAtOnce
                started_at = await lane._gate.wait_for_slot(progress)
            else:
                started_at, open_by = await lane._shared_slot(
                    lane.shared, progress, self._account, self._connecting
                )
                if self._on_start is not None:
                    self._on_start(open_by)
            lane._check_not_cooling(asked_at)
        except BaseException:
            lane._limiter.release()
            raise
        lane.calls += 1
        lane._gate_wait.observe(started_at - asked_at)
        if progress is not None:
            progress.enter(self._phase, started_at)
        self._started_at = started_at
        return started_at

    async def __aexit__(self, *exc: object) -> None:
        lane = self._lane
        try:
            lane._call_latency.observe(trio.current_time() - self._started_at)
        finally:
            lane._limiter.release()
