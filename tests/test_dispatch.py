"""The dispatcher's scheduling invariants over generated sequences of arrivals, failures (with
their verdicts), operator disables, retires, cooldown ends — on MockClock, no clients."""

from __future__ import annotations

import collections
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mtpoold._account import AccountWorker
from mtpoold._dispatch import BackoffPastDeadline, Dispatcher, Job
from mtpoold._errors import ErrorClass, JobFailed
from mtpoold._lane import ProxyLane

#: Account id -> (lane key, tags): two proxies, two accounts each, one of each tagged "x".
FLEET = {"a0": ("k0", ()), "a1": ("k0", ("x",)), "a2": ("k1", ()), "a3": ("k1", ("x",))}
MAX_ATTEMPTS = 4
#: Lane key -> interval_s: one ungated lane, one gated (picks must wait for its start slot).
INTERVALS = {"k0": 0.0, "k1": 3.0}

#: What jobs need: (rate classes, look-up class, peer key). a0 and a2 know peer p1.
NEEDS = [
    (frozenset(), None, None),
    (frozenset({"read"}), "resolve", "p1"),  # get_messages of a peer some accounts know
    (frozenset({"read"}), "resolve", "p2"),  # ... of a peer nobody knows
    (frozenset({"resolve", "full_info"}), None, "p1"),  # resolve
    (frozenset({"send"}), None, "p2"),
]
KNOWN = {("a0", "p1"), ("a2", "p1")}
CLASSES = ["resolve", "read", "full_info", "send"]


class Knows:
    def knows(self, account_id: str, peer_key: str) -> bool:
        return (account_id, peer_key) in KNOWN

    def knowers(self, peer_key: str) -> list[str]:
        return sorted(a for a, p in KNOWN if p == peer_key)


verdicts = st.one_of(
    st.tuples(st.just("class"), st.sampled_from(CLASSES), st.floats(1, 500)),  # FLOOD_WAIT
    st.tuples(st.just("class"), st.sampled_from(CLASSES), st.floats(1, 500)),
    st.tuples(st.just("chat"), st.floats(1, 500)),  # SLOWMODE_WAIT
    st.tuples(st.just("cool"), st.floats(1, 500)),  # FLOOD_WAIT / STREAM_CLOSED-like
    st.tuples(st.just("lane"), st.floats(1, 500)),  # PROXY_UNAVAILABLE-like
    st.tuples(st.just("disable")),  # SESSION_REVOKED-like
    st.tuples(st.just("none")),  # DEADLINE_EXCEEDED-like: no penalty, retried elsewhere
)
arrivals = st.tuples(
    st.just("arrive"),
    st.sampled_from([None, None, "a0", "a1"]),  # pinned jobs meet on few accounts
    st.booleans(),
    st.floats(5, 300),
    st.integers(0, len(NEEDS) - 1),
)
ops = st.one_of(
    arrivals,
    arrivals,
    arrivals,
    st.tuples(st.just("finish"), st.integers(0, 20)),
    st.tuples(st.just("fail"), st.integers(0, 20), verdicts),
    st.tuples(st.just("sleep"), st.floats(0.5, 400)),
    st.tuples(st.just("disable"), st.sampled_from(sorted(FLEET))),
    st.tuples(st.just("enable"), st.sampled_from(sorted(FLEET))),
    st.tuples(st.just("retire"), st.sampled_from(sorted(FLEET))),
    st.tuples(st.just("add"), st.sampled_from(sorted(FLEET))),
    st.tuples(st.just("clear"), st.sampled_from(sorted(FLEET)), st.sampled_from([None, *CLASSES])),
)


@attrs.define(eq=False)
class Fleet:
    """The dispatcher, its accounts, and the jobs the test drives through it."""

    d: Dispatcher
    accounts: dict[str, AccountWorker]
    lanes: dict[str, ProxyLane]
    jobs: dict[int, Job] = attrs.field(factory=dict)
    inbox: dict[int, trio.MemorySendChannel[Any]] = attrs.field(factory=dict)
    holding: dict[int, AccountWorker] = attrs.field(factory=dict)
    answers: collections.defaultdict[int, list[str]] = attrs.field(
        factory=lambda: collections.defaultdict(list)
    )
    #: The test's own record of class and chat blocks: (account, class or peer) -> end.
    floods: dict[tuple[str, str], float] = attrs.field(factory=dict)
    chats: dict[tuple[str, str], float] = attrs.field(factory=dict)
    #: When each job last asked for an account (its knower wait runs from then).
    asked: dict[int, float] = attrs.field(factory=dict)

    def holds_for_knower(self, jid: int, acc: AccountWorker) -> bool:
        """Whether the job may pass over ``acc`` while it holds out for a knower of its
        peer: at most ``knower_wait_s`` from when it asked, and only for a non-knower."""
        job, wait = self.jobs[jid], self.d.knower_wait_s
        if wait <= 0 or job.peer_key is None or job.account is not None:
            return False
        until = self.asked[jid] + wait
        return (
            until < job.deadline_at
            and trio.current_time() < until
            and ((acc.id, job.peer_key) not in KNOWN)
        )

    def usable(self, acc: AccountWorker) -> bool:
        return acc.disabled_reason is None and not acc.retired

    def class_free_at(self, job: Job, acc: AccountWorker) -> float:
        """When the class and chat blocks let ``acc`` serve ``job``."""
        needed = set(job.rate_classes)
        if job.lookup_class and (acc.id, job.peer_key) not in KNOWN:
            needed.add(job.lookup_class)
        ends = [self.floods.get((acc.id, c), float("-inf")) for c in needed]
        if job.peer_key is not None:
            ends.append(self.chats.get((acc.id, job.peer_key), float("-inf")))
        return max(ends, default=float("-inf"))

    def may_start_by(self, job: Job, acc: AccountWorker, t: float) -> bool:
        """Whether ``acc`` (busy or not) could serve ``job`` by ``t`` as far as state goes."""
        return (
            job.accepts(acc, allow_avoided=True)
            and self.usable(acc)
            and acc.schedulable_at() <= t
            and self.class_free_at(job, acc) <= t
        )

    def untried_left(self, job: Job) -> bool:
        return any(
            self.may_start_by(job, a, job.deadline_at) and a.id not in job.avoid
            for a in self.accounts.values()
        )

    def starts_sooner_elsewhere(self, job: Job, acc: AccountWorker) -> bool:
        """Whether the job may wait for another lane rather than take the free ``acc``: an
        account it prefers as much (untried if ``acc`` is), free or back when its proxy's
        cooldown ends, whose lane starts before ``acc``'s lane's next start slot. The
        dispatcher waits for the soonest start (a proxy cooling for 1 s beats a gate's slot
        3 s away)."""
        ready, now = self.d.ready, trio.current_time()
        acc_start = max(now, ready.start_bound_at(acc.lane))
        untried = acc.id not in job.avoid
        return any(
            b.lane is not acc.lane
            and not b.busy
            and self.usable(b)
            and job.accepts(b, allow_avoided=not untried)
            and self.class_free_at(job, b) <= now
            and max(b.schedulable_at(), ready.start_bound_at(b.lane)) < acc_start
            for b in self.accounts.values()
        )

    def free_now(self, acc: AccountWorker) -> bool:
        now = trio.current_time()
        return not acc.busy and self.usable(acc) and acc.schedulable_at() <= now

    def check_handout(self, job: Job, acc: AccountWorker) -> None:
        now = trio.current_time()
        assert acc.reserved
        assert acc.disabled_reason is None, "a disabled account was handed out"
        assert not acc.retired, "a retired account was handed out"
        assert acc.schedulable_at() <= now, "a cooling account was handed out"
        assert self.class_free_at(job, acc) <= now, "an account cooling on a class it needs"
        assert job.accepts(acc, allow_avoided=True)
        if acc.id in job.avoid:  # untried ones first
            assert not any(
                self.free_now(a)
                and job.accepts(a, allow_avoided=False)
                and self.class_free_at(job, a) <= now
                for a in self.accounts.values()
            )

    def check(self) -> None:
        now = trio.current_time()
        waiting = [j for j in self.jobs if not self.answers[j] and j not in self.holding]
        assert len(waiting) == self.d.waiting
        for j in waiting:
            job = self.jobs[j]
            assert now < job.deadline_at
            # answered at once when no account it may use could start before its deadline
            assert any(
                self.may_start_by(job, a, job.deadline_at) for a in self.accounts.values()
            ), f"job {j} waits past its deadline"
            # never passed over for an account it may use that is free and schedulable
            for acc in self.accounts.values():
                if not self.free_now(acc) or not job.accepts(acc, allow_avoided=True):
                    continue
                if self.class_free_at(job, acc) > now or self.holds_for_knower(j, acc):
                    continue
                if self.starts_sooner_elsewhere(job, acc):
                    continue
                assert acc.id in job.avoid and self.untried_left(job), (
                    f"job {j} waits while {acc.id} is free"
                )
        # reserved <=> held by a job's attempt <=> assigned in the index
        held = {acc.id for acc in self.holding.values()}
        assert held == {a.id for a in self.accounts.values() if a.reserved}
        assert len(held) == len(self.holding)
        for key, lane in self.lanes.items():
            on_lane = sum(1 for a in self.holding.values() if a.lane is lane)
            assert self.d.ready.assigned_on(key) == on_lane
        for acc in self.accounts.values():
            if self.d.ready.is_free(acc):
                assert not acc.reserved and self.usable(acc)
                assert acc.cooldown_until_at <= now

    async def run_job(self, jid: int, job: Job, inbox: trio.MemoryReceiveChannel[Any]) -> None:
        with trio.move_on_at(job.deadline_at):
            while True:
                self.asked[jid] = trio.current_time()
                try:
                    acc = await self.d.acquire(job, retry_delay_s=0.0)
                except JobFailed as exc:
                    assert exc.error_class is ErrorClass.NO_ACCOUNT_AVAILABLE
                    self.answers[jid].append("NO_ACCOUNT_AVAILABLE")
                    return
                except BackoffPastDeadline:  # pragma: no cover - retry_delay is 0
                    self.answers[jid].append("backoff")
                    return
                self.check_handout(job, acc)
                self.holding[jid] = acc
                try:
                    verdict = await inbox.receive()
                except trio.Cancelled:
                    del self.holding[jid]
                    self.d.release(acc)
                    raise
                now = trio.current_time()
                if verdict[0] == "cool":
                    self.d.cool_down(acc, now + verdict[1], "TEST: cooldown")
                elif verdict[0] == "lane":
                    self.d.cool_down_lane(acc.lane, now + verdict[1], "TEST: proxy down")
                elif verdict[0] == "disable":
                    self.d.disable(acc, "TEST: revoked")
                elif verdict[0] == "class":
                    key = (acc.id, verdict[1])
                    self.floods[key] = max(self.floods.get(key, now), now + verdict[2])
                    self.d.cool_down_class(acc, verdict[1], now + verdict[2], "TEST: flood")
                elif verdict[0] == "chat" and job.peer_key is not None:
                    key = (acc.id, job.peer_key)
                    self.chats[key] = max(self.chats.get(key, now), now + verdict[1])
                    self.d.cool_down_chat(acc, job.peer_key, now + verdict[1], "TEST: slow mode")
                del self.holding[jid]
                self.d.release(acc)
                if verdict[0] == "ok":
                    self.answers[jid].append("ok")
                    return
                job.avoid.add(acc.id)
                job.attempts += 1
                job.last_account = acc.id
                if job.attempts >= MAX_ATTEMPTS:
                    self.answers[jid].append("exhausted")
                    return
        self.answers[jid].append("DEADLINE_EXCEEDED")


async def scenario(steps: list[tuple[Any, ...]], knower_wait_s: float = 0.0) -> None:
    async with trio.open_nursery() as nursery:
        lanes = {
            key: ProxyLane(
                key=key,
                name=key,
                type="socks5",
                capacity=10,
                interval_s=INTERVALS[key],
                jitter_s=(0.0, 0.0),
            )
            for key in ("k0", "k1")
        }
        lane_accounts: dict[str, collections.OrderedDict[str, AccountWorker]] = {
            key: collections.OrderedDict() for key in lanes
        }
        accounts: dict[str, AccountWorker] = {}
        for acc_id, (key, tags) in FLEET.items():
            acc = AccountWorker(
                id=acc_id,
                lane=lanes[key],
                client_factory=lambda: None,  # type: ignore[arg-type,return-value]
                nursery=nursery,
                tags=frozenset(tags),
            )
            accounts[acc_id] = lane_accounts[key][acc_id] = acc
        d = Dispatcher(accounts, lanes, lane_accounts)
        d.knowledge = Knows()
        d.route_by_knowledge = True
        d.knower_wait_s = knower_wait_s
        for acc in accounts.values():
            d.add(acc)
        nursery.start_soon(d.run)
        fleet = Fleet(d, accounts, lanes)
        for step in steps:
            kind = step[0]
            holders = sorted(fleet.holding)
            if kind == "arrive":
                _, pin, tagged, deadline_s, need = step
                classes, lookup, peer = NEEDS[need]
                now = trio.current_time()
                jid = len(fleet.jobs)
                job = Job(
                    method="test",
                    deadline_at=now + deadline_s,
                    account=pin,
                    tags=frozenset({"x"}) if tagged else frozenset(),
                    started_at=now,
                    peer_key=peer,
                    rate_classes=classes,
                    lookup_class=lookup,
                )
                fleet.jobs[jid] = job
                send, receive = trio.open_memory_channel[Any](1)
                fleet.inbox[jid] = send
                nursery.start_soon(fleet.run_job, jid, job, receive)
            elif kind in ("finish", "fail") and holders:
                jid = holders[step[1] % len(holders)]
                fleet.inbox[jid].send_nowait(("ok",) if kind == "finish" else step[2])
            elif kind == "sleep":
                await trio.sleep(step[1])
            elif kind == "disable":
                d.disable(accounts[step[1]], "TEST: operator")
            elif kind == "enable" and accounts[step[1]].disabled_reason is not None:
                d.enable(accounts[step[1]])
            elif kind == "retire" and not accounts[step[1]].retired:
                d.retire(accounts[step[1]])
            elif kind == "add" and accounts[step[1]].retired:
                d.add(accounts[step[1]])
            elif kind == "clear":
                _, acc_id, cls = step
                for key in [k for k in fleet.floods if k[0] == acc_id and cls in (None, k[1])]:
                    del fleet.floods[key]
                if cls is None:
                    for key in [k for k in fleet.chats if k[0] == acc_id]:
                        del fleet.chats[key]
                d.clear_cooldown(accounts[acc_id], cls)
            await trio.testing.wait_all_tasks_blocked()
            fleet.check()
        await trio.sleep(10_000)  # past every deadline: every job is answered
        await trio.testing.wait_all_tasks_blocked()
        fleet.check()
        assert d.waiting == 0 and not fleet.holding
        for jid in fleet.jobs:
            assert len(fleet.answers[jid]) == 1, (jid, fleet.answers[jid])
        nursery.cancel_scope.cancel()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, max_size=40), st.sampled_from([0.0, 0.0, 20.0]))
@example([("arrive", None, False, 300.0, 1)] * 3 + [("sleep", 10.0), ("finish", 0)], 20.0)
# job 0 fails on a0 with k0 cooling 1 s: it waits for a1 on k0 (at 1 s), not for a3 on the
# gated k1, whose next slot is 3 s away (job 1 holds a2 there)
@example(
    [("arrive", None, False, 5.0, 0), ("arrive", None, False, 5.0, 0), ("fail", 0, ("lane", 1.0))],
    0.0,
)
def test_Dispatcher_invariants_hold_over_generated_sequences(
    steps: list[tuple[Any, ...]], knower_wait_s: float
) -> None:
    trio.run(scenario, steps, knower_wait_s, clock=trio.testing.MockClock(autojump_threshold=0))


@pytest.mark.parametrize("verdict", [("cool", 100.0), ("lane", 100.0), ("disable",)])
def test_Dispatcher_answers_waiting_job_at_once_when_its_accounts_go(
    verdict: tuple[Any, ...],
) -> None:
    # one job holds a1 (pinned), a second waits for it with a 50 s deadline; a1's call fails
    steps = [
        ("arrive", "a1", False, 300.0, 0),
        ("arrive", "a1", False, 50.0, 0),
        ("fail", 0, verdict),
    ]
    trio.run(scenario, steps, clock=trio.testing.MockClock(autojump_threshold=0))


def _small_fleet(
    nursery: trio.Nursery, n: int = 2, interval_s: float = 0.0
) -> tuple[Dispatcher, list[AccountWorker]]:
    lane = ProxyLane(
        key="k", name="k", type="socks5", capacity=10, interval_s=interval_s, jitter_s=(0, 0)
    )
    lane_accounts: dict[str, collections.OrderedDict[str, AccountWorker]] = {
        "k": collections.OrderedDict()
    }
    accounts: dict[str, AccountWorker] = {}
    for i in range(n):
        acc = AccountWorker(
            id=f"a{i}",
            lane=lane,
            client_factory=lambda: None,  # type: ignore[arg-type,return-value]
            nursery=nursery,
        )
        accounts[acc.id] = lane_accounts["k"][acc.id] = acc
    d = Dispatcher(accounts, {"k": lane}, lane_accounts)
    for acc in accounts.values():
        d.add(acc)
    nursery.start_soon(d.run)
    return d, list(accounts.values())


def _job(deadline_s: float, classes: frozenset[str], peer: str | None = None) -> Job:
    now = trio.current_time()
    return Job(
        method="test",
        deadline_at=now + deadline_s,
        account=None,
        tags=frozenset(),
        started_at=now,
        peer_key=peer,
        rate_classes=classes,
        lookup_class="resolve" if peer is not None and "resolve" not in classes else None,
    )


async def test_a_class_cooldown_keeps_the_account_from_jobs_that_need_the_class_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        d, (a0,) = _small_fleet(nursery, 1)
        d.cool_down_class(a0, "resolve", trio.current_time() + 100, "FLOOD_WAIT: test")
        # a read of a known peer still gets it
        d.knowledge = Knows()
        read = await d.acquire(_job(10, frozenset({"read"}), "p1"), retry_delay_s=0)
        assert read is a0
        d.release(a0)
        # a read of an unknown peer needs a look-up: none before the flood ends
        with pytest.raises(JobFailed) as info:
            await d.acquire(_job(10, frozenset({"read"}), "p2"), retry_delay_s=0)
        assert info.value.error_class is ErrorClass.NO_ACCOUNT_AVAILABLE
        assert info.value.retry_after_s == pytest.approx(100)
        # a resolve whose deadline reaches past the end waits, and the timer serves it then
        t0 = trio.current_time()
        acc = await d.acquire(_job(150, frozenset({"resolve", "full_info"})), retry_delay_s=0)
        assert acc is a0 and trio.current_time() - t0 == pytest.approx(100)
        d.release(a0)
        nursery.cancel_scope.cancel()


async def test_clearing_a_class_cooldown_serves_the_waiting_job_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        d, (a0,) = _small_fleet(nursery, 1)
        d.cool_down_class(a0, "join", trio.current_time() + 100, "FLOOD_WAIT: test")
        d.cool_down(a0, trio.current_time() + 50, "FLOOD_WAIT: account")
        got: list[float] = []

        async def wait() -> None:
            await d.acquire(_job(200, frozenset({"join"})), retry_delay_s=0)
            got.append(trio.current_time())

        t0 = trio.current_time()
        nursery.start_soon(wait)
        await trio.sleep(10)
        assert d.waiting == 1
        assert d.clear_cooldown(a0, "join") == ["join"]
        await trio.sleep(1)
        assert got == [], "the account-wide cooldown still holds"
        assert d.clear_cooldown(a0) == ["account"]
        await trio.testing.wait_all_tasks_blocked()
        assert got == [pytest.approx(t0 + 11)]
        nursery.cancel_scope.cancel()


async def test_routing_by_knowledge_prefers_a_knower_over_the_least_recently_used(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        d, accounts = _small_fleet(nursery, 4)
        d.knowledge, d.route_by_knowledge = Knows(), True  # a0, a2 know p1
        for acc in [accounts[2], accounts[0], accounts[1], accounts[3]]:  # LRU: a2, a0, a1, a3
            d.release(d.reserve(acc))
        served = []
        for _ in range(3):
            acc = await d.acquire(_job(10, frozenset({"read"}), "p1"), retry_delay_s=0)
            served.append(acc.id)
            d.release(acc)
        assert served == ["a2", "a0", "a2"]  # knowers, least recently used first
        d.route_by_knowledge = False
        acc = await d.acquire(_job(10, frozenset({"read"}), "p1"), retry_delay_s=0)
        assert acc.id == "a1"  # plain LRU
        d.release(acc)
        nursery.cancel_scope.cancel()


async def test_a_knower_on_a_gated_lane_serves_a_read_while_everyone_is_resolve_flooded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        d, (a0, a1) = _small_fleet(nursery, 2, interval_s=5.0)  # a0 knows p1
        d.knowledge = Knows()
        for acc in (a0, a1):
            d.cool_down_class(acc, "resolve", trio.current_time() + 1000, "FLOOD_WAIT: test")
        d.reserve(a1)  # a1's call is assigned on the lane: a0's start is one interval away
        with trio.fail_after(30):  # the dispatcher does not time out waiting jobs itself
            got = await d.acquire(_job(20, frozenset({"read"}), "p1"), retry_delay_s=0)
        assert got is a0
        d.release(a0)
        d.release(a1)
        nursery.cancel_scope.cancel()


async def test_a_job_holds_out_for_a_busy_knower_of_its_peer_until_it_is_released(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        d, (a0, a1, a2, a3) = _small_fleet(nursery, 4)
        d.knowledge, d.route_by_knowledge, d.knower_wait_s = Knows(), True, 5.0  # a0, a2: p1
        d.reserve(a0)
        d.reserve(a2)
        got: list[tuple[str, float]] = []

        async def read(peer: str) -> None:
            acc = await d.acquire(_job(60, frozenset({"read"}), peer), retry_delay_s=0)
            got.append((acc.id, trio.current_time()))

        t0 = trio.current_time()
        nursery.start_soon(read, "p1")
        await trio.sleep(2)
        assert got == [] and d.waiting == 1, "a1 and a3 are free but would look p1 up"
        nursery.start_soon(read, "p2")  # nobody knows p2: no wait, it takes a free one
        await trio.testing.wait_all_tasks_blocked()
        assert got == [("a1", t0 + 2)]
        d.release(a2)  # the knower is free again: the waiting job gets it at once
        await trio.testing.wait_all_tasks_blocked()
        assert got[1] == ("a2", t0 + 2)
        nursery.cancel_scope.cancel()


async def test_a_job_takes_an_account_that_must_look_up_once_the_knower_wait_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        d, (a0, a1) = _small_fleet(nursery, 2)
        d.knowledge, d.route_by_knowledge, d.knower_wait_s = Knows(), True, 5.0  # a0: p1
        d.reserve(a0)
        t0 = trio.current_time()
        acc = await d.acquire(_job(60, frozenset({"read"}), "p1"), retry_delay_s=0)
        assert acc is a1 and trio.current_time() == pytest.approx(t0 + 5)  # the timer's
        d.release(a1)
        # a deadline before the wait's end: no wait at all
        acc = await d.acquire(_job(4, frozenset({"read"}), "p1"), retry_delay_s=0)
        assert acc is a1 and trio.current_time() == pytest.approx(t0 + 5)
        d.release(a1)
        # knower_wait_s = 0: the old behaviour, a free account at once
        d.knower_wait_s = 0.0
        acc = await d.acquire(_job(60, frozenset({"read"}), "p1"), retry_delay_s=0)
        assert acc is a1 and trio.current_time() == pytest.approx(t0 + 5)
        d.release(a1)
        d.release(a0)
        nursery.cancel_scope.cancel()


async def test_a_job_stops_holding_out_when_the_knower_it_waits_for_goes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        d, (a0, a1) = _small_fleet(nursery, 2)
        d.knowledge, d.route_by_knowledge, d.knower_wait_s = Knows(), True, 5.0  # a0: p1
        d.reserve(a0)
        got: list[tuple[str, float]] = []

        async def read() -> None:
            acc = await d.acquire(_job(60, frozenset({"read"}), "p1"), retry_delay_s=0)
            got.append((acc.id, trio.current_time()))

        t0 = trio.current_time()
        nursery.start_soon(read)
        await trio.sleep(1)
        assert got == []
        d.cool_down(a0, trio.current_time() + 100, "FLOOD_WAIT: test")  # a0 will not be back
        await trio.testing.wait_all_tasks_blocked()
        assert got == [("a1", t0 + 1)]
        d.release(a1)
        d.release(a0)
        nursery.cancel_scope.cancel()


async def test_a_free_knower_whose_lane_starts_within_the_wait_beats_a_look_up_now(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        lanes = {
            key: ProxyLane(
                key=key, name=key, type="socks5", capacity=10, interval_s=i, jitter_s=(0, 0)
            )
            for key, i in (("gated", 1.0), ("open", 0.0))
        }
        lane_accounts: dict[str, collections.OrderedDict[str, AccountWorker]] = {
            key: collections.OrderedDict() for key in lanes
        }
        accounts: dict[str, AccountWorker] = {}
        for acc_id, key in (("a0", "gated"), ("a1", "open"), ("a3", "gated")):
            acc = AccountWorker(
                id=acc_id,
                lane=lanes[key],
                client_factory=lambda: None,  # type: ignore[arg-type,return-value]
                nursery=nursery,
            )
            accounts[acc_id] = lane_accounts[key][acc_id] = acc
        d = Dispatcher(accounts, lanes, lane_accounts)
        d.knowledge, d.route_by_knowledge = Knows(), True  # a0 knows p1
        for acc in accounts.values():
            d.add(acc)
        nursery.start_soon(d.run)
        d.reserve(accounts["a3"])  # the gated lane's next start is an interval away
        job = _job(60, frozenset({"read"}), "p1")
        d.knower_wait_s = 0.5  # shorter than that interval: a1 looks p1 up now
        acc = await d.acquire(job, retry_delay_s=0)
        assert acc.id == "a1"
        d.release(acc)
        d.knower_wait_s = 2.0  # a0's start comes within the wait: a0, no look-up
        acc = await d.acquire(job, retry_delay_s=0)
        assert acc.id == "a0"
        nursery.cancel_scope.cancel()
