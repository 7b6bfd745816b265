"""A read-only job alone runs in its caller's own task (`mtpoold._pool.Pool._lead`,
`mtpoold._share.Flights.start_local`), and identical jobs arriving meanwhile still share its
call: how the leader and its members part when the leader is cancelled, its deadline passes
or no account can serve it in time. Scripted client double, MockClock (autojump).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from telethon import errors as tg

from mtpoold._compose import open_pool
from mtpoold._errors import ErrorClass, JobFailed

from _fakeclient import FakeClient, Sleep, World, make_config

SHARING = {"share_identical": True, "merge_get_messages": True}


def sharing_config(tmp_path: Path, **kw: Any) -> Any:
    kw.setdefault("proxies", {"p1": {"interval_s": 0.0, "capacity": 10}})
    kw.setdefault("accounts", {"a1": "p1"})
    return make_config(tmp_path, economy=SHARING, **kw)


@attrs.define(eq=False)
class TaskClient(FakeClient):
    """A double that records the Trio task each call runs in."""

    tasks: list[trio.lowlevel.Task] = attrs.field(factory=list)

    async def call(self, method: str, args: Any) -> dict[str, Any]:
        self.tasks.append(trio.lowlevel.current_task())
        return await self._call()

    async def resolve(self, link_or_username: str) -> dict[str, Any]:
        self.tasks.append(trio.lowlevel.current_task())
        return await self._call()


def task_factory(world: World, tasks: list[trio.lowlevel.Task]) -> Any:
    def make(acc: Any) -> TaskClient:
        client = TaskClient(acc.id, world, tasks=tasks)
        world.clients.append(client)
        return client

    return make


class Spawned(trio.abc.Instrument):
    """The names of the tasks spawned while it is installed."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.names.append(task.name)


def calls(world: World) -> int:
    return sum(1 for _, kind, _ in world.starts if kind == "call")


async def hold(pool: Any, account: str) -> None:
    """A job that is not read-only, pinned to ``account``: it holds it for its call."""
    await pool.invoke("messages.GetDialogFilters", {}, account=account)


async def _in_scope(scope: trio.CancelScope, fn: Any) -> None:
    with scope:
        await fn()


async def test_a_job_alone_runs_in_its_callers_task_and_starts_no_flight_task(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("a1", Sleep(1, {"n": 1}))
    tasks: list[trio.lowlevel.Task] = []
    async with open_pool(
        sharing_config(tmp_path), client_factory=task_factory(world, tasks)
    ) as pool:
        spawned = Spawned()
        trio.lowlevel.add_instrument(spawned)
        result = await pool.invoke("help.GetConfig", {})
        trio.lowlevel.remove_instrument(spawned)
        assert not [name for name in spawned.names if "flight" in name]
        assert tasks == [trio.lowlevel.current_task()]
        assert result.value == {"n": 1} and not result.meta.shared and result.meta.merged == 1
        assert pool._flights.flights == 1 and not pool._flights._by_key
        assert pool.statistics().jobs_ok == 1


async def test_a_joiner_shares_the_leaders_call_run_in_the_leaders_task(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("a1", Sleep(10, {"n": 1}))
    tasks: list[trio.lowlevel.Task] = []
    done: dict[str, tuple[float, Any]] = {}
    async with open_pool(
        sharing_config(tmp_path), client_factory=task_factory(world, tasks)
    ) as pool:
        t0 = trio.current_time()

        async def job(name: str, max_age_s: float = 0.0) -> None:
            done[name] = (name, trio.lowlevel.current_task())
            r = await pool.invoke("help.GetConfig", {}, max_age_s=max_age_s)
            done[name] = (trio.current_time() - t0, r)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(job, "leader")
            await trio.testing.wait_all_tasks_blocked()
            leader_task = done["leader"][1]
            await trio.sleep(3)
            nursery.start_soon(job, "joiner", 60.0)  # accepts old answers: the answer is kept
        assert tasks == [leader_task]
        hit = await pool.invoke("help.GetConfig", {}, max_age_s=60)
    assert calls(world) == 1
    assert done["leader"][0] == done["joiner"][0] == 10
    assert not done["leader"][1].meta.shared and done["joiner"][1].meta.shared
    assert done["joiner"][1].value == {"n": 1} and hit.value == {"n": 1} and hit.meta.shared


async def test_a_leader_alone_cancelled_in_its_call_is_cancelled_at_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("a1", Sleep(100, {"n": 1}))
    async with open_pool(sharing_config(tmp_path), client_factory=world.factory()) as pool:
        with trio.move_on_after(2):
            await pool.invoke("help.GetConfig", {})
        assert trio.current_time() == pytest.approx(2)
        assert pool.statistics().jobs_in_flight == 0 and not pool._flights._by_key
        assert (await pool.invoke("help.GetConfig", {})).value["ok"]  # a new call
    assert calls(world) == 2


async def test_a_leader_cancelled_while_its_call_is_out_raises_cancelled_after_the_answer(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The call goes on for the joiner (one call); the leader gets no answer of its own."""
    world = World()
    world.script("a1", Sleep(10, {"n": 1}))
    outcome: dict[str, Any] = {}
    async with open_pool(sharing_config(tmp_path), client_factory=world.factory()) as pool:

        async def job(name: str) -> None:
            try:
                outcome[name] = await pool.invoke("help.GetConfig", {})
            except trio.Cancelled:
                outcome[name] = trio.current_time()
                raise

        async with trio.open_nursery() as nursery:
            leader = trio.CancelScope()
            nursery.start_soon(_in_scope, leader, lambda: job("leader"))
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(job, "joiner")
            await trio.sleep(1)
            leader.cancel()
    assert calls(world) == 1
    assert outcome["leader"] == 10  # kept for the joiner, then cancelled
    assert outcome["joiner"].value == {"n": 1} and outcome["joiner"].meta.shared
    stats = pool.statistics()
    assert stats.jobs_ok == 1 and stats.jobs_in_flight == 0


async def test_a_leader_cancelled_while_waiting_for_an_account_hands_its_job_over(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("a1", Sleep(5), Sleep(2, {"n": 1}))  # busy for 5 s, then the shared call
    outcome: dict[str, tuple[float, Any]] = {}
    async with open_pool(sharing_config(tmp_path), client_factory=world.factory()) as pool:

        async def job(name: str) -> None:
            try:
                r: Any = await pool.resolve("@xnews")
            except trio.Cancelled:
                outcome[name] = (trio.current_time(), "cancelled")
                raise
            outcome[name] = (trio.current_time(), r)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(hold, pool, "a1")
            await trio.testing.wait_all_tasks_blocked()
            leader = trio.CancelScope()
            nursery.start_soon(_in_scope, leader, lambda: job("leader"))
            await trio.sleep(1)
            nursery.start_soon(job, "joiner")
            await trio.sleep(1)
            leader.cancel()
    assert outcome["leader"] == (2, "cancelled")  # at once: nothing was sent for it
    t, joiner = outcome["joiner"]
    assert t == 5 + 2 and joiner.value == {"n": 1} and joiner.meta.shared
    assert calls(world) == 2  # the holder's and the one resolve


async def test_a_later_joiner_takes_the_job_over_when_the_account_comes(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The account is handed to the job while a member may wait longer than the leader:
    the call runs in a flight task under the member's deadline, the leader answered at its
    own deadline — one call."""
    world = World()
    world.script("a1", Sleep(3), Sleep(8, {"n": 1}))
    tasks: list[trio.lowlevel.Task] = []
    outcome: dict[str, tuple[float, Any]] = {}
    async with open_pool(
        sharing_config(tmp_path), client_factory=task_factory(world, tasks)
    ) as pool:
        t0 = trio.current_time()

        async def job(name: str, deadline_s: float) -> None:
            try:
                r: Any = await pool.resolve("@xnews", deadline_s=deadline_s)
            except JobFailed as exc:
                r = exc
            outcome[name] = (trio.current_time() - t0, r)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(hold, pool, "a1")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(job, "leader", 5.0)
            await trio.sleep(1)
            nursery.start_soon(job, "joiner", 60.0)
    t, leader = outcome["leader"]
    assert t == 5 and isinstance(leader, JobFailed)
    assert leader.error_class is ErrorClass.DEADLINE_EXCEEDED
    t, joiner = outcome["joiner"]
    assert t == 3 + 8 and joiner.value == {"n": 1} and joiner.meta.shared
    assert calls(world) == 2 and len(tasks) == 2 and tasks[0] is not tasks[1]


async def test_a_call_cut_at_the_leaders_deadline_is_made_again_for_a_later_joiner(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The joiner came while the leader's call was out: it ends by the leader's deadline
    (nothing answered), and the job goes on for the joiner — a second call, one answer each."""
    world = World()
    world.script("a1", Sleep(8, {"n": 1}), Sleep(2, {"n": 2}))
    outcome: dict[str, tuple[float, Any]] = {}
    async with open_pool(sharing_config(tmp_path), client_factory=world.factory()) as pool:

        async def job(name: str, deadline_s: float) -> None:
            try:
                r: Any = await pool.invoke("help.GetConfig", {}, deadline_s=deadline_s)
            except JobFailed as exc:
                r = exc
            assert name not in outcome  # one answer
            outcome[name] = (trio.current_time(), r)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(job, "leader", 5.0)
            await trio.sleep(1)
            nursery.start_soon(job, "joiner", 60.0)
        stats = pool.statistics()
    t, leader = outcome["leader"]
    assert t == 5 and isinstance(leader, JobFailed)
    assert leader.error_class is ErrorClass.DEADLINE_EXCEEDED
    assert leader.message.startswith("job deadline of 5 s passed")
    t, joiner = outcome["joiner"]
    assert joiner.value == {"n": 2} and t == 5 + 2
    assert joiner.meta.attempts == 2  # the cut call counts for the job it was
    assert calls(world) == 2
    assert stats.jobs_ok == 1 and stats.jobs_failed == 1 and stats.jobs_in_flight == 0


async def test_a_leader_no_account_can_serve_in_time_hands_over_to_a_joiner_that_can_wait(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """a1 free in 12 s, a2 in 25 s: the leader (20 s) waits; when a1 is disabled it is
    answered NO_ACCOUNT_AVAILABLE at once (25 s > 20 s), and the joiner (30 s) is served
    at 25 s by the one call."""
    world = World()
    world.script("a1", tg.FloodWaitError(request=None, capture=12))
    world.script("a2", tg.FloodWaitError(request=None, capture=25))
    config = sharing_config(tmp_path, accounts={"a1": "p1", "a2": "p1"})
    outcome: dict[str, tuple[float, Any]] = {}
    async with open_pool(config, client_factory=world.factory()) as pool:
        for acc in ("a1", "a2"):
            with pytest.raises(JobFailed, match="^FLOOD_WAIT"):
                await pool.invoke("messages.GetDialogFilters", {}, account=acc, deadline_s=5)
        t0 = trio.current_time()

        async def job(name: str, deadline_s: float) -> None:
            try:
                r: Any = await pool.invoke("help.GetConfig", {}, deadline_s=deadline_s)
            except JobFailed as exc:
                r = exc
            outcome[name] = (trio.current_time() - t0, r)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(job, "leader", 20)
            await trio.sleep(0.5)
            nursery.start_soon(job, "joiner", 30)
            await trio.sleep(0.5)
            pool.disable_account("a1", "test")
    t, leader = outcome["leader"]
    assert t == pytest.approx(1) and isinstance(leader, JobFailed)
    assert leader.error_class is ErrorClass.NO_ACCOUNT_AVAILABLE
    assert leader.retry_after_s == pytest.approx(25 - 1, abs=0.01)
    t, joiner = outcome["joiner"]
    assert t == pytest.approx(25, abs=0.01) and joiner.meta.shared
    assert calls(world) == 3  # the two floods and the one shared call


async def test_a_leaders_failure_reaches_its_joiners_as_copies(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("a1", Sleep(2, tg.UsernameNotOccupiedError(request=None)))
    failures: list[JobFailed] = []
    async with open_pool(sharing_config(tmp_path), client_factory=world.factory()) as pool:

        async def job() -> None:
            with pytest.raises(JobFailed) as info:
                await pool.resolve("@nobody_here")
            failures.append(info.value)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(job)
            await trio.sleep(1)
            nursery.start_soon(job)
            nursery.start_soon(job)
    assert calls(world) == 1
    assert [f.error_class for f in failures] == [ErrorClass.PEER_NOT_FOUND] * 3
    assert len({id(f) for f in failures}) == 3


async def test_shutdown_lets_a_kept_call_follow_its_callers_cancellation_again(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("a1", Sleep(100, {"n": 1}))
    outcome: dict[str, tuple[float, Any]] = {}
    async with open_pool(sharing_config(tmp_path), client_factory=world.factory()) as pool:

        async def job(name: str) -> None:
            try:
                r: Any = await pool.invoke("help.GetConfig", {})
            except JobFailed as exc:
                r = exc.error_class
            except trio.Cancelled:
                outcome[name] = (trio.current_time(), "cancelled")
                raise
            outcome[name] = (trio.current_time(), r)

        async with trio.open_nursery() as nursery:
            leader = trio.CancelScope()
            nursery.start_soon(_in_scope, leader, lambda: job("leader"))
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(job, "joiner")
            await trio.sleep(1)
            leader.cancel()  # kept on the wire for the joiner
            await trio.sleep(1)
            pool.begin_shutdown()
    assert outcome["leader"] == (2, "cancelled")
    assert outcome["joiner"] == (2, ErrorClass.SHUTTING_DOWN)


async def test_a_leader_alone_is_answered_at_its_deadline_waiting_or_in_its_call(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """No scope of its own: the dispatcher's wait and the account's run end at its deadline
    (`DeadlinePassed`), answered as a job cut by its own scope — nothing judged."""
    world = World()
    world.script("a1", Sleep(10), Sleep(100, {"n": 1}))
    async with open_pool(sharing_config(tmp_path), client_factory=world.factory()) as pool:
        t0 = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hold, pool, "a1")
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(JobFailed) as waiting:
                await pool.invoke("help.GetConfig", {}, deadline_s=3)
            assert trio.current_time() - t0 == 3
        assert waiting.value.error_class is ErrorClass.DEADLINE_EXCEEDED
        assert waiting.value.message == "job deadline of 3 s passed"
        t1 = trio.current_time()
        with pytest.raises(JobFailed) as in_call:
            await pool.invoke("help.GetConfig", {}, deadline_s=2)
        assert trio.current_time() - t1 == 2
        assert in_call.value.error_class is ErrorClass.DEADLINE_EXCEEDED
        assert in_call.value.attempts == 1 and in_call.value.account == "a1"
        acc = pool.statistics().accounts[0]
        assert acc.calls_failed == 0 and not acc.connected  # dropped, not judged
        stats = pool.statistics()
        assert stats.jobs_in_flight == 0 and not pool._flights._by_key
        assert not pool._dispatch._waiters


async def test_joiners_that_cannot_wait_for_the_leaders_account_are_answered_at_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The leader (30 s) waits for an account (a1 free in 12 s, a2 in 25 s): a joiner with
    3 s fails at once, one with 20 s when a1 is disabled (re-judged: 25 s), each as its own
    job would; the leader is served at 25 s in its own task."""
    world = World()
    world.script("a1", tg.FloodWaitError(request=None, capture=12))
    world.script("a2", tg.FloodWaitError(request=None, capture=25))
    config = sharing_config(tmp_path, accounts={"a1": "p1", "a2": "p1"})
    done: dict[str, tuple[float, Any]] = {}
    async with open_pool(config, client_factory=world.factory()) as pool:
        for acc in ("a1", "a2"):
            with pytest.raises(JobFailed, match="^FLOOD_WAIT"):
                await pool.invoke("messages.GetDialogFilters", {}, account=acc, deadline_s=5)
        t0 = trio.current_time()

        async def job(name: str, deadline_s: float) -> None:
            try:
                got: Any = await pool.invoke("help.GetConfig", {}, deadline_s=deadline_s)
                done[name] = (trio.current_time() - t0, got.meta.shared)
            except JobFailed as exc:
                done[name] = (trio.current_time() - t0, (exc.error_class, exc.retry_after_s))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(job, "leader", 30)
            await trio.sleep(0.1)
            nursery.start_soon(job, "short", 3)
            nursery.start_soon(job, "medium", 20)
            await trio.sleep(1)
            pool.disable_account("a1", "test")
    short_at, (cls, retry) = done["short"]
    assert short_at == pytest.approx(0.1) and cls is ErrorClass.NO_ACCOUNT_AVAILABLE
    assert retry == pytest.approx(12 - 0.1, abs=0.01)
    medium_at, (cls, retry) = done["medium"]
    assert medium_at == pytest.approx(1.1) and cls is ErrorClass.NO_ACCOUNT_AVAILABLE
    assert retry == pytest.approx(25 - 1.1, abs=0.01)
    assert done["leader"][0] == pytest.approx(25, abs=0.01) and done["leader"][1] is False


async def test_a_kept_call_follows_the_leaders_cancellation_again_once_its_joiners_left(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("a1", Sleep(100, {"n": 1}))
    ended: dict[str, float] = {}
    async with open_pool(sharing_config(tmp_path), client_factory=world.factory()) as pool:

        async def job(name: str) -> None:
            try:
                await pool.invoke("help.GetConfig", {})
            finally:
                ended[name] = trio.current_time()

        async with trio.open_nursery() as nursery:
            leader, joiner = trio.CancelScope(), trio.CancelScope()
            nursery.start_soon(_in_scope, leader, lambda: job("leader"))
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(_in_scope, joiner, lambda: job("joiner"))
            await trio.sleep(1)
            joiner.cancel()  # the call was kept on the wire for it; nobody else waits now
            await trio.sleep(1)
            leader.cancel()
        assert ended == {"joiner": 1, "leader": 2}
        assert pool.statistics().jobs_in_flight == 0 and not pool._flights._by_key
    assert world.asyncio_tasks[-1].cancelled()  # the call itself was cancelled
