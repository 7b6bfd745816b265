"""The pool's registry of jobs in flight, and where each one is (``mtpoold jobs``).

A job is registered while the pool works on it (`Pool.invoke`, `Pool.resolve`,
`Pool.get_messages`, from acceptance to its answer) under a job number, and its attempts
note each hop in its `JobProgress`: waiting for an account (the dispatcher), for a capacity
token of its lane, for its start slot at the lane's rate gate, connecting, in the call. No
task per job and no lock: the hops are plain attribute writes, and what the job waits for is
worked out only when someone asks (`mtpoold._pool.Pool.jobs`).

Nothing here holds a job's arguments: a `JobStatistics` names the method, its rate classes
and accounts, never peers, message text or phone numbers.
"""

from __future__ import annotations

import contextvars
import enum
import itertools
from collections.abc import Iterator
from typing import Any, Final, final

import attrs

__all__ = [
    "JOB_ORIGIN",
    "JobEntry",
    "JobPhase",
    "JobProgress",
    "JobRegistry",
    "JobStatistics",
]


class _Keep(enum.Enum):
    """`JobProgress.enter`'s default: leave the attribute as it is."""

    KEEP = enum.auto()


_KEEP: Final = _Keep.KEEP


class JobPhase(enum.StrEnum):
    """Where a job in flight is (a string on the wire: ``"waiting_account"``, ...)."""

    #: The dispatcher has no account for it yet (all busy, cooling, out of budget, ...).
    WAITING_ACCOUNT = "waiting_account"
    #: It failed on every account it may use and backs off before taking one again.
    BACKOFF = "backoff"
    #: It has an account and waits for a capacity token of the account's lane.
    WAITING_LANE_CAPACITY = "waiting_lane_capacity"
    #: It holds a capacity token and waits in the lane's FIFO rate gate for its start slot.
    WAITING_GATE = "waiting_gate"
    #: Its account connects (TCP, proxy handshake, auth key) before the call.
    CONNECTING = "connecting"
    #: Its request is out on the account's connection.
    IN_CALL = "in_call"
    #: It rides in an identical (or merged) job's flight that has not started yet.
    SHARED = "shared"


@attrs.define(eq=False)
class JobProgress:
    """The last hop of one job's attempts, written by the pool, the account worker, the lane
    and the gate (`enter`) and read by `mtpoold._pool.Pool.jobs`.

    Attributes:
        phase: Where it is.
        since_at: When it got there, trio clock seconds.
        account: The account of the current attempt, or None.
        lane: The lane (`mtpoold._lane.ProxyLane`) of the current attempt, or None.
        turn: While `JobPhase.WAITING_GATE`: its place in the gate's queue (the gate's own
            token, `mtpoold._gate.RateGate.eta`), else None.
    """

    phase: JobPhase = JobPhase.WAITING_ACCOUNT
    since_at: float = 0.0
    account: str | None = None
    lane: Any = None
    turn: object | None = None

    def enter(
        self,
        phase: JobPhase,
        now: float,
        *,
        account: str | None | _Keep = _KEEP,
        lane: Any = _KEEP,
        turn: object | None = None,
    ) -> None:
        """Note that the job reached ``phase`` at ``now`` (trio clock, s); ``account`` and
        ``lane`` are set when given (kept otherwise), ``turn`` is cleared unless given."""
        self.phase = phase
        self.since_at = now
        self.turn = turn
        if not isinstance(account, _Keep):
            self.account = account
        if lane is not _KEEP:
            self.lane = lane


#: ``(connection, JSON-RPC id)`` of the request a job serves, set by the server in the task
#: that runs the request; None for jobs of Python callers.
JOB_ORIGIN: Final[contextvars.ContextVar[tuple[str, str | int] | None]] = contextvars.ContextVar(
    "mtpoold_job_origin", default=None
)


@attrs.define(eq=False)
class JobEntry:
    """One job in the registry.

    Attributes:
        number: The pool's job number (1, 2, ... since the pool opened).
        method: What it calls (a TL name, ``resolve``, ``get_messages``).
        started_at: When it was accepted, trio clock seconds.
        deadline_at: When it must be answered, trio clock seconds.
        origin: `JOB_ORIGIN` when it was accepted.
        job: The dispatcher's job (`mtpoold._dispatch.Job`) whose attempts serve it, or None
            while it rides in a flight (``flight``).
        flight: The flight (`mtpoold._share.Flight`) it shares, or None.
    """

    number: int
    method: str
    started_at: float
    deadline_at: float
    origin: tuple[str, str | int] | None = None
    job: Any = None
    flight: Any = None


@attrs.define(eq=False)
class JobRegistry:
    """Jobs in flight by job number: `track` adds one for the duration of a ``with``.

    Cost: O(1) per job; `entries` is a view, in the order the jobs were accepted.
    """

    _entries: dict[int, JobEntry] = attrs.field(factory=dict)
    _numbers: Iterator[int] = attrs.field(factory=lambda: itertools.count(1))

    def track(
        self,
        method: str,
        started_at: float,
        deadline_at: float,
        *,
        job: Any = None,
        flight: Any = None,
    ) -> _Tracked:
        """Register a job (times on the trio clock, s) until the ``with`` block exits; the
        block gets its `JobEntry`. A plain context manager, not a generator's: it is entered
        once per job."""
        return _Tracked(self._entries, self._entry(method, started_at, deadline_at, job, flight))

    def add(
        self,
        method: str,
        started_at: float,
        deadline_at: float,
        *,
        job: Any = None,
        flight: Any = None,
    ) -> JobEntry:
        """Register a job now, as `track` does, until `remove` (for a caller that is its own
        context manager: one object less per job)."""
        entry = self._entry(method, started_at, deadline_at, job, flight)
        self._entries[entry.number] = entry
        return entry

    def remove(self, entry: JobEntry) -> None:
        """The job `add` registered is answered."""
        del self._entries[entry.number]

    def _entry(
        self, method: str, started_at: float, deadline_at: float, job: Any, flight: Any
    ) -> JobEntry:
        return JobEntry(
            number=next(self._numbers),
            method=method,
            started_at=started_at,
            deadline_at=deadline_at,
            origin=JOB_ORIGIN.get(),
            job=job,
            flight=flight,
        )

    def entries(self) -> list[JobEntry]:
        """The jobs in flight, oldest first."""
        return list(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)


@attrs.frozen(kw_only=True)
class JobStatistics:
    """One job in flight, as ``Pool.jobs`` and the ``jobs`` method show it.

    Attributes:
        job: The pool's job number.
        connection: The websocket connection (its remote address) of the request, or None.
        rpc_id: The request's JSON-RPC id on that connection, or None.
        method: What it calls (a TL name, ``resolve``, ``get_messages``); never arguments.
        rate_classes: The rate classes its calls need.
        age_s: Seconds since it was accepted.
        deadline_left_s: Seconds until its deadline (>= 0).
        attempts: Calls made so far.
        account: The account of its current (or last) attempt, or None.
        shared: Whether its flight (one Telegram job) serves other jobs too (identical or
            merged); a read-only job alone in its flight is not shared.
        state: One `JobPhase` value.
        waiting_for: What it waits for, by ``state``: ``waiting_account``: ``why`` (one
            line: all busy, cooling until ..., budget, class cooldown, knower hold) and
            ``position`` among the waiting jobs (1-based) and ``until_s`` (seconds until an
            account could start it, when known); ``backoff``: ``until_s``;
            ``waiting_lane_capacity``: ``lane``, ``in_flight``, ``capacity``;
            ``waiting_gate``: ``lane``, ``position`` (1-based) in its FIFO gate,
            ``slot_in_ms`` until its start slot (an estimate for those behind the head);
            ``connecting`` / ``in_call``: ``account``, ``lane``, ``elapsed_ms``;
            ``shared``: what the flight waits for.
    """

    job: int
    connection: str | None
    rpc_id: str | int | None
    method: str
    rate_classes: tuple[str, ...]
    age_s: float
    deadline_left_s: float
    attempts: int
    account: str | None
    shared: bool
    state: JobPhase
    waiting_for: dict[str, Any]


@final
class _Tracked:
    """`JobRegistry.track`'s context manager: the entry is in the registry while inside."""

    __slots__ = ("_entries", "_entry")

    def __init__(self, entries: dict[int, JobEntry], entry: JobEntry) -> None:
        self._entries, self._entry = entries, entry

    def __enter__(self) -> JobEntry:
        self._entries[self._entry.number] = self._entry
        return self._entry

    def __exit__(self, *exc: object) -> None:
        del self._entries[self._entry.number]
