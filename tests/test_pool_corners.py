"""Scheduling corner cases on MockClock with the client double: proxy cooldowns meeting
queued jobs, reloads and pinned jobs."""

from __future__ import annotations

from pathlib import Path

import pytest
import python_socks
import trio
import trio.testing
from telethon import errors as tg

from mtpoold._compose import open_pool
from mtpoold._errors import JobFailed

from _fakeclient import Sleep, World, make_config


async def _answer(coro) -> tuple[str, float, float | None, str]:
    t0 = trio.current_time()
    try:
        await coro
        return ("ok", trio.current_time() - t0, None, "")
    except JobFailed as exc:
        return (exc.error_class.value, trio.current_time() - t0, exc.retry_after_s, exc.message)


async def test_pinned_job_waiting_on_an_account_disabled_by_the_operator_is_answered_at_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("a1", Sleep(5.0, {"ok": True}))
    config = make_config(tmp_path, accounts={"a1": "p1", "a2": "p2"})
    answers: dict[str, tuple[str, float, float | None, str]] = {}
    async with open_pool(config, client_factory=world.factory()) as pool:

        async def job(name: str) -> None:
            answers[name] = await _answer(
                pool.invoke("help.GetConfig", {}, account="a1", deadline_s=120)
            )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(job, "first")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(job, "second")
            await trio.sleep(1.0)
            pool.disable_account("a1", "manual")
    print(answers)
    assert answers["first"][0] == "ok"
    kind, t, _, message = answers["second"]
    assert kind == "NO_ACCOUNT_AVAILABLE"
    assert t == pytest.approx(1.0, abs=0.01), answers  # at the disable, not at a1's release


async def test_jobs_queued_on_a_lane_do_not_connect_through_it_once_it_cools_down(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # one proxy (capacity 1), four accounts: a1's connect fails PROXY_UNAVAILABLE at 2 s and
    # the proxy cools 600 s. The three jobs queued behind it (deadline 60 s) cannot start
    # before 602 s: they should be answered at ~2 s without touching the proxy again.
    world = World()
    accounts = {f"a{i}": "p1" for i in range(1, 5)}
    for acc in accounts:
        world.connect_scripts[acc].append(Sleep(2.0, python_socks.ProxyConnectionError("refused")))
    config = make_config(
        tmp_path,
        proxies={"p1": {"interval_s": 0.0, "capacity": 1}},
        accounts=accounts,
        policy={"proxy_cooldown_min_s": 600, "max_attempts": 1},
    )
    answers: list[tuple[str, float, float | None, str]] = []
    async with open_pool(config, client_factory=world.factory()) as pool:

        async def job() -> None:
            answers.append(await _answer(pool.invoke("help.GetConfig", {}, deadline_s=60)))

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(job)
                await trio.testing.wait_all_tasks_blocked()
        lane = next(p for p in pool.statistics().proxies if p.name == "p1")
    print(answers, world.starts, lane)
    # before the fix: connects at 0, 2, 4, 6 s; consecutive_failures == 4
    assert [kind for _, kind, _ in world.starts] == ["connect"], world.starts
    assert lane.consecutive_failures == 1, lane
    assert sorted(a[0] for a in answers) == ["NO_ACCOUNT_AVAILABLE"] * 3 + ["PROXY_UNAVAILABLE"]
    assert all(t == pytest.approx(2.0, abs=0.1) for _, t, _, _ in answers), answers


async def test_reload_keeps_a_cooling_proxy_cooling(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("a1", python_socks.ProxyConnectionError("refused"))
    config = make_config(
        tmp_path,
        proxies={"p1": {"interval_s": 0.0}},
        accounts={"a1": "p1"},
        policy={"proxy_cooldown_min_s": 100, "max_attempts": 1},
    )
    async with open_pool(config, client_factory=world.factory()) as pool:
        first = await _answer(pool.invoke("help.GetConfig", {}, deadline_s=10))
        assert first[0] == "PROXY_UNAVAILABLE"
        # same proxy, a changed capacity: a harmless reload
        config2 = make_config(
            tmp_path,
            proxies={"p1": {"interval_s": 0.0, "capacity": 2}},
            accounts={"a1": "p1"},
            policy={"proxy_cooldown_min_s": 100, "max_attempts": 1},
        )
        await pool.reload(config2)
        lane = next(p for p in pool.statistics().proxies if p.name == "p1")
        assert lane.cooldown_remaining_s > 90, lane
        second = await _answer(pool.invoke("help.GetConfig", {}, deadline_s=10))
        assert second[0] == "NO_ACCOUNT_AVAILABLE", second


async def test_job_that_failed_generic_on_every_account_is_retried_not_starved(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # case 003's kind with GENERIC (backoff 10 s) instead of STREAM_CLOSED
    world = World()
    for acc in ("a1", "a2"):
        world.script(acc, RuntimeError("boom"), *[Sleep(1.0, {"ok": True}) for _ in range(10)])
    config = make_config(
        tmp_path,
        proxies={"p1": {"interval_s": 0.0, "capacity": 2}},
        accounts={"a1": "p1", "a2": "p1"},
    )
    answers: dict[str, tuple[str, float, float | None, str]] = {}
    async with open_pool(config, client_factory=world.factory()) as pool:

        async def job(name: str) -> None:
            answers[name] = await _answer(pool.invoke("help.GetConfig", {}, deadline_s=120))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(job, "A")
            await trio.sleep(0.5)
            for i in range(4):
                nursery.start_soon(job, f"B{i}")
    print({k: (v[0], round(v[1], 2)) for k, v in answers.items()})
    assert answers["A"][0] == "ok", answers
    assert answers["A"][1] < 60, answers


async def test_flood_wait_on_every_account_answers_the_waiting_pinned_and_tagged_jobs(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("a1", Sleep(1.0, tg.FloodWaitError(request=None, capture=500)))
    config = make_config(
        tmp_path, accounts={"a1": "p1", "a2": "p2"}, tags={"a1": ["eu"], "a2": ["us"]}
    )
    answers: dict[str, tuple[str, float, float | None, str]] = {}
    async with open_pool(config, client_factory=world.factory()) as pool:

        async def job(name: str) -> None:
            answers[name] = await _answer(
                pool.invoke("help.GetConfig", {}, tags=["eu"], deadline_s=100)
            )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(job, "first")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(job, "second")
    print(answers)
    assert answers["first"][0] in ("FLOOD_WAIT", "NO_ACCOUNT_AVAILABLE")
    assert answers["second"][0] == "NO_ACCOUNT_AVAILABLE"
    assert answers["second"][1] == pytest.approx(answers["first"][1], abs=0.05)


def _proxy_config(tmp_path: Path, password: str, **telegram: object) -> object:
    return make_config(
        tmp_path,
        proxies={"p1": {"interval_s": 0.0, "username": "u", "password": password}},
        accounts={"a1": "p1"},
        policy={"proxy_cooldown_min_s": 300, "max_attempts": 1},
        telegram=telegram or None,
    )


async def test_first_job_after_a_reload_on_a_cooling_proxy_is_answered_at_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.connect_scripts["a1"].append(python_socks.ProxyError("authentication failed"))
    async with open_pool(_proxy_config(tmp_path, "wrong"), client_factory=world.factory()) as pool:
        first = await _answer(pool.invoke("help.GetConfig", {}, deadline_s=20))
        assert first[0] == "PROXY_UNAVAILABLE"
        before = await _answer(pool.invoke("help.GetConfig", {}, deadline_s=20))
        assert before[0] == "NO_ACCOUNT_AVAILABLE" and before[1] == 0  # holds before a reload
        # a reload that reconnects a1 but leaves the proxy as it was (a changed proxy lifts
        # its cooldown: see the next test)
        changed = _proxy_config(tmp_path, "wrong", connect_timeout_s=7.0)
        summary = await pool.reload(changed)  # type: ignore[arg-type]
        assert summary.reconnected == ("a1",)
        after = await _answer(pool.invoke("help.GetConfig", {}, deadline_s=20))
        print(
            after
        )  # before the fix: ('DEADLINE_EXCEEDED', 20.0, None, 'job deadline of 20 s passed')
        assert after[0] == "NO_ACCOUNT_AVAILABLE", after
        assert after[1] == pytest.approx(0, abs=0.01)
        assert after[2] is not None and after[2] > 250


async def test_fixing_a_cooling_proxys_password_lets_it_be_tried_again(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.connect_scripts["a1"].append(python_socks.ProxyError("authentication failed"))
    async with open_pool(_proxy_config(tmp_path, "wrong"), client_factory=world.factory()) as pool:
        first = await _answer(pool.invoke("help.GetConfig", {}, deadline_s=20))
        assert first[0] == "PROXY_UNAVAILABLE"
        await pool.reload(_proxy_config(tmp_path, "right"))  # type: ignore[arg-type]
        lane = next(p for p in pool.statistics().proxies if p.name == "p1")
        print(lane)  # before the fix: cooldown_remaining_s=300.0
        assert lane.cooldown_remaining_s == 0, lane
        assert (await _answer(pool.invoke("help.GetConfig", {}, deadline_s=20)))[0] == "ok"
