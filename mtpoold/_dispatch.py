"""The scheduler: which account serves a job's next attempt, who waits for one, and every
change of scheduling state (cooldowns, disables, retires, reservations) — one owner."""

from __future__ import annotations

import collections
import heapq
import itertools
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any, Final, Protocol, final

import attrs
import trio

from ._account import AccountWorker, DeadlinePassed
from ._errors import ErrorClass, Failure, JobFailed
from ._jobs import JobPhase, JobProgress
from ._lane import ProxyLane
from ._ready import ReadyIndex


class PeerKnowledge(Protocol):
    """Which accounts know a peer (its access hash: no look-up needed), by `Job.peer_key`.

    Implemented by the peer memory (`mtpoold._peermemory.PeerMemory`); the dispatcher
    asks it whether a job on an account needs the ``resolve`` class, and which accounts to
    prefer (``[economy] route_by_knowledge``).
    """

    def knows(self, account_id: str, peer_key: str) -> bool:
        """Whether the account knows the peer."""

    def knowers(self, peer_key: str) -> Collection[str]:
        """The ids of the accounts that know the peer (O(1) to get)."""


@final
class KnowsNothing:
    """The default `PeerKnowledge`: no account knows any peer."""

    def knows(self, account_id: str, peer_key: str) -> bool:
        """Always False."""
        del account_id, peer_key
        return False

    def knowers(self, peer_key: str) -> Collection[str]:
        """Always empty."""
        del peer_key
        return ()


#: Knowers a routing decision looks at, at most (bounded cost for popular peers).
MAX_KNOWERS_SCANNED: Final = 16


@attrs.define(eq=False)
class Job:
    """The scheduler's view of one job.

    Attributes:
        method: What the job calls, for log lines (a TL name, ``resolve``, ``get_messages``).
        deadline_at: When the job must be answered, trio clock seconds.
        account: The pinned account id, or None.
        tags: Tags an account must all carry to serve the job.
        started_at: When the job was accepted, trio clock seconds.
        avoid: Accounts that already failed this job: it prefers the others, and takes these
            again (after the verdict's backoff) once no other could start before its deadline.
        attempts: Calls made so far.
        last_account: The account of the last attempt.
        peer_key: The job's peer (`TelegramSide.peer_key`), or None: what routing by
            knowledge looks up.
        rate_classes: The rate classes its calls need on any account
            (`mtpoold._rateclass.RateClasses.job_classes`), plus those the request guard
            refused during its attempts (a look-up nobody foresaw).
        lookup_class: The class a look-up of ``peer_key`` needs on an account that does not
            know the peer (``resolve``), or None.
        on_late: Told ``(earliest_at, lead)`` when the job waits for an account that can start
            only at ``earliest`` (trio clock, s), before its deadline: at its pick and when
            the dispatcher re-judges it (``lead``: why). A shared flight answers its members
            whose own deadlines come first (`mtpoold._share.Flights.shed`). None: nobody.
        progress: Where its attempts are (`mtpoold._jobs.JobProgress`), for ``Pool.jobs``.
    """

    method: str
    deadline_at: float  # trio clock, s
    account: str | None
    tags: frozenset[str]
    started_at: float
    avoid: set[str] = attrs.field(factory=set)
    attempts: int = 0
    last_account: str | None = None
    #: The last failure of one of its attempts, also one its deadline cut off (a connect the
    #: proxy never answered): what a DEADLINE_EXCEEDED answer names as its cause.
    last_failure: Failure | None = None
    peer_key: str | None = None
    rate_classes: frozenset[str] = frozenset()
    lookup_class: str | None = None
    on_late: Callable[[float, str | None], None] | None = None
    progress: JobProgress = attrs.field(factory=JobProgress)

    def accepts(self, acc: AccountWorker, *, allow_avoided: bool) -> bool:
        """Whether ``acc`` may serve this job (pin, tags, and unless allowed, not avoided)."""
        if self.account is not None and acc.id != self.account:
            return False
        if not self.tags <= acc.tags:
            return False
        return allow_avoided or acc.id not in self.avoid


class BackoffPastDeadline(Exception):
    """The backoff before retrying on an account that already failed the job would pass the
    job deadline: the job fails with its last error instead of sleeping."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(delay_s)
        self.delay_s = delay_s


@attrs.define(eq=False)
class _Waiter:
    """One :meth:`Dispatcher.acquire` call: a job asking for an account, maybe queued."""

    job: Job
    retry_delay_s: float  # s, the verdict's backoff before an avoided account is used again
    event: trio.Event = attrs.field(factory=trio.Event)
    #: When the avoided accounts become eligible (trio clock, s); None while the job still
    #: has an untried account that could start before its deadline.
    avoided_from_at: float | None = None
    #: Until when it takes only an account that knows its peer (trio clock, s; see
    #: `Dispatcher._hold_for_knower`); None: it does not hold out.
    knower_until_at: float | None = None
    account: AccountWorker | None = None
    failure: BaseException | None = None
    done: bool = False


_INF = float("inf")


@final
class Dispatcher:
    """Chooses accounts for jobs, keeps the waiting ones in order, and owns scheduling state.

    Among accounts that are free, not cooling down (nor their proxy), not disabled, and
    matching the job's pinned account and tags, it prefers the one whose proxy lane can start
    soonest, then the least recently used (answered by the :class:`ReadyIndex` in O(log
    proxies); pinned or tagged jobs scan). Accounts that already failed the job (``avoid``)
    come last: they are eligible again, after the verdict's backoff, once no other account
    the job may use could start before its deadline. A job that cannot start before its
    deadline — every candidate cooling down past it, the gate's queue too long, or its turn
    among the waiting jobs too late — fails at once with ``NO_ACCOUNT_AVAILABLE`` and the
    seconds until one could (``retry_after_s``); otherwise it waits, first in first served.
    With routing by knowledge, a job whose peer's knowers are all busy may hold out for one
    for up to :attr:`knower_wait_s` before it takes an account that must look the peer up
    (`_hold_for_knower`); meanwhile such accounts are not ones it "may use" below.

    Every change of scheduling state goes through a verb here: :meth:`reserve` /
    :meth:`release` (an attempt takes and gives back an account), :meth:`cool_down`,
    :meth:`cool_down_lane`, :meth:`disable`, :meth:`enable`, :meth:`add`, :meth:`retire`,
    :meth:`begin_move` / :meth:`end_move` (a reload reconnects an account). So two rules hold
    after each one:

    * no waiting job is passed over for an account it may use: an account that becomes free
      and schedulable (released, enabled, its cooldown or its proxy's over) goes to the first
      waiting job that may use it;
    * a verb that takes accounts away (a cooldown, a proxy cooldown, a disable, a retire)
      re-judges the waiting jobs: one whose earliest possible start — over every account it
      may use, busy ones included — now falls after its deadline is answered at once with
      ``NO_ACCOUNT_AVAILABLE``, ``retry_after_s`` and the failure that caused it.

    Costs: taking and giving back an account is O(log proxies) plus the position of the first
    waiting job that may use it. Re-judging scans the waiting jobs once: O(waiting + log
    proxies + busy accounts until one could start now), plus one O(accounts) scan per distinct
    tag set among waiting tagged jobs, O(log) per waiting job with avoided accounts, and
    O(`MAX_KNOWERS_SCANNED`) per job holding out for a knower. Cooldown ends are served by
    one timer task (:meth:`run`), not by every waiting job waking up.

    The dicts are the pool's own (shared, not copied): the pool adds and removes accounts
    and lanes; the dispatcher reorders an account within its lane (:meth:`reserve`) and moves
    it to another lane (:meth:`end_move`).

    Args:
        accounts: Account id -> worker.
        lanes: Lane key -> lane.
        lane_accounts: Lane key -> its accounts, least recently used first.
        knowledge: Which accounts know which peers (the pool's peer memory), or None.
    """

    def __init__(
        self,
        accounts: dict[str, AccountWorker],
        lanes: dict[str, ProxyLane],
        lane_accounts: dict[str, collections.OrderedDict[str, AccountWorker]],
        knowledge: PeerKnowledge | None = None,
    ) -> None:
        self._accounts = accounts
        self._lanes = lanes
        self._lane_accounts = lane_accounts
        self.ready = ReadyIndex()
        self._waiters: collections.deque[_Waiter] = collections.deque()
        #: Accounts out of scheduling while a reload moves them to new settings.
        self.moving: set[str] = self.ready.held
        #: Reserved accounts and the lane each was assigned on.
        self._taken: dict[str, tuple[AccountWorker, ProxyLane]] = {}
        self._rate: float | None = None  # see _start_rate
        self._seq = itertools.count()
        self._lane_ends: list[tuple[float, int, ProxyLane]] = []  # proxy cooldown ends
        self._backoffs: list[tuple[float, int, _Waiter]] = []  # waiters' avoided_from_at
        self._alarm: trio.CancelScope | None = None  # the timer task's sleep, see run
        #: Set by :meth:`close`: no new work starts.
        self.closing = False
        #: Who knows which peer: the pool hands its peer memory in (None: nobody knows any).
        self.knowledge: PeerKnowledge = KnowsNothing() if knowledge is None else knowledge
        #: ``[economy] route_by_knowledge``: prefer an account that knows the job's peer.
        self.route_by_knowledge = False
        #: ``[economy] knower_wait_s``: how long a job whose peer's knowers are all busy (or
        #: on a lane that starts later) holds out for one before it takes an account that
        #: must look the peer up, s (0: it never waits).
        self.knower_wait_s = 0.0
        # Rate-class and chat blocks. _floods: account -> class -> (end, cause), FLOOD_WAIT
        # cooldowns; _budget_holds: account -> class -> end, a spent budget window; _chats:
        # peer key -> account -> end (SLOWMODE_WAIT). _blocked: class -> account -> end of
        # both, what picks exclude; _class_heaps: class -> (end, seq, account) (lazy);
        # _block_ends: (end, seq, account) for the timer. Ends are trio clock seconds.
        self._floods: dict[str, dict[str, tuple[float, str]]] = {}
        self._budget_holds: dict[str, dict[str, float]] = {}
        self._chats: dict[str, dict[str, float]] = {}
        self._blocked: dict[str, dict[str, float]] = {}
        self._class_heaps: dict[str, list[tuple[float, int, str]]] = {}
        self._block_ends: list[tuple[float, int, str]] = []
        #: class -> the ready index's side of the free accounts not blocked on it
        #: (`ReadyIndex.add_side`): picks for a job that needs one blocked class stay O(log).
        self._sides: dict[str, ReadyIndex] = {}

    def __repr__(self) -> str:
        return f"<Dispatcher waiting={len(self._waiters)} {self.ready!r}>"

    @property
    def waiting(self) -> int:
        """Jobs waiting for an account."""
        return len(self._waiters)

    def describe_waiting(self, now: float) -> dict[int, tuple[JobPhase, dict[str, Any]]]:
        """What each waiting job waits for, by ``id(job)``: `JobPhase.BACKOFF` with
        ``until_s``, or `JobPhase.WAITING_ACCOUNT` with ``why`` (one line), ``position``
        (1-based, among the waiting jobs) and ``until_s`` (seconds until an account could
        start it; None: unknown). Read-only, for ``mtpoold jobs``, never on the scheduling
        path: one scan of the accounts per distinct kind of waiting job (pin, tags, rate
        classes, look-up): O(kinds × accounts + waiting).

        Args:
            now: The trio clock reading (s) the durations count from.
        """
        out: dict[int, tuple[JobPhase, dict[str, Any]]] = {}
        # one scan per kind of job: its earliest start and why it waits depend on these only
        kinds: dict[tuple[object, ...], tuple[float, str]] = {}
        for position, w in enumerate(self._waiters, start=1):
            job = w.job
            if job.avoid and w.avoided_from_at is not None and w.avoided_from_at > now:
                out[id(job)] = (
                    JobPhase.BACKOFF,
                    {
                        "why": "failed on every account it may use; backs off before a retry",
                        "until_s": w.avoided_from_at - now,
                        "position": position,
                    },
                )
                continue
            kind = (
                job.account,
                job.tags,
                job.rate_classes,
                job.lookup_class,
                job.peer_key if job.lookup_class is not None else None,
            )
            if kind not in kinds:
                kinds[kind] = (self._earliest_at(job), self._why_waiting(job, now))
            earliest_at, why = kinds[kind]
            if w.knower_until_at is not None and w.knower_until_at > now:
                why = (
                    "knower hold: waits for a busy account that knows its peer, up to"
                    f" {w.knower_until_at - now:.1f} s"
                )
            out[id(job)] = (
                JobPhase.WAITING_ACCOUNT,
                {
                    "why": why,
                    "position": position,
                    "until_s": earliest_at - now if earliest_at < _INF else None,
                },
            )
        return out

    def _why_waiting(self, job: Job, now: float) -> str:
        """One line: why no account it may use takes the waiting ``job`` now."""
        busy = other = 0
        remote: list[str] = []
        cooling: list[float] = []
        flood: list[float] = []
        budget: list[float] = []
        for acc in self._accounts.values():
            if not job.accepts(acc, allow_avoided=True):
                continue
            if acc.disabled_reason is not None or acc.retired:
                continue
            if acc.remote_reason is not None:
                remote.append(acc.remote_reason)
                continue
            if acc.schedulable_at() > now:
                cooling.append(acc.schedulable_at())
                continue
            if acc.busy or acc.id in self.moving:
                busy += 1
                continue
            floods = self._floods.get(acc.id, {})
            holds = self._budget_holds.get(acc.id, {})
            classes = set(job.rate_classes)
            if job.lookup_class is not None and not self._knows(acc.id, job):
                classes.add(job.lookup_class)
            flood_at = max((floods[c][0] for c in classes if c in floods), default=-_INF)
            hold_at = max((holds[c] for c in classes if c in holds), default=-_INF)
            if flood_at > now:
                flood.append(flood_at)
            elif hold_at > now:
                budget.append(hold_at)
            else:
                other += 1  # free, but a chat's slow mode, or about to be handed on
        total = busy + other + len(cooling) + len(flood) + len(budget)
        if total == 0:
            if remote:
                return f"no account it may use is held by this node ({remote[0]})"
            return "no account it may use is enabled"
        parts = []
        if busy:
            parts.append(f"all {busy} busy" if busy == total else f"{busy} busy")
        for label, ends in (
            ("cooling", cooling),
            ("class cooldown", flood),
            ("out of budget", budget),
        ):
            if ends:
                parts.append(f"{len(ends)} {label} until +{min(ends) - now:.1f} s")
        if other:
            parts.append(f"{other} free (slow mode or next in line)")
        return ", ".join(parts)

    # -- verbs: every change of scheduling state -------------------------------------------

    def reserve(self, acc: AccountWorker) -> AccountWorker:
        """Take ``acc`` for a job's attempt: out of the free set, most recently used; give it
        back with :meth:`release` after the attempt."""
        acc.reserved = True
        self._lane_accounts[acc.lane.key].move_to_end(acc.id)
        self.ready.assign(acc)
        self._taken[acc.id] = (acc, acc.lane)
        return acc

    def release(self, acc: AccountWorker) -> None:
        """The attempt holding ``acc`` ended: hand it to the first waiting job that may use
        it, or put it back in the ready index (which parks it if it is cooling down)."""
        taken = self._taken.pop(acc.id, None)
        if taken is not None:
            acc.reserved = False
            self.ready.unassign(acc, taken[1])
        self._make_available(acc)

    def cool_down(self, acc: AccountWorker, until_at: float, cause: str = "") -> None:
        """Keep ``acc`` out of scheduling until ``until_at`` (trio clock, s; a later cooldown
        already set stands), then re-judge the waiting jobs.

        Args:
            cause: The failure behind it (``"FLOOD_WAIT: ..."``), for the answer of a waiting
                job this leaves without an account before its deadline.
        """
        if until_at <= acc.cooldown_until_at:
            return
        acc.cooldown_until_at = until_at
        acc.cooldown_cause = cause or None
        if self.ready.is_free(acc):
            self.ready.discard(acc)
            self.ready.mark_free(acc)  # parks it until the cooldown ends
        self._rejudge(f"every account it may use is cooling down ({cause or 'cooldown'})")

    def cool_down_lane(self, lane: ProxyLane, until_at: float, cause: str = "") -> None:
        """Keep the whole proxy lane out of scheduling until ``until_at`` (trio clock, s; a later
        cooldown already set stands), then re-judge the waiting jobs (``cause`` as for
        :meth:`cool_down`)."""
        if until_at <= lane.cooldown_until_at:
            return
        lane.cooldown_until_at = until_at
        lane.cooldown_cause = cause or None
        heapq.heappush(self._lane_ends, (until_at, next(self._seq), lane))
        self.ready.lane_changed(lane)
        self._rejudge(
            f"every account it may use is cooling down (proxy {lane.name}: {cause or 'cooldown'})"
        )

    def disable(self, acc: AccountWorker, reason: str) -> None:
        """Take ``acc`` out of scheduling until :meth:`enable` (its call in flight, if any,
        runs on), then re-judge the waiting jobs."""
        acc.disabled_reason = reason
        self._rate = None
        self.ready.discard(acc)
        self._rejudge(
            f'no account it may use can start before its deadline (account "{acc.id}" was'
            f" disabled: {reason})"
        )

    def enable(self, acc: AccountWorker) -> None:
        """Bring a disabled account back: the first waiting job that may use it gets it."""
        acc.disabled_reason = None
        self._rate = None
        self._make_available(acc)

    def hold_remote(self, accs: Iterable[AccountWorker], reason: str) -> None:
        """Cluster mode: this node may not use ``accs`` (their leases are another node's,
        unheld, being handed over, or unconfirmed: ``reason``, e.g. ``"held by node b"``,
        ``"cluster: redis 10.0.0.5:6379 unreachable (...); leases unconfirmed"``) until
        :meth:`unhold_remote`; a call in flight runs on (the cluster task drains it). Then the
        waiting jobs are re-judged once: one left with no account before its deadline is
        answered NO_ACCOUNT_AVAILABLE naming ``reason``. An account already remote only gets
        the new reason."""
        taken = False
        first: str | None = None
        for acc in accs:
            if acc.remote_reason is None:
                taken = True
                first = first or acc.id
                self.ready.discard(acc)
            acc.remote_reason = reason
        if taken:
            self._rate = None
            self._rejudge(
                f'no account it may use can start before its deadline (account "{first}" is'
                f" not held by this node: {reason})"
            )

    def unhold_remote(self, acc: AccountWorker) -> None:
        """Cluster mode: this node holds ``acc``'s lease now (its shared state applied): the
        first waiting job that may use it gets it."""
        if acc.remote_reason is None:
            return
        acc.remote_reason = None
        self._rate = None
        self._make_available(acc)

    def add(self, acc: AccountWorker) -> None:
        """An account joined (at open, by a reload, or taken back before it was retired):
        the first waiting job that may use it gets it."""
        acc.retired = False
        self._rate = None
        self._make_available(acc)

    def retire(self, acc: AccountWorker) -> None:
        """Take a removed account out of scheduling for good (its call in flight, if any,
        runs on), then re-judge the waiting jobs."""
        acc.retired = True
        self._rate = None
        self.ready.discard(acc)
        self._rejudge(f'no account it may use can start before its deadline ("{acc.id}" removed)')

    def begin_move(self, acc: AccountWorker) -> None:
        """Hold ``acc`` out of scheduling while a reload reconnects it (see :meth:`end_move`).
        It still counts as one that may serve waiting jobs soon."""
        self.moving.add(acc.id)
        self.ready.discard(acc)

    def end_move(self, acc: AccountWorker, lane: ProxyLane | None = None) -> None:
        """The reload's reconnect of ``acc`` is done; ``lane``: the lane it moved to, if it
        got that far (None: it stays where it was). Serve a waiting job with it, or — if it
        came back cooling (its proxy's cooldown, say) — re-judge the waiting jobs, which
        counted on it while it moved."""
        if lane is not None and lane is not acc.lane:
            self._lane_accounts[acc.lane.key].pop(acc.id, None)
            acc.lane = lane
            self._lane_accounts[lane.key][acc.id] = acc
        self.moving.discard(acc.id)
        self._make_available(acc)
        self._rejudge(None)

    def clear_lane_cooldown(self, lane: ProxyLane) -> None:
        """Lift the proxy's cooldown and backoff at once (the operator changed its address or
        credentials: what failed was the old settings) and serve waiting jobs on it."""
        now = trio.current_time()
        if lane.cooldown_until_at <= now and lane.consecutive_failures == 0:
            return
        lane.cooldown_until_at = min(lane.cooldown_until_at, now)
        lane.record_outcome(None)  # its run of consecutive failures ends
        heapq.heappush(self._lane_ends, (lane.cooldown_until_at, next(self._seq), lane))
        self.ready.lane_changed(lane)
        self._rearm()

    # -- rate classes and chats ------------------------------------------------------------

    def cool_down_class(
        self, acc: AccountWorker, rate_class: str, until_at: float, cause: str
    ) -> None:
        """Keep ``acc`` from jobs that need ``rate_class`` until ``until_at`` (trio clock, s; a
        later cooldown already set stands): a FLOOD_WAIT on a request of that class. Jobs that
        do not need it still get the account. Then re-judge the waiting jobs."""
        if until_at <= self.class_flood_until_at(acc.id, rate_class):
            return
        self._floods.setdefault(acc.id, {})[rate_class] = (until_at, cause)
        self._reindex(acc.id, rate_class)
        self._rejudge(f"every account it may use is cooling down ({cause or rate_class})")

    def hold_class(self, acc: AccountWorker, rate_class: str, until_at: float) -> None:
        """A budget window of (``acc``, ``rate_class``) is spent until ``until_at`` (trio clock,
        s; at or before now: not spent): keep it from jobs that need the class until then."""
        holds = self._budget_holds.setdefault(acc.id, {})
        if until_at <= trio.current_time():
            if holds.pop(rate_class, None) is not None:
                self._reindex(acc.id, rate_class)
                self._make_available(acc)
            return
        if holds.get(rate_class) == until_at:
            return
        holds[rate_class] = until_at
        self._reindex(acc.id, rate_class)
        self._rejudge(f"every account it may use is out of its {rate_class} budget")

    def cool_down_chat(
        self, acc: AccountWorker, peer_key: str, until_at: float, cause: str
    ) -> None:
        """Keep ``acc`` from jobs for the chat ``peer_key`` until ``until_at`` (trio clock, s):
        SLOWMODE_WAIT is the (account, chat) pair's. Then re-judge the waiting jobs."""
        chat = self._chats.setdefault(peer_key, {})
        if until_at <= chat.get(acc.id, float("-inf")):
            return
        chat[acc.id] = until_at
        heapq.heappush(self._block_ends, (until_at, next(self._seq), acc.id))
        self._rearm()
        self._rejudge(f"every account it may use is in the chat's slow mode ({cause})")

    def clear_cooldown(self, acc: AccountWorker, rate_class: str | None = None) -> list[str]:
        """The operator lifts cooldowns of ``acc``: one rate class's FLOOD_WAIT cooldown, or
        (``rate_class`` None) every class's, its chats' and the account-wide cooldown. Budget
        windows stay (they count what was sent). Serves a waiting job with it.

        Returns:
            The rate classes whose cooldown was lifted (``"account"`` for the account-wide
            one), sorted.
        """
        now = trio.current_time()
        floods = self._floods.get(acc.id, {})
        names = [rate_class] if rate_class is not None else list(floods)
        cleared = [n for n in names if n in floods and floods[n][0] > now]
        for name in names:
            if floods.pop(name, None) is not None:
                self._reindex(acc.id, name)
        if rate_class is None:
            for chat in self._chats.values():
                chat.pop(acc.id, None)
            if acc.cooldown_until_at > now:
                cleared.append("account")
                acc.cooldown_until_at = float("-inf")
                self.ready.discard(acc)
        self._make_available(acc)
        return sorted(cleared)

    def class_flood_until_at(self, account_id: str, rate_class: str) -> float:
        """When the (account, class) FLOOD_WAIT cooldown ends (trio clock, s; ``-inf``: none):
        what the request guard reads."""
        return self._floods.get(account_id, {}).get(rate_class, (float("-inf"), ""))[0]

    def class_cooldowns(self, account_id: str) -> dict[str, tuple[float, str]]:
        """The account's FLOOD_WAIT cooldowns still running: ``{class: (end, cause)}`` (trio
        clock, s)."""
        floods = self._floods.get(account_id)
        if not floods:
            return {}
        now = trio.current_time()
        return {c: v for c, v in floods.items() if v[0] > now}

    def budget_holds(self, account_id: str) -> dict[str, float]:
        """The account's classes out of budget: ``{class: end}`` (trio clock, s)."""
        holds = self._budget_holds.get(account_id)
        if not holds:
            return {}
        now = trio.current_time()
        return {c: t for c, t in holds.items() if t > now}

    def _reindex(self, account_id: str, rate_class: str) -> None:
        """Recompute the block of one (account, class) from its flood and budget parts."""
        end_at = max(
            self.class_flood_until_at(account_id, rate_class),
            self._budget_holds.get(account_id, {}).get(rate_class, float("-inf")),
        )
        blocked = self._blocked.setdefault(rate_class, {})
        acc = self._accounts.get(account_id)
        if end_at <= trio.current_time():
            blocked.pop(account_id, None)
            if acc is not None:
                self.ready.refilter(acc)
            return
        blocked[account_id] = end_at
        if rate_class not in self._sides:
            self._sides[rate_class] = self.ready.add_side(
                lambda a: self._blocked.get(rate_class, {}).get(a.id, -_INF) <= trio.current_time()
            )
        if acc is not None:
            self.ready.refilter(acc)
        seq = next(self._seq)
        heapq.heappush(self._class_heaps.setdefault(rate_class, []), (end_at, seq, account_id))
        heapq.heappush(self._block_ends, (end_at, seq, account_id))
        self._rearm()

    def _needs(self, job: Job) -> bool:
        """Whether any class or chat block may concern the job (else the fast path)."""
        if job.peer_key is not None and self._chats.get(job.peer_key):
            return True
        for name in job.rate_classes:
            if self._blocked.get(name):
                return True
        return job.lookup_class is not None and bool(self._blocked.get(job.lookup_class))

    def _blocked_until_at(self, job: Job, account_id: str, now: float) -> float:
        """When the account's class and chat blocks let it serve ``job`` (trio clock, s; at
        or before ``now``: free)."""
        end_at = float("-inf")
        for name in job.rate_classes:
            end_at = max(end_at, self._blocked.get(name, {}).get(account_id, end_at))
        lookup = job.lookup_class
        if lookup is not None and lookup not in job.rate_classes:
            until_at = self._blocked.get(lookup, {}).get(account_id)
            if until_at is not None and until_at > now and not self._knows(account_id, job):
                end_at = max(end_at, until_at)
        if job.peer_key is not None:
            end_at = max(end_at, self._chats.get(job.peer_key, {}).get(account_id, end_at))
        return end_at

    def _knows(self, account_id: str, job: Job) -> bool:
        return job.peer_key is not None and self.knowledge.knows(account_id, job.peer_key)

    def _exclusion(self, job: Job, avoid: Collection[str], now: float) -> Collection[str]:
        """What a pick for ``job`` leaves out: ``avoid``, plus accounts whose class or chat
        blocks hold it back (checked per account met, O(classes of the job))."""
        if not self._needs(job):
            return avoid
        return _Excluded(self, job, avoid, now)

    def _blocks_bound_at(
        self, job: Job, avoid: Collection[str], now: float, best_at: float = _INF
    ) -> float:
        """When the first account the class/chat blocks hold back from ``job`` could serve it
        (trio clock, s; ``inf``: none is held back), each account's own start bound included.

        Walks the job's class heaps in order of block end and stops at the first end past
        the best one found (``best_at``, the caller's to start from): O((held-back accounts
        whose block ends before that) × log).
        """
        if not self._needs(job):
            return best_at
        if job.peer_key is not None:
            for acc_id, end_at in self._chats.get(job.peer_key, {}).items():
                if end_at > now and acc_id not in avoid:
                    best_at = min(best_at, self._available_at(job, acc_id, now))
        names = set(job.rate_classes)
        if job.lookup_class is not None:
            names.add(job.lookup_class)
        heaps = {n: h for n in names if (h := self._class_heaps.get(n))}
        popped: list[tuple[str, tuple[float, int, str]]] = []
        while True:
            top: tuple[float, int, str] | None = None
            top_name = ""
            for name, heap in heaps.items():
                blocked = self._blocked.get(name, {})
                while heap and blocked.get(heap[0][2]) != heap[0][0]:
                    heapq.heappop(heap)  # stale: a newer entry stands for it, or it is over
                if heap and (top is None or heap[0] < top):
                    top, top_name = heap[0], name
            if top is None or top[0] >= best_at:
                break
            popped.append((top_name, heapq.heappop(heaps[top_name])))
            if top[2] not in avoid:
                best_at = min(best_at, self._available_at(job, top[2], now))
        for name, entry in popped:
            heapq.heappush(self._class_heaps[name], entry)
        return best_at

    def _available_at(self, job: Job, account_id: str, now: float) -> float:
        """A lower bound of when ``account_id`` could serve ``job``: its start bound and its
        class and chat blocks (trio clock, s)."""
        acc = self._accounts.get(account_id)
        if acc is None or not job.accepts(acc, allow_avoided=True):
            return _INF
        return max(self._start_bound_at(acc, now), self._blocked_until_at(job, account_id, now))

    def _best_free(self, job: Job, avoid: Collection[str], now: float) -> AccountWorker | None:
        """`ReadyIndex.best` for ``job`` with its class and chat blocks applied.

        No block concerns it: the index, O(log proxies). One blocked class: that class's
        side index (O(log proxies)), and for the look-up class the free accounts that know
        the peer (they need no look-up; all of them only when the side has none). Several:
        the index, skipping held-back accounts (O(held-back free accounts met)).
        """
        if not self._needs(job):
            return self.ready.best(avoid, now=now)
        names = set(job.rate_classes)
        if job.lookup_class is not None:
            names.add(job.lookup_class)
        relevant = [n for n in names if self._blocked.get(n)]
        chat = job.peer_key is not None and bool(self._chats.get(job.peer_key))
        if len(relevant) != 1 or chat:
            return self.ready.best(_Excluded(self, job, avoid, now))
        (name,) = relevant
        self.ready.expire()  # accounts back from an account cooldown reach the side too
        found = self._sides[name].best(avoid)
        if name == job.lookup_class and name not in job.rate_classes:
            knower = self._pick_knower(
                job,
                _Excluded(self, job, avoid, now),
                now,
                limit=MAX_KNOWERS_SCANNED if found is not None else _INF,
                start_now=False,
            )
            if knower is not None and (
                found is None
                or (max(now, self.ready.start_bound_at(knower.lane)), self.ready.last_use(knower))
                < (max(now, self.ready.start_bound_at(found.lane)), self.ready.last_use(found))
            ):
                return knower
        return found

    def _pick_knower(
        self,
        job: Job,
        exclude: Collection[str],
        now: float,
        limit: float = MAX_KNOWERS_SCANNED,
        *,
        start_now: bool = True,
    ) -> AccountWorker | None:
        """Routing by knowledge: the least recently used free account that knows the job's
        peer and can start now, among at most ``limit`` of them; None: none. With
        ``start_now`` False: the one whose lane can start soonest (then LRU), whenever."""
        if job.peer_key is None:
            return None
        best: AccountWorker | None = None
        best_use: tuple[float, float] = (_INF, _INF)
        for n, acc_id in enumerate(self.knowledge.knowers(job.peer_key)):
            if n >= limit:
                break
            acc = self._accounts.get(acc_id)
            if acc is None or acc_id in exclude or not self.ready.is_free(acc):
                continue
            start_at = self._knower_start_at(acc, now)
            if start_now and start_at > now:
                continue
            use = (start_at, self.ready.last_use(acc))
            if use < best_use:
                best, best_use = acc, use
        return best

    def _knower_start_at(self, acc: AccountWorker, now: float) -> float:
        """When a free account's lane could start its call (trio clock, s)."""
        return max(now, acc.lane.cooldown_until_at, self.ready.start_bound_at(acc.lane))

    def _hold_for_knower(self, w: _Waiter, now: float) -> None:
        """Judge, when a job asks for an account, whether it holds out for a knower of its
        peer (``knower_wait_s``, routing by knowledge): if a knower it may use (pin, tags,
        not avoided, no class or chat block past the wait) is busy and ``now +
        knower_wait_s`` comes before its deadline, ``w.knower_until_at`` is set to that time
        and pushed on the backoff heap: until then it takes only an account that knows the
        peer (a knower released meanwhile is offered to it as to any waiting job), then the
        timer tries it again and any account will do. O(`MAX_KNOWERS_SCANNED`).

        Why: a look-up costs a ResolveUsername, the scarcest budget (`mtpoold._rateclass`:
        50 an hour), and a busy knower is free again after its call; a knower busy longer
        than the wait is congested, and the peer spreads to another account (one look-up,
        kept by the peer memory).
        """
        job = w.job
        if (
            not self.route_by_knowledge
            or self.knower_wait_s <= 0
            or job.peer_key is None
            or job.account is not None
        ):
            return
        until_at = now + self.knower_wait_s
        if until_at < job.deadline_at and self._busy_knower(job, now, until_at):
            w.knower_until_at = until_at
            heapq.heappush(self._backoffs, (until_at, next(self._seq), w))

    def _busy_knower(self, job: Job, now: float, until_at: float) -> bool:
        """Whether a busy account that knows the job's peer, and that it may use, could
        serve it by ``until_at`` as far as its state goes (trio clock, s)."""
        assert job.peer_key is not None
        for n, acc_id in enumerate(self.knowledge.knowers(job.peer_key)):
            if n >= MAX_KNOWERS_SCANNED:
                break
            knower = self._accounts.get(acc_id)
            if (
                knower is not None
                and knower.busy
                and job.accepts(knower, allow_avoided=False)
                and self._available_at(job, acc_id, now) <= until_at
            ):
                return True
        return False

    def _holds_for_knower(self, w: _Waiter, acc: AccountWorker, now: float) -> bool:
        """Whether ``w`` passes over ``acc`` because it holds out for a knower of its peer
        (see `_hold_for_knower`) and ``acc`` is none."""
        if w.knower_until_at is None or now >= w.knower_until_at:
            return False
        return not self._knows(acc.id, w.job)

    def accounts_changed(self) -> None:
        """Accounts were added, removed, retagged or lanes reconfigured (a reload): recompute
        the start rate, give free accounts to waiting jobs that may now use them, and
        re-judge the rest. O(waiting × one pick)."""
        self._rate = None
        now = trio.current_time()
        for w in list(self._waiters):
            self._try(w, now)
        self._rejudge(None)

    def close(self) -> None:
        """Stop starting new work: jobs still waiting for an account, and any retry, fail
        at once with SHUTTING_DOWN; calls already holding an account run on (the caller
        decides how long, e.g. the daemon's ``shutdown_grace_s``)."""
        if self.closing:
            return
        self.closing = True
        for w in list(self._waiters):
            self._fail(w, self._shutting_down(w.job))

    # -- the timer ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Hand accounts whose cooldown (or proxy cooldown, or a job's backoff) ended to the
        waiting jobs, as each ends. Runs until cancelled, in the pool's nursery."""
        while True:
            with trio.CancelScope(deadline=self._next_alarm_at()) as scope:
                self._alarm = scope
                await trio.sleep_forever()
            self._alarm = None
            self._tick()

    def _next_alarm_at(self, now: float | None = None) -> float:
        """When the timer must next look (trio clock, s): ``inf`` with no job waiting.
        ``now``: the caller's reading of the trio clock (s), if it has one (None: read
        here)."""
        if now is None:
            now = trio.current_time()
        if not self._waiters:  # nobody to serve: forget what already ended
            self.ready.take_returned()
            while self._lane_ends and self._lane_ends[0][0] <= now:
                heapq.heappop(self._lane_ends)
            self._backoffs.clear()
            self._expire_blocks(now)
            return _INF
        if self.ready.has_returned():
            return now
        while self._lane_ends and self._lane_ends[0][2].cooldown_until_at != self._lane_ends[0][0]:
            heapq.heappop(self._lane_ends)  # extended since: a later entry stands for it
        while self._backoffs and self._backoffs[0][2].done:
            heapq.heappop(self._backoffs)
        return min(
            self.ready.next_cooldown_end_at(),
            self._lane_ends[0][0] if self._lane_ends else _INF,
            self._backoffs[0][0] if self._backoffs else _INF,
            self._block_ends[0][0] if self._block_ends else _INF,
        )

    def _rearm(self, now: float | None = None) -> None:
        if self._alarm is not None:
            at = self._next_alarm_at(now)
            if at != self._alarm.deadline:  # most releases leave it at inf: no re-registration
                self._alarm.deadline = at

    def _tick(self) -> None:
        """Serve what became schedulable by now: accounts back from a cooldown, lanes back
        from a proxy cooldown, waiting jobs whose backoff ended."""
        now = trio.current_time()
        for acc in self.ready.take_returned():
            if self._waiters and self.ready.is_free(acc) and acc.schedulable_at() <= now:
                self._offer(acc, now)
        while self._lane_ends and self._lane_ends[0][0] <= now:
            _, _, lane = heapq.heappop(self._lane_ends)
            for acc in self.ready.free_on(lane.key):
                if not self._waiters:
                    break
                if self.ready.is_free(acc) and acc.schedulable_at() <= now:
                    self._offer(acc, now)
        while self._backoffs and self._backoffs[0][0] <= now:
            _, _, w = heapq.heappop(self._backoffs)
            if not w.done:
                self._try(w, now)
        for acc_id in self._expire_blocks(now):
            freed = self._accounts.get(acc_id)
            if freed is not None and self._waiters and self.ready.is_free(freed):
                if freed.schedulable_at() <= now:
                    self._offer(freed, now)

    def _expire_blocks(self, now: float) -> list[str]:
        """Forget the class and chat blocks over by ``now``; the accounts they held, in
        order of their ends. O(ended × classes)."""
        ended: list[str] = []
        while self._block_ends and self._block_ends[0][0] <= now:
            _, _, acc_id = heapq.heappop(self._block_ends)
            for name, blocked in self._blocked.items():
                if blocked.get(acc_id, _INF) <= now:
                    del blocked[acc_id]
                    self._floods.get(acc_id, {}).pop(name, None)
                    self._budget_holds.get(acc_id, {}).pop(name, None)
            for peer_key in [k for k, chat in self._chats.items() if acc_id in chat]:
                chat = self._chats[peer_key]
                if chat[acc_id] <= now:
                    del chat[acc_id]
                    if not chat:
                        del self._chats[peer_key]
            if (acc := self._accounts.get(acc_id)) is not None:
                self.ready.refilter(acc)
            ended.append(acc_id)
        return ended

    # -- acquiring -----------------------------------------------------------------------------

    async def acquire(
        self, job: Job, *, retry_delay_s: float, enforce_deadline: bool = False
    ) -> AccountWorker:
        """Reserve an account for the job's next attempt, waiting FIFO if none is free.

        Args:
            job: The job (its ``avoid`` set names the accounts that already failed it).
            retry_delay_s: Seconds to back off before taking an avoided account again (the
                last verdict's ``retry_delay_s``).
            enforce_deadline: Wait no later than ``job.deadline_at`` (a scope only while
                it waits), else `DeadlinePassed`; False: the caller's scope does it.

        Raises:
            JobFailed: NO_ACCOUNT_AVAILABLE when no account can start before the deadline
                (at once, or later when a cooldown, disable or retire leaves none);
                SHUTTING_DOWN after :meth:`close`.
            BackoffPastDeadline: the backoff before reusing an avoided account would pass
                the deadline.
            DeadlinePassed: ``enforce_deadline`` and the deadline passed while it waited.
        """
        if self.closing:
            raise self._shutting_down(job)
        if job.account is not None and job.account not in self._accounts:
            raise self.no_account(job, _INF)
        if self._waiters or self._block_ends:
            self._tick()  # what ended by now goes to the jobs already waiting first
        w = _Waiter(job, retry_delay_s)
        try:
            acc = self._first_pick(w)
        except BaseException:
            w.done = True  # never queued: a backoff entry of it is stale
            raise
        if acc is not None:
            w.done = True
            return self.reserve(acc)
        self._waiters.append(w)
        self._rearm()
        try:
            if enforce_deadline:
                with trio.move_on_at(job.deadline_at) as scope:
                    await w.event.wait()
                if scope.cancelled_caught and w.account is None and w.failure is None:
                    raise DeadlinePassed
            else:
                await w.event.wait()
        except BaseException:
            if w.account is not None:  # handed an account, then cancelled: pass it on
                self.release(w.account)
            elif not w.done:
                self._remove(w)
            raise
        if w.failure is not None:
            raise w.failure
        assert w.account is not None
        return w.account

    def _first_pick(self, w: _Waiter) -> AccountWorker | None:
        """The account for a job arriving (or retrying) now; None: it must wait.

        Raises:
            JobFailed: NO_ACCOUNT_AVAILABLE, it cannot start before its deadline.
            BackoffPastDeadline: see :meth:`acquire`.
        """
        job = w.job
        now = trio.current_time()
        allowed = self._allowed(w, now)
        if w.failure is not None:
            raise w.failure
        self._hold_for_knower(w, now)
        acc = self._pick(job, allow_avoided=allowed, now=now)
        if acc is not None:
            # a free account, unless it holds out (bounded) for a busy knower of its peer
            return None if self._holds_for_knower(w, acc, now) else acc
        earliest_at = self._earliest_at(job)
        if earliest_at > job.deadline_at:
            raise self.no_account(job, earliest_at)
        if job.on_late is not None and earliest_at > trio.current_time():
            job.on_late(earliest_at, None)
        if self._taken or self.moving:
            # Some account is taken: shed the job now if, even with every proxy starting a
            # call each interval, its turn comes after its deadline.
            turn_at = self._turn_at(job)
            if turn_at > job.deadline_at:
                raise self.no_account(job, turn_at)
        return None

    def _allowed(self, w: _Waiter, now: float) -> bool:
        """Whether the waiter's avoided accounts are eligible now. The first time no untried
        account could start before the deadline, the backoff starts (``w.avoided_from_at``);
        sets ``w.failure`` if it would pass the deadline."""
        job = w.job
        if not job.avoid:
            return True
        if w.avoided_from_at is None:
            if self._earliest_at(job, exclude=job.avoid) <= job.deadline_at:
                return False
            w.avoided_from_at = now + w.retry_delay_s
            if w.retry_delay_s > 0:
                if w.avoided_from_at > job.deadline_at:
                    w.failure = BackoffPastDeadline(w.retry_delay_s)
                    return False
                heapq.heappush(self._backoffs, (w.avoided_from_at, next(self._seq), w))
        return now >= w.avoided_from_at

    def _pick(
        self, job: Job, *, allow_avoided: bool, now: float | None = None
    ) -> AccountWorker | None:
        """A free, schedulable account for ``job`` whose lane can start before its deadline,
        untried ones first, or None. The common job (no pinned account, no tags) is answered
        by the :class:`ReadyIndex` in O(log proxies); pinned or tagged jobs scan. ``now``:
        the caller's reading of the trio clock (s), if it has one (None: read here)."""
        if job.account is None and not job.tags:
            if now is None:
                now = trio.current_time()
            acc = self._pick_indexed(job, job.avoid, now)
            if acc is None and allow_avoided and job.avoid:
                acc = self._pick_indexed(job, (), now)
            return acc
        return self._pick_scan(job, allow_avoided=allow_avoided)

    def _pick_indexed(self, job: Job, avoid: Collection[str], now: float) -> AccountWorker | None:
        if self.route_by_knowledge and job.peer_key is not None:
            exclude = self._exclusion(job, avoid, now)
            knower = self._pick_knower(job, exclude, now)
            if knower is None and self.knower_wait_s > 0:
                # a free knower whose lane starts within the wait beats a look-up now
                knower = self._pick_knower(job, exclude, now, start_now=False)
                if knower is not None and self._knower_start_at(knower, now) > min(
                    now + self.knower_wait_s, job.deadline_at
                ):
                    knower = None
            if knower is not None and knower.lane.earliest_start_at() <= job.deadline_at:
                return knower
        acc = self._best_free(job, avoid, now)
        if acc is None or acc.lane.cooldown_until_at > now:
            return None  # none free, or the soonest lane is a proxy cooling down
        if acc.lane.earliest_start_at() > job.deadline_at:
            return None
        return acc

    def _pick_scan(self, job: Job, *, allow_avoided: bool) -> AccountWorker | None:
        now = trio.current_time()
        best: AccountWorker | None = None
        best_key: tuple[bool, float, float] = (True, _INF, _INF)
        if job.account is not None:
            lanes: Iterable[Iterable[AccountWorker]] = [[self._accounts[job.account]]]
        else:
            lanes = (accs.values() for accs in self._lane_accounts.values())
        for accounts in lanes:
            for acc in accounts:
                if not job.accepts(acc, allow_avoided=allow_avoided):
                    continue
                if acc.busy or acc.id in self.moving or acc.schedulable_at() > now:
                    continue
                if self._blocked_until_at(job, acc.id, now) > now:
                    continue
                avoided = acc.id in job.avoid
                key = (avoided, acc.lane.earliest_start_at(), acc.last_used_at or float("-inf"))
                if key < best_key:
                    best, best_key = acc, key
                if not avoided:
                    break  # later accounts of this lane were used more recently
        if best is not None and best_key[1] > job.deadline_at:
            best = None
        return best

    # -- when could a job start ----------------------------------------------------------------

    def earliest_start_at(self, job: Job) -> float:
        """A lower bound of when an account ``job`` may use (pin, tags, its rate classes and
        chat) could start its call, busy accounts included (trio clock, s; ``inf``: none
        ever). Read-only: what a job arriving now is judged by before it waits (its
        NO_ACCOUNT_AVAILABLE when past its deadline: `no_account`); the pool asks it for a
        member joining a shared flight."""
        return self._earliest_at(job)

    def _start_bound_at(self, acc: AccountWorker, now: float) -> float:
        """A lower bound of when ``acc`` could start a call (trio clock, s), busy or not."""
        if acc.out_of_service:
            return _INF
        if acc.id in self.moving:  # its lane may change: only its own cooldown is known
            return max(now, acc.cooldown_until_at)
        if acc.busy:
            return max(now, acc.schedulable_at())
        return max(now, acc.ready_at())

    def _earliest_at(self, job: Job, exclude: Collection[str] = ()) -> float:
        """A lower bound of when an account the job may use (pin, tags; not in ``exclude``)
        could start its call, busy accounts included (trio clock, s; ``inf``: none ever).

        O(log proxies + len(exclude) × log accounts + taken accounts until one could start
        now) for the common job; O(1) pinned; O(accounts) tagged.
        """
        now = trio.current_time()
        if job.account is not None:
            acc = self._accounts.get(job.account)
            if acc is None or acc.id in exclude or not job.tags <= acc.tags:
                return _INF
            return max(self._start_bound_at(acc, now), self._blocked_until_at(job, acc.id, now))
        if job.tags:
            earliest_at = _INF
            for acc in self._accounts.values():
                if acc.id in exclude or not job.tags <= acc.tags:
                    continue
                bound_at = max(
                    self._start_bound_at(acc, now), self._blocked_until_at(job, acc.id, now)
                )
                earliest_at = min(earliest_at, bound_at)
                if earliest_at <= now:
                    break
            return earliest_at
        avoid = exclude
        exclude = self._exclusion(job, avoid, now)
        earliest_at = self.ready.next_cooldown_end_at(exclude)
        free = self._best_free(job, avoid, now)
        if free is not None:
            earliest_at = min(
                earliest_at, max(now, self.ready.start_bound_at(free.lane), free.ready_at())
            )
        for group in (self._taken, self.moving):
            if earliest_at <= now:
                break
            for acc_id in group:
                if acc_id in exclude:
                    continue
                acc = self._accounts.get(acc_id)
                if acc is not None:
                    earliest_at = min(earliest_at, self._start_bound_at(acc, now))
                    if earliest_at <= now:
                        break
        # the accounts held back by class or chat blocks, busy ones included: walked only
        # until their block ends pass what was found
        return (
            self._blocks_bound_at(job, avoid, now, earliest_at)
            if earliest_at > now
            else earliest_at
        )

    def _turn_at(self, job: Job) -> float:
        """A lower bound of when a job queued now could start (trio clock, seconds).

        The jobs waiting ahead of it each need a start; lanes start at most one call per
        ``interval_s``. Pinned jobs count the waiters pinned to the same account and that
        account's lane alone. ``-inf`` when some matching lane is ungated (interval 0) or
        the job is restricted by tags (no cheap bound).
        """
        if job.tags:
            return float("-inf")
        if job.account is not None:
            ahead = sum(1 for w in self._waiters if w.job.account == job.account)
            interval_s = self._accounts[job.account].lane.interval_s
            return trio.current_time() + (ahead + 1) * interval_s
        rate = self._start_rate()
        if rate == _INF:
            return float("-inf")
        return trio.current_time() + (len(self._waiters) + 1) / rate

    def _start_rate(self) -> float:
        """Calls per second all lanes with a usable account can start, at most (cached)."""
        if self._rate is None:
            rate = 0.0
            usable = {a.lane.key for a in self._accounts.values() if not a.out_of_service}
            for key in usable:
                interval_s = self._lanes[key].interval_s
                rate += _INF if interval_s <= 0 else 1.0 / interval_s
            self._rate = rate
        return self._rate

    # -- serving and answering waiting jobs ------------------------------------------------------

    def _make_available(self, acc: AccountWorker) -> None:
        """``acc`` may take a call again: the first waiting job that may use it gets it, else
        it goes back to the ready index."""
        if acc.busy or acc.id in self.moving or acc.out_of_service:
            return
        now = trio.current_time()
        if self._waiters and acc.schedulable_at() <= now and self._offer(acc, now):
            self._rearm()  # a job that held out for a knower waits on the timer
            return
        self.ready.mark_free(acc, now=now)
        self._rearm(now)

    def _offer(self, acc: AccountWorker, now: float) -> bool:
        """Hand ``acc`` (free, schedulable now) to the first waiting job that may use it.

        O(position of that job); a job that avoids ``acc`` takes it only once it is eligible
        again (:meth:`_allowed`), and takes a free untried account instead if one is (several
        accounts become free at once when a proxy cooldown ends).
        """
        failed: list[_Waiter] = []
        handed = False
        untried: tuple[_Waiter, AccountWorker] | None = None
        for w in self._waiters:
            if not w.job.accepts(acc, allow_avoided=True):
                continue
            if self._needs(w.job) and self._blocked_until_at(w.job, acc.id, now) > now:
                continue
            if self._holds_for_knower(w, acc, now):
                continue
            if acc.id in w.job.avoid:
                if not self._allowed(w, now):
                    if w.failure is not None:
                        failed.append(w)
                    continue
                alt = self._pick_for(w, now, allow_avoided=False)
                if alt is not None:  # it still prefers an untried account free now
                    untried = (w, alt)
                    break
            if acc.lane.earliest_start_at() > w.job.deadline_at:
                continue
            self._hand(w, acc)
            handed = True
            break
        for w in failed:
            self._fail(w, w.failure)
        if untried is not None:
            self._hand(*untried)
            return self._offer(acc, now)  # bounded: each round hands out one account
        return handed

    def _try(self, w: _Waiter, now: float) -> None:
        """Pick for one waiting job now; hand it the account if there is one."""
        if w.done:
            return
        allowed = self._allowed(w, now)
        if w.failure is not None:
            self._fail(w, w.failure)
            return
        acc = self._pick_for(w, now, allow_avoided=allowed)
        if acc is not None:
            self._hand(w, acc)

    def _pick_for(self, w: _Waiter, now: float, *, allow_avoided: bool) -> AccountWorker | None:
        """`_pick` for a waiter, None while it holds out for a busy knower of its peer."""
        acc = self._pick(w.job, allow_avoided=allow_avoided)
        if acc is not None and self._holds_for_knower(w, acc, now):
            return None
        return acc

    def _rejudge(self, lead: str | None) -> None:
        """Accounts were taken away: answer every waiting job that can no longer start before
        its deadline (NO_ACCOUNT_AVAILABLE, with ``lead`` saying why), let a job whose
        untried accounts are all gone take its avoided ones (after its backoff), and one
        holding out for a knower that went (cooling, disabled) take another account now.

        O(waiting) with one lower bound per group of jobs (common / per pinned account / per
        tag set), plus O(log) per job with avoided accounts and O(`MAX_KNOWERS_SCANNED`) per
        job holding out for a knower.
        """
        if not self._waiters:
            return
        now = trio.current_time()
        bounds: dict[object, float] = {}
        for w in list(self._waiters):
            job = w.job
            until = w.knower_until_at
            if until is not None and until > now and not self._busy_knower(job, now, until):
                w.knower_until_at = None  # the knower it held out for went (cooling, disabled)
                self._try(w, now)
                if w.done:
                    continue
            if job.avoid and w.avoided_from_at is None:
                self._try(w, now)  # its untried accounts may be gone: maybe take an avoided one
                if w.done:
                    continue
            key: object = ("pin", job.account) if job.account is not None else job.tags
            if self._needs(job):
                key = (key, job.rate_classes, job.lookup_class, job.peer_key)
            earliest_at = bounds.get(key)
            if earliest_at is None:
                earliest_at = bounds[key] = self._earliest_at(job)
            if earliest_at > job.deadline_at:
                self._fail(w, self.no_account(job, earliest_at, lead=lead))
            elif job.on_late is not None and earliest_at > now:
                job.on_late(earliest_at, lead)
        self._rearm()

    def _hand(self, w: _Waiter, acc: AccountWorker) -> None:
        self._remove(w)
        w.account = self.reserve(acc)
        w.event.set()

    def _fail(self, w: _Waiter, failure: BaseException | None) -> None:
        self._remove(w)
        w.failure = failure
        w.event.set()

    def _remove(self, w: _Waiter) -> None:
        if not w.done:
            w.done = True
            try:
                self._waiters.remove(w)
            except ValueError:
                pass  # not queued yet (answered during its own first pick)

    # -- answers -----------------------------------------------------------------------------

    def _shutting_down(self, job: Job) -> JobFailed:
        return JobFailed(
            ErrorClass.SHUTTING_DOWN,
            "the pool is shutting down",
            account=job.last_account,
            attempts=job.attempts,
        )

    def no_account(self, job: Job, earliest_at: float, *, lead: str | None = None) -> JobFailed:
        """The NO_ACCOUNT_AVAILABLE failure for ``job``: with ``retry_after_s`` (seconds until
        ``earliest_at``, trio clock) when one could start later, else saying why none ever will.

        Args:
            lead: Why, when a change of state (a cooldown, a disable) caused it, e.g.
                ``"every account it may use is cooling down (STREAM_CLOSED: ...)"``.
        """
        now = trio.current_time()
        if earliest_at == _INF:
            return JobFailed(
                ErrorClass.NO_ACCOUNT_AVAILABLE,
                self._why_no_account(job),
                account=job.last_account,
                attempts=job.attempts,
            )
        wait_s = max(0.0, earliest_at - now)
        lead = lead or "no account can start this job before its deadline"
        return JobFailed(
            ErrorClass.NO_ACCOUNT_AVAILABLE,
            f"{lead}; one could in {wait_s:.1f} s",
            retry_after_s=wait_s,
            account=job.last_account,
            attempts=job.attempts,
        )

    def _why_no_account(self, job: Job) -> str:
        """Say why no account will ever serve ``job`` (pinned, tags, or all disabled)."""
        if job.account is not None:
            acc = self._accounts.get(job.account)
            if acc is None or acc.retired:
                return f'account "{job.account}" was removed from the config'
            if acc.disabled_reason is not None:
                return f'account "{job.account}" is disabled: {acc.disabled_reason}'
            if acc.remote_reason is not None:
                return f'account "{job.account}" is not held by this node: {acc.remote_reason}'
        if job.tags and not any(job.tags <= a.tags for a in self._accounts.values()):
            return "no account has all the tags " + ", ".join(sorted(job.tags))
        remote = [
            a.remote_reason
            for a in self._accounts.values()
            if a.remote_reason is not None
            and a.disabled_reason is None
            and not a.retired
            and job.tags <= a.tags
        ]
        if remote:
            # cluster mode: the accounts are another node's, or their leases are unconfirmed
            return f"no account it may use is held by this node ({remote[0]})"
        return "no account can serve this job: every matching account is disabled"


@final
class _Excluded(Collection[str]):
    """Accounts a pick for one job leaves out: its ``avoid`` set, and those whose rate-class
    or chat blocks hold them back from it (judged on membership, O(classes of the job))."""

    def __init__(self, d: Dispatcher, job: Job, avoid: Collection[str], now: float) -> None:
        self._d, self._job, self._avoid, self._now = d, job, avoid, now

    def __contains__(self, item: object) -> bool:
        if item in self._avoid:
            return True
        if not isinstance(item, str):
            return False
        return self._d._blocked_until_at(self._job, item, self._now) > self._now

    def __iter__(self) -> Iterator[str]:
        return iter(self._avoid)  # the blocked ones are judged on membership only

    def __len__(self) -> int:
        return len(self._avoid)
