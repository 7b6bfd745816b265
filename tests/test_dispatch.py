"""The dispatcher's scheduling invariants over generated sequences of arrivals, failures (with
their verdicts), operator disables, retires, cooldown ends — on MockClock, no clients."""

from __future__ import annotations

import collections
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtpoold._account import AccountWorker
from mtpoold._dispatch import BackoffPastDeadline, Dispatcher, Job
from mtpoold._errors import ErrorClass, JobFailed
from mtpoold._lane import ProxyLane

#: Account id -> (lane key, tags): two proxies, two accounts each, one of each tagged "x".
FLEET = {"a0": ("k0", ()), "a1": ("k0", ("x",)), "a2": ("k1", ()), "a3": ("k1", ("x",))}
MAX_ATTEMPTS = 4

verdicts = st.one_of(
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

    def usable(self, acc: AccountWorker) -> bool:
        return acc.disabled_reason is None and not acc.retired

    def may_start_by(self, job: Job, acc: AccountWorker, t: float) -> bool:
        """Whether ``acc`` (busy or not) could serve ``job`` by ``t`` as far as state goes."""
        return (
            job.accepts(acc, allow_avoided=True) and self.usable(acc) and acc.schedulable_at() <= t
        )

    def untried_left(self, job: Job) -> bool:
        return any(
            self.may_start_by(job, a, job.deadline) and a.id not in job.avoid
            for a in self.accounts.values()
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
        assert job.accepts(acc, allow_avoided=True)
        if acc.id in job.avoid:  # untried ones first
            assert not any(
                self.free_now(a) and job.accepts(a, allow_avoided=False)
                for a in self.accounts.values()
            )

    def check(self) -> None:
        now = trio.current_time()
        waiting = [j for j in self.jobs if not self.answers[j] and j not in self.holding]
        assert len(waiting) == self.d.waiting
        for j in waiting:
            job = self.jobs[j]
            assert now < job.deadline
            # answered at once when no account it may use could start before its deadline
            assert any(self.may_start_by(job, a, job.deadline) for a in self.accounts.values()), (
                f"job {j} waits past its deadline"
            )
            # never passed over for an account it may use that is free and schedulable
            for acc in self.accounts.values():
                if not self.free_now(acc) or not job.accepts(acc, allow_avoided=True):
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
                assert acc.cooldown_until <= now

    async def run_job(self, jid: int, job: Job, inbox: trio.MemoryReceiveChannel[Any]) -> None:
        with trio.move_on_at(job.deadline):
            while True:
                try:
                    acc = await self.d.acquire(job, retry_delay=0.0)
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


async def scenario(steps: list[tuple[Any, ...]]) -> None:
    async with trio.open_nursery() as nursery:
        lanes = {
            key: ProxyLane(
                key=key, name=key, type="socks5", capacity=10, interval_s=0.0, jitter_s=(0.0, 0.0)
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
        for acc in accounts.values():
            d.add(acc)
        nursery.start_soon(d.run)
        fleet = Fleet(d, accounts, lanes)
        for step in steps:
            kind = step[0]
            holders = sorted(fleet.holding)
            if kind == "arrive":
                _, pin, tagged, deadline_s = step
                now = trio.current_time()
                jid = len(fleet.jobs)
                job = Job(
                    method="test",
                    deadline=now + deadline_s,
                    account=pin,
                    tags=frozenset({"x"}) if tagged else frozenset(),
                    started=now,
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
@given(st.lists(ops, max_size=40))
def test_Dispatcher_invariants_hold_over_generated_sequences(steps: list[tuple[Any, ...]]) -> None:
    trio.run(scenario, steps, clock=trio.testing.MockClock(autojump_threshold=0))


@pytest.mark.parametrize("verdict", [("cool", 100.0), ("lane", 100.0), ("disable",)])
def test_Dispatcher_answers_waiting_job_at_once_when_its_accounts_go(
    verdict: tuple[Any, ...],
) -> None:
    # one job holds a1 (pinned), a second waits for it with a 50 s deadline; a1's call fails
    steps = [
        ("arrive", "a1", False, 300.0),
        ("arrive", "a1", False, 50.0),
        ("fail", 0, verdict),
    ]
    trio.run(scenario, steps, clock=trio.testing.MockClock(autojump_threshold=0))
