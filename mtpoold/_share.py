"""Shared and merged work: identical read-only jobs in flight share one Telegram call,
``get_messages`` jobs for the same chat ride in one call, and answers up to ``max_age_s`` old
come from a bounded cache. Plain Python, part of the scheduling core (no Telethon).

Only jobs `mtpoold._readonly.is_read_only` accepts come here (the pool's front decides).

A **flight** is one Telegram job (with its retries) that one or more **members** — accepted
jobs, each with its own deadline — wait for. A job that finds nothing to join (no identical
job in flight; no open ``get_messages`` batch to ride in) leads a **local** flight
(`Flights.start_local`): its own task runs the job, as an unshared job's would, with no task or
wait of the flight's, and identical jobs may join it; how leader and members part (the
leader cancelled, its deadline passed, no account in time for it) is `mtpoold._pool.Pool._lead`'s.
Any other flight — a ``get_messages`` batch that takes other ids, a local flight handed over
(`Flights.hand_over`) — runs in a task of the pool's nursery, never in a member's task, so a
member that goes away (cancelled, its deadline passed) leaves the others answered; when the
last member leaves the flight is cancelled (and that member waits, at most
`FLIGHT_UNWIND_S`, for the call to unwind, as a job in its own task does). Such a flight's
deadline is the latest of its members' deadlines, moved as members come and go. A call already
on the wire keeps the call deadline it started with (the pool clips it to the job deadline of
that moment): cut at an earlier member's deadline, it is retried for the members left, as their
own jobs would have been — never more calls than without sharing. Every member gets exactly one
answer: the flight's value (a ``get_messages`` member: exactly its own ids), or a copy of the
flight's failure, or its own DEADLINE_EXCEEDED, or — when no account can start the flight's call
before its own deadline — NO_ACCOUNT_AVAILABLE at once, as its own job would have been answered
(judged when it joins, `mtpoold._dispatch.Dispatcher.earliest_start`, and whenever the
flight's job waits for an account or is re-judged, `Flights.shed`).

Members join a flight in flight when their **identical key** matches (same kind, function,
canonical JSON arguments and constraints: pinned account, tags), or — ``get_messages`` with a
peer key — when their **merge key** (same chat and constraints) matches a batch that is still
open and has room (at most `MERGE_MAX_IDS` ids in all). A batch closes when its call is put on
the wire (the account was handed to it, connected, and its lane's gate let it start); a job
arriving later starts the next batch. A retry of a closed batch asks for the ids of the members
still waiting, and takes no new ones.
"""

from __future__ import annotations

import collections
import json
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Final, Literal, Protocol, final

import attrs
import trio

from ._errors import ErrorClass, Failure, JobFailed
from ._logformat import log_event

__all__ = [
    "CACHE_MAX_BYTES",
    "CACHE_MAX_ENTRIES",
    "CACHE_MAX_ENTRY_BYTES",
    "MERGE_MAX_IDS",
    "Answer",
    "AnswerCache",
    "Flight",
    "Flights",
    "Member",
    "check_max_age",
    "identical_key",
    "project",
]

log = logging.getLogger("mtpoold.share")

#: Message ids one merged ``get_messages`` call asks for at most: channels.getMessages and
#: messages.getMessages take up to 100 (as `mtpoold._methods.MAX_MESSAGE_IDS`, one job's limit).
MERGE_MAX_IDS: Final = 100
#: Seconds the last member of a flight, leaving (cancelled, or its deadline passed), waits for
#: the cancelled call to unwind — as a job running in its own task would: a cancelled call's
#: asyncio side takes up to `mtpoold._aiobridge.AIO_CANCEL_WAIT_S` (1 s), dropping the
#: connection up to `mtpoold._account.DISCONNECT_TIMEOUT_S` (5 s) more.
FLIGHT_UNWIND_S: Final = 6.0
#: Answers the cache keeps at most. The order-check workload (issue 12: 1,000 jobs over 100
#: channels) has ~200 distinct keys (a ``resolve`` per channel, ``get_messages`` per channel
#: and ids); 4,096 holds twenty times that while a full scan of it stays well under 1 ms.
CACHE_MAX_ENTRIES: Final = 4096
#: Bytes of JSON the cache keeps at most (32 MiB): a ``resolve`` answer is ~300 B, a
#: one-message ``get_messages`` ~400 B, so 4,096 typical entries take ~2 MiB; the byte bound
#: only matters for large answers (100 long messages ≈ 0.5 MB) and keeps a daemon's memory
#: predictable whatever callers ask for.
CACHE_MAX_BYTES: Final = 32 * 2**20
#: An answer larger than this (1 MiB of JSON) is not cached (it would push out hundreds of
#: ordinary ones).
CACHE_MAX_ENTRY_BYTES: Final = 2**20


#: One encoder for every key and cached answer (``json.dumps`` with options builds one per
#: call: a third of a key's cost).
_ENCODER: Final = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)


def _c_encoder() -> Callable[[object], str] | None:
    """The C encoder `_ENCODER.encode` builds anew on every call, built once (no circular
    check: a cycle ends in RecursionError, as an over-deep value does), or None where this
    Python's ``_json`` takes other arguments (checked against `_ENCODER` on a sample)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    try:
        chunks = make(
            None, _ENCODER.default, json.encoder.encode_basestring_ascii, None,
            ":", ",", True, False, False,
        )  # fmt: skip
        sample: list[object] = ["k", {"b": [1, 2.5, None, True], "a": "é\n"}, None, []]

        def encode(value: object) -> str:
            return "".join(chunks(value, 0))

        if encode(sample) != _ENCODER.encode(sample):
            return None
        encode(math.nan)  # must refuse NaN, as `_ENCODER` does
    except ValueError:
        return encode
    except Exception:  # noqa: BLE001 - another Python's _json: the plain encoder serves
        return None
    return None


_ENCODE: Final = _c_encoder() or _ENCODER.encode


def _canonical(value: object) -> str | None:
    """Canonical JSON (sorted keys, no spaces), or None if ``value`` is not JSON."""
    try:
        return _ENCODE(value)
    except (TypeError, ValueError, RecursionError):
        return None


def identical_key(kind: str, what: object, account: str | None, tags: Iterable[str]) -> str | None:
    """The key identical jobs share: kind, what is asked (canonical JSON) and constraints.

    Args:
        kind: ``"invoke"``, ``"resolve"`` or ``"get_messages"``.
        what: JSON value naming the request (``[tl_key, args]``, a peer key, ``[peer key,
            sorted ids]``).
        account: The pinned account, or None.
        tags: Tags the serving account must carry (order does not matter).

    Returns:
        The key, or None when ``what`` is not JSON (such a job is never shared).
    """
    return _canonical([kind, what, account, sorted(set(tags)) if tags else []])


def project(value: Mapping[str, Any], ids: Sequence[int]) -> dict[str, Any]:
    """The part of a ``get_messages`` answer for ``ids``: ``{str(id): summary}`` in the order
    of ``ids``; an id the answer lacks is ``{"exists": False}``."""
    return {str(i): value.get(str(i), {"exists": False}) for i in ids}


@attrs.frozen
class Answer:
    """A successful answer and how it was made.

    Attributes:
        value: The JSON-safe result.
        account: The account whose call succeeded.
        proxy_key: Its lane.
        attempts: Calls made for it.
        at: When it came back, trio clock seconds.
    """

    value: dict[str, Any]
    account: str
    proxy_key: str
    attempts: int
    at: float


@final
@attrs.define(eq=False, repr=False)
class AnswerCache:
    """Answers of read-only jobs by identical key, least recently used out first.

    Bounded twice: `max_entries` answers and `max_bytes` of their JSON; ages are measured on
    the trio clock. Not thread-safe (one Trio run).
    """

    max_entries: int = CACHE_MAX_ENTRIES
    max_bytes: int = CACHE_MAX_BYTES
    max_entry_bytes: int = CACHE_MAX_ENTRY_BYTES
    _entries: collections.OrderedDict[str, tuple[Answer, int]] = attrs.field(
        init=False, factory=collections.OrderedDict
    )
    _bytes: int = attrs.field(init=False, default=0)
    hits: int = attrs.field(init=False, default=0)
    misses: int = attrs.field(init=False, default=0)

    def __repr__(self) -> str:
        return f"<AnswerCache entries={len(self._entries)} bytes={self._bytes}>"

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        """Bytes of JSON held."""
        return self._bytes

    def get(self, key: str, max_age_s: float) -> Answer | None:
        """The answer for ``key`` if it is at most ``max_age_s`` seconds old (trio clock),
        else None (an older one stays: a caller accepting older answers may still take it;
        the bounds evict it in time)."""
        found = self._entries.get(key)
        if found is None:
            self.misses += 1
            return None
        answer, _ = found
        if trio.current_time() - answer.at > max_age_s:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return answer

    def put(self, key: str, answer: Answer) -> None:
        """Keep ``answer`` for ``key`` (replacing an older one), then evict the least recently
        used until both bounds hold. An answer over `max_entry_bytes` is not kept."""
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old[1]
        text = _canonical(answer.value)
        if text is None:
            return  # not JSON: never the case for a job's answer; not kept
        size = len(text) + len(key)
        if size > self.max_entry_bytes:
            return
        self._entries[key] = (answer, size)
        self._bytes += size
        while self._entries and (
            len(self._entries) > self.max_entries or self._bytes > self.max_bytes
        ):
            _, (_, dropped) = self._entries.popitem(last=False)
            self._bytes -= dropped


Role = Literal["first", "identical", "merged"]


@attrs.define(eq=False)
class Member:
    """One accepted job waiting for a flight.

    Attributes:
        key: Its identical key.
        ids: Its message ids (``get_messages``), or None.
        deadline_at: When it must be answered, trio clock seconds.
        started_at: When it was accepted, trio clock seconds.
        max_age_s: Seconds old an answer may be for it (> 0: the flight's answer is cached).
        role: ``first`` (started the flight), ``identical`` (joined by identical key) or
            ``merged`` (joined a ``get_messages`` batch).
        failure: Its own answer, set by `Flights.shed` (the flight cannot start before its
            deadline), or None.
    """

    key: str
    ids: tuple[int, ...] | None
    deadline_at: float
    started_at: float
    max_age_s: float = 0.0
    role: Role = "first"
    failure: JobFailed | None = None
    _wait_scope: trio.CancelScope | None = attrs.field(init=False, default=None, repr=False)


class Progress(Protocol):
    """What a flight tells a member whose own deadline passed (the pool's `Job`)."""

    @property
    def attempts(self) -> int: ...
    @property
    def last_account(self) -> str | None: ...
    @property
    def last_failure(self) -> Failure | None: ...


#: ``fly(flight) -> answer``: the flight's work (the pool's attempts), run in the nursery.
Fly = Callable[["Flight"], Awaitable[Answer]]


@final
@attrs.define(eq=False, repr=False)
class Flight:
    """One Telegram job and the members waiting for it (see the module docstring).

    The runner (`Fly`) reads `deadline_at` when it starts and sets `on_deadline` to follow later
    moves (the pool's puts the deadline on `scope`, the scope the flight's task runs it in,
    and sets `on_timeout`); calls `close` when its call goes on the wire (each attempt) for
    the ids to ask for; sets `progress` so a member's own DEADLINE_EXCEEDED can name the last
    error.
    """

    method: str
    members: list[Member]
    deadline_at: float
    merge_key: str | None = None
    #: The scope the flight's task runs it in (None: a leader's own task runs it).
    scope: trio.CancelScope | None = attrs.field(factory=trio.CancelScope)
    done: trio.Event = attrs.field(factory=trio.Event)
    #: Message ids asked for (``get_messages``): id -> members asking for it (None: none
    #: yet, no counter built for a flight without ids).
    ids: collections.Counter[int] | None = None
    #: Open: a batch still taking members by merge key (until its call goes on the wire).
    open: bool = True
    #: Jobs whose requests were combined in the last call put on the wire: the first member
    #: and those merged into it (identical members ride along: they are "shared").
    riders: int = 1
    #: The ids of the last call put on the wire (``get_messages``).
    call_ids: tuple[int, ...] | None = None
    answer: Answer | None = None
    failure: JobFailed | None = None
    on_deadline: Callable[[float], None] | None = None
    #: The runner's answer for a flight whose `scope` caught its own deadline (a runner
    #: may put its deadline on `scope` instead of opening a scope of its own), or None.
    on_timeout: Callable[[], JobFailed] | None = None
    progress: Progress | None = None
    #: The member whose own task runs the flight (`Flights.start_local`), or None once the
    #: flight runs in a task of its own (`Flights.hand_over`) or for a flight started there.
    leader: Member | None = None
    #: Told when a member joins a flight its leader runs (`leader` set): the pool keeps the
    #: leader's call on the wire for the members (`mtpoold._account.AccountWorker.shield_call`).
    on_join: Callable[[], None] | None = None
    #: Told when the leader is alone again in its flight (the last other member left): its
    #: call follows its cancellation again (`mtpoold._account.AccountWorker.unshield`).
    on_alone: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return (
            f"<Flight {self.method} members={len(self.members)} open={self.open}"
            f" done={self.done.is_set()}>"
        )

    def close(self) -> tuple[int, ...] | None:
        """The call goes on the wire: no more merges; returns the ids to ask for (those of
        the members still waiting, first come first), or None for a job without ids."""
        self.open = False
        members = self.members
        if len(members) == 1:  # alone: the common case
            self.riders = 1
        else:
            self.riders = max(1, sum(1 for m in members if m.role != "identical"))
        if not self.ids:
            return None
        seen: dict[int, None] = {}
        for m in self.members:
            for i in m.ids or ():
                seen.setdefault(i, None)
        self.call_ids = tuple(seen)
        return self.call_ids

    def _add(self, member: Member) -> None:
        self.members.append(member)
        if member.ids is not None:
            if self.ids is None:
                self.ids = collections.Counter()
            self.ids.update(set(member.ids))
        if member.deadline_at > self.deadline_at:
            self._move(member.deadline_at)

    def _move(self, deadline_at: float) -> None:
        self.deadline_at = deadline_at
        if self.on_deadline is not None:
            self.on_deadline(deadline_at)

    def _room_for(self, ids: Sequence[int]) -> bool:
        return len((self.ids or {}).keys() | set(ids)) <= MERGE_MAX_IDS


def _copy(failure: JobFailed) -> JobFailed:
    """A fresh exception per member (one raised object must not collect their tracebacks)."""
    return JobFailed(
        failure.error_class,
        failure.message,
        retry_after_s=failure.retry_after_s,
        account=failure.account,
        attempts=failure.attempts,
    )


@final
@attrs.define(eq=False, repr=False)
class Flights:
    """The flights in the air, by identical key and open batch, and the answer cache.

    Args:
        nursery: Where flights run (the pool's).
        cache: The `AnswerCache`.
    """

    nursery: trio.Nursery
    cache: AnswerCache = attrs.field(factory=AnswerCache)
    _by_key: dict[str, Flight] = attrs.field(init=False, factory=dict)
    _open: dict[str, Flight] = attrs.field(init=False, factory=dict)
    #: Calls made by flights / members answered by another's call (identical) / members that
    #: rode in a merged call started by another.
    flights: int = attrs.field(init=False, default=0)
    joined_identical: int = attrs.field(init=False, default=0)
    joined_merged: int = attrs.field(init=False, default=0)

    def __repr__(self) -> str:
        return f"<Flights in_flight={len(set(self._by_key.values()))} cache={self.cache!r}>"

    def join(self, member: Member, *, identical: bool, merge_key: str | None) -> Flight | None:
        """Add ``member`` to a flight in the air: one with its identical key (if
        ``identical``), else an open batch for ``merge_key`` with room for its ids.

        Returns:
            The flight joined (``member.role`` set), or None: start one with `start`.
        """
        if identical:
            flight = self._by_key.get(member.key)
            if flight is not None and not flight.done.is_set():
                member.role = "identical"
                flight._add(member)
                self.joined_identical += 1
                if flight.on_join is not None:
                    flight.on_join()
                return flight
        if merge_key is not None and member.ids is not None:
            flight = self._open.get(merge_key)
            if flight is not None and flight.open and flight._room_for(member.ids):
                member.role = "merged"
                flight._add(member)
                if identical:
                    self._by_key.setdefault(member.key, flight)
                self.joined_merged += 1
                return flight
        return None

    def start(
        self,
        member: Member,
        fly: Fly,
        *,
        method: str,
        identical: bool,
        merge_key: str | None,
    ) -> Flight:
        """Start a flight for ``member`` in the nursery; later members may join it by its
        identical key (if ``identical``) and, while open, by ``merge_key``."""
        flight = Flight(
            method=method, members=[], deadline_at=member.deadline_at, merge_key=merge_key
        )
        member.role = "first"
        flight._add(member)
        if identical:
            self._by_key[member.key] = flight
        if merge_key is not None:
            self._open[merge_key] = flight
        self.flights += 1
        self.nursery.start_soon(self._run, flight, fly, name=f"flight {method}")
        return flight

    def start_local(self, member: Member, *, method: str) -> Flight:
        """Start a flight that ``member``'s own task runs (no task, no wait: a job alone
        costs what an unshared one does); identical members may join it by its key.

        The leader runs the flight's job under its own deadline and ends it with `finish`
        (an answer or a failure every member shares) or, leaving without one, with `leave`
        and — members left — `hand_over`. No merge key: a ``get_messages`` batch that takes
        other ids starts with `start`.
        """
        flight = Flight(method=method, members=[member], deadline_at=member.deadline_at, scope=None)
        flight.leader = member
        member.role = "first"
        self._by_key[member.key] = flight
        self.flights += 1
        return flight

    def finish(
        self, flight: Flight, answer: Answer | None, failure: JobFailed | None = None
    ) -> None:
        """The leader of a local flight (`start_local`) has the flight's outcome: ``answer``,
        or ``failure`` (each member raises a copy); the members waiting are answered, the
        answer cached for those accepting old ones, the flight forgotten."""
        flight.answer, flight.failure = answer, failure
        flight.leader = flight.on_join = flight.on_alone = None
        self._forget(flight)
        if answer is not None:
            self._cache(flight, answer)
        flight.done.set()

    def end_alone(self, flight: Flight) -> bool:
        """The leader of a local flight has its answer: if nobody joined and nobody wants
        it cached, forget the flight and return True (no `Answer` needed); else False
        (`finish` it)."""
        members = flight.members
        if len(members) != 1 or members[0].max_age_s > 0:
            return False
        flight.leader = flight.on_join = flight.on_alone = None
        if self._by_key.get(members[0].key) is flight:
            del self._by_key[members[0].key]
        flight.done.set()
        return True

    def hand_over(self, flight: Flight, fly: Fly) -> None:
        """A local flight's leader left without an outcome (cancelled, its deadline passed,
        no account before its deadline), its members still wait: the flight's job goes on
        for them in a task of the nursery, as a flight `start` began (its deadline the
        latest of theirs, a fresh `Flight.scope`)."""
        flight.leader = flight.on_join = flight.on_alone = None
        flight.scope = trio.CancelScope()
        self.nursery.start_soon(self._run, flight, fly, name=f"flight {flight.method}")

    async def wait(self, flight: Flight, member: Member) -> Answer:
        """Wait for ``member``'s answer: the flight's (for a ``get_messages`` member, only its
        ids: see `project`), until its own deadline.

        Raises:
            JobFailed: a copy of the flight's failure; its own (`shed`: NO_ACCOUNT_AVAILABLE)
                when the flight cannot start before its deadline; DEADLINE_EXCEEDED when the
                member's own deadline passed first (naming the flight's last error).
            trio.Cancelled: the member was cancelled; it has left the flight (the last one
                leaving cancels it).
        """
        try:
            with trio.move_on_at(member.deadline_at) as scope:
                member._wait_scope = scope
                if member.failure is None:
                    await flight.done.wait()
        except BaseException:
            if self.leave(flight, member):
                # the last one: its call unwinds before it goes, as a job in its own task
                with trio.CancelScope(shield=True), trio.move_on_after(FLIGHT_UNWIND_S):
                    await flight.done.wait()
            raise
        finally:
            member._wait_scope = None
        if member.failure is not None and not flight.done.is_set():
            self.leave(flight, member)  # not the last: shed keeps the latest member
            raise _copy(member.failure)
        if not flight.done.is_set():
            if self.leave(flight, member):
                with trio.move_on_after(FLIGHT_UNWIND_S):
                    await flight.done.wait()
            raise self._deadline_exceeded(flight, member)
        if flight.answer is None:
            assert flight.failure is not None
            raise _copy(flight.failure)
        answer = flight.answer
        if member.ids is not None and flight.call_ids != member.ids:
            answer = attrs.evolve(answer, value=project(answer.value, member.ids))
        return answer

    def shed(
        self, flight: Flight, earliest_at: float, failure: Callable[[Member], JobFailed]
    ) -> None:
        """The flight's call cannot start before ``earliest_at`` (trio clock, s): answer now,
        with ``failure(member)`` (the pool's NO_ACCOUNT_AVAILABLE), every member whose own
        deadline comes first — as each would have been answered on its own — but the one
        with the latest deadline (the flight's; the dispatcher answers that one). O(members).
        """
        if flight.done.is_set():
            return
        latest = max((m.deadline_at for m in flight.members), default=earliest_at)
        for m in flight.members:
            if (
                m.failure is None
                and m.deadline_at < earliest_at
                and m.deadline_at < latest
                and m is not flight.leader  # its own job: the dispatcher answers it
            ):
                m.failure = failure(m)
                if m._wait_scope is not None:
                    m._wait_scope.cancel()

    def leave(self, flight: Flight, member: Member) -> bool:
        """``member`` no longer waits: its ids leave an open batch, its identical key leaves
        the index when no other member holds it, the flight's deadline follows the members
        left; with none left the flight is cancelled.

        Returns:
            True if it was the last member and the flight was cancelled.
        """
        if flight.done.is_set() or member not in flight.members:
            return False
        flight.members.remove(member)
        if flight.open and member.ids is not None and flight.ids is not None:
            flight.ids.subtract(set(member.ids))
            flight.ids += collections.Counter()  # drop ids nobody asks for any more
        if self._by_key.get(member.key) is flight and not any(
            m.key == member.key for m in flight.members
        ):
            del self._by_key[member.key]
        if not flight.members:
            self._forget(flight)
            if flight.scope is not None:
                flight.scope.cancel()
            return True
        latest_at = max(m.deadline_at for m in flight.members)
        if latest_at < flight.deadline_at:
            flight._move(latest_at)
        if flight.on_alone is not None and flight.members == [flight.leader]:
            flight.on_alone()
        return False

    def _forget(self, flight: Flight) -> None:
        # Only its members' keys can name it (`leave` drops a leaving member's key no other
        # member holds): O(members), not a scan of every flight in the air (256 in flight
        # made it quadratic).
        for key in {m.key for m in flight.members}:
            if self._by_key.get(key) is flight:
                del self._by_key[key]
        if flight.merge_key is not None and self._open.get(flight.merge_key) is flight:
            del self._open[flight.merge_key]

    async def _run(self, flight: Flight, fly: Fly) -> None:
        """The flight's task: run ``fly``, keep the answer or the failure for the members,
        cache the answer for members that accept old ones, forget the flight."""
        scope = flight.scope
        assert scope is not None  # `start` and `hand_over` give it one
        try:
            with scope:
                answer = await fly(flight)
                flight.answer = answer
            if (
                scope.cancelled_caught
                and flight.on_timeout is not None
                and trio.current_time() >= scope.deadline
            ):
                flight.failure = flight.on_timeout()  # its deadline, not a member leaving
        except JobFailed as exc:
            flight.failure = exc
        except Exception as exc:  # a bug: every member gets an answer all the same
            log_event(log, logging.ERROR, "flight_failed", method=flight.method, exc_info=True)
            flight.failure = JobFailed(
                ErrorClass.GENERIC, f"internal error in a shared call: {type(exc).__name__}"
            )
        finally:
            if flight.answer is None and flight.failure is None:
                # cancelled: by the last member leaving (nobody waits) or the pool closing
                flight.failure = JobFailed(ErrorClass.SHUTTING_DOWN, "the pool is shutting down")
            self._forget(flight)
            if flight.answer is not None:
                self._cache(flight, flight.answer)
            log_event(
                log,
                logging.DEBUG,
                "flight",
                method=flight.method,
                members=len(flight.members),
                merged=flight.riders,
                outcome="OK" if flight.failure is None else flight.failure.error_class.value,
            )
            flight.done.set()

    def _cache(self, flight: Flight, answer: Answer) -> None:
        if not any(m.max_age_s > 0 for m in flight.members):
            return
        for m in flight.members:
            if m.ids is not None and flight.call_ids != m.ids:
                self.cache.put(m.key, attrs.evolve(answer, value=project(answer.value, m.ids)))
            else:
                self.cache.put(m.key, answer)

    def _deadline_exceeded(self, flight: Flight, member: Member) -> JobFailed:
        progress = flight.progress
        message = f"job deadline of {member.deadline_at - member.started_at:g} s passed"
        last = progress.last_failure if progress is not None else None
        if last is not None:
            message += f" (last error: {last.error_class.value}: {last.message})"
        return JobFailed(
            ErrorClass.DEADLINE_EXCEEDED,
            message,
            account=progress.last_account if progress is not None else None,
            attempts=progress.attempts if progress is not None else 0,
        )


def check_max_age(max_age_s: object) -> float:
    """Validate a ``max_age_s`` job option: a finite number of seconds >= 0 (0: no cache).

    Raises:
        JobFailed: INVALID_ARGUMENT otherwise.
    """
    if type(max_age_s) is float and 0.0 <= max_age_s < math.inf:  # the common case
        return max_age_s
    if isinstance(max_age_s, bool) or not isinstance(max_age_s, (int, float)):
        raise _bad_max_age()
    try:
        seconds = float(max_age_s)
    except OverflowError:  # an int beyond the float range
        raise _bad_max_age() from None
    if not math.isfinite(seconds) or seconds < 0:
        raise _bad_max_age()
    return seconds


def _bad_max_age() -> JobFailed:
    return JobFailed(
        ErrorClass.INVALID_ARGUMENT, "max_age_s must be a finite number of seconds >= 0"
    )
