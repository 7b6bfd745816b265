"""The pool: scheduling jobs onto accounts and proxy lanes, retries, deadlines, state.

Part of the scheduling core, which knows no Telethon: what the pool needs of the Telegram
side (clients, `classify`, request checks, session locks, the asyncio loop) it is handed as a
`TelegramSide` where it is composed (`mtpoold._compose.open_pool`, the public
``mtpoold.open_pool``; tests hand it doubles).
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import functools
import logging
import math
import random
import re
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, Protocol, cast, final

import attrs
import trio

from ._account import AccountWorker, Client, DeadlinePassed, Judged, count_states
from ._budget import BudgetBook, RequestGuard, WarmUp
from ._checkedrequests import MISS, CheckedRequests
from ._config import AccountConfig, Config, ProxyConfig, proxy_key
from ._dispatch import BackoffPastDeadline, Dispatcher, Job
from ._errors import ErrorClass, Failure, JobFailed, MtpooldError, RateClassBlocked
from ._gcpause import FrozenFleet, gc_paused
from ._jobs import JobEntry, JobPhase, JobRegistry, JobStatistics
from ._lane import NO_PROXY, LeaseUnconfirmed, ProxyCoolingDown, ProxyLane, SharedStart
from ._logformat import iso_utc, log_event
from ._peermemory import PeerMemory, first_peer_argument
from ._policy import Verdict, decide
from ._promptwake import PromptWake
from ._rateclass import OTHER, READ, RESOLVE, SEND, WINDOWS, RateClasses
from ._readonly import is_read_only, tl_key
from ._share import Answer, Flight, Flights, Member, check_max_age, identical_key, project
from ._stats import (
    AccountCooldowns,
    AccountState,
    AccountStatistics,
    BudgetStatistics,
    ClassState,
    LaneStatistics,
    PoolStatistics,
)

if TYPE_CHECKING:
    from ._store import StateStore, StoredPeer

log = logging.getLogger("mtpoold.pool")

ClientFactory = Callable[[AccountConfig], Client]
Op = Callable[[Client], Awaitable[dict[str, Any]]]


class HeldLock(Protocol):
    """A lock the pool holds for an account while it uses the account's session."""

    def release(self) -> None:
        """Give the lock back; safe to call twice."""


#: ``lock(accounts) -> {key: held lock}``: takes the session locks of these accounts, all or
#: none (raises, e.g. ``SessionLocked``, taking none). Keys are account ids, or ``"<account
#: id>#<what>"`` for an account's further locks (ids never hold ``#``, see the config).
SessionLocker = Callable[[Sequence[AccountConfig]], Mapping[str, HeldLock]]


def _no_request_check(method: str, args: Mapping[str, Any], allow: Collection[str]) -> None:
    del method, args, allow


def _no_peer_check(peer: str | int, argument: str) -> None:
    del peer, argument


def _no_peer_key(peer: str | int) -> str | None:
    del peer
    return None


def _no_message_link(peer: str | int) -> int | None:
    del peer
    return None


@attrs.frozen(kw_only=True)
class TelegramSide:
    """What the scheduler uses of the Telegram side and does not know: chosen where the pool is
    composed (`mtpoold._compose.telethon_side`: Telethon; tests: doubles).

    Attributes:
        client_factory: ``client_factory(config) -> factory`` for one config generation
            (at open and at each reload), ``factory(account) -> Client`` (a new, unconnected
            client). Raises ``ConfigError`` for accounts that cannot be used: the open or
            the reload then fails and nothing changed.
        classify: Turns an exception a client (or its deadline) raised into a `Failure`;
            never raises.
        check_request: ``(method, args, allow)``: checks a raw ``invoke`` before it is
            scheduled; raises `JobFailed` INVALID_ARGUMENT (``allow``: ``[policy]
            allow_methods``). Default: no check.
        check_peer: ``(peer, argument)``: checks the peer of a ``resolve`` or
            ``get_messages`` job before it is scheduled; raises `JobFailed`
            INVALID_ARGUMENT naming ``argument``. Default: no check.
        check_message_ids: Checks the ids of a ``get_messages`` job and returns them as a
            list; raises `JobFailed` INVALID_ARGUMENT. Default: ``list``.
        message_id_of_link: ``(peer) -> id``: the message id a (checked) message link names
            (``https://t.me/chan/123`` -> 123, `mtpoold._messagelink.message_id_of_link`),
            the ids of a ``get_messages`` job given none; None for any other peer;
            ValueError (its text the reason) for a link whose message id is out of range.
            Default: always None.
        peer_key: ``(peer) -> key``: the one spelling of a (checked) peer reference that
            names the same peer for every account (``"username:durov"``,
            ``"channel_id:12345"``), what routing by knowledge, shared and merged jobs
            compare; None when the reference has no such spelling. Default: always None.
        lock_sessions: Takes the accounts' session locks (`SessionLocker`), held while the
            pool uses them; None: no locks.
        open_runtime: A context every task of the pool runs inside (the asyncio loop the
            clients need); None: none.
    """

    client_factory: Callable[[Config], ClientFactory]
    classify: Callable[[BaseException], Failure]
    check_request: Callable[[str, Mapping[str, Any], Collection[str]], None] = _no_request_check
    check_peer: Callable[[str | int, str], None] = _no_peer_check
    check_message_ids: Callable[[Sequence[int]], list[int]] = list
    message_id_of_link: Callable[[str | int], int | None] = _no_message_link
    peer_key: Callable[[str | int], str | None] = _no_peer_key
    lock_sessions: SessionLocker | None = None
    open_runtime: Callable[[], AbstractAsyncContextManager[object]] | None = None


class ClusterSide(Protocol):
    """Cluster mode (``[cluster]``): what the pool is handed of the node's cluster part
    (`mtpoold._clusterrun.ClusterNode`; the scheduling core knows only this protocol).

    Attributes:
        keepalive_interval_s: Seconds between keepalive pings of a connection, busy or not
            (``lease_s / 3``).
        ping_disconnect_delay_s: The ``ping_delay_disconnect`` delay the pings ask for
            (``lease_s``), s.
    """

    keepalive_interval_s: float
    ping_disconnect_delay_s: float

    def shared_start(self, lane_key: str, jitter_s: tuple[float, float]) -> SharedStart:
        """The start slots of the lane ``lane_key`` from the gate every node shares."""
        ...


class SharedAccountState(Protocol):
    """Cluster mode: one account's shared state as the node pulled it from Redis
    (`mtpoold._clusterstate.SharedAccountState` is the one; times UNIX s), what
    `Pool.take_over` applies."""

    @property
    def found(self) -> bool: ...
    @property
    def cooldown_until_unix(self) -> float | None: ...
    @property
    def cooldown_cause(self) -> str: ...
    @property
    def disabled_reason(self) -> str | None: ...
    @property
    def class_cooldowns(self) -> Mapping[str, tuple[float, str]]: ...
    @property
    def chat_cooldowns(self) -> Mapping[str, tuple[float, str]]: ...
    @property
    def budget_spends(self) -> Sequence[tuple[str, float]]: ...
    @property
    def first_seen_unix(self) -> float | None: ...
    @property
    def failures_by_class(self) -> Mapping[str, int]: ...
    @property
    def last_error_class(self) -> str | None: ...
    @property
    def last_error_message(self) -> str | None: ...
    @property
    def calls_ok(self) -> int: ...
    @property
    def calls_failed(self) -> int: ...
    @property
    def peers(self) -> Sequence[StoredPeer]: ...


#: Seconds shutdown waits for all clients to disconnect (each disconnect is bounded too).
CLOSE_TIMEOUT_S: Final = 10.0

#: How `mtpoold._policy.decide` words the disable reason of the SESSION_REVOKED class
#: (``"USER_DEACTIVATED: the session no longer works (...)"``), kept in the state store.
_REVOKED_MARK: Final = ": the session no longer works"
_RPC_NAME_RE: Final = re.compile(r"[A-Z][A-Z0-9_]*")


def revoked_by_telegram(disabled_reason: str | None) -> str | None:
    """The RPC error name (``SESSION_REVOKED``, ``USER_DEACTIVATED_BAN``,
    ``AUTH_KEY_UNREGISTERED`` …) if an account was disabled because Telegram revoked its
    session or deactivated it, else None (not disabled, or by an operator, a freeze, a
    wrong DC …)."""
    if not disabled_reason:
        return None
    name, mark, _ = disabled_reason.partition(_REVOKED_MARK)
    return name if mark and _RPC_NAME_RE.fullmatch(name) else None


class EnableRefused(MtpooldError, ValueError):
    """`Pool.enable_account` refused an account Telegram revoked or deactivated (pass
    ``force``); the message says why. A ValueError, as the server reads it."""


@attrs.frozen
class JobMeta:
    """How a job was served.

    Attributes:
        account: Id of the account whose call succeeded.
        proxy_key: Key of the lane it went through.
        attempts: Calls made for the job, the successful one included (a shared answer: the
            calls of the call it shared).
        elapsed_ms: Milliseconds from submission to result.
        shared: The answer came from a call another identical job made (it was in flight
            when this one came: ``[economy] share_identical``) or from the ``max_age_s``
            cache. A job that rode in a merged ``get_messages`` call is not "shared" (see
            ``merged``).
        merged: Jobs that rode in the same call (1: alone; > 1: a merged ``get_messages``,
            ``[economy] merge_get_messages``).
        age_s: Seconds since the answer came back from Telegram: 0.0 for a fresh one, the
            age of a cached one (trio clock).
    """

    account: str
    proxy_key: str
    attempts: int
    elapsed_ms: float
    shared: bool = False
    merged: int = 1
    age_s: float = 0.0


@attrs.frozen
class JobResult:
    """A job's result: the JSON-safe ``value`` and its :class:`JobMeta`."""

    value: dict[str, Any]
    meta: JobMeta


@attrs.frozen
class ReloadSummary:
    """What a :meth:`Pool.reload` changed.

    Attributes:
        generation: The config generation now in force (1 at open, +1 per reload).
        added: Ids of accounts that joined.
        removed: Ids of accounts being retired (after their in-flight call).
        reconnected: Ids of accounts reconnecting with changed proxy, server or credentials.
    """

    generation: int
    added: tuple[str, ...]
    removed: tuple[str, ...]
    reconnected: tuple[str, ...]


def _wire(proxy: ProxyConfig | None) -> ProxyConfig | None:
    """A proxy as the connection sees it (a changed password reconnects; tuning does not)."""
    return None if proxy is None else attrs.evolve(proxy, capacity=1, interval_s=0.0)


#: The tags of an account that has none: one set for all of them (100,000 accounts).
_NO_TAGS: Final[frozenset[str]] = frozenset()
#: Methods whose rate classes `Pool._classes_of` remembers (jobs name known TL functions).
_METHODS_CACHED: Final = 1024


def _tags_of(acc_cfg: AccountConfig) -> frozenset[str]:
    return frozenset(acc_cfg.tags) if acc_cfg.tags else _NO_TAGS


def _wire_of(acc_cfg: AccountConfig, wires: Mapping[str, ProxyConfig | None]) -> Any:
    """`_wire` of the account's proxy, looked up in ``wires`` (`_wire` by proxy name)."""
    return None if acc_cfg.proxy is None else wires[acc_cfg.proxy]


def _utc_iso(ts: float) -> str:
    return (
        dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


@final
@attrs.define(eq=False, repr=False)
class Pool:
    """Runs MTProto calls through many accounts and proxies; made by :func:`open_pool`.

    Scheduling (:class:`mtpoold._dispatch.Dispatcher`): among accounts that are free, not
    cooling down (nor their proxy), not disabled, and matching the job's pinned account and
    tags, the one whose proxy lane can start soonest, then the least recently used. A job
    that cannot start before its deadline fails at once with ``NO_ACCOUNT_AVAILABLE`` and the
    seconds until one could (``retry_after_s``); otherwise it waits, first in first served,
    until an account it may use is released or a cooldown ends — or until a cooldown,
    disable or retire leaves it none that could start before its deadline, when it is
    answered at once with ``NO_ACCOUNT_AVAILABLE`` and the failure that caused it. Accounts
    that already failed the job are tried again (after the verdict's backoff) once no other
    could serve it in time. All scheduling state is changed through the dispatcher's verbs.

    Each failure is classified (`TelegramSide.classify`), judged by the policy
    (:func:`mtpoold._policy.decide`), applied (cooldowns, proxy backoff, disabling,
    reconnect), written to the state store, and the job is rerouted to another account
    until ``max_attempts`` calls were made or its deadline passes.
    """

    _config: Config
    _nursery: trio.Nursery
    _telegram: TelegramSide
    _make_factory: Callable[[Config], ClientFactory]
    _store: StateStore | None = None
    _wall_clock: Callable[[], float] = time.time
    _rng: random.Random = attrs.field(factory=random.Random)
    #: How every lane sleeps until its start slots (one spin budget for the node).
    _wake: PromptWake = attrs.field(init=False, factory=PromptWake)
    _lanes: dict[str, ProxyLane] = attrs.field(init=False, factory=dict)
    _accounts: dict[str, AccountWorker] = attrs.field(init=False, factory=dict)
    _lane_accounts: dict[str, collections.OrderedDict[str, AccountWorker]] = attrs.field(
        init=False, factory=dict
    )
    _dispatch: Dispatcher = attrs.field(init=False)
    #: Every account's peers (``[economy] peer_memory``; in the store if there is one).
    _peers: PeerMemory | None = attrs.field(init=False, default=None)
    _flights: Flights = attrs.field(init=False)
    _client_factory: ClientFactory = attrs.field(init=False)
    _account_cfgs: dict[str, AccountConfig] = attrs.field(init=False, factory=dict)
    _session_locks: dict[str, HeldLock] = attrs.field(factory=dict)
    _orphaned: tuple[str, ...] = attrs.field(init=False, default=())
    _opened_at: float = attrs.field(init=False, factory=trio.current_time)
    _generation: int = attrs.field(init=False, default=1)
    _loaded_at_unix: float = attrs.field(init=False, default=0.0)
    _jobs_in_flight: int = attrs.field(init=False, default=0)
    _jobs_ok: int = attrs.field(init=False, default=0)
    _jobs_failed: int = attrs.field(init=False, default=0)
    #: Answered jobs by (rate class, outcome) (`PoolStatistics.jobs_by_class`).
    _jobs_by: collections.Counter[tuple[str, str]] = attrs.field(
        init=False, factory=collections.Counter
    )
    #: The jobs in flight and their hops (`Pool.jobs`).
    _registry: JobRegistry = attrs.field(init=False, factory=JobRegistry)
    _classes: RateClasses = attrs.field(init=False)
    #: method -> (the rate classes its job needs, the class it is counted under), as
    #: `_classes` gives them; emptied when they change (`_set_economy`); at most
    #: `_METHODS_CACHED` methods.
    _method_classes: dict[str, tuple[frozenset[str], str]] = attrs.field(init=False, factory=dict)
    #: ``invoke`` requests that passed `check_request` (identical ones skip it).
    _checked: CheckedRequests = attrs.field(init=False, factory=CheckedRequests)
    _book: BudgetBook | None = attrs.field(init=False, default=None)
    #: The budget book while ``[economy] budgets = false`` (a reload turned them off): its
    #: spends hold again when a reload turns them back on.
    _book_off: BudgetBook | None = attrs.field(init=False, default=None)
    _spent_by: set[str] = attrs.field(init=False, factory=set)  # accounts with new spends
    #: Cluster mode: the node's cluster part (shared gates, keepalive), None: one node.
    _cluster_side: ClusterSide | None = None
    #: Cluster mode: the node's view for the doors (node name, live nodes, holders, status
    #: publishing: `mtpoold._clusterrun.ClusterNode`), set by the cluster task; None: one node.
    cluster: Any = attrs.field(init=False, default=None)
    #: A large fleet out of the cyclic collector's sight once built (mtpoold/_gcpause.py).
    _frozen: FrozenFleet = attrs.field(init=False, factory=FrozenFleet)
    #: What every `RequestGuard` is handed (`_guard_for`): made once.
    _guard_hooks: tuple[Callable[[str, str], float], Callable[[str], None]] | None = attrs.field(
        init=False, default=None
    )

    @gc_paused()  # 100,000 workers, locks, lanes: see mtpoold/_gcpause.py
    def __attrs_post_init__(self) -> None:
        if self._config.economy.peer_memory:  # peer memory
            self._peers = PeerMemory() if self._store is None else PeerMemory.load(self._store)
        self._dispatch = Dispatcher(
            self._accounts, self._lanes, self._lane_accounts, knowledge=self._peers
        )
        self._flights = Flights(self._nursery)
        self._set_economy(self._config)
        self._loaded_at_unix = self._wall_clock()
        self._client_factory = self._make_factory(self._config)
        for acc_cfg in self._config.accounts:
            self._add_account(acc_cfg)
        if self._store is not None:
            self._load_state()
        for acc in self._accounts.values():
            self._dispatch.add(acc)
        self._nursery.start_soon(self._dispatch.run, name="dispatcher-timer")
        self._frozen.freeze(len(self._accounts))

    def __repr__(self) -> str:
        return (
            f"<Pool accounts={len(self._accounts)} proxies={len(self._lanes)} "
            f"jobs_in_flight={self._jobs_in_flight} waiting={self._dispatch.waiting}>"
        )

    # -- building ------------------------------------------------------------------------

    def _lane_for(self, acc_cfg: AccountConfig) -> ProxyLane:
        proxy = self._config.proxy_for(acc_cfg)
        key = proxy_key(proxy)
        lane = self._lanes.get(key)
        if lane is None:
            if proxy is None:
                direct = self._config.direct
                lane = ProxyLane(
                    key=NO_PROXY,
                    name=NO_PROXY,
                    type="direct",
                    capacity=direct.capacity,
                    interval_s=direct.interval_s,
                    rng=self._rng,
                    wake=self._wake,
                    shared=self._shared_start(NO_PROXY),
                )
            else:
                lane = ProxyLane(
                    key=key,
                    name=proxy.name,
                    type=proxy.type,
                    capacity=proxy.capacity,
                    interval_s=proxy.interval_s,
                    rng=self._rng,
                    wake=self._wake,
                    shared=self._shared_start(key),
                )
            self._lanes[key] = lane
            self._lane_accounts[key] = collections.OrderedDict()
        return lane

    def _shared_start(self, lane_key: str) -> SharedStart | None:
        """Cluster mode: the lane's shared gate; None: the local `RateGate` (one node)."""
        if self._cluster_side is None:
            return None
        from ._gate import DEFAULT_JITTER_S

        return self._cluster_side.shared_start(lane_key, DEFAULT_JITTER_S)

    def _release_session_locks(self, account_id: str | None = None) -> None:
        keys = [
            key
            for key in self._session_locks
            if account_id is None or key == account_id or key.startswith(f"{account_id}#")
        ]  # see SessionLocker
        for key in keys:
            self._session_locks.pop(key).release()

    def _add_account(self, acc_cfg: AccountConfig) -> None:
        lane = self._lane_for(acc_cfg)
        tg = self._config.telegram_for(acc_cfg)
        worker = AccountWorker(
            id=acc_cfg.id,
            lane=lane,
            client_factory=self._factory_for(acc_cfg),
            nursery=self._nursery,
            connect_timeout_s=tg.connect_timeout_s,
            idle_disconnect_s=tg.idle_disconnect_s,
            tags=_tags_of(acc_cfg),
            peer_book=self._peers.book(acc_cfg.id) if self._peers is not None else None,
            request_guard=self._guard_for(acc_cfg.id),
        )
        if self._cluster_side is not None:
            # pings every lease_s / 3, busy or not, asking the DC to close the connection
            # lease_s after the last one; unschedulable until this node holds the lease
            worker.keepalive_interval_s = self._cluster_side.keepalive_interval_s
            worker.ping_disconnect_delay_s = self._cluster_side.ping_disconnect_delay_s
            self._dispatch.hold_remote([worker], "unheld")
        self._accounts[acc_cfg.id] = worker
        self._account_cfgs[acc_cfg.id] = acc_cfg
        self._lane_accounts[lane.key][acc_cfg.id] = worker

    def _set_economy(self, config: Config, *, reload: bool = False) -> None:
        """Rate classes, budgets and routing from ``[economy]`` and ``[rate_classes]``.

        Budgets turned off by a reload keep their book aside (``_book_off``), so turning them
        on again keeps what was spent before; turned on by a reload with no book of this run
        (they were off since the start), the spends come from the state store."""
        economy = config.economy
        self._classes = RateClasses.from_overrides(config.rate_classes)
        self._method_classes.clear()
        old = self._book or self._book_off
        if economy.budgets:
            book = BudgetBook(self._classes, WarmUp(economy.warmup_days, economy.warmup_start))
            if old is not None:  # a reload keeps what was spent and when accounts came
                book.adopt(old)
            elif reload and self._store is not None:
                self._restore_budgets(book)
            self._book, self._book_off = book, None
        else:
            if old is not None and self._store is not None and old.unsaved:
                self._store.add_budget_spends(old.take_unsaved())
            self._book, self._book_off = None, old
        self._dispatch.route_by_knowledge = economy.route_by_knowledge
        self._dispatch.knower_wait_s = economy.knower_wait_s
        spenders = self._budget_spenders()
        for acc in self._accounts.values():  # clients keep their guard: update it
            guard = acc.request_guard
            if isinstance(guard, RequestGuard):
                guard.classes, guard.book = self._classes, self._book
            # holds of the old limits: recomputed with the new ones, or lifted
            held = self._dispatch.budget_holds(acc.id)
            for name in held:
                self._dispatch.hold_class(acc, name, float("-inf"))
            if held or acc.id in spenders:
                self._sync_budget(acc, force=True)
        self._save_spends()

    def _budget_spenders(self) -> set[str]:
        """The accounts with spends inside a budget window (`BudgetBook.spenders`) or not yet
        synced (``_spent_by``): the only ones `_sync_budget` can hold. One that spent nothing
        can spend now (every limit is >= 1), so syncing it would only lift holds, which the
        callers lift themselves: they skip it (at 100,000 accounts, per-class window sums
        for each were most of a reload)."""
        book = self._book
        if book is None:
            return set()
        now_unix = self._wall_clock()
        found = set(self._spent_by)
        for name in book.budgeted():
            found.update(book.spenders(name, now_unix))
        return found

    def _save_spends(self) -> None:
        """Write the budget spends not yet in the state store (what `_sync_budget` does last)."""
        book = self._book
        if book is not None and self._store is not None and book.unsaved:
            self._store.add_budget_spends(book.take_unsaved())

    def _new_job(
        self,
        method: str,
        deadline_at: float,
        account: str | None,
        tags: frozenset[str],
        peer_key: str | None,
        *,
        started_at: float | None = None,
    ) -> Job:
        """The scheduler's view of a job starting now (``deadline_at``: trio clock, s), with
        the rate classes it needs (`mtpoold._rateclass`): its method's, plus ``resolve`` on
        an account that does not know its peer. ``started_at``: the caller's reading of the
        trio clock (s) the job was accepted at, if it has one (None: read here)."""
        job = Job(
            method=method,
            deadline_at=deadline_at,
            account=account,
            tags=tags,
            started_at=trio.current_time() if started_at is None else started_at,
            peer_key=peer_key,
            rate_classes=self._classes_of(method)[0],
        )
        if peer_key is not None and RESOLVE not in job.rate_classes:
            job.lookup_class = RESOLVE  # an account that does not know the peer looks it up
        return job

    def _guard_for(self, account_id: str) -> RequestGuard:
        if self._book is not None:
            self._book.first_seen.setdefault(account_id, self._wall_clock())
        hooks = self._guard_hooks
        if hooks is None:  # one pair of bound methods for every guard, not one per account
            hooks = self._guard_hooks = (self._dispatch.class_flood_until_at, self._spent_by.add)
        return RequestGuard(
            account_id,
            self._classes,
            hooks[0],
            trio.current_time,
            self._wall_clock,
            self._book,
            hooks[1],
        )

    def _sync_budget(self, acc: AccountWorker, *, force: bool = False) -> None:
        """After an attempt (``force``: after a restore or a reload): hold the classes whose
        budget ``acc`` spent until a window frees, lift holds that no longer stand
        (dispatcher verbs), and write the new spends to the store."""
        book = self._book
        if book is None or not (force or acc.id in self._spent_by):
            return
        self._spent_by.discard(acc.id)
        now_unix = self._wall_clock()
        for name in book.budgeted():
            free_unix = book.free_at_unix(acc.id, name, now_unix)
            self._dispatch.hold_class(
                acc, name, self._wall_to_trio(free_unix) if free_unix > now_unix else float("-inf")
            )
        spends = book.take_unsaved()
        if self._store is not None and spends:
            self._store.add_budget_spends(spends)

    def _factory_for(self, acc_cfg: AccountConfig) -> Callable[[], Client]:
        # a partial: a third of a closure's memory, once per account
        return functools.partial(self._client_factory, acc_cfg)

    # -- state store -----------------------------------------------------------------------

    def _wall_to_trio(self, at_unix: float | None) -> float:
        if at_unix is None:
            return float("-inf")
        return trio.current_time() + (at_unix - self._wall_clock())

    def _trio_to_wall(self, at: float) -> float | None:
        if at == float("-inf") or at <= trio.current_time():
            return None
        return self._wall_clock() + (at - trio.current_time())

    def _load_state(self) -> None:
        assert self._store is not None
        stored = self._store.load()
        for acc_id, row in stored.accounts.items():
            acc = self._accounts.get(acc_id)
            if acc is None:
                continue
            self._dispatch.cool_down(acc, self._wall_to_trio(row.cooldown_until_unix), "stored")
            if row.disabled_reason is not None:
                self._dispatch.disable(acc, row.disabled_reason)
            acc.calls_ok = row.calls_ok
            acc.calls_failed = row.calls_failed
            acc.errors_by_class.update(row.failures_by_class)
            acc.last_error_class = row.last_error_class
            acc.last_error_message = row.last_error_message
        for key, prow in stored.proxies.items():
            lane = self._lanes.get(key)
            if lane is not None:
                self._dispatch.cool_down_lane(lane, self._wall_to_trio(prow.cooldown_until_unix))
                lane.restore_failure_run(prow.consecutive_failures)
        now_unix = self._wall_clock()
        for acc_id, classes in self._store.load_class_cooldowns(now_unix).items():
            acc = self._accounts.get(acc_id)
            for name, (until_unix, cause) in classes.items():
                if acc is not None:
                    self._dispatch.cool_down_class(acc, name, self._wall_to_trio(until_unix), cause)
        for acc_id, chats in self._store.load_chat_cooldowns(now_unix).items():
            acc = self._accounts.get(acc_id)
            for peer_key, (until_unix, cause) in chats.items():
                if acc is not None:
                    self._dispatch.cool_down_chat(
                        acc, peer_key, self._wall_to_trio(until_unix), cause
                    )
        if self._book is not None:
            self._restore_budgets(self._book)
            spenders = self._budget_spenders()  # the others: nothing to hold (no spend)
            for acc in self._accounts.values():
                if acc.id in spenders or self._dispatch.budget_holds(acc.id):
                    self._sync_budget(acc, force=True)
            self._save_spends()
        self._orphaned = tuple(sorted(self._store.account_ids() - set(self._accounts)))
        for acc_id in self._orphaned:
            log_event(
                log,
                logging.WARNING,
                "orphaned_account",
                account=acc_id,
                note="in the state store, not in the config",
            )

    def _restore_budgets(self, book: BudgetBook) -> None:
        """Load the spends of the last day and the first-seen times from the state store."""
        assert self._store is not None
        now_unix = self._wall_clock()
        book.first_seen.update(self._store.first_seen(list(self._accounts), now_unix))
        book.restore(self._store.load_budget_spends(now_unix - WINDOWS["per_day"]), now_unix)

    def _persist(self, acc: AccountWorker, *, lane: bool = False) -> None:
        if self._store is None:
            return
        from ._store import StoredAccount, StoredProxy

        self._store.save_account(
            StoredAccount(
                id=acc.id,
                cooldown_until_unix=self._trio_to_wall(acc.cooldown_until_at),
                disabled_reason=acc.disabled_reason,
                disabled_at_unix=self._wall_clock() if acc.disabled_reason else None,
                failures_by_class=dict(acc.errors_by_class),
                last_error_class=acc.last_error_class,
                last_error_message=acc.last_error_message,
                calls_ok=acc.calls_ok,
                calls_failed=acc.calls_failed,
                last_used_unix=None
                if acc.last_used_at is None
                else self._wall_clock() - (trio.current_time() - acc.last_used_at),
            )
        )
        if lane:
            self._store.save_proxy(
                StoredProxy(
                    key=acc.lane.key,
                    cooldown_until_unix=self._trio_to_wall(acc.lane.cooldown_until_at),
                    consecutive_failures=acc.lane.consecutive_failures,
                )
            )

    # -- public API --------------------------------------------------------------------------

    async def invoke(
        self,
        method: str,
        args: Mapping[str, Any] | None = None,
        *,
        deadline_s: float | None = None,
        account: str | None = None,
        tags: Iterable[str] = (),
        max_age_s: float = 0.0,
    ) -> JobResult:
        """Invoke a raw TL function by name, e.g. ``"contacts.ResolveUsername"``.

        A function on the read-only list (`mtpoold._readonly.READ_ONLY`) is shared: an
        identical job in flight (same function, canonical JSON arguments, pinned account and
        tags) answers this one too (``meta.shared``), and ``max_age_s`` may take a cached
        answer. Any other function runs once per job.

        Args:
            method: TL function name as written in Telegram's schema or Telethon
                (``contacts.ResolveUsername``, ``channels.GetFullChannel`` ...).
            args: The function's arguments as JSON values; peers may be given as
                ``@username``, ``t.me/...`` links or numeric ids, resolved by the account
                that runs the call.
            deadline_s: Seconds the whole job may take (default: policy ``job_deadline_s``,
                180 s).
            account: Pin the job to this account id.
            tags: Only accounts carrying all these tags may serve the job.
            max_age_s: Seconds old an answer may be (default 0: a fresh one). Read-only
                functions only: for any other function a value > 0 is INVALID_ARGUMENT
                (a caller asking for a cached write is told so, not silently served fresh).

        Returns:
            The TL result as a JSON-safe dict and how it was served.

        Raises:
            JobFailed: with the error class, message, ``retry_after_s`` where known, the last
                account and the number of attempts.
        """
        if not isinstance(method, str) or not method:
            raise JobFailed(ErrorClass.INVALID_ARGUMENT, "method must be a non-empty string")
        if args is None:
            args = {}
        if type(args) is not dict and not isinstance(args, Mapping):  # the ABC check is slow
            raise JobFailed(ErrorClass.INVALID_ARGUMENT, "args must be an object")
        frozen_args = dict(args)
        tags = tuple(tags)  # read once: it may be an iterator
        max_age = check_max_age(max_age_s)
        read_only = is_read_only(method, frozen_args)
        key = (
            identical_key("invoke", [tl_key(method), frozen_args], account, tags)
            if read_only
            else None
        )
        allow = self._config.policy.allow_methods
        known = MISS if key is None else self._checked.peer_key(method, key, allow)
        if known is MISS:
            # before any account is taken: unknown/blocked functions, bad arguments, ranges
            self._telegram.check_request(method, frozen_args, allow)
            first_peer = first_peer_argument(frozen_args)
            peer_key = None if first_peer is None else self._telegram.peer_key(first_peer)
            if key is not None:
                self._checked.remember(method, key, peer_key)
        else:  # identical to a request that passed: the same answer (`CheckedRequests`)
            peer_key = cast("str | None", known)

        async def call(c: Client, ids: tuple[int, ...] | None) -> dict[str, Any]:
            return await c.call(method, frozen_args)

        if not read_only:
            if max_age > 0:
                raise JobFailed(
                    ErrorClass.INVALID_ARGUMENT,
                    f"max_age_s: {method} is not on the read-only list"
                    " (mtpoold._readonly.READ_ONLY): only answers of read-only functions are"
                    " shared or cached",
                )
            return await self._run_job(
                method,
                lambda c: c.call(method, frozen_args),
                deadline_s,
                account,
                tags,
                peer_key=peer_key,
            )
        return await self._read_only_job(
            method,
            call,
            key,
            deadline_s,
            account,
            tags,
            max_age,
            peer_key=peer_key,
        )

    async def resolve(
        self,
        link_or_username: str,
        *,
        deadline_s: float | None = None,
        account: str | None = None,
        tags: Iterable[str] = (),
        max_age_s: float = 0.0,
    ) -> JobResult:
        """Resolve ``@username``, ``t.me/...`` links or numeric ids to a peer summary.

        The summary: kind (user/bot/channel/supergroup/chat), id, username, title or name,
        participants count, verified/scam/fake flags, private. Read-only: identical jobs in
        flight (the same peer, `TelegramSide.peer_key`, and constraints) share one look-up,
        and ``max_age_s`` may take a cached answer. Options and errors as :meth:`invoke`.
        """
        if not isinstance(link_or_username, str) or not link_or_username.strip():
            raise JobFailed(
                ErrorClass.INVALID_ARGUMENT, "link_or_username must be a non-empty string"
            )
        tags = tuple(tags)
        max_age = check_max_age(max_age_s)
        # before any account is taken
        self._telegram.check_peer(link_or_username, "link_or_username")
        peer_key = self._telegram.peer_key(link_or_username)

        async def call(c: Client, ids: tuple[int, ...] | None) -> dict[str, Any]:
            return await c.resolve(link_or_username)

        return await self._read_only_job(
            "resolve",
            call,
            identical_key("resolve", peer_key or ["as written", link_or_username], account, tags),
            deadline_s,
            account,
            tags,
            max_age,
            peer_key=peer_key,
        )

    async def get_messages(
        self,
        peer: str | int,
        ids: Sequence[int] | None = None,
        *,
        deadline_s: float | None = None,
        account: str | None = None,
        tags: Iterable[str] = (),
        max_age_s: float = 0.0,
    ) -> JobResult:
        """Fetch messages ``ids`` of ``peer``: per id exists, date, text, views, forwards,
        replies and reactions; missing ids are reported as ``{"exists": false}``.

        Read-only: identical jobs in flight share one call and ``max_age_s`` may take a cached
        answer; jobs for the same chat and constraints waiting for an account ride in one call
        (``[economy] merge_get_messages``, at most 100 ids in all), each answered with exactly
        its own ids (``meta.merged``). Options and errors as :meth:`invoke`.

        ``ids`` None: ``peer`` must be a message link (``https://t.me/chan/123``,
        ``t.me/c/123456/7``; ``TelegramSide.message_id_of_link``), and the link's
        message id is the one id; any other peer is INVALID_ARGUMENT ("ids: required ..."),
        and so is a link whose id is outside 1..2**31-1 ("peer: the message link's message id
        ... is out of range").
        """
        if not isinstance(peer, (str, int)) or isinstance(peer, bool):
            raise JobFailed(ErrorClass.INVALID_ARGUMENT, "peer must be a string or an integer")
        if ids is None:
            self._telegram.check_peer(peer, "peer")
            try:
                link_id = self._telegram.message_id_of_link(peer)
            except ValueError as exc:  # a message link, but its id is no message id
                raise JobFailed(ErrorClass.INVALID_ARGUMENT, f"peer: {exc}") from None
            if link_id is None:
                raise JobFailed(
                    ErrorClass.INVALID_ARGUMENT,
                    "ids: required unless peer is a message link (https://t.me/name/123,"
                    " t.me/c/123456/7)",
                )
            ids = (link_id,)
        if isinstance(ids, (str, bytes)) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in ids
        ):
            raise JobFailed(ErrorClass.INVALID_ARGUMENT, "ids must be a list of integers")
        tags = tuple(tags)
        max_age = check_max_age(max_age_s)
        self._telegram.check_peer(peer, "peer")  # before any account is taken
        id_list = self._telegram.check_message_ids(list(ids))
        peer_key = self._telegram.peer_key(peer)
        own_ids = tuple(id_list)

        async def call(c: Client, merged_ids: tuple[int, ...] | None) -> dict[str, Any]:
            return await c.get_messages(peer, list(merged_ids or own_ids))

        merge_key = None
        if peer_key is not None and self._config.economy.merge_get_messages:
            merge_key = identical_key("get_messages", peer_key, account, tags)
        return await self._read_only_job(
            "get_messages",
            call,
            identical_key(
                "get_messages",
                [peer_key or ["as written", peer], sorted(set(own_ids))],
                account,
                tags,
            ),
            deadline_s,
            account,
            tags,
            max_age,
            peer_key=peer_key,
            ids=own_ids,
            merge_key=merge_key,
        )

    def disable_account(self, account_id: str, reason: str | None = None) -> str:
        """Take an account out of scheduling until :meth:`enable_account`; kept across restarts.

        Args:
            account_id: The account.
            reason: Why, for status. None (or empty): an account already disabled keeps its
                reason (a FLOOD-ban, SESSION_REVOKED … an operator re-disables is still
                explained); another gets "disabled by operator".

        Returns:
            The reason in force.

        Raises:
            KeyError: if no account has this id.
        """
        acc = self._accounts[account_id]
        kept = reason or acc.disabled_reason or "disabled by operator"
        self._dispatch.disable(acc, kept)
        acc.quiesce()  # no keepalive traffic for an account out of scheduling
        log_event(
            log,
            logging.WARNING,
            "account_disabled",
            account=acc.id,
            by="operator",
            reason=acc.disabled_reason,
        )
        self._persist(acc)
        return kept

    def enable_account(self, account_id: str, *, force: bool = False) -> None:
        """Bring a disabled account back into scheduling.

        An account disabled because Telegram revoked or deactivated its session (the
        SESSION_REVOKED class: SESSION_REVOKED, AUTH_KEY_UNREGISTERED, USER_DEACTIVATED …,
        `revoked_by_telegram`) would fail its next call the same way: it is refused unless
        ``force`` (after a re-authorization, say).

        Raises:
            KeyError: if no account has this id.
            ValueError: for a revoked or deactivated account without ``force`` (the message
                says why and what to do).
        """
        acc = self._accounts[account_id]
        if not force and (name := revoked_by_telegram(acc.disabled_reason)) is not None:
            raise EnableRefused(
                f"account {acc.id!r} was disabled because Telegram answered {name}: its session"
                " was revoked or the account deactivated, and it would fail again; re-authorize"
                " it (mtpoold authorize), then enable it with force (mtpoold accounts enable"
                " --force)"
            )
        self._dispatch.enable(acc)
        log_event(log, logging.INFO, "account_enabled", account=acc.id, force=force)
        self._persist(acc)

    def forget_account(self, account_id: str) -> bool:
        """Delete an orphaned account (in the state store, no longer in the config) from the
        store — every row of it: state, peers, class cooldowns, budget spends, first seen —
        from memory, and from ``statistics().orphaned_accounts``.

        Returns:
            True if the store had rows for it (False also when the pool has no store).

        Raises:
            ValueError: if the account is in the config: remove it from the config (and
                reload) first.
        """
        if account_id in self._accounts:
            raise ValueError(
                f"account {account_id!r} is in the config; remove it from the config"
                " (and reload) first"
            )
        forgotten = bool(self._store.forget_account(account_id)) if self._store else False
        if self._peers is not None:  # peer memory
            self._peers.forget_account(account_id)
        for book in (self._book, self._book_off):
            if book is not None:
                book.forget(account_id)
        self._orphaned = tuple(a for a in self._orphaned if a != account_id)
        if forgotten:
            log_event(log, logging.INFO, "account_forgotten", account=account_id)
        return forgotten

    def cooldowns(self, account_id: str) -> AccountCooldowns:
        """The account's cooldowns — account-wide, per rate class, per chat count — and what
        is left of its budgets.

        Raises:
            KeyError: if no account has this id.
        """
        acc = self._accounts[account_id]
        now = trio.current_time()
        return AccountCooldowns(
            id=acc.id,
            cooldown_remaining_s=max(0.0, acc.cooldown_until_at - now),
            rate_classes=self._class_states(acc, now, self._wall_clock(), every=True),
        )

    def clear_cooldown(self, account_id: str, rate_class: str | None = None) -> tuple[str, ...]:
        """Lift an account's FLOOD_WAIT cooldown of one rate class, or (None) all of them and
        the account-wide cooldown; budgets stay (they count what was sent). Kept across
        restarts (the store is written).

        Returns:
            The cooldowns lifted: rate class names, ``"account"`` for the account-wide one.

        Raises:
            KeyError: if no account has this id.
            ValueError: ``rate_class`` names no rate class.
        """
        acc = self._accounts[account_id]
        if rate_class is not None and rate_class not in self._classes.classes:
            known = ", ".join(sorted(self._classes.classes))
            raise ValueError(f"no rate class {rate_class!r} (known: {known})")
        stored = list(self._dispatch.class_cooldowns(acc.id))
        cleared = self._dispatch.clear_cooldown(acc, rate_class)
        if self._store is not None:
            for name in stored if rate_class is None else [rate_class]:
                self._store.save_class_cooldown(acc.id, name, None)
            if rate_class is None:  # the dispatcher lifted the chat cooldowns too
                self._store.forget_chat_cooldowns(acc.id)
            self._persist(acc)
        log_event(
            log,
            logging.INFO,
            "cooldown_cleared",
            account=acc.id,
            rate_class=rate_class or "all",
            cleared=",".join(cleared),
        )
        return tuple(cleared)

    def _spenders(self, now_unix: float) -> set[str]:
        """The accounts with a spend of any budgeted class inside its window (UNIX s)."""
        book = self._book
        if book is None:
            return set()
        return set().union(*(book.spenders(n, now_unix) for n in book.budgeted()))

    def _class_states(
        self,
        acc: AccountWorker,
        now: float,
        now_unix: float,
        *,
        every: bool = False,
        spenders: set[str] | None = None,
    ) -> tuple[ClassState, ...]:
        """Per rate class of ``acc``: cooldown left and budget left (``every``: all classes;
        else only those cooling down or with a budget spent in a window). ``spenders``: the
        accounts `_spenders` found, when the caller asks for many accounts at once."""
        floods = self._dispatch.class_cooldowns(acc.id)
        holds = self._dispatch.budget_holds(acc.id)
        book = self._book
        if every:
            names: Iterable[str] = self._classes.classes
        else:  # only what is in use: most accounts of a big fleet have none (cheap)
            used = (
                set()
                if book is None or (spenders is not None and acc.id not in spenders)
                else {n for n in book.budgeted() if book.spent_in_window(acc.id, n, now_unix)}
            )
            if not (floods or holds or used):
                return ()
            names = [n for n in self._classes.classes if n in floods or n in holds or n in used]
        out = []
        for name in names:
            left: dict[str, int] = {}
            if book is not None and (every or book.spent_in_window(acc.id, name, now_unix)):
                by_window = book.left(acc.id, name, now_unix)
                left = {wn: by_window[ws] for wn, ws in WINDOWS.items() if ws in by_window}
            flood = floods.get(name)
            out.append(
                ClassState(
                    rate_class=name,
                    cooldown_remaining_s=max(0.0, flood[0] - now) if flood else 0.0,
                    cause=flood[1] if flood else None,
                    budget_left=left,
                    budget_frees_in_s=max(0.0, holds[name] - now) if name in holds else 0.0,
                )
            )
        return tuple(out)

    @gc_paused()  # every object built here lives on in the snapshot: nothing to collect
    def statistics(self, *, accounts: bool = True) -> PoolStatistics:
        """Return a frozen snapshot of the pool, each lane and each account, the jobs by rate
        class and outcome, and the budgets summed over the accounts (`mtpoold._metrics`
        exposes it to Prometheus).

        Args:
            accounts: False: the summary only (counts and lanes, ``accounts`` empty); no
                account's snapshot is built, O(accounts) state reads.

        The counts are by `AccountState` (``accounts_by_state``; ``accounts_ready`` is ready
        plus idle, ``accounts_cooling`` cooldown, ``accounts_disabled`` disabled), one state
        per account, so they add up to ``accounts_total``.
        """
        now, now_unix = trio.current_time(), self._wall_clock()
        snapshots: tuple[AccountStatistics, ...] = ()
        if accounts:
            spenders = self._spenders(now_unix)
            class_states = self._class_states
            snapshots = tuple(
                acc.statistics(
                    proxy_name=acc.lane.name,
                    now=now,
                    rate_classes=class_states(acc, now, now_unix, spenders=spenders),
                )
                for acc in self._accounts.values()
            )
            by_state = dict.fromkeys((s.value for s in AccountState), 0)
            for snap in snapshots:  # the state each snapshot holds: read once per account
                by_state[snap.state] += 1
        else:
            by_state = count_states(self._accounts.values(), now)
        by_class: dict[str, dict[str, int]] = {}
        for (rate_class, outcome), n in sorted(self._jobs_by.items()):
            by_class.setdefault(rate_class, {})[outcome] = n
        return PoolStatistics(
            uptime_s=now - self._opened_at,
            jobs_in_flight=self._jobs_in_flight,
            jobs_ok=self._jobs_ok,
            jobs_failed=self._jobs_failed,
            accounts_total=len(self._accounts),
            accounts_by_state=by_state,
            accounts_ready=by_state[AccountState.READY] + by_state[AccountState.IDLE],
            accounts_cooling=by_state[AccountState.COOLDOWN],
            accounts_disabled=by_state[AccountState.DISABLED],
            config_generation=self._generation,
            config_loaded_at=_utc_iso(self._loaded_at_unix),
            orphaned_accounts=self._orphaned,
            proxies=self._lane_statistics(),
            accounts=snapshots,
            jobs_by_class=by_class,
            budgets=self._budget_statistics(now_unix),
        )

    def _budget_statistics(self, now_unix: float) -> tuple[BudgetStatistics, ...]:
        """Every budgeted (class, window) summed over the accounts.

        Costs: the limits summed by `BudgetBook.summed_limits` (one sort of first-seen times,
        then bisection); per (class, window), the spends of the accounts that spent any in
        the window (`BudgetBook.spenders`) — not O(accounts x classes) look-ups.
        """
        book = self._book
        if book is None:
            return ()
        names = {ws: wn for wn, ws in WINDOWS.items()}
        summed = book.summed_limits(self._accounts.keys(), now_unix)
        out: list[BudgetStatistics] = []
        for rate_class in book.budgeted():
            spent: collections.Counter[float] = collections.Counter()
            exhausted: collections.Counter[float] = collections.Counter()
            for acc_id in book.spenders(rate_class, now_unix):
                if acc_id not in self._accounts:
                    continue  # retired or forgotten: not in the config's sums
                limits = dict(book.limits(acc_id, rate_class, now_unix))
                for window_s, remaining in book.left(acc_id, rate_class, now_unix).items():
                    spent[window_s] += limits[window_s] - remaining
                    exhausted[window_s] += int(remaining == 0)
            for window_s, _ in book.classes.windows(rate_class):
                limit = summed[(rate_class, window_s)]
                out.append(
                    BudgetStatistics(
                        rate_class=rate_class,
                        window=names.get(window_s, f"{window_s:g}s"),
                        window_s=window_s,
                        spent=spent[window_s],
                        limit=limit,
                        exhausted=exhausted[window_s],
                    )
                )
        return tuple(out)

    def _lane_statistics(self) -> tuple[LaneStatistics, ...]:
        """Every lane, then every configured proxy no account uses (it has no lane: idle
        numbers from its config), so a proxy never vanishes from ``status``."""
        now = trio.current_time()
        lanes = [lane.statistics(now) for lane in self._lanes.values()]
        for proxy in self._config.proxies:
            key = proxy_key(proxy)
            if key not in self._lanes:
                lanes.append(
                    LaneStatistics(
                        key=key,
                        name=proxy.name,
                        type=proxy.type,
                        capacity=proxy.capacity,
                        in_flight=0,
                        waiting=0,
                        next_slot_in_s=0.0,
                        interval_s=proxy.interval_s,
                        calls=0,
                        errors_by_class={},
                        cooldown_remaining_s=0.0,
                        consecutive_failures=0,
                    )
                )
        return tuple(lanes)

    def jobs(self) -> tuple[JobStatistics, ...]:
        """The jobs in flight, oldest first, each with its state and what it waits for.

        O(jobs + lanes' gate queues) plus, per job waiting for an account, one scan of the
        accounts it may use (`mtpoold._dispatch.Dispatcher.describe_waiting`). Never a job's
        arguments: method, rate classes, accounts and lanes only.
        """
        now = trio.current_time()
        waiting = self._dispatch.describe_waiting(now)
        out = []
        for entry in self._registry.entries():
            job, shared = entry.job, False
            if entry.flight is not None:
                shared = len(entry.flight.members) > 1  # alone in its flight: not shared
            if job is None and entry.flight is not None:
                progress = entry.flight.progress
                job = progress if isinstance(progress, Job) else None
            if job is None:
                state, where = JobPhase.SHARED, {"why": "its shared flight is starting"}
            else:
                state, where = self._where(job, now, waiting)
            connection, rpc_id = entry.origin or (None, None)
            out.append(
                JobStatistics(
                    job=entry.number,
                    connection=connection,
                    rpc_id=rpc_id,
                    method=entry.method,
                    rate_classes=tuple(sorted(job.rate_classes)) if job is not None else (),
                    age_s=now - entry.started_at,
                    deadline_left_s=max(0.0, entry.deadline_at - now),
                    attempts=job.attempts if job is not None else 0,
                    account=job.progress.account if job is not None else None,
                    shared=shared,
                    state=state,
                    waiting_for=where,
                )
            )
        return tuple(out)

    def _where(
        self, job: Job, now: float, waiting: Mapping[int, tuple[JobPhase, dict[str, Any]]]
    ) -> tuple[JobPhase, dict[str, Any]]:
        """The state of ``job``'s attempts and what it waits for (`JobStatistics`)."""
        p = job.progress
        if p.phase is JobPhase.WAITING_ACCOUNT:
            return waiting.get(id(job), (p.phase, {"why": "being scheduled"}))
        lane = p.lane if isinstance(p.lane, ProxyLane) else None
        where: dict[str, Any] = {"account": p.account, "lane": lane.name if lane else None}
        if p.phase is JobPhase.WAITING_LANE_CAPACITY and lane is not None:
            where.update(
                in_flight=lane.in_flight, capacity=lane.capacity, queued=lane.capacity_waiting
            )
        elif p.phase is JobPhase.WAITING_GATE and lane is not None:
            eta = lane.gate_eta(p.turn)
            if eta is not None:
                where.update(position=eta[0], slot_in_ms=eta[1] * 1000.0)
        elif p.phase in (JobPhase.CONNECTING, JobPhase.IN_CALL):
            where["elapsed_ms"] = (now - p.since_at) * 1000.0
        return p.phase, where

    async def reload(self, config: Config) -> ReloadSummary:
        """Switch to a new, already validated config without dropping in-flight jobs.

        New proxies and accounts join at once; changed capacities, intervals and the policy
        apply to the next call; an account whose proxy, server or credentials changed is
        taken out of scheduling, reconnects with its new settings once its in-flight call
        (if any) has ended, and comes back; a removed account is retired after its in-flight
        call ends and its reply is sent. ``statistics()`` shows the new generation.

        Args:
            config: The new config (from :func:`mtpoold.load_config`).

        Returns:
            Which account ids were added, removed and reconnected.

        Raises:
            ConfigError: the new config cannot be used (e.g. a session source is missing);
                nothing was changed.
            SessionLocked: a new account's session is held by another process; nothing
                was changed.
        """
        summary = self._reload(config)
        self._frozen.refreeze(len(self._accounts))  # a large fleet: out of the collector's way
        return summary

    @gc_paused()  # a reload that adds 100,000 accounts builds as much as the start-up
    def _reload(self, config: Config) -> ReloadSummary:
        """`reload`'s work, in one step (nothing in it waits); raises as `reload` does."""
        factory = self._make_factory(config)  # may raise ConfigError: nothing changed yet
        new_cfgs = {a.id: a for a in config.accounts}
        added = [i for i in new_cfgs if i not in self._accounts]
        joining = set(added)
        removed = [i for i, a in self._accounts.items() if i not in new_cfgs and not a.retired]
        # Removed by an earlier reload but still draining its last call: take it back.
        revived = [i for i in new_cfgs if i in self._accounts and self._accounts[i].retired]
        if (lock := self._telegram.lock_sessions) is not None:
            # may raise (SessionLocked): nothing changed yet
            self._session_locks.update(lock([new_cfgs[i] for i in added]))
        old_config, self._config, self._client_factory = self._config, config, factory
        self._set_economy(config, reload=True)
        # each proxy as the connection sees it, once per proxy (not once per account)
        old_wires = {p.name: _wire(p) for p in old_config.proxies}
        new_wires = {p.name: _wire(p) for p in config.proxies}
        for proxy in config.proxies:
            lane = self._lanes.get(proxy_key(proxy))
            if lane is not None:
                lane.name = proxy.name
                lane.reconfigure(capacity=proxy.capacity, interval_s=proxy.interval_s)
                if new_wires[proxy.name] != old_wires.get(proxy.name):
                    # a new address or credentials: the cooldown was the old settings' fault
                    self._dispatch.clear_lane_cooldown(lane)
        if (direct_lane := self._lanes.get(NO_PROXY)) is not None:
            direct_lane.reconfigure(
                capacity=config.direct.capacity, interval_s=config.direct.interval_s
            )
        reconnected: list[str] = []
        for acc_id in revived:
            acc = self._accounts[acc_id]
            self._lane_accounts[acc.lane.key][acc_id] = acc
            self._dispatch.add(acc)
        same_telegram = config.telegram == old_config.telegram
        for acc_id, acc_cfg in new_cfgs.items():
            if acc_id in joining:
                self._add_account(acc_cfg)
                self._dispatch.add(self._accounts[acc_id])
                continue
            acc = self._accounts[acc_id]
            old_cfg = self._account_cfgs[acc_id]
            tg = config.telegram_for(acc_cfg)
            acc.set_tags(_tags_of(acc_cfg))
            acc.connect_timeout_s = tg.connect_timeout_s
            acc.idle_disconnect_s = tg.idle_disconnect_s
            self._account_cfgs[acc_id] = acc_cfg
            same = (
                (
                    acc_cfg == old_cfg  # most accounts: no copy to compare
                    or (
                        acc_cfg.tags != old_cfg.tags
                        and attrs.evolve(acc_cfg, tags=old_cfg.tags) == old_cfg
                    )
                )
                and _wire_of(acc_cfg, new_wires) == _wire_of(old_cfg, old_wires)
                and (
                    same_telegram
                    if acc_cfg.telegram is None and old_cfg.telegram is None
                    else tg == old_config.telegram_for(old_cfg)
                )
            )
            if not same:
                reconnected.append(acc_id)
                self._dispatch.begin_move(acc)  # out of scheduling until it has moved
                self._nursery.start_soon(self._move_account, acc, acc_cfg)
        for acc_id in removed:
            acc = self._accounts[acc_id]
            self._lane_accounts[acc.lane.key].pop(acc.id, None)
            self._dispatch.retire(acc)  # out of scheduling at once
            self._nursery.start_soon(self._retire_account, acc)
        self._orphaned = tuple(i for i in self._orphaned if i not in new_cfgs)
        self._dispatch.accounts_changed()  # pinned or tagged jobs may have lost or gained theirs
        self._generation += 1
        self._loaded_at_unix = self._wall_clock()
        return ReloadSummary(
            generation=self._generation,
            added=tuple(added + revived),
            removed=tuple(removed),
            reconnected=tuple(reconnected),
        )

    async def _move_account(self, acc: AccountWorker, acc_cfg: AccountConfig) -> None:
        """Reconnect an account with new settings once no call holds it; the caller took it
        out of scheduling (``_moving``) until then."""
        new_lane: ProxyLane | None = None
        try:
            await acc.rebuild(self._factory_for(acc_cfg))
            new_lane = self._lane_for(acc_cfg)
        finally:
            self._dispatch.end_move(acc, new_lane)

    async def _retire_account(self, acc: AccountWorker) -> None:
        """Forget a retired account once its in-flight call (if any) has ended; its state
        row stays (nothing is deleted silently) and it is reported as orphaned."""
        await acc.rebuild()
        if not acc.retired:  # a later reload took it back meanwhile
            log_event(log, logging.INFO, "account_kept", account=acc.id, note="back in the config")
            return
        if self._accounts.get(acc.id) is acc:
            del self._accounts[acc.id]
            self._account_cfgs.pop(acc.id, None)
            self._release_session_locks(acc.id)
            if self._store is not None:
                self._persist(acc)
                self._orphaned = tuple(sorted({*self._orphaned, acc.id}))
        log_event(log, logging.INFO, "account_retired", account=acc.id)

    # -- jobs ------------------------------------------------------------------------------

    async def _run_job(
        self,
        method: str,
        op: Op,
        deadline_s: float | None,
        account: str | None,
        tags: Iterable[str],
        *,
        peer_key: str | None = None,
    ) -> JobResult:
        deadline_s = self._job_deadline_s(deadline_s, account)
        now = trio.current_time()
        job = self._new_job(
            method, now + deadline_s, account, frozenset(tags), peer_key, started_at=now
        )
        with self._counted(method, job.deadline_at, job=job, started_at=now):
            return await self._attempts(job, op)

    def _counted(
        self,
        method: str,
        deadline_at: float,
        *,
        job: Job | None = None,
        flight: Any = None,
        started_at: float | None = None,
    ) -> _Counted:
        """Count one accepted job of ``method``: in flight while inside (and in the registry of
        jobs in flight, served by ``job``'s attempts or riding in ``flight``), then ok or
        failed, and by its rate class and outcome (`PoolStatistics.jobs_by_class`).
        ``started_at``: when it was accepted (trio clock, s), if the caller read the clock
        for it (None: on entering)."""
        return _Counted(self, method, deadline_at, job, flight, started_at)

    def _job_class(self, method: str) -> str:
        """The one rate class a job is counted under: ``resolve``, ``read`` for
        ``get_messages``, else its TL function's (``other`` for exempt functions)."""
        return self._classes_of(method)[1]

    def _classes_of(self, method: str) -> tuple[frozenset[str], str]:
        """The rate classes a job of ``method`` needs (`RateClasses.job_classes`) and the
        one it is counted under (`_job_class`), remembered per method while the classes
        stand (at most `_METHODS_CACHED` methods)."""
        found = self._method_classes.get(method)
        if found is None:
            if method == "resolve":
                counted = RESOLVE
            elif method == "get_messages":
                counted = READ
            else:
                counted = self._classes.class_of(method) or OTHER
            found = (self._classes.job_classes(method), counted)
            if len(self._method_classes) < _METHODS_CACHED:
                self._method_classes[method] = found
        return found

    def _job_deadline_s(self, deadline_s: float | None, account: str | None) -> float:
        """Check a job's options before it is accepted: its deadline in seconds (the policy's
        default for None) and its pinned account.

        Raises:
            JobFailed: INVALID_ARGUMENT (a bad deadline, one over the operator's cap, an
                unknown account); SHUTTING_DOWN.
        """
        policy = self._config.policy
        if deadline_s is None:
            deadline_s = policy.job_deadline_s
        if (
            not isinstance(deadline_s, (int, float))
            or isinstance(deadline_s, bool)
            or deadline_s <= 0
        ):
            raise JobFailed(
                ErrorClass.INVALID_ARGUMENT, "deadline must be a positive number of seconds"
            )
        # an int of any size compares exactly; only then is it small enough to format
        if isinstance(deadline_s, float) and not math.isfinite(deadline_s):
            raise JobFailed(ErrorClass.INVALID_ARGUMENT, "deadline must be a finite number")
        if deadline_s > policy.job_deadline_s:
            shown = (
                f"{deadline_s:g} s (deadline_ms {deadline_s * 1000:g})"
                if deadline_s < 1e300
                else "of more than 1e300 s"
            )
            raise JobFailed(
                ErrorClass.INVALID_ARGUMENT,
                f"deadline {shown} is over the operator's cap, policy.job_deadline_s ="
                f" {policy.job_deadline_s:g} s (deadline_ms {policy.job_deadline_s * 1000:g})",
            )
        if account is not None and account not in self._accounts:
            raise JobFailed(ErrorClass.INVALID_ARGUMENT, f'no account with id "{account}"')
        if self._dispatch.closing:
            raise JobFailed(ErrorClass.SHUTTING_DOWN, "the pool is shutting down")
        return float(deadline_s)

    async def _read_only_job(
        self,
        method: str,
        call: Callable[[Client, tuple[int, ...] | None], Awaitable[dict[str, Any]]],
        key: str | None,
        deadline_s: float | None,
        account: str | None,
        tags: Iterable[str],
        max_age_s: float,
        *,
        peer_key: str | None = None,
        ids: tuple[int, ...] | None = None,
        merge_key: str | None = None,
    ) -> JobResult:
        """A read-only job: from the cache (``max_age_s``), by sharing an identical flight,
        by riding in a merged ``get_messages`` batch, or in a flight of its own
        (`mtpoold._share`). With sharing and merging off it runs in the caller's task as any
        other job. ``key``: its identical key (None: never shared)."""
        deadline_s = self._job_deadline_s(deadline_s, account)
        tag_set = frozenset(tags)
        now = trio.current_time()
        if key is not None and max_age_s > 0:
            hit = self._flights.cache.get(key, max_age_s)
            if hit is not None:
                with self._counted(method, now + deadline_s):
                    return JobResult(
                        value=hit.value if ids is None else project(hit.value, ids),
                        meta=JobMeta(
                            account=hit.account,
                            proxy_key=hit.proxy_key,
                            attempts=hit.attempts,
                            elapsed_ms=0.0,
                            shared=True,
                            age_s=now - hit.at,
                        ),
                    )
        economy = self._config.economy
        if key is None or not (economy.share_identical or merge_key is not None):
            job = self._new_job(
                method, now + deadline_s, account, tag_set, peer_key, started_at=now
            )
            with self._counted(method, job.deadline_at, job=job, started_at=now):
                result = await self._attempts(job, lambda c: call(c, None))
            if key is not None and max_age_s > 0:
                meta = result.meta
                self._flights.cache.put(
                    key,
                    Answer(
                        result.value,
                        meta.account,
                        meta.proxy_key,
                        meta.attempts,
                        trio.current_time(),
                    ),
                )
            return result
        member = Member(
            key=key, ids=ids, deadline_at=now + deadline_s, started_at=now, max_age_s=max_age_s
        )
        flight = self._flights.join(member, identical=economy.share_identical, merge_key=merge_key)
        if flight is not None:
            # It may join a flight still waiting for an account: judged as its own job would
            # be, it fails at once if no account can start before its own deadline.
            alone = self._new_job(method, member.deadline_at, account, tag_set, peer_key)
            if isinstance(flight.progress, Job):  # classes its look-ups turned out to need
                alone.rate_classes = flight.progress.rate_classes
            earliest_at = self._dispatch.earliest_start_at(alone)
            if earliest_at > member.deadline_at:
                self._flights.leave(flight, member)
                with self._counted(method, member.deadline_at):
                    raise self._dispatch.no_account(alone, earliest_at)
        if flight is None:
            if merge_key is None:  # alone: its own task runs it, others may still join
                return await self._lead(method, call, member, account, tag_set, peer_key)
            flight = self._flights.start(
                member,
                self._fly(method, call, account, tag_set, peer_key),
                method=method,
                identical=economy.share_identical,
                merge_key=merge_key,
            )
        with self._counted(method, member.deadline_at, flight=flight):
            answer = await self._flights.wait(flight, member)
        return _member_result(answer, member, flight, now)

    async def _lead(
        self,
        method: str,
        call: Callable[[Client, tuple[int, ...] | None], Awaitable[dict[str, Any]]],
        member: Member,
        account: str | None,
        tags: frozenset[str],
        peer_key: str | None,
    ) -> JobResult:
        """A read-only job with no identical job in flight, run in the caller's own task as
        an unshared job is (`mtpoold._share.Flights.start_local`: no flight task, no wait);
        identical jobs arriving meanwhile join it and get its answer (or a copy of its
        failure).

        How the leader and its members part: members joining while its call is on the wire
        keep it there — the call no longer follows the leader's cancellation (it still ends
        by the leader's deadline: `AccountWorker.shield_call`) while one of them waits, so a
        cancelled leader's answer still reaches them, and the leader then raises
        `trio.Cancelled` (the last of them leaving, it follows the leader's cancellation
        again: `AccountWorker.unshield`). A member with a later deadline than the
        leader's, there when an account is handed to the job, takes the job over before
        anything is sent: it goes on in a flight task (`Flights.hand_over`) under the latest
        member's deadline, the leader waits as a member. A leader leaving without an
        answer — cancelled or its deadline passed before its call went out or after it was
        cut, or NO_ACCOUNT_AVAILABLE before its own deadline while a member may wait longer
        — hands the job (its attempts so far) over to the members left: nothing was
        answered, so a call cut at the leader's deadline may be made again for them, never
        more calls than their own jobs would have made.

        Raises:
            JobFailed: as `_attempts`; DEADLINE_EXCEEDED at the leader's own deadline.
            trio.Cancelled: the leader was cancelled.
        """
        flights = self._flights
        flight = flights.start_local(member, method=method)
        job = self._new_job(
            method, member.deadline_at, account, tags, peer_key, started_at=member.started_at
        )
        flight.progress = job
        job.on_late = self._shedder(flight, method, account, tags, peer_key)
        accounts = self._accounts
        until_at = member.deadline_at

        async def op(c: Client) -> dict[str, Any]:
            ids = flight.close()
            acc = accounts.get(job.progress.account or "")
            if acc is None:
                return await call(c, ids)

            def shield() -> None:
                acc.shield_call(until_at)

            flight.on_join = shield
            flight.on_alone = acc.unshield
            if len(flight.members) > 1:
                shield()
            try:
                return await call(c, ids)
            finally:
                flight.on_join = flight.on_alone = None

        handed: AccountWorker | None = None
        result: JobResult | None = None
        with self._counted(method, until_at, job=job, flight=flight, started_at=member.started_at):
            try:
                # its deadline enforced where it waits (no scope of its own for it)
                result = await self._attempt_loop(job, op, lead=flight, own_deadline=True)
            except _HandOver as over:
                handed = over.account
            except DeadlinePassed:
                pass
            except JobFailed as exc:
                if (
                    exc.error_class is ErrorClass.NO_ACCOUNT_AVAILABLE
                    and flight.deadline_at > until_at
                ):  # its own answer: a member may wait longer
                    self._leave_lead(flight, member, method, call, account, tags, peer_key, job)
                else:
                    flights.finish(flight, None, exc)
                raise
            except BaseException:  # cancelled (or a bug): the members left go on without it
                self._leave_lead(flight, member, method, call, account, tags, peer_key, job)
                raise
            if handed is not None:
                flights.hand_over(
                    flight,
                    self._fly(method, call, account, tags, peer_key, job=job, first=handed),
                )
                answer = await flights.wait(flight, member)
                return _member_result(answer, member, flight, member.started_at)
            if result is None:  # its own deadline passed
                failed = self._deadline_exceeded(job)
                self._leave_lead(flight, member, method, call, account, tags, peer_key, job)
                raise failed
            if flights.end_alone(flight):
                return result
            meta = result.meta
            shared = len(flight.members) > 1
            flights.finish(
                flight,
                Answer(
                    result.value, meta.account, meta.proxy_key, meta.attempts, trio.current_time()
                ),
            )
            if shared:  # its call was kept on the wire for them: a cancellation is its own
                await trio.lowlevel.checkpoint_if_cancelled()
            return result

    def _leave_lead(
        self,
        flight: Flight,
        member: Member,
        method: str,
        call: Callable[[Client, tuple[int, ...] | None], Awaitable[dict[str, Any]]],
        account: str | None,
        tags: frozenset[str],
        peer_key: str | None,
        job: Job,
    ) -> None:
        """A local flight's leader leaves without an answer; its members, if any are left,
        go on with its job in a flight task."""
        if not self._flights.leave(flight, member):
            self._flights.hand_over(
                flight, self._fly(method, call, account, tags, peer_key, job=job)
            )

    def _shedder(
        self,
        flight: Flight,
        method: str,
        account: str | None,
        tags: frozenset[str],
        peer_key: str | None,
    ) -> Callable[[float, str | None], None]:
        """The flight job's ``on_late``: members that cannot wait for the account are
        answered as their own jobs would be (`Flights.shed`)."""

        def late(earliest_at: float, lead: str | None) -> None:
            def failure(m: Member) -> JobFailed:
                alone = self._new_job(method, m.deadline_at, account, tags, peer_key)
                return self._dispatch.no_account(alone, earliest_at, lead=lead)

            self._flights.shed(flight, earliest_at, failure)

        return late

    def _fly(
        self,
        method: str,
        call: Callable[[Client, tuple[int, ...] | None], Awaitable[dict[str, Any]]],
        account: str | None,
        tags: frozenset[str],
        peer_key: str | None,
        *,
        job: Job | None = None,
        first: AccountWorker | None = None,
    ) -> Callable[[Flight], Awaitable[Answer]]:
        """A flight's work, run in the pool's nursery: the job's attempts, under a deadline
        that follows its members' (the latest of theirs). ``job``: a local flight's job
        handed over (its attempts so far go on); ``first``: the account reserved for it."""

        async def fly(flight: Flight) -> Answer:
            nonlocal job
            if job is None:
                job = self._new_job(method, flight.deadline_at, account, tags, peer_key)
                job.on_late = self._shedder(flight, method, account, tags, peer_key)
                flight.progress = job
            # The flight's own scope carries the job deadline (one scope, not two, per
            # flight); when it passes, the flight's answer is the job's DEADLINE_EXCEEDED.
            own = job
            scope = flight.scope
            assert scope is not None  # a task's flight
            scope.deadline = own.deadline_at = flight.deadline_at

            def move(deadline_at: float) -> None:
                own.deadline_at = scope.deadline = deadline_at

            flight.on_deadline = move
            flight.on_timeout = lambda: self._deadline_exceeded(own)

            async def op(c: Client) -> dict[str, Any]:
                return await call(c, flight.close())

            result = await self._attempt_loop(own, op, first=first)
            meta = result.meta
            return Answer(
                result.value, meta.account, meta.proxy_key, meta.attempts, trio.current_time()
            )

        return fly

    async def _attempts(self, job: Job, op: Op) -> JobResult:
        """The job's attempts until one succeeds, under its deadline — enforced where the
        job waits (the dispatcher's queue, the account's run: `DeadlinePassed`), not by a
        scope of its own (one cancel scope less per job).

        Raises:
            JobFailed: the job's answer when no attempt succeeded (DEADLINE_EXCEEDED when
                its deadline passed).
        """
        try:
            return await self._attempt_loop(job, op, own_deadline=True)
        except DeadlinePassed:
            raise self._deadline_exceeded(job) from None

    def _deadline_exceeded(self, job: Job) -> JobFailed:
        """The answer of a job whose deadline passed, naming its last error."""
        return JobFailed(
            ErrorClass.DEADLINE_EXCEEDED,
            f"job deadline of {job.deadline_at - job.started_at:g} s passed"
            + (_last_error(job.last_failure) if job.last_failure else ""),
            account=job.last_account,
            attempts=job.attempts,
        )

    async def _attempt_loop(
        self,
        job: Job,
        op: Op,
        *,
        lead: Flight | None = None,
        first: AccountWorker | None = None,
        own_deadline: bool = False,
    ) -> JobResult:
        """The job's attempts, inside the caller's scope for its deadline (a flight task's,
        `mtpoold._share.Flight.scope`), or (``own_deadline``) with no such scope: the waits
        enforce ``job.deadline_at`` themselves and raise `DeadlinePassed`.

        Args:
            job: The job.
            op: Its call.
            lead: The local flight the job's caller leads (`_lead`): once an account is
                handed to the job while a member of it may wait longer than the leader,
                `_HandOver` carries the account out, nothing sent.
            first: An account already reserved for the job's next attempt (a hand-over).
        """
        policy = self._config.policy
        last: Failure | None = None
        if job.last_failure is not None:  # a hand-over: the attempts so far count
            last = job.last_failure
        retry_delay_s = 0.0
        while job.attempts < policy.max_attempts:
            now = trio.current_time()
            if own_deadline and now >= job.deadline_at:  # where a scope would have cut it
                raise DeadlinePassed
            job.progress.enter(JobPhase.WAITING_ACCOUNT, now)
            if first is not None:
                acc, first = first, None
            else:
                acc = await self._acquire(job, last, retry_delay_s, own_deadline)
            if lead is not None and lead.deadline_at > job.deadline_at:
                raise _HandOver(acc)
            job.attempts += 1
            job.last_account = acc.id
            taken_at = trio.current_time()
            job.progress.enter(
                JobPhase.WAITING_LANE_CAPACITY, taken_at, account=acc.id, lane=acc.lane
            )
            try:
                value = await self._attempt(
                    job, acc, op, job.deadline_at if own_deadline else math.inf, t0=taken_at
                )
            except ProxyCoolingDown:
                # The proxy began cooling while this attempt queued for it: nothing was
                # sent. Not an attempt; schedule the job again (another lane, a wait, or
                # NO_ACCOUNT_AVAILABLE now if none can start before the deadline).
                job.attempts -= 1
                continue
            except LeaseUnconfirmed as lost:
                # Cluster mode: this node's lease on the account is not confirmed. The
                # account leaves scheduling (the cluster task brings it back when the
                # lease is confirmed); the job goes to another account, or is answered
                # NO_ACCOUNT_AVAILABLE naming the cause (`_attempt` held it back).
                if lost.in_call:
                    raise JobFailed(
                        ErrorClass.NO_ACCOUNT_AVAILABLE,
                        f"{lost.cause}: the call on account {acc.id} was cut off in"
                        " flight (it may have reached Telegram)",
                        account=acc.id,
                        attempts=job.attempts,
                    ) from None
                job.attempts -= 1
                continue
            except RateClassBlocked as blocked:
                # The request guard refused a request nobody foresaw (a look-up): nothing
                # more was sent. Not an attempt; the job now needs that class, which this
                # account cannot give it before the block ends.
                job.attempts -= 1
                job.rate_classes = job.rate_classes | {blocked.rate_class}
                if blocked.reason == "budget":
                    until_at = trio.current_time() + blocked.retry_after_s
                    self._dispatch.hold_class(acc, blocked.rate_class, until_at)
                continue
            except Judged as judged:
                last = job.last_failure = judged.failure
                verdict = judged.verdict
                job.avoid.add(acc.id)
                if not verdict.retry and not self._local_peer_miss(last, job):
                    raise self._job_failed(job, last) from None
                retry_delay_s = verdict.retry_delay_s
                continue
            return JobResult(
                value=value,
                meta=JobMeta(
                    account=acc.id,
                    proxy_key=acc.lane.key,
                    attempts=job.attempts,
                    elapsed_ms=(trio.current_time() - job.started_at) * 1000.0,
                ),
            )
        assert last is not None
        raise self._job_failed(job, last, exhausted=True)

    async def _acquire(
        self, job: Job, last: Failure | None, retry_delay_s: float, own_deadline: bool
    ) -> AccountWorker:
        """The account for the job's next attempt (`Dispatcher.acquire`; ``own_deadline``:
        it enforces the job deadline).

        Raises:
            JobFailed: the dispatcher's answer for a first attempt; for a retry, the
                failure that forced it (noting why no retry was made).
        """
        try:
            return await self._dispatch.acquire(
                job, retry_delay_s=retry_delay_s, enforce_deadline=own_deadline
            )
        except BackoffPastDeadline as backoff:
            assert last is not None
            failed = self._job_failed(job, last)
            failed.message += (
                f" (the next retry, in {backoff.delay_s:g} s, would pass the job deadline)"
            )
            raise failed from None
        except JobFailed as exc:
            if last is None or exc.error_class is not ErrorClass.NO_ACCOUNT_AVAILABLE:
                raise
            # The retry found no account: the failure that forced it is the answer.
            failed = self._job_failed(job, last)
            failed.message += f" (no account for a retry: {exc.message})"
            failed.retry_after_s = exc.retry_after_s or last.retry_after_s
            raise failed from None

    def _abandoned(self, job: Job, acc: AccountWorker, failure: Failure, verdict: Verdict) -> None:
        """A connect the job's deadline cut off was judged (the proxy never answered):
        apply its verdict and keep it as the cause the DEADLINE_EXCEEDED answer names."""
        job.last_failure = failure
        self._apply(acc, failure, verdict, peer_key=job.peer_key)

    def _local_peer_miss(self, failure: Failure, job: Job) -> bool:
        """Telethon's local "Could not find the input entity" (no RPC code) means *this*
        account does not know the peer; another one may. Retry while untried accounts exist."""
        if failure.error_class is not ErrorClass.PEER_NOT_FOUND or failure.rpc_code is not None:
            return False
        return any(
            job.accepts(a, allow_avoided=False) and not a.out_of_service
            for a in self._accounts.values()
        )

    def _job_failed(self, job: Job, failure: Failure, *, exhausted: bool = False) -> JobFailed:
        message = failure.message
        if exhausted:
            message = f"{message} (gave up after {job.attempts} attempts)"
        retry_after_s = failure.retry_after_s
        last = self._accounts.get(job.last_account) if job.last_account is not None else None
        if retry_after_s is None and failure.error_class is ErrorClass.PROXY_UNAVAILABLE and last:
            # the proxy's cooldown is when trying again makes sense
            rest_s = last.lane.cooldown_until_at - trio.current_time()
            retry_after_s = rest_s if rest_s > 0 else None
        return JobFailed(
            failure.error_class,
            message,
            retry_after_s=retry_after_s,
            account=job.last_account,
            attempts=job.attempts,
        )

    async def _attempt(
        self,
        job: Job,
        acc: AccountWorker,
        op: Op,
        deadline_at: float = math.inf,
        *,
        t0: float | None = None,
    ) -> dict[str, Any]:
        """One attempt of ``job`` on the reserved ``acc`` (released after it); ``deadline_at``:
        the job deadline `AccountWorker.run` enforces (``inf``: the caller's scope does);
        ``t0``: the caller's reading of the trio clock (s) as the attempt begins, if it has
        one (None: read here).

        Raises:
            Judged: the attempt failed, judged (its verdict applied).
            DeadlinePassed: ``deadline_at`` passed.
            ProxyCoolingDown, RateClassBlocked, LeaseUnconfirmed: nothing was sent.
        """
        policy = self._config.policy
        if t0 is None:
            t0 = trio.current_time()
        call_deadline_s = min(policy.call_deadline_s, max(0.0, job.deadline_at - t0))
        attempt = job.attempts
        outcome = "CANCELLED"

        def judge(exc: BaseException) -> tuple[Failure, Verdict]:
            if isinstance(exc, JobFailed):  # our own argument checks: final, no penalty
                failure = Failure(exc.error_class, exc.message)
                return failure, Verdict(retry=False)
            failure = self._telegram.classify(exc)
            failures = acc.lane.consecutive_failures + (
                1 if failure.error_class is ErrorClass.PROXY_UNAVAILABLE else 0
            )
            # A FLOOD_WAIT answered to a connect's own request (initConnection, getUsers of
            # self, getState) cools the whole account: it cannot connect, whatever the class.
            tl_name = None if acc.connecting else failure.tl_name
            verdict = decide(
                failure,
                policy,
                proxy_failures=failures,
                attempt=attempt,
                flood_scopes=self._config.economy.flood_scopes,
                rate_class=self._classes.class_of(tl_name) if tl_name else None,
            )
            if verdict.proxy_cooldown_s > 0:
                # At once: the worker judges a failed connect while it still holds its lane
                # slot, so the callers queued behind it see the cooldown and send nothing
                # (ProxyCoolingDown); `_apply` records the rest after the attempt.
                self._dispatch.cool_down_lane(
                    acc.lane,
                    trio.current_time() + verdict.proxy_cooldown_s,
                    f"{failure.error_class.value}: {failure.message}",
                )
            return failure, verdict

        try:
            value = await acc.run(
                op,
                call_deadline_s=call_deadline_s,
                judge=judge,
                on_abandoned=lambda failure, verdict: self._abandoned(job, acc, failure, verdict),
                progress=job.progress,
                deadline_at=deadline_at,
            )
            outcome = "OK"
            acc.lane.record_outcome(None)
            return value
        except DeadlinePassed:
            raise  # "CANCELLED", as a job cut by its own scope
        except (ProxyCoolingDown, RateClassBlocked, LeaseUnconfirmed) as deferred:
            outcome = "DEFERRED"
            if isinstance(deferred, LeaseUnconfirmed):
                # out of scheduling before the release below could hand it to a waiting job
                self._dispatch.hold_remote([acc], deferred.cause)
            raise
        except Judged as judged:
            outcome = judged.failure.error_class.value
            if judged.failure.error_class is not ErrorClass.INVALID_ARGUMENT:  # caller's fault
                self._apply(acc, judged.failure, judged.verdict, peer_key=job.peer_key)
            raise
        finally:
            if log.isEnabledFor(logging.INFO):  # the fields are not even built when it is off
                log_event(
                    log,
                    logging.INFO,
                    "call",
                    account=acc.id,
                    proxy=acc.lane.key,
                    method=job.method,
                    elapsed_ms=round((trio.current_time() - t0) * 1000.0, 1),
                    attempt=attempt,
                    outcome=outcome,
                )
            self._sync_budget(acc)  # a spent budget holds the class before it is offered
            self._dispatch.release(acc)  # back in the ready index, or to a waiting job

    def _apply(
        self, acc: AccountWorker, failure: Failure, verdict: Verdict, *, peer_key: str | None
    ) -> None:
        """Apply a verdict to the account and its lane (its rate class, the job's chat
        ``peer_key``) and write it to the state store."""
        now = trio.current_time()
        acc.lane.record_outcome(failure.error_class)
        cause = f"{failure.error_class.value}: {failure.message}"
        if verdict.account_cooldown_s > 0:
            self._dispatch.cool_down(acc, now + verdict.account_cooldown_s, cause)
        if verdict.chat_cooldown_s > 0:
            if peer_key is not None:
                until_at = now + verdict.chat_cooldown_s
                self._dispatch.cool_down_chat(acc, peer_key, until_at, cause)
                if self._store is not None:
                    until_unix = self._trio_to_wall(until_at)
                    self._store.save_chat_cooldown(acc.id, peer_key, until_unix, cause)
            else:  # no chat known: the class of the send stands for it
                self._cool_class(acc, verdict.rate_class or SEND, verdict.chat_cooldown_s, cause)
        if verdict.class_cooldown_s > 0 and verdict.rate_class is not None:
            self._cool_class(acc, verdict.rate_class, verdict.class_cooldown_s, cause)
        if verdict.proxy_cooldown_s > 0:
            self._dispatch.cool_down_lane(acc.lane, now + verdict.proxy_cooldown_s, cause)
        if verdict.disable_reason is not None:
            self._dispatch.disable(acc, verdict.disable_reason)
            log_event(
                log,
                logging.WARNING,
                "account_disabled",
                account=acc.id,
                by="policy",
                reason=verdict.disable_reason,
            )
        scopes = (
            ("account", verdict.account_cooldown_s),
            ("chat", verdict.chat_cooldown_s),
            ("rate_class", verdict.class_cooldown_s if verdict.rate_class is not None else 0.0),
            ("proxy", verdict.proxy_cooldown_s),
        )
        for scope, seconds in scopes:
            if seconds > 0:  # one line per cooldown: flood_wait for a FLOOD_WAIT's
                log_event(
                    log,
                    logging.WARNING,
                    "flood_wait" if failure.error_class is ErrorClass.FLOOD_WAIT else "cooldown",
                    account=acc.id,
                    proxy=acc.lane.key,
                    scope=scope,
                    rate_class=verdict.rate_class if scope in ("chat", "rate_class") else None,
                    seconds=seconds,
                    until=iso_utc(self._wall_clock() + seconds),
                    cause=failure.error_class.value,
                    rpc_error=failure.rpc_name,
                    request=failure.tl_name,
                )
        self._persist(acc, lane=failure.error_class is ErrorClass.PROXY_UNAVAILABLE)

    def _cool_class(
        self, acc: AccountWorker, rate_class: str, cooldown_s: float, cause: str
    ) -> None:
        until_at = trio.current_time() + cooldown_s
        self._dispatch.cool_down_class(acc, rate_class, until_at, cause)
        if self._store is not None:
            self._store.save_class_cooldown(acc.id, rate_class, self._trio_to_wall(until_at), cause)

    # -- cluster mode: the node's cluster task drives these --------------------------------------

    def account_ids(self) -> list[str]:
        """The ids of the accounts in the config (retired ones left out)."""
        return [i for i, a in self._accounts.items() if not a.retired]

    def connected_accounts(self) -> list[str]:
        """The ids of the accounts with an open connection (their conn keys are renewed)."""
        return [i for i, a in self._accounts.items() if a.connected]

    def cooldown_cause(self, account_id: str) -> str | None:
        """The failure behind the account's cooldown (``"FLOOD_WAIT: ..."``), or None (what
        the shared state stores with it: `mtpoold._clusterstate.ClusterStore`)."""
        acc = self._accounts.get(account_id)
        return None if acc is None else acc.cooldown_cause

    def remote_reason(self, account_id: str) -> str | None:
        """Why this node may not use the account now (`AccountState.REMOTE`), or None."""
        acc = self._accounts.get(account_id)
        return None if acc is None else acc.remote_reason

    def hold_remote(self, account_ids: Iterable[str], reason: str) -> None:
        """Cluster mode: take the accounts out of this node's scheduling (``reason``: "held
        by node b", "unheld", "draining", "cluster: redis … unreachable; leases
        unconfirmed"); waiting jobs are re-judged (`Dispatcher.hold_remote`). A call in
        flight runs on."""
        accs = [a for i in account_ids if (a := self._accounts.get(i)) is not None]
        if accs:
            self._dispatch.hold_remote(accs, reason)

    def take_over(self, account_id: str, shared: SharedAccountState | None) -> None:
        """Cluster mode: this node now holds the account's lease. Apply its shared state
        (``shared``, `mtpoold._clusterstate.ClusterState.pull`: cooldowns, class and chat
        cooldowns, disable, counters, budget spends, peers — as the start-up restore applies
        the state store's; None or not ``found``: what this node has stays), then make it
        schedulable (`Dispatcher.unhold_remote`)."""
        acc = self._accounts.get(account_id)
        if acc is None or acc.retired:
            return
        if shared is not None and shared.found:
            self._apply_shared(acc, shared)
        self._dispatch.unhold_remote(acc)

    def _apply_shared(self, acc: AccountWorker, shared: SharedAccountState) -> None:
        """One account's shared state applied through the dispatcher's verbs (`take_over`)."""
        now_unix = self._wall_clock()
        quiet = getattr(self._store, "quiet", None)  # `ClusterStore`: mirror, do not re-queue
        with quiet() if quiet is not None else contextlib.nullcontext():
            adopt = getattr(self._store, "adopt", None)
            if adopt is not None:
                adopt(shared)
            if shared.cooldown_until_unix is not None and shared.cooldown_until_unix > now_unix:
                self._dispatch.cool_down(
                    acc,
                    self._wall_to_trio(shared.cooldown_until_unix),
                    shared.cooldown_cause or "shared",
                )
            if shared.disabled_reason is not None:
                self._dispatch.disable(acc, shared.disabled_reason)
            elif acc.disabled_reason is not None and revoked_by_telegram(acc.disabled_reason):
                pass  # disabled here since the last write: the stricter view stands
            elif acc.disabled_reason is not None:
                self._dispatch.enable(acc)  # enabled on another node meanwhile
            for name, (until_unix, cause) in shared.class_cooldowns.items():
                if until_unix > now_unix:
                    self._dispatch.cool_down_class(acc, name, self._wall_to_trio(until_unix), cause)
            for peer_key, (until_unix, cause) in shared.chat_cooldowns.items():
                if until_unix > now_unix:
                    self._dispatch.cool_down_chat(
                        acc, peer_key, self._wall_to_trio(until_unix), cause
                    )
            acc.calls_ok = max(acc.calls_ok, shared.calls_ok)
            acc.calls_failed = max(acc.calls_failed, shared.calls_failed)
            for name, n in shared.failures_by_class.items():
                acc.errors_by_class[name] = max(acc.errors_by_class[name], n)
            if shared.last_error_class is not None:
                acc.last_error_class = shared.last_error_class
                acc.last_error_message = shared.last_error_message
            book = self._book
            if book is not None:
                if shared.first_seen_unix is not None:
                    book.first_seen[acc.id] = min(
                        book.first_seen.get(acc.id, shared.first_seen_unix),
                        shared.first_seen_unix,
                    )
                if shared.budget_spends:  # the shared spends are the whole story: replace
                    first_seen = book.first_seen.get(acc.id)
                    book.forget(acc.id)
                    if first_seen is not None:
                        book.first_seen[acc.id] = first_seen
                    book.restore(
                        [(acc.id, name, at) for name, at in shared.budget_spends], now_unix
                    )
                    self._sync_budget(acc, force=True)
            if self._peers is not None and shared.peers:
                self._peers.book(acc.id).learn(shared.peers)

    async def drain(self, account_id: str) -> None:
        """Cluster mode: hand the account over: out of scheduling ("draining"), then once
        its call in flight (if any) has ended, its connection closed. The caller releases
        the lease afterwards."""
        acc = self._accounts.get(account_id)
        if acc is None:
            return
        self._dispatch.hold_remote([acc], "draining")
        await acc.disconnect_when_free()

    async def cut_off(self, account_id: str, cause: str) -> None:
        """Cluster mode: the account's lease ran out on the local clock (or was lost): out of
        scheduling (``cause``), the connect or call in flight cancelled at once, the
        connection closed before Redis could give the account to another node."""
        acc = self._accounts.get(account_id)
        if acc is None:
            return
        self._dispatch.hold_remote([acc], cause)
        acc.cut_off(cause)
        await acc.drop_now()

    # -- shutdown ------------------------------------------------------------------------------

    def begin_shutdown(self) -> None:
        """Stop starting new work: jobs still waiting for an account, and any retry, fail
        at once with SHUTTING_DOWN; calls already holding an account run on (the caller
        decides how long, e.g. the daemon's ``shutdown_grace_s``): a call kept on the wire
        for the members of a shared job (`AccountWorker.shield_call`) follows its caller's
        cancellation again."""
        self._dispatch.close()
        for acc in self._accounts.values():
            acc.unshield()

    async def _aclose(self) -> None:
        self.begin_shutdown()
        try:
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_S):
                async with trio.open_nursery() as nursery:
                    for acc in self._accounts.values():
                        nursery.start_soon(acc.aclose)
        finally:
            self._release_session_locks()
            self._frozen.thaw()


@asynccontextmanager
async def open_pool(
    config: Config,
    telegram: TelegramSide,
    *,
    store: StateStore | None = None,
    wall_clock: Callable[[], float] = time.time,
    rng: random.Random | None = None,
    cluster: ClusterSide | None = None,
) -> AsyncIterator[Pool]:
    """Open a pool for ``config`` on the Telegram side ``telegram``, inside the caller's Trio run.

    The scheduling core's entry: it imports no Telethon. ``mtpoold.open_pool``
    (`mtpoold._compose.open_pool`) hands it the real Telegram side.

    Builds the first client factory and takes the session locks (start-up errors — a bad
    account, a session held elsewhere — are raised here, plainly, before any task exists),
    then enters ``telegram.open_runtime()`` (the asyncio loop) and a nursery for the
    dispatcher's timer and the accounts' connection watchers. On exit, every client is
    disconnected (shielded, bounded by ``CLOSE_TIMEOUT_S`` = 10 s), every task is gone and
    the session locks are released.

    A pool of `mtpoold._gcpause.FREEZE_AT_ACCOUNTS` (20,000) accounts or more moves
    everything alive in the process into the cyclic collector's permanent generation once
    built (``gc.freeze()``; each reload thaws, collects once and freezes again) and thaws it
    on exit: an embedding program's cycles made before the open wait for that.

    Args:
        config: A validated :class:`mtpoold.Config`.
        telegram: The clients, ``classify``, request checks, session locks and runtime.
        store: A :class:`mtpoold._store.StateStore` to load from and write verdicts to.
        wall_clock: UNIX time in seconds, used to store cooldowns across restarts.
        rng: Source of the gates' jitter.
        cluster: Cluster mode: the node's cluster part (shared gates, keepalive); every
            account starts out of scheduling ("unheld") until the cluster task takes it
            over (`Pool.take_over`). None: one node.

    Yields:
        The :class:`Pool`.

    Raises:
        ConfigError: from ``telegram.client_factory(config)``.
        SessionLocked: from ``telegram.lock_sessions`` (the real one's).
    """
    first_factory = telegram.client_factory(config)
    lock = telegram.lock_sessions
    locks = dict(lock(config.accounts)) if lock is not None else {}
    try:
        async with contextlib.AsyncExitStack() as stack:
            if telegram.open_runtime is not None:
                await stack.enter_async_context(telegram.open_runtime())
            async with trio.open_nursery() as nursery:
                pool = Pool(
                    config,
                    nursery,
                    telegram,
                    lambda cfg: first_factory if cfg is config else telegram.client_factory(cfg),
                    store=store,
                    wall_clock=wall_clock,
                    rng=rng or random.Random(),
                    session_locks=locks,
                    cluster_side=cluster,
                )
                try:
                    yield pool
                finally:
                    await pool._aclose()
                    nursery.cancel_scope.cancel()
    finally:
        for held in locks.values():
            held.release()


def _last_error(failure: Failure) -> str:
    """`` (last error: CLASS: message)`` for a DEADLINE_EXCEEDED answer."""
    return f" (last error: {failure.error_class.value}: {failure.message})"


@final
class _HandOver(Exception):  # noqa: N818 - a signal, not an error
    """`Pool._attempt_loop` of a local flight's leader: an account was handed to the job
    while a member may wait longer than the leader; the job goes on in a flight task."""

    def __init__(self, account: AccountWorker) -> None:
        super().__init__(account.id)
        self.account = account


class _Counted:
    """`Pool._counted`'s context manager: a plain class, not a generator's (entered once
    per job). A job that raised `JobFailed` counts under its error class, any other
    exception (a cancellation) as ``CANCELLED``."""

    __slots__ = ("_deadline_at", "_entry", "_flight", "_job", "_method", "_pool", "_started_at")

    def __init__(
        self,
        pool: Pool,
        method: str,
        deadline_at: float,
        job: Any,
        flight: Any,
        started_at: float | None = None,
    ) -> None:
        self._pool, self._method, self._deadline_at = pool, method, deadline_at
        self._job, self._flight, self._started_at = job, flight, started_at
        self._entry: JobEntry | None = None

    def __enter__(self) -> None:
        pool = self._pool
        started_at = self._started_at
        self._entry = pool._registry.add(
            self._method,
            trio.current_time() if started_at is None else started_at,
            self._deadline_at,
            job=self._job,
            flight=self._flight,
        )
        pool._jobs_in_flight += 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: object,
    ) -> None:
        pool = self._pool
        try:
            if self._entry is not None:
                pool._registry.remove(self._entry)
        finally:
            pool._jobs_in_flight -= 1
            if exc is None:
                outcome = "OK"
                pool._jobs_ok += 1
            else:
                outcome = exc.error_class.value if isinstance(exc, JobFailed) else "CANCELLED"
                pool._jobs_failed += 1
            pool._jobs_by[pool._job_class(self._method), outcome] += 1


def _member_result(answer: Answer, member: Member, flight: Flight, since_at: float) -> JobResult:
    """A flight member's `JobResult` from the flight's ``answer``: ``elapsed_ms`` from
    ``since_at`` (trio clock, s), ``shared`` when it rode an identical job's call."""
    return JobResult(
        value=answer.value,
        meta=JobMeta(
            account=answer.account,
            proxy_key=answer.proxy_key,
            attempts=answer.attempts,
            elapsed_ms=(trio.current_time() - since_at) * 1000.0,
            shared=member.role == "identical",
            merged=flight.riders,
        ),
    )
