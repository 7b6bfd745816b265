"""Frozen statistics snapshots of the gate, the lanes, the accounts and the pool.

One source of truth for the CLI tables, the websocket ``status`` method (via
``cattrs.unstructure``) and the tests. Every time below is in seconds.
"""

from __future__ import annotations

import enum

import attrs

from ._latency import HistogramStatistics


class AccountState(enum.StrEnum):
    """What an account is doing: the one vocabulary of `AccountWorker.state`
    (`mtpoold._account`), `AccountStatistics.state`, the summary's
    `PoolStatistics.accounts_by_state`, ``mtpoold status`` and ``docs/CONTRACTS.md`` ("Account
    states"). A string on the wire (``"ready"``, ...). An account is in exactly one state: the
    first of retired, disabled, remote, connecting, busy, cooldown, then ready or idle that
    holds.
    """

    #: No connection, free: a job may take it (it connects first, through a lane slot).
    #: In: the pool opened, the idle disconnect, a failure that drops the connection.
    #: Out: a job takes it (busy, connecting).
    IDLE = "idle"
    #: Connecting for a job (TCP, proxy handshake, auth key, through a lane slot).
    #: Out: the call starts (busy) or the connect fails (cooldown, idle, disabled).
    CONNECTING = "connecting"
    #: Connected and free. In: a call ended well, or a cooldown ended on a live connection.
    #: Out: a job takes it (busy), the idle disconnect (idle), a failure.
    READY = "ready"
    #: A call (or its keepalive ping) holds it. Out: the call ends (ready, idle, cooldown,
    #: disabled).
    BUSY = "busy"
    #: Held back by its own cooldown (FLOOD_WAIT, PEER_FLOOD, STREAM_CLOSED, ...) or by its
    #: proxy's (PROXY_UNAVAILABLE). Out: the cooldown ends or ``accounts clear-cooldown``.
    #: A rate-class cooldown does not move it here: it still serves the other classes.
    COOLDOWN = "cooldown"
    #: Out of scheduling: ``accounts disable``, or Telegram revoked or restricted it. Kept
    #: across restarts. Out: ``accounts enable`` (or re-authorize).
    DISABLED = "disabled"
    #: Removed from the config by a reload; its call in flight, if any, runs on. Final.
    RETIRED = "retired"
    #: Cluster mode (``[cluster]``): this node does not hold the account's lease — another
    #: node does ("held by node B"), nobody does yet ("unheld"), it is being handed over
    #: ("draining"), or Redis cannot confirm it ("cluster: redis … unreachable; leases
    #: unconfirmed"). Out of this node's scheduling, not connected here. Out: this node
    #: acquires the lease (ready or idle after the account's shared state is applied).
    REMOTE = "remote"


@attrs.frozen(kw_only=True)
class GateStatistics:
    """A :class:`~mtpoold._gate.RateGate` snapshot.

    Attributes:
        interval_s: Minimum seconds between two call starts on the proxy.
        waiting: Callers queued at the gate (the head one included).
        next_slot_in_s: Seconds until the interval since the last start has elapsed (>= 0).
        starts: Starts admitted since the gate was made.
    """

    interval_s: float
    waiting: int
    next_slot_in_s: float
    starts: int


@attrs.frozen(kw_only=True)
class LaneStatistics:
    """A :class:`~mtpoold._lane.ProxyLane` snapshot.

    Attributes:
        key: The proxy key: the proxy's name (`mtpoold._config.proxy_key`), or ``"no_proxy"``
            (`mtpoold._config.NO_PROXY`) for the direct lane.
        name: The proxy's name in the config (``"no_proxy"`` for the direct lane).
        type: ``socks5``, ``socks4``, ``http``, ``mtproxy`` or ``direct``.
        capacity: Concurrent calls allowed (the capacity limiter's total tokens).
        in_flight: Calls (and connects) holding a capacity token now.
        waiting: Callers waiting for a token or a start slot.
        next_slot_in_s: Seconds until the rate gate admits the next start (>= 0).
        interval_s: Minimum seconds between two starts.
        calls: Calls and connects started through this lane.
        errors_by_class: Failed calls by error class name.
        cooldown_remaining_s: Seconds the proxy stays out of scheduling (0 when usable).
        cooldown_cause: The failure behind that cooldown (``"PROXY_UNAVAILABLE: ..."``,
            redacted; ``"stored"``: restored from the state store), or None.
        consecutive_failures: PROXY_UNAVAILABLE failures in a row (drives the backoff).
        gate_wait: Seconds from asking this lane for a slot to the start (capacity token and
            rate gate), per start; a waiter that gave up or met a proxy cooldown is not in it.
        call_latency: Seconds each started slot was held: one call, connect or keepalive
            ping (what ``calls`` counts).
    """

    key: str
    name: str
    type: str
    capacity: int
    in_flight: int
    waiting: int
    next_slot_in_s: float
    interval_s: float
    calls: int
    errors_by_class: dict[str, int]
    cooldown_remaining_s: float
    cooldown_cause: str | None = None
    consecutive_failures: int
    gate_wait: HistogramStatistics = attrs.field(factory=HistogramStatistics)
    call_latency: HistogramStatistics = attrs.field(factory=HistogramStatistics)


@attrs.frozen(kw_only=True)
class ClassState:
    """One (account, rate class): its FLOOD_WAIT cooldown and its budget
    (`mtpoold._rateclass`).

    Attributes:
        rate_class: The class (``resolve``, ``read``, ...).
        cooldown_remaining_s: Seconds left of its FLOOD_WAIT cooldown (0: none).
        cause: The failure behind the cooldown (redacted), or None.
        budget_left: Requests left per budget window (``{"per_hour": 12, "per_day": 180}``),
            warm-up applied; empty: the class has no budget (or budgets are off).
        budget_frees_in_s: Seconds until a spent window lets one more request through (0:
            not spent).
    """

    rate_class: str
    cooldown_remaining_s: float
    cause: str | None
    budget_left: dict[str, int]
    budget_frees_in_s: float


@attrs.frozen(kw_only=True)
class AccountCooldowns:
    """What `mtpoold.Pool.cooldowns` answers: every cooldown of one account.

    Attributes:
        id: The account id.
        cooldown_remaining_s: Seconds left of its account-wide cooldown (0: none).
        rate_classes: One `ClassState` per rate class.
    """

    id: str
    cooldown_remaining_s: float
    rate_classes: tuple[ClassState, ...]


@attrs.frozen(kw_only=True)
class AccountStatistics:
    """An :class:`~mtpoold._account.AccountWorker` snapshot.

    Attributes:
        id: The account id from the config.
        proxy_key: Key of the lane the account calls through.
        proxy_name: Name of that proxy (``"no_proxy"`` when direct).
        state: One `AccountState` (``idle``, ``ready``, ...).
        connected: Whether its MTProto connection is up.
        cooldown_remaining_s: Seconds left of the account's own cooldown (0 when none); a
            proxy cooldown shows in its lane and makes ``state`` "cooldown".
        cooldown_cause: The failure behind its own cooldown (``"FLOOD_WAIT: ..."``, redacted;
            ``"stored"``: restored from the state store), or None.
        disabled_reason: Why it was disabled, or None.
        remote_reason: Cluster mode: why this node may not use it now (state ``remote``):
            ``"held by node b"``, ``"unheld: PHP lock held"``, ``"draining"``, a cluster
            cause; None when it may (and always on one node).
        calls_ok: Calls that returned a result.
        calls_failed: Calls that failed for the account's reasons (not the caller's).
        caller_errors: Calls that failed for the caller's reasons (PEER_NOT_FOUND,
            INVALID_ARGUMENT: `mtpoold._account.CALLER_ERROR_CLASSES`); counted apart, in
            neither ``calls_failed``, ``errors_by_class`` nor the last error.
        errors_by_class: The account's failed calls by error class name.
        last_error_class: Class of the last failure (not the caller's), or None.
        last_error_message: Redacted message of the last failure, or None.
        last_used_s_ago: Seconds since its last call started, or None if never used.
        tags: The account's tags from the config.
        rate_classes: Its rate classes cooling down or with a budget in use (`ClassState`).
    """

    id: str
    proxy_key: str
    proxy_name: str
    state: AccountState
    connected: bool
    cooldown_remaining_s: float
    cooldown_cause: str | None = None
    disabled_reason: str | None
    remote_reason: str | None = None
    calls_ok: int
    calls_failed: int
    caller_errors: int = 0
    errors_by_class: dict[str, int]
    last_error_class: str | None
    last_error_message: str | None
    last_used_s_ago: float | None
    tags: tuple[str, ...]
    rate_classes: tuple[ClassState, ...] = ()


@attrs.frozen(kw_only=True)
class PoolStatistics:
    """A :class:`~mtpoold._pool.Pool` snapshot.

    Attributes:
        uptime_s: Seconds since the pool opened.
        jobs_in_flight: Jobs accepted and not yet answered.
        jobs_ok: Jobs answered with a result.
        jobs_failed: Jobs answered with an error.
        accounts_total: Accounts in the current config (retired ones whose call still runs
            included).
        accounts_by_state: Accounts by `AccountState` value, every state present (0 too):
            the values add up to ``accounts_total``.
        accounts_ready: Accounts free to take a call now: state ``ready`` or ``idle``.
        accounts_cooling: Accounts in state ``cooldown`` (their own or their proxy's).
        accounts_disabled: Accounts in state ``disabled``.
        config_generation: 1 for the config the pool opened with, +1 per successful reload.
        config_loaded_at: When that config was loaded, ISO 8601 UTC.
        orphaned_accounts: Accounts the state store remembers that the config no longer has.
        proxies: One snapshot per lane.
        accounts: One snapshot per account (empty when only the summary was asked for:
            ``Pool.statistics(accounts=False)``, ``status`` with ``{"summary": true}``).
        jobs_by_class: Answered jobs by the job's rate class and outcome:
            ``{"resolve": {"OK": 3, "FLOOD_WAIT": 1}}``; the class is ``resolve`` for
            ``resolve``, ``read`` for ``get_messages``, the TL function's class for ``invoke``
            (``other`` for the keepalive ping's exempt functions); the outcome ``OK``, the
            `mtpoold._errors.ErrorClass` value of the error, or ``CANCELLED`` (the caller
            went away). Sums to ``jobs_ok + jobs_failed``.
        budgets: One `BudgetStatistics` per budgeted (rate class, window) in force, summed
            over the accounts; empty when ``[economy] budgets = false``.
    """

    uptime_s: float
    jobs_in_flight: int
    jobs_ok: int
    jobs_failed: int
    accounts_total: int
    accounts_by_state: dict[str, int] = attrs.field(factory=dict)
    accounts_ready: int
    accounts_cooling: int
    accounts_disabled: int
    config_generation: int
    config_loaded_at: str
    orphaned_accounts: tuple[str, ...]
    proxies: tuple[LaneStatistics, ...]
    accounts: tuple[AccountStatistics, ...]
    jobs_by_class: dict[str, dict[str, int]] = attrs.field(factory=dict)
    budgets: tuple[BudgetStatistics, ...] = ()


@attrs.frozen(kw_only=True)
class BudgetStatistics:
    """One budget window of one rate class, summed over the accounts in the config
    (`mtpoold._budget.BudgetBook`).

    Attributes:
        rate_class: The class (``resolve``, ``join``, ...).
        window: The window's config name: ``per_minute``, ``per_hour`` or ``per_day``.
        window_s: Its length, seconds.
        spent: Requests counted in the window (sliding), summed over the accounts; an
            account's count is capped at its limit (a warm-up or a reload can lower a limit
            below what was spent).
        limit: The accounts' limits summed, warm-up applied.
        exhausted: Accounts with nothing left in this window.
    """

    rate_class: str
    window: str
    window_s: float
    spent: int
    limit: int
    exhausted: int
