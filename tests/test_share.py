"""Shared and merged read-only jobs (`mtpoold._share`, `mtpoold._readonly`) and the pool's
front that uses them, on the scripted client double, deterministic on MockClock (autojump).

End-to-end counts at the loopback DC are in tests/test_e2e_share.py.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from telethon import errors as tg
from telethon.tl.alltlobjects import tlobjects

from mtpoold._compose import open_pool, telethon_side
from mtpoold._errors import ErrorClass, JobFailed
from mtpoold._pool import open_pool as open_core_pool
from mtpoold._readonly import (
    NOT_READ_ONLY,
    READ_ONLY,
    READ_ONLY_UNLESS,
    is_read_only,
    tl_key,
)
from mtpoold._rpc import GetMessagesParams, parse_params
from mtpoold._share import MERGE_MAX_IDS, Answer, AnswerCache
from mtpoold._tljson import function_by_name

from _fakeclient import FakeClient, Sleep, World, make_config

SHARING = {"share_identical": True, "merge_get_messages": True}
_FUNCTIONS = "telethon.tl.functions"


def _tl_functions() -> list[tuple[str, str]]:
    """Every TL function Telethon knows: (namespace, Telethon class name)."""
    found = []
    for cls in tlobjects.values():
        if cls.__module__.startswith(_FUNCTIONS):
            namespace = cls.__module__[len(_FUNCTIONS) :].lstrip(".")
            found.append((namespace, cls.__name__))
    return sorted(found)


def _spellings(namespace: str, class_name: str) -> list[str]:
    """How callers write one function: Telethon's class, without ``Request``, camelCase."""
    bare = class_name.removesuffix("Request")
    prefix = f"{namespace}." if namespace else ""
    return [
        prefix + class_name,
        prefix + bare,
        prefix + bare[:1].lower() + bare[1:],
        "functions." + prefix + class_name,
    ]


def _listed(namespace: str, class_name: str) -> bool | None:
    """Whether the read-only list names this function (None: only with false arguments)."""
    key = f"{namespace}.{class_name.removesuffix('Request')}".lower().lstrip(".")
    if key in READ_ONLY:
        return True
    if key in READ_ONLY_UNLESS:
        return None
    return False


# -- the read-only list --------------------------------------------------------------------


def test_read_only_list_names_only_functions_telethon_knows() -> None:
    for key in [*READ_ONLY, *READ_ONLY_UNLESS, *NOT_READ_ONLY]:
        cls = function_by_name(key)  # raises JobFailed for a typo
        namespace = cls.__module__[len(_FUNCTIONS) :].lstrip(".")
        assert f"{namespace}.{cls.__name__.lower().removesuffix('request')}" == key
    assert not set(READ_ONLY) & set(NOT_READ_ONLY)
    assert not set(READ_ONLY_UNLESS) & set(NOT_READ_ONLY)


def test_read_only_list_is_the_only_thing_read_only_over_every_tl_function() -> None:
    functions = _tl_functions()
    assert len(functions) > 500  # Telethon's whole schema, not a sample
    for namespace, class_name in functions:
        listed = _listed(namespace, class_name)
        for name in _spellings(namespace, class_name):
            if listed is None:
                arg, _ = READ_ONLY_UNLESS[tl_key(name).removesuffix("request")]
                assert is_read_only(name, {}) and is_read_only(name, {arg: False}), name
                assert not is_read_only(name, {arg: True}), name
            else:
                assert is_read_only(name, {}) is listed, name
    for key in NOT_READ_ONLY:
        assert not is_read_only(key, {})
    assert is_read_only("resolve") and is_read_only("get_messages")
    assert not is_read_only("messages.ReadHistory")
    assert not is_read_only("messages.GetMessagesViews", {"increment": True})


# -- the answer cache ----------------------------------------------------------------------


async def test_AnswerCache_bounds_entries_and_bytes_least_recently_used_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cache = AnswerCache(max_entries=3, max_bytes=10_000, max_entry_bytes=1_000)

    def answer(n: int, size: int = 10) -> Answer:
        return Answer({"x": "a" * size, "n": n}, "a1", "p1", 1, trio.current_time())

    for n in range(3):
        cache.put(f"k{n}", answer(n))
    assert cache.get("k0", 60) is not None  # k0 now most recently used
    cache.put("k3", answer(3))
    assert cache.get("k1", 60) is None and len(cache) == 3  # k1 was least recently used
    cache.put("big", answer(9, size=2_000))
    assert cache.get("big", 60) is None  # over max_entry_bytes: not kept
    small = AnswerCache(max_entries=100, max_bytes=300)
    for n in range(10):
        small.put(f"k{n}", answer(n, size=50))
    assert small.bytes <= 300 and small.get("k9", 60) is not None and small.get("k0", 60) is None
    await trio.sleep(61)
    assert cache.get("k3", 60) is None and cache.get("k3", 62) is not None


# -- the pool: shared calls ----------------------------------------------------------------


def sharing_config(tmp_path: Path, **kw: Any) -> Any:
    kw.setdefault("proxies", {"p1": {"interval_s": 0.0, "capacity": 10}})
    kw.setdefault("accounts", {"a1": "p1", "a2": "p1", "a3": "p1"})
    return make_config(tmp_path, economy=SHARING, **kw)


def calls(world: World) -> int:
    return sum(1 for _, kind, _ in world.starts if kind == "call")


async def test_identical_in_flight_jobs_share_one_call(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    for acc in ("a1", "a2", "a3"):
        world.script(acc, Sleep(2, {"n": acc}))
    results: list[Any] = []
    async with open_pool(sharing_config(tmp_path), client_factory=world.factory()) as pool:

        async def job(method: str, args: dict[str, Any]) -> None:
            results.append(await pool.invoke(method, args))

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                # spelled differently, same function and canonical arguments: one call
                nursery.start_soon(
                    job, "contacts.ResolveUsername", {"username": "x", "referer": "r"}
                )
                nursery.start_soon(
                    job, "contacts.resolveUsername", {"referer": "r", "username": "x"}
                )
    assert calls(world) == 1
    assert len(results) == 10 and len({r.value["n"] for r in results}) == 1
    assert sorted(r.meta.shared for r in results) == [False] + [True] * 9
    assert all(r.meta.merged == 1 and r.meta.age_s == 0 for r in results)


async def test_sharing_off_makes_one_call_per_job(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    config = make_config(
        tmp_path, proxies={"p1": {"interval_s": 0.0, "capacity": 10}}, accounts={"a1": "p1"}
    )  # make_config: sharing off
    async with open_pool(config, client_factory=world.factory()) as pool:
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(pool.resolve, "@xnews")
    assert calls(world) == 4


async def test_different_constraints_or_arguments_are_not_shared(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    for acc in ("a1", "a2", "a3"):
        world.script(acc, *[Sleep(1)] * 5)
    config = sharing_config(tmp_path, tags={"a1": ["eu"], "a2": ["eu"]})
    async with open_pool(config, client_factory=world.factory()) as pool:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pool.resolve, "@xnews")
            nursery.start_soon(pool.resolve, "@XNews")  # same peer key: shared
            nursery.start_soon(pool.resolve, "@ynews")
            nursery.start_soon(partial_resolve(pool, "@xnews", account="a3"))
            nursery.start_soon(partial_resolve(pool, "@xnews", tags=["eu"]))
        with pytest.raises(JobFailed, match="^NO_ACCOUNT_AVAILABLE: no account has all the tags"):
            await pool.resolve("@xnews", tags=iter(["nope"]))  # an iterator is read once
    assert calls(world) == 4


def partial_resolve(pool: Any, peer: str, **kw: Any) -> Any:
    async def run() -> None:
        await pool.resolve(peer, **kw)

    return run


async def test_nothing_outside_the_read_only_list_is_ever_shared_or_cached(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Over every TL function Telethon knows: two identical jobs in flight make two calls
    unless the function is on the read-only list, and ``max_age_s`` is refused for it."""
    world = World()
    config = sharing_config(tmp_path, accounts={"a1": "p1", "a2": "p1"})
    # every function reaches the accounts: no request check (the real one wants real args)
    side = attrs.evolve(
        telethon_side(client_factory=world.factory(), lock_sessions=False),
        check_request=lambda method, args, allow: None,
    )
    not_listed = [
        f"{ns}.{name}" if ns else name for ns, name in _tl_functions() if _listed(ns, name) is False
    ]
    async with open_core_pool(config, side) as pool:
        for method in not_listed:
            before = calls(world)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pool.invoke, method, {"x": 1})
                nursery.start_soon(pool.invoke, method, {"x": 1})
            assert calls(world) - before == 2, method
            with pytest.raises(JobFailed, match=r"^INVALID_ARGUMENT: max_age_s: .* read-only"):
                await pool.invoke(method, {"x": 1}, max_age_s=60)
        assert calls(world) == 2 * len(not_listed)
        for key in READ_ONLY:
            before = calls(world)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pool.invoke, key, {"x": 1})
                nursery.start_soon(pool.invoke, key, {"x": 1})
            assert calls(world) - before == 1, key
        assert pool._flights.cache.hits == 0 and len(pool._flights.cache) == 0
        # read-only only with a false argument: with it true it is a write
        for increment, expected in ((True, 2), (False, 1)):
            before = calls(world)
            async with trio.open_nursery() as nursery:
                for _ in range(2):
                    nursery.start_soon(
                        pool.invoke, "messages.GetMessagesViews", {"increment": increment}
                    )
            assert calls(world) - before == expected


async def test_max_age_s_cache_hit_then_expiry(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("a1", {"n": 1}, {"n": 2}, {"n": 3})
    config = sharing_config(tmp_path, accounts={"a1": "p1"})
    async with open_pool(config, client_factory=world.factory()) as pool:
        first = await pool.invoke("help.GetConfig", {}, max_age_s=60)
        assert first.value == {"n": 1} and not first.meta.shared
        await trio.sleep(30)
        hit = await pool.invoke("help.GetConfig", {}, max_age_s=60)
        assert hit.value == {"n": 1} and hit.meta.shared and hit.meta.age_s == pytest.approx(30)
        assert hit.meta.account == "a1" and hit.meta.attempts == 1
        fresh = await pool.invoke("help.GetConfig", {})  # max_age_s 0: never the cache
        assert fresh.value == {"n": 2} and not fresh.meta.shared
        await trio.sleep(31)  # 61 s after the first answer
        expired = await pool.invoke("help.GetConfig", {}, max_age_s=60)
        assert expired.value == {"n": 3} and not expired.meta.shared
        with pytest.raises(JobFailed, match=r"^INVALID_ARGUMENT: max_age_s must be"):
            await pool.resolve("@xnews", max_age_s=-1)
        with pytest.raises(JobFailed, match=r"^INVALID_ARGUMENT: max_age_s must be"):
            await pool.resolve("@xnews", max_age_s=float("nan"))
    assert calls(world) == 3


async def test_max_age_s_works_with_sharing_off(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("a1", {"n": 1}, {"n": 2})
    config = make_config(tmp_path, accounts={"a1": "p1"})  # sharing off
    async with open_pool(config, client_factory=world.factory()) as pool:
        assert (await pool.resolve("@xnews", max_age_s=10)).value == {"n": 1}
        await trio.sleep(5)
        hit = await pool.resolve("@XNews", max_age_s=10)
        assert hit.value == {"n": 1} and hit.meta.shared and hit.meta.age_s == pytest.approx(5)
    assert calls(world) == 1


async def test_a_subscribers_cancel_leaves_the_others_answered(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("a1", Sleep(10, {"n": 1}))
    config = sharing_config(tmp_path, accounts={"a1": "p1"})
    answers: list[tuple[float, Any]] = []
    async with open_pool(config, client_factory=world.factory()) as pool:
        t0 = trio.current_time()

        async def job() -> None:
            r = await pool.resolve("@xnews")
            answers.append((trio.current_time() - t0, r))

        async with trio.open_nursery() as nursery:
            first = trio.CancelScope()
            nursery.start_soon(_in_scope, first, job)  # the one that starts the call
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(job)
            nursery.start_soon(job)
            await trio.sleep(1)
            first.cancel()
    assert calls(world) == 1
    assert [t for t, _ in answers] == [10, 10]
    assert all(r.value == {"n": 1} and r.meta.shared for _, r in answers)


async def _in_scope(scope: trio.CancelScope, fn: Any) -> None:
    with scope:
        await fn()


async def test_a_subscribers_deadline_leaves_the_others_answered_and_a_later_one_extends_it(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("a1", Sleep(3), Sleep(8, {"n": 1}))  # busy for 3 s, then the shared call
    config = sharing_config(tmp_path, accounts={"a1": "p1"})
    answers: dict[str, tuple[float, Any]] = {}
    async with open_pool(config, client_factory=world.factory()) as pool:
        t0 = trio.current_time()

        async def job(name: str, deadline_s: float) -> None:
            try:
                r: Any = await pool.resolve("@xnews", deadline_s=deadline_s)
            except JobFailed as exc:
                r = exc
            answers[name] = (trio.current_time() - t0, r)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial_invoke(pool))  # holds a1 for 3 s
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(job, "short", 5.0)  # starts the flight, deadline at 5 s
            await trio.sleep(1)
            nursery.start_soon(job, "long", 60.0)  # joins: the flight may now run to 61 s
    assert calls(world) == 2  # the invoke and the one shared resolve
    t_short, short = answers["short"]
    assert t_short == 5 and isinstance(short, JobFailed)
    assert short.error_class is ErrorClass.DEADLINE_EXCEEDED
    assert re.fullmatch(r"job deadline of 5 s passed", short.message)
    t_long, long = answers["long"]
    assert t_long == 3 + 8 and long.value == {"n": 1} and long.meta.shared


async def test_the_last_subscriber_leaving_cancels_the_call(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("a1", Sleep(1000), Sleep(1000))
    config = sharing_config(tmp_path, accounts={"a1": "p1"})
    async with open_pool(config, client_factory=world.factory()) as pool:
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(pool.resolve, "@xnews")
            await trio.sleep(2)
            nursery.cancel_scope.cancel()
        # the job's call unwound before the last caller went, as a job in its own task
        loop = asyncio.get_event_loop_policy().get_event_loop()
        assert not [t for t in asyncio.all_tasks(loop) if not t.done()]
        assert pool.statistics().jobs_in_flight == 0
        with pytest.raises(JobFailed) as info:
            await pool.resolve("@xnews", deadline_s=5)  # a new call, not the cancelled one
        assert info.value.error_class is ErrorClass.DEADLINE_EXCEEDED
    assert [t.cancelled() for t in world.asyncio_tasks[:2]] == [False, True]  # connect, call


async def test_a_shared_failure_reaches_every_subscriber(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("a1", Sleep(1, tg.UsernameNotOccupiedError(request=None)))
    config = sharing_config(tmp_path, accounts={"a1": "p1"})
    failures: list[JobFailed] = []
    async with open_pool(config, client_factory=world.factory()) as pool:

        async def job() -> None:
            with pytest.raises(JobFailed) as info:
                await pool.resolve("@nobody_here")
            failures.append(info.value)

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(job)
        stats = pool.statistics()
    assert calls(world) == 1
    assert [f.error_class for f in failures] == [ErrorClass.PEER_NOT_FOUND] * 4
    assert len({id(f) for f in failures}) == 4  # one exception object each
    assert stats.jobs_failed == 4 and stats.jobs_ok == 0


# -- the pool: merged get_messages ---------------------------------------------------------


@attrs.define(eq=False)
class MessagesClient(FakeClient):
    """A double whose ``get_messages`` answers like the real client: every id asked for,
    ids < 100 exist; records each call's ids."""

    asked: list[tuple[str, list[int]]] = attrs.field(factory=list)

    async def get_messages(self, peer: str | int, ids: Any) -> dict[str, Any]:
        self.asked.append((self.account, list(ids)))
        answer = await self._call()
        if "ok" not in answer:
            return answer
        return {str(i): {"exists": True, "id": i} if i < 100 else {"exists": False} for i in ids}


def messages_factory(world: World, asked: list[tuple[str, list[int]]]) -> Any:
    def make(acc: Any) -> MessagesClient:
        client = MessagesClient(acc.id, world, asked=asked)
        world.clients.append(client)
        return client

    return make


async def test_merged_get_messages_answer_each_job_with_exactly_its_ids(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("a1", Sleep(5))  # the account is busy: the get_messages jobs wait for it
    asked: list[tuple[str, list[int]]] = []
    config = sharing_config(tmp_path, accounts={"a1": "p1"})
    results: dict[str, Any] = {}
    async with open_pool(config, client_factory=messages_factory(world, asked)) as pool:

        async def job(name: str, peer: str, ids: list[int]) -> None:
            results[name] = await pool.get_messages(peer, ids)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pool.invoke, "help.GetConfig", {})  # holds a1 for 5 s
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(job, "a", "@chan_one", [1, 2])
            nursery.start_soon(job, "b", "t.me/Chan_One", [3, 1])  # same chat, another spelling
            nursery.start_soon(job, "c", "@chan_one", [150])  # a missing id
            nursery.start_soon(job, "other", "@other_chan", [1])
            await trio.testing.wait_all_tasks_blocked()
            gone = trio.CancelScope()
            nursery.start_soon(_in_scope, gone, lambda: job("gone", "@chan_one", [77]))
            await trio.testing.wait_all_tasks_blocked()
            gone.cancel()  # leaves before the batch closes: its id is not asked for
    assert sorted((a, sorted(ids)) for a, ids in asked) == [("a1", [1]), ("a1", [1, 2, 3, 150])]
    assert results["a"].value == {"1": {"exists": True, "id": 1}, "2": {"exists": True, "id": 2}}
    assert list(results["b"].value) == ["3", "1"]
    assert results["c"].value == {"150": {"exists": False}}
    assert "gone" not in results
    assert [results[n].meta.merged for n in "abc"] == [3, 3, 3]
    assert results["other"].meta.merged == 1
    assert not any(results[n].meta.shared for n in ("a", "b", "c", "other"))


async def test_a_batch_closes_when_its_call_goes_out_and_later_jobs_start_the_next(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("a1", Sleep(3), Sleep(3))
    asked: list[tuple[str, list[int]]] = []
    config = sharing_config(tmp_path, accounts={"a1": "p1"})
    async with open_pool(config, client_factory=messages_factory(world, asked)) as pool:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pool.get_messages, "@chan_one", [1])  # its call goes out at once
            await trio.sleep(1)
            nursery.start_soon(pool.get_messages, "@chan_one", [2])  # waits: the next batch
            nursery.start_soon(pool.get_messages, "@chan_one", [3])
            await trio.sleep(1)
            nursery.start_soon(
                pool.get_messages, "@chan_one", [1]
            )  # identical to the first: shared
    assert [(a, sorted(ids)) for a, ids in asked] == [("a1", [1]), ("a1", [2, 3])]


async def test_merged_batches_hold_at_most_100_ids(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("a1", Sleep(2))
    asked: list[tuple[str, list[int]]] = []
    config = sharing_config(tmp_path, accounts={"a1": "p1"})
    async with open_pool(config, client_factory=messages_factory(world, asked)) as pool:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pool.invoke, "help.GetConfig", {})
            await trio.testing.wait_all_tasks_blocked()
            for ids in (list(range(1, 61)), list(range(41, 101)), [200]):  # 100, then the 101st
                nursery.start_soon(pool.get_messages, "@chan_one", ids)
                await trio.testing.wait_all_tasks_blocked()
    assert [len(ids) for _, ids in asked] == [MERGE_MAX_IDS, 1]


async def test_a_failed_batch_is_retried_together_and_a_members_deadline_spares_the_others(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("a1", Sleep(5), ConnectionResetError("reset"))  # held, then the batch fails
    world.script("a2", Sleep(6))  # held a second longer: the retry's account
    asked: list[tuple[str, list[int]]] = []
    config = sharing_config(tmp_path, accounts={"a1": "p1", "a2": "p1"})
    results: dict[str, Any] = {}
    async with open_pool(config, client_factory=messages_factory(world, asked)) as pool:
        t0 = trio.current_time()

        async def job(name: str, ids: list[int], deadline_s: float = 60) -> None:
            try:
                results[name] = await pool.get_messages("@chan_one", ids, deadline_s=deadline_s)
            except JobFailed as exc:
                results[name] = exc
            results[name + "@"] = trio.current_time() - t0

        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial_invoke(pool, account="a1"))
            nursery.start_soon(partial_invoke(pool, account="a2"))
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(job, "x", [1])
            nursery.start_soon(job, "y", [2])
            nursery.start_soon(job, "short", [3], 5.5)  # passes while the batch waits for a2
    # one batch: on a1 at 5 s (reset), again on a2 at 6 s without the member that left
    assert [(a, sorted(ids)) for a, ids in asked] == [("a1", [1, 2, 3]), ("a2", [1, 2])]
    assert results["x"].value == {"1": {"exists": True, "id": 1}}
    assert results["y"].value == {"2": {"exists": True, "id": 2}}
    assert results["x@"] == results["y@"] == 6
    assert results["x"].meta.attempts == 2 and results["x"].meta.merged == 2
    short = results["short"]
    assert isinstance(short, JobFailed) and short.error_class is ErrorClass.DEADLINE_EXCEEDED
    assert results["short@"] == 5.5
    assert short.message.startswith("job deadline of 5.5 s passed (last error: STREAM_CLOSED:")


def partial_invoke(pool: Any, **kw: Any) -> Any:
    async def run() -> None:
        await pool.invoke("help.GetConfig", {}, **kw)

    return run


async def test_merging_off_makes_one_call_per_get_messages_job(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("a1", Sleep(2))
    asked: list[tuple[str, list[int]]] = []
    config = make_config(
        tmp_path, accounts={"a1": "p1"}, economy={"share_identical": True}
    )  # merge off
    async with open_pool(config, client_factory=messages_factory(world, asked)) as pool:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pool.invoke, "help.GetConfig", {})
            await trio.testing.wait_all_tasks_blocked()
            for ids in ([1], [2], [2]):  # the two [2] are identical: shared
                nursery.start_soon(pool.get_messages, "@chan_one", ids)
    assert sorted(ids for _, ids in asked) == [[1], [2]]


async def test_members_that_cannot_wait_for_the_flights_account_are_answered_at_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A flight waits for an account (a1 free in 12 s, a2 in 25 s): a member joining with a
    3 s deadline fails at once, as its own job would; one with 20 s waits, and is answered
    at once when a1 is disabled (the dispatcher re-judges: 25 s); the 30 s one is served."""
    world = World()
    world.script("a1", tg.FloodWaitError(request=None, capture=12))
    world.script("a2", tg.FloodWaitError(request=None, capture=25))
    config = sharing_config(tmp_path, accounts={"a1": "p1", "a2": "p1"})
    done: dict[str, tuple[float, Any]] = {}
    async with open_pool(config, client_factory=world.factory()) as pool:
        for acc in ("a1", "a2"):
            with pytest.raises(JobFailed, match="^FLOOD_WAIT"):
                await pool.invoke("help.GetConfig", {}, account=acc, deadline_s=5)
        t0 = trio.current_time()

        async def job(name: str, deadline_s: float) -> None:
            try:
                got: Any = await pool.get_messages("@chan_one", [1], deadline_s=deadline_s)
                done[name] = (trio.current_time() - t0, got.meta.shared)
            except JobFailed as exc:
                done[name] = (trio.current_time() - t0, (exc.error_class, exc.retry_after_s))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(job, "long", 30)
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
    assert done["long"][0] == pytest.approx(25, abs=0.01) and done["long"][1] is False


def test_rpc_max_age_s_reaches_the_options() -> None:
    params = parse_params(
        "get_messages", {"peer": "@xnews", "ids": [1], "options": {"max_age_s": 30}}
    )
    assert isinstance(params, GetMessagesParams) and params.options.max_age_s == 30.0
    assert parse_params("invoke", {"method": "help.GetConfig"}).options.max_age_s == 0.0  # type: ignore[union-attr]
