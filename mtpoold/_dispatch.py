"""The scheduler: which account serves a job's next attempt, and who waits for one."""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import final

import attrs
import trio

from ._account import AccountWorker
from ._errors import ErrorClass, JobFailed
from ._lane import ProxyLane
from ._ready import ReadyIndex


@attrs.define(eq=False)
class Job:
    """The scheduler's view of one job.

    Attributes:
        method: What the job calls, for log lines (a TL name, ``resolve``, ``get_messages``).
        deadline: When the job must be answered, trio clock seconds.
        account: The pinned account id, or None.
        tags: Tags an account must all carry to serve the job.
        started: When the job was accepted, trio clock seconds.
        avoid: Accounts that already failed this job (tried last, after a backoff).
        attempts: Calls made so far.
        last_account: The account of the last attempt.
    """

    method: str
    deadline: float  # trio clock, s
    account: str | None
    tags: frozenset[str]
    started: float
    avoid: set[str] = attrs.field(factory=set)
    attempts: int = 0
    last_account: str | None = None

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
    job: Job
    allow_avoided: bool
    event: trio.Event = attrs.field(factory=trio.Event)
    account: AccountWorker | None = None


@final
class Dispatcher:
    """Chooses accounts for jobs and keeps the waiting ones in order.

    Among accounts that are free, not cooling down (nor their proxy), not disabled, and
    matching the job's pinned account and tags, it prefers the one whose proxy lane can start
    soonest, then the least recently used (answered by the :class:`ReadyIndex` in O(log
    proxies); pinned or tagged jobs scan). A job that cannot start before its deadline —
    every candidate cooling down past it, the gate's queue too long, or its turn among the
    waiting jobs too late — fails at once with ``NO_ACCOUNT_AVAILABLE`` and the seconds until
    one could (``retry_after_s``); otherwise it waits, first in first served, until an account
    is released (handed over directly by :meth:`release`) or a cooldown ends.

    The dicts are the pool's own (shared, not copied): the pool adds and removes accounts
    and lanes; the dispatcher only reads them.

    Args:
        accounts: Account id -> worker.
        lanes: Lane key -> lane.
        lane_accounts: Lane key -> its accounts, least recently used first.
    """

    def __init__(
        self,
        accounts: dict[str, AccountWorker],
        lanes: dict[str, ProxyLane],
        lane_accounts: dict[str, collections.OrderedDict[str, AccountWorker]],
    ) -> None:
        self._accounts = accounts
        self._lanes = lanes
        self._lane_accounts = lane_accounts
        self.ready = ReadyIndex()
        self._waiters: collections.deque[_Waiter] = collections.deque()
        #: Accounts out of scheduling while a reload moves them to new settings.
        self.moving: set[str] = set()
        self._rate: float | None = None  # see _start_rate
        #: Set by :meth:`close`: no new work starts.
        self.closing = False

    def __repr__(self) -> str:
        return f"<Dispatcher waiting={len(self._waiters)} {self.ready!r}>"

    @property
    def waiting(self) -> int:
        """Jobs waiting for an account."""
        return len(self._waiters)

    def accounts_changed(self) -> None:
        """Accounts were added, removed, disabled or enabled: recompute the start rate and
        let every waiting job pick again."""
        self._rate = None
        self.wake_waiters()

    def _pick(self, job: Job, *, allow_avoided: bool) -> tuple[AccountWorker | None, float, bool]:
        """Choose an account for ``job`` now.

        Returns ``(account or None, earliest time a free candidate becomes schedulable, whether
        a busy candidate exists)``. The common job (no pinned account, no tags) is answered
        by the :class:`ReadyIndex` in O(log proxies); pinned or tagged jobs scan.
        """
        if job.account is None and not job.tags:
            return self._pick_indexed(job, allow_avoided=allow_avoided)
        return self._pick_scan(job, allow_avoided=allow_avoided)

    def _pick_indexed(
        self, job: Job, *, allow_avoided: bool
    ) -> tuple[AccountWorker | None, float, bool]:
        now = trio.current_time()
        any_busy = self.ready.assigned > 0 or bool(self.moving)
        acc = self.ready.best(() if allow_avoided else job.avoid)
        earliest = self.ready.next_cooldown_end()
        if acc is None:
            return None, earliest, any_busy
        if acc.lane.cooldown_until > now:  # the soonest lane is a proxy cooling down
            return None, min(earliest, acc.lane.cooldown_until), any_busy
        start = acc.lane.earliest_start()
        if start > job.deadline:
            return None, min(earliest, start), any_busy
        return acc, earliest, any_busy

    def _pick_scan(
        self, job: Job, *, allow_avoided: bool
    ) -> tuple[AccountWorker | None, float, bool]:
        now = trio.current_time()
        best: AccountWorker | None = None
        best_key: tuple[float, float] = (float("inf"), float("inf"))
        earliest = float("inf")
        any_busy = False
        if job.account is not None:
            lanes: Iterable[Iterable[AccountWorker]] = [[self._accounts[job.account]]]
        else:
            lanes = (accs.values() for accs in self._lane_accounts.values())
        for accounts in lanes:
            for acc in accounts:
                if not job.accepts(acc, allow_avoided=allow_avoided):
                    continue
                at = acc.schedulable_at()
                if at == float("inf"):
                    continue
                if acc.busy or acc.id in self.moving:
                    any_busy = True
                    continue
                if at > now:
                    earliest = min(earliest, at)
                    continue
                key = (acc.lane.earliest_start(), acc.last_used or float("-inf"))
                if key < best_key:
                    best, best_key = acc, key
                break  # later accounts of this lane were used more recently
        if best is not None and best_key[0] > job.deadline:
            earliest = min(earliest, best_key[0])
            best = None
        return best, earliest, any_busy

    def reserve(self, acc: AccountWorker) -> AccountWorker:
        """Take ``acc`` for a job's attempt: out of the free set, most recently used; the pool
        gives it back with ``ready.unassign`` and :meth:`release` after the attempt."""
        acc.reserved = True
        self._lane_accounts[acc.lane.key].move_to_end(acc.id)
        self.ready.assign(acc)
        return acc

    async def acquire(self, job: Job, *, retry_delay: float) -> AccountWorker:
        """Reserve an account for the job's next attempt, waiting FIFO if none is free.

        Raises:
            JobFailed: NO_ACCOUNT_AVAILABLE when no account can start before the deadline.
        """
        allow_avoided = False
        while True:
            if self.closing:
                raise JobFailed(
                    ErrorClass.SHUTTING_DOWN,
                    "the pool is shutting down",
                    account=job.last_account,
                    attempts=job.attempts,
                )
            if job.account is not None and job.account not in self._accounts:
                raise self.no_account(job, float("inf"))
            acc, earliest, any_busy = self._pick(job, allow_avoided=allow_avoided)
            if acc is not None:
                return self.reserve(acc)
            if not any_busy and earliest == float("inf") and not allow_avoided and job.avoid:
                # Only accounts that already failed this job are left: back off, then reuse.
                allow_avoided = True
                if retry_delay > 0:
                    if trio.current_time() + retry_delay > job.deadline:
                        raise BackoffPastDeadline(retry_delay)
                    await trio.sleep(retry_delay)
                continue
            if not any_busy and earliest > job.deadline:
                raise self.no_account(job, earliest)
            if any_busy:
                # Every matching account is taken: shed the job now if, even with every
                # proxy starting a call each interval, its turn comes after its deadline.
                turn = self._turn_estimate(job)
                if turn > job.deadline:
                    raise self.no_account(job, turn)
            waiter = _Waiter(job, allow_avoided)
            self._waiters.append(waiter)
            try:
                with trio.move_on_at(earliest):
                    await waiter.event.wait()
            except BaseException:
                if waiter.account is None:
                    self._waiters.remove(waiter)
                else:  # handed an account, then cancelled: pass it on
                    waiter.account.reserved = False
                    self.ready.unassign(waiter.account, waiter.account.lane)
                    self.release(waiter.account)
                raise
            if waiter.account is not None:
                return waiter.account
            self._waiters.remove(waiter)  # a cooldown ended: pick again

    def _turn_estimate(self, job: Job) -> float:
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
            interval = self._accounts[job.account].lane.interval_s
            return trio.current_time() + (ahead + 1) * interval
        rate = self._start_rate()
        if rate == float("inf"):
            return float("-inf")
        return trio.current_time() + (len(self._waiters) + 1) / rate

    def _start_rate(self) -> float:
        """Calls per second all lanes with a usable account can start, at most (cached)."""
        if self._rate is None:
            rate = 0.0
            usable = {
                a.lane.key
                for a in self._accounts.values()
                if a.disabled_reason is None and not a.retired
            }
            for key in usable:
                interval = self._lanes[key].interval_s
                rate += float("inf") if interval <= 0 else 1.0 / interval
            self._rate = rate
        return self._rate

    def no_account(self, job: Job, earliest: float) -> JobFailed:
        """The NO_ACCOUNT_AVAILABLE failure for ``job``: with ``retry_after_s`` (seconds until
        ``earliest``, trio clock) when one could start later, else saying why none ever will."""
        now = trio.current_time()
        if earliest == float("inf"):
            return JobFailed(
                ErrorClass.NO_ACCOUNT_AVAILABLE,
                self._why_no_account(job),
                account=job.last_account,
                attempts=job.attempts,
            )
        wait = max(0.0, earliest - now)
        return JobFailed(
            ErrorClass.NO_ACCOUNT_AVAILABLE,
            f"no account can start this job before its deadline; one could in {wait:.1f} s",
            retry_after_s=wait,
            account=job.last_account,
            attempts=job.attempts,
        )

    def wake_waiters(self) -> None:
        """Make every waiting job pick again (the set of accounts changed, or shutdown)."""
        for waiter in self._waiters:
            waiter.event.set()

    def close(self) -> None:
        """Stop starting new work: jobs still waiting for an account, and any retry, fail
        at once with SHUTTING_DOWN; calls already holding an account run on (the caller
        decides how long, e.g. the daemon's ``shutdown_grace_s``)."""
        if not self.closing:
            self.closing = True
            self.wake_waiters()

    def _why_no_account(self, job: Job) -> str:
        """Say why no account will ever serve ``job`` (pinned, tags, or all disabled)."""
        if job.account is not None:
            acc = self._accounts.get(job.account)
            if acc is None or acc.retired:
                return f'account "{job.account}" was removed from the config'
            if acc.disabled_reason is not None:
                return f'account "{job.account}" is disabled: {acc.disabled_reason}'
        if job.tags and not any(job.tags <= a.tags for a in self._accounts.values()):
            return "no account has all the tags " + ", ".join(sorted(job.tags))
        return "no account can serve this job: every matching account is disabled"

    def release(self, acc: AccountWorker) -> None:
        """An account became free: hand it to the first waiting job that accepts it, or put
        it back in the ready index (which parks it if it is cooling down)."""
        if acc.busy or acc.id in self.moving:
            return
        if acc.schedulable_at() <= trio.current_time():
            for waiter in self._waiters:
                if waiter.job.accepts(acc, allow_avoided=waiter.allow_avoided):
                    self._waiters.remove(waiter)
                    waiter.account = self.reserve(acc)
                    waiter.event.set()
                    return
        self.ready.mark_free(acc)
