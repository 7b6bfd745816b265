"""The pool with a scripted client double, deterministic on MockClock (autojump)."""

from __future__ import annotations

import asyncio
import collections
from functools import partial
from pathlib import Path

import pytest
import python_socks
import trio
import trio.testing
from telethon import errors as tg

from mtpoold._compose import open_pool
from mtpoold._errors import ErrorClass, JobFailed

from _fakeclient import Sleep, World, make_config


def stats_of(pool, account_id):
    return next(a for a in pool.statistics().accounts if a.id == account_id)


def lane_of(pool, name):
    return next(p for p in pool.statistics().proxies if p.name == name)


async def test_Pool_invoke_returns_result_and_meta(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    config = make_config(tmp_path, accounts={"a1": "p1"})
    async with open_pool(config, client_factory=world.factory()) as pool:
        result = await pool.invoke("help.GetConfig", {})
    assert result.value == {"ok": True, "account": "a1"}
    assert result.meta.account == "a1"
    assert result.meta.attempts == 1
    assert result.meta.proxy_key == lane_of(pool, "p1").key
    assert result.meta.proxy_key == "p1"  # the proxy's name, never a hash of its password


async def test_Pool_one_call_at_a_time_per_account_with_100_pinned_jobs(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("a1", *[Sleep(0.5, {"n": i}) for i in range(100)])
    config = make_config(
        tmp_path, proxies={"p1": {"interval_s": 0.0, "capacity": 10}}, accounts={"a1": "p1"}
    )
    results = []
    async with open_pool(config, client_factory=world.factory()) as pool:

        async def job() -> None:
            results.append(await pool.invoke("help.GetConfig", {}, account="a1"))

        async with trio.open_nursery() as nursery:
            for _ in range(100):
                nursery.start_soon(job)
    assert len(results) == 100
    assert all(r.meta.account == "a1" for r in results)
    assert world.max_active["a1"] == 1
    assert sorted(r.value["n"] for r in results) == list(range(100))


async def test_Pool_call_starts_on_one_proxy_respect_interval_including_connects(
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
) -> None:
    world = World()
    config = make_config(
        tmp_path,
        proxies={"p1": {"interval_s": 1.5, "capacity": 3}},
        accounts={"a1": "p1", "a2": "p1", "a3": "p1"},
    )
    async with open_pool(config, client_factory=world.factory()) as pool:
        async with trio.open_nursery() as nursery:
            for _ in range(12):
                nursery.start_soon(pool.invoke, "help.GetConfig", {})
    starts = sorted(t for _, _, t in world.starts)
    assert len(starts) == 12 + 3  # three connects took slots too
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= 1.5 - 1e-9
    # each account's first call waited for its connect's slot
    for acc in ("a1", "a2", "a3"):
        connect = next(t for a, k, t in world.starts if a == acc and k == "connect")
        assert world.calls_of(acc)[0] >= connect + 1.5 - 1e-9


async def test_Pool_flood_wait_cools_account_exactly_and_reroutes(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("a1", tg.FloodWaitError(request=None, capture=37))
    config = make_config(tmp_path, accounts={"a1": "p1", "a2": "p2"})
    async with open_pool(config, client_factory=world.factory()) as pool:
        result = await pool.invoke("help.GetConfig", {}, account=None)
        # a1 is least recently used and on an idle lane: it is tried first
        assert result.meta.account == "a2"
        assert result.meta.attempts == 2
        a1 = stats_of(pool, "a1")
        assert a1.state == "cooldown"
        assert a1.errors_by_class == {"FLOOD_WAIT": 1}
        assert a1.last_error_class == "FLOOD_WAIT"
        # the cooldown is exactly 37 s from the verdict
        failed_at = world.calls_of("a1")[0]
        assert a1.cooldown_remaining_s == pytest.approx(37 - (trio.current_time() - failed_at))
        # pinned jobs wait for the cooldown rather than fail, since it ends before the deadline
        again = await pool.invoke("help.GetConfig", {}, account="a1")
        assert again.meta.account == "a1"
        assert world.calls_of("a1")[1] >= failed_at + 37


@pytest.mark.parametrize(
    ("error", "policy"),
    [
        # a FLOOD_WAIT whose end is past what gmtime can write (Errno 75 at 1e17 s), and
        # one past time_t (the loopback DC's ``flood METHOD 1e20``: OverflowError)
        (tg.FloodWaitError(request=None, capture=10**17), {}),
        (tg.FloodWaitError(request=None, capture=10**20), {}),
        # an operator's finite but far cooldown (check-config takes it)
        (
            tg.RPCError(request=None, message="SOMETHING_ODD", code=500),
            {"generic_cooldown_s": 1e308},
        ),
    ],
)
async def test_Pool_a_cooldown_of_any_length_is_answered_not_a_crash(
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    error: Exception,
    policy: dict[str, float],
) -> None:
    # shared case 002's kind: an OverflowError writing the cooldown's end (until=) on its
    # log line made the job an INTERNAL_ERROR; now it is answered and the account cools
    world = World()
    world.script("a1", error)
    config = make_config(tmp_path, accounts={"a1": "p1", "a2": "p2"}, policy=policy)
    async with open_pool(config, client_factory=world.factory()) as pool:
        result = await pool.invoke("help.GetConfig", {}, account=None)
        assert (result.meta.account, result.meta.attempts) == ("a2", 2)
        a1 = stats_of(pool, "a1")
        assert a1.state == "cooldown" and a1.cooldown_remaining_s > 1e15


async def test_Pool_flood_wait_0_is_treated_as_one_second(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("a1", tg.FloodWaitError(request=None, capture=0))
    config = make_config(tmp_path, accounts={"a1": "p1"})
    async with open_pool(config, client_factory=world.factory()) as pool:
        result = await pool.invoke("help.GetConfig", {})
    assert result.meta.attempts == 2
    first, second = world.calls_of("a1")
    assert second - first >= 1.0


async def test_Pool_peer_flood_cools_account_24h(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("a1", tg.PeerFloodError(request=None))
    config = make_config(tmp_path, accounts={"a1": "p1", "a2": "p2"})
    async with open_pool(config, client_factory=world.factory()) as pool:
        result = await pool.invoke("help.GetConfig", {})
        assert result.meta.account == "a2"
        assert stats_of(pool, "a1").cooldown_remaining_s == pytest.approx(86400, abs=5)


async def test_Pool_stream_closed_reconnects_cools_60s_and_reroutes(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("a1", ConnectionResetError("Connection reset by peer"))
    config = make_config(tmp_path, accounts={"a1": "p1", "a2": "p2"})
    async with open_pool(config, client_factory=world.factory()) as pool:
        result = await pool.invoke("help.GetConfig", {})
        assert result.meta.account == "a2"
        a1 = stats_of(pool, "a1")
        assert a1.cooldown_remaining_s == pytest.approx(60, abs=3)
        assert not a1.connected
        first_client = next(c for c in world.clients if c.account == "a1")
        assert first_client.disconnects == 1
        # after the cooldown the same client object reconnects (its entity cache survives)
        await trio.sleep(61)
        again = await pool.invoke("help.GetConfig", {}, account="a1")
        assert again.meta.account == "a1"
        assert sum(1 for c in world.clients if c.account == "a1") == 1
        assert [k for a, k, _ in world.starts if a == "a1"] == [
            "connect",
            "call",
            "connect",
            "call",
        ]


async def test_Pool_proxy_unavailable_cools_the_proxy_with_backoff(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    down = python_socks.ProxyConnectionError("Could not connect to proxy 127.0.0.1:1080")
    world.connect_scripts["a1"].extend([down, down])
    world.connect_scripts["a2"].extend([down])
    config = make_config(tmp_path, accounts={"a1": "p1", "a2": "p1", "a3": "p2"})
    async with open_pool(config, client_factory=world.factory()) as pool:
        result = await pool.invoke("help.GetConfig", {}, tags=())
        assert result.meta.account == "a3"
        p1 = lane_of(pool, "p1")
        assert p1.consecutive_failures >= 1
        assert p1.errors_by_class["PROXY_UNAVAILABLE"] >= 1
        assert p1.cooldown_remaining_s > 0
        # while p1 cools down, its accounts are out of scheduling
        for _ in range(3):
            r = await pool.invoke("help.GetConfig", {})
            assert r.meta.account == "a3"
        assert stats_of(pool, "a1").state in ("idle", "cooldown")


async def test_Pool_proxy_backoff_doubles(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    down = python_socks.ProxyConnectionError("Could not connect to proxy")
    world.connect_scripts["a1"].extend([down, down, down])
    config = make_config(
        tmp_path, accounts={"a1": "p1"}, policy={"max_attempts": 3, "job_deadline_s": 1000}
    )
    async with open_pool(config, client_factory=world.factory()) as pool:
        t0 = trio.current_time()
        with pytest.raises(JobFailed) as info:
            await pool.invoke("help.GetConfig", {}, deadline_s=1000)
        assert info.value.error_class is ErrorClass.PROXY_UNAVAILABLE
        assert info.value.attempts == 3
        connects = [t - t0 for a, k, t in world.starts if k == "connect"]
        # 10 s then 20 s of proxy cooldown between the attempts
        assert connects[1] - connects[0] >= 10
        assert connects[2] - connects[1] >= 20
        assert lane_of(pool, "p1").cooldown_remaining_s == pytest.approx(40, abs=1)


async def test_Pool_session_revoked_disables_account_and_reroutes(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("a1", tg.AuthKeyUnregisteredError(request=None))
    config = make_config(tmp_path, accounts={"a1": "p1", "a2": "p2"})
    async with open_pool(config, client_factory=world.factory()) as pool:
        result = await pool.invoke("help.GetConfig", {})
        assert result.meta.account == "a2"
        a1 = stats_of(pool, "a1")
        assert a1.state == "disabled"
        assert "AUTH_KEY_UNREGISTERED" in a1.disabled_reason
        with pytest.raises(JobFailed) as info:
            await pool.invoke("help.GetConfig", {}, account="a1")
        assert info.value.error_class is ErrorClass.NO_ACCOUNT_AVAILABLE
        # Telegram revoked it: enabling it again needs force (after a re-authorization)
        with pytest.raises(ValueError, match="Telegram answered AUTH_KEY_UNREGISTERED"):
            pool.enable_account("a1")
        assert stats_of(pool, "a1").state == "disabled"
        # disabling it again without a reason keeps Telegram's
        assert pool.disable_account("a1") == a1.disabled_reason
        pool.enable_account("a1", force=True)
        assert (await pool.invoke("help.GetConfig", {}, account="a1")).meta.account == "a1"


async def test_Pool_peer_not_found_from_telegram_is_final_without_penalty(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("a1", tg.UsernameNotOccupiedError(request=None))
    config = make_config(tmp_path, accounts={"a1": "p1", "a2": "p2"})
    async with open_pool(config, client_factory=world.factory()) as pool:
        with pytest.raises(JobFailed) as info:
            await pool.invoke("contacts.ResolveUsername", {"username": "nobody_here"})
        assert info.value.error_class is ErrorClass.PEER_NOT_FOUND
        assert info.value.attempts == 1
        a1 = stats_of(pool, "a1")
        assert a1.cooldown_remaining_s == 0
        assert a1.state == "ready"


async def test_Pool_local_entity_miss_is_rerouted_to_another_account(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    miss = ValueError("Could not find the input entity for PeerUser(user_id=42) (PeerUser)")
    world.script("a1", miss)
    world.script("a2", miss)
    config = make_config(tmp_path, accounts={"a1": "p1", "a2": "p2", "a3": "p2"})
    async with open_pool(config, client_factory=world.factory()) as pool:
        result = await pool.invoke("users.GetFullUser", {"id": 42})
        assert result.meta.account == "a3"
        assert result.meta.attempts == 3
    # and with no account left to try, it is final
    world = World()
    world.script("a1", miss)
    async with open_pool(
        make_config(tmp_path, accounts={"a1": "p1"}), client_factory=world.factory()
    ) as pool:
        with pytest.raises(JobFailed) as info:
            await pool.invoke("users.GetFullUser", {"id": 42})
        assert info.value.error_class is ErrorClass.PEER_NOT_FOUND


async def test_Pool_generic_error_backs_off_on_the_old_schedule_and_is_bounded(
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
) -> None:
    world = World()
    boom = tg.RPCError(request=None, message="INTERNAL_SERVER_ERROR", code=500)
    world.script("a1", *[boom] * 5)
    config = make_config(
        tmp_path,
        accounts={"a1": "p1"},
        proxies={"p1": {"interval_s": 0.0}},
        policy={"job_deadline_s": 10_000},
    )
    async with open_pool(config, client_factory=world.factory()) as pool:
        with pytest.raises(JobFailed) as info:
            await pool.invoke("help.GetConfig", {}, deadline_s=10_000)
        assert info.value.error_class is ErrorClass.GENERIC
        assert info.value.attempts == 5
        calls = world.calls_of("a1")
        gaps = [round(b - a) for a, b in zip(calls, calls[1:], strict=False)]
        assert gaps == [10, 30, 60, 120]


async def test_Pool_call_deadline_is_deadline_exceeded_and_rerouted(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("a1", Sleep(1000))
    config = make_config(tmp_path, accounts={"a1": "p1", "a2": "p2"})
    async with open_pool(config, client_factory=world.factory()) as pool:
        result = await pool.invoke("help.GetConfig", {})
        assert result.meta.account == "a2"
        a1 = stats_of(pool, "a1")
        assert a1.last_error_class == "DEADLINE_EXCEEDED"
        assert not a1.connected  # dropped: the call was left half-done


async def test_Pool_job_deadline_mid_call_cancels_the_asyncio_side(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("a1", Sleep(1000))
    config = make_config(tmp_path, accounts={"a1": "p1"})
    async with open_pool(config, client_factory=world.factory()) as pool:
        t0 = trio.current_time()
        with pytest.raises(JobFailed) as info:
            await pool.invoke("help.GetConfig", {}, deadline_s=5.0)
        assert info.value.error_class is ErrorClass.DEADLINE_EXCEEDED
        assert trio.current_time() - t0 == pytest.approx(5.0)
        loop = asyncio.get_event_loop_policy().get_event_loop()
        assert not [t for t in asyncio.all_tasks(loop) if not t.done()]
    assert world.asyncio_tasks and all(t.cancelled() for t in world.asyncio_tasks[-1:])


async def test_Pool_no_account_available_fails_at_once_with_earliest_time(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("a1", tg.FloodWaitError(request=None, capture=300))
    config = make_config(tmp_path, accounts={"a1": "p1"})
    async with open_pool(config, client_factory=world.factory()) as pool:
        t0 = trio.current_time()
        # The job that met the FLOOD_WAIT answers with it: no account can take its retry
        with pytest.raises(JobFailed) as info:
            await pool.invoke("help.GetConfig", {}, deadline_s=180)
        assert info.value.error_class is ErrorClass.FLOOD_WAIT
        assert info.value.retry_after_s == pytest.approx(300, abs=3)
        assert "no account for a retry" in info.value.message
        # A new job finds the only account cooling past its deadline: NO_ACCOUNT_AVAILABLE
        with pytest.raises(JobFailed) as info:
            await pool.invoke("help.GetConfig", {}, deadline_s=180)
        assert info.value.error_class is ErrorClass.NO_ACCOUNT_AVAILABLE
        assert info.value.attempts == 0
        assert info.value.retry_after_s == pytest.approx(300, abs=3)
        assert trio.current_time() - t0 < 3  # neither slept towards the deadline


async def test_Pool_sheds_queued_jobs_whose_turn_comes_after_their_deadline(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # One proxy at one start per 2 s, two connected accounts; a burst of 20 jobs with a 10 s
    # deadline. Four can start in time: most others fail at once with NO_ACCOUNT_AVAILABLE
    # instead of timing out at 10 s. The estimate is a lower bound (it never sheds a job
    # that could make it), so the two jobs that had an account but whose start fell past the
    # deadline still end as DEADLINE_EXCEEDED.
    world = World()
    config = make_config(
        tmp_path,
        proxies={"p1": {"interval_s": 2.0, "capacity": 2}},
        accounts={"a1": "p1", "a2": "p1"},
    )
    outcomes: list[tuple[str, float]] = []
    async with open_pool(config, client_factory=world.factory()) as pool:
        for acc in ("a1", "a2"):  # connect both first
            await pool.invoke("help.GetConfig", {}, account=acc)
        t0 = trio.current_time()

        async def job() -> None:
            try:
                await pool.invoke("help.GetConfig", {}, deadline_s=10)
                outcomes.append(("ok", trio.current_time() - t0))
            except JobFailed as exc:
                outcomes.append((exc.error_class.value, trio.current_time() - t0))

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(job)
                await trio.testing.wait_all_tasks_blocked()
    kinds = [k for k, _ in outcomes]
    shed = [t for k, t in outcomes if k == "NO_ACCOUNT_AVAILABLE"]
    assert kinds.count("ok") == 4  # starts at +2, +4, +6, +8 s
    assert len(shed) == 13 and all(t == 0 for t in shed)  # at once, not at the deadline
    assert kinds.count("DEADLINE_EXCEEDED") == 3  # the lower bound let them wait


async def test_Pool_no_account_messages_say_why(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    config = make_config(tmp_path, accounts={"a1": "p1", "a2": "p2"}, tags={"a2": ["eu"]})
    async with open_pool(config, client_factory=World().factory()) as pool:
        pool.disable_account("a1", "banned in the panel")
        with pytest.raises(JobFailed) as info:
            await pool.invoke("help.GetConfig", {}, account="a1")
        assert info.value.message == 'account "a1" is disabled: banned in the panel'
        with pytest.raises(JobFailed) as info:
            await pool.invoke("help.GetConfig", {}, tags=["us"])
        assert info.value.message == "no account has all the tags us"
        pool.disable_account("a2", "x")
        with pytest.raises(JobFailed) as info:
            await pool.invoke("help.GetConfig", {})
        assert info.value.message == (
            "no account can serve this job: every matching account is disabled"
        )


async def test_Pool_begin_shutdown_answers_waiting_jobs_at_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("a1", Sleep(20, {"done": True}))
    config = make_config(tmp_path, accounts={"a1": "p1"})
    results: list[object] = []
    async with open_pool(config, client_factory=world.factory()) as pool:

        async def job() -> None:
            try:
                results.append((await pool.invoke("help.GetConfig", {})).value)
            except JobFailed as exc:
                results.append((exc.error_class, trio.current_time()))

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(job)
            await trio.sleep(5)
            t = trio.current_time()
            pool.begin_shutdown()
            await trio.testing.wait_all_tasks_blocked()
            # the two waiting jobs are answered now; the call in flight runs on
            assert results == [(ErrorClass.SHUTTING_DOWN, t), (ErrorClass.SHUTTING_DOWN, t)]
    assert results[-1] == {"done": True}


async def test_Pool_gate_queue_too_long_for_the_deadline_fails_at_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    config = make_config(tmp_path, accounts={"a1": "p1"}, proxies={"p1": {"interval_s": 60.0}})
    async with open_pool(config, client_factory=world.factory()) as pool:
        await pool.invoke("help.GetConfig", {})  # connect + call: next slot 60 s out
        t0 = trio.current_time()
        with pytest.raises(JobFailed) as info:
            await pool.invoke("help.GetConfig", {}, deadline_s=10)
        assert info.value.error_class is ErrorClass.NO_ACCOUNT_AVAILABLE
        assert trio.current_time() == t0


async def test_Pool_tags_and_unknown_pinned_account(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    config = make_config(tmp_path, accounts={"a1": "p1", "a2": "p2"}, tags={"a2": ["lookup", "eu"]})
    async with open_pool(config, client_factory=world.factory()) as pool:
        for _ in range(3):
            assert (await pool.invoke("help.GetConfig", {}, tags=["lookup"])).meta.account == "a2"
        with pytest.raises(JobFailed) as unknown:
            await pool.invoke("help.GetConfig", {}, account="nope")
        assert unknown.value.error_class is ErrorClass.INVALID_ARGUMENT
        assert unknown.value.message == 'no account with id "nope"'
        with pytest.raises(JobFailed) as info:
            await pool.invoke("help.GetConfig", {}, tags=["missing"])
        assert info.value.error_class is ErrorClass.NO_ACCOUNT_AVAILABLE


async def test_Pool_prefers_least_recently_used_across_lanes(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    config = make_config(
        tmp_path,
        proxies={"p1": {"interval_s": 0.0}, "p2": {"interval_s": 0.0}},
        accounts={"a1": "p1", "a2": "p1", "a3": "p2"},
    )
    async with open_pool(config, client_factory=world.factory()) as pool:
        used = [(await pool.invoke("help.GetConfig", {})).meta.account for _ in range(6)]
    assert sorted(used[:3]) == ["a1", "a2", "a3"]
    assert sorted(used[3:]) == ["a1", "a2", "a3"]


async def test_Pool_idle_connection_is_closed_after_idle_period(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    config = make_config(tmp_path, accounts={"a1": "p1"}, telegram={"idle_disconnect_s": 300})
    async with open_pool(config, client_factory=world.factory()) as pool:
        await pool.invoke("help.GetConfig", {})
        assert stats_of(pool, "a1").connected
        await trio.sleep(299)
        assert stats_of(pool, "a1").connected
        await trio.sleep(2)
        assert not stats_of(pool, "a1").connected
        assert stats_of(pool, "a1").state == "idle"


async def test_Pool_connect_timeout_is_stream_closed_and_leaves_no_client(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.connect_scripts["a1"].append(Sleep(10_000))
    config = make_config(
        tmp_path, accounts={"a1": "p1", "a2": "p2"}, telegram={"connect_timeout_s": 20}
    )
    async with open_pool(config, client_factory=world.factory()) as pool:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(pool.invoke, "help.GetConfig", {}, account="a1"))
            await trio.sleep(1)
            assert stats_of(pool, "a1").state == "connecting"
            # other accounts serve meanwhile
            assert (await pool.invoke("help.GetConfig", {}, account="a2")).meta.account == "a2"
            nursery.cancel_scope.cancel()
        await trio.sleep(30)
        a1 = stats_of(pool, "a1")
        assert not a1.connected


async def test_Pool_connect_timeout_classified_stream_closed(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.connect_scripts["a1"].append(Sleep(10_000))
    config = make_config(
        tmp_path, accounts={"a1": "p1", "a2": "p2"}, telegram={"connect_timeout_s": 20}
    )
    async with open_pool(config, client_factory=world.factory()) as pool:
        result = await pool.invoke("help.GetConfig", {})
        assert result.meta.account == "a2"
        assert stats_of(pool, "a1").last_error_class == "STREAM_CLOSED"
        assert not stats_of(pool, "a1").connected
        # the connect's asyncio side was cancelled at the connect deadline
        assert all(t.done() for t in world.asyncio_tasks)


def all_trio_tasks() -> set[trio.lowlevel.Task]:
    tasks: set[trio.lowlevel.Task] = set()
    todo = [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        assert task is not None
        tasks.add(task)
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return tasks


async def test_Pool_exit_leaves_no_task_future_or_connection(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("a2", Sleep(1000))
    config = make_config(tmp_path)
    before = all_trio_tasks()
    async with open_pool(config, client_factory=world.factory()) as pool:
        await pool.invoke("help.GetConfig", {}, account="a1")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(pool.invoke, "help.GetConfig", {}, account="a2"))
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        assert len(all_trio_tasks()) > len(before)  # the loop and the idle watchers
    assert all(not c.connected for c in world.clients)
    assert all(t.done() for t in world.asyncio_tasks)
    assert all_trio_tasks() == before


async def test_Pool_statistics_snapshot(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    config = make_config(tmp_path)
    async with open_pool(config, client_factory=world.factory()) as pool:
        await pool.invoke("help.GetConfig", {}, account="a1")
        stats = pool.statistics()
    assert stats.accounts_total == 3
    assert stats.jobs_ok == 1 and stats.jobs_failed == 0 and stats.jobs_in_flight == 0
    assert stats.config_generation == 1
    assert stats.config_loaded_at.endswith("Z")
    p1 = next(p for p in stats.proxies if p.name == "p1")
    assert (p1.capacity, p1.calls, p1.type) == (1, 2, "socks5")
    a1 = next(a for a in stats.accounts if a.id == "a1")
    assert (a1.calls_ok, a1.state, a1.proxy_name) == (1, "ready", "p1")


async def test_Pool_rejects_bad_arguments_without_a_call(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    async with open_pool(make_config(tmp_path), client_factory=world.factory()) as pool:
        for bad in [
            lambda: pool.invoke("", {}),
            lambda: pool.invoke("help.GetConfig", [1]),  # type: ignore[arg-type]
            lambda: pool.invoke("help.GetConfig", {}, deadline_s=-1),
            lambda: pool.invoke("help.GetConfig", {}, deadline_s=10**400),  # Python callers too
            lambda: pool.invoke("help.GetConfig", {}, deadline_s=float("inf")),
            lambda: pool.invoke("help.GetConfig", {}, deadline_s=float("nan")),
            lambda: pool.get_messages("@x", ["1"]),  # type: ignore[list-item]
            lambda: pool.resolve(""),
        ]:
            with pytest.raises(JobFailed) as info:
                await bad()
            assert info.value.error_class is ErrorClass.INVALID_ARGUMENT
    assert world.starts == []


async def test_Pool_backoff_past_the_deadline_fails_with_the_last_error(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    boom = tg.RPCError(request=None, message="INTERNAL_SERVER_ERROR", code=500)
    world.script("a1", boom, boom)
    config = make_config(tmp_path, accounts={"a1": "p1"}, proxies={"p1": {"interval_s": 0.0}})
    async with open_pool(config, client_factory=world.factory()) as pool:
        t0 = trio.current_time()
        with pytest.raises(JobFailed) as info:
            await pool.invoke("help.GetConfig", {}, deadline_s=30)
    # 10 s backoff fits, the next 30 s one would not: fail at once with the real error
    assert info.value.error_class is ErrorClass.GENERIC
    assert info.value.attempts == 2
    assert info.value.message.endswith("(the next retry, in 30 s, would pass the job deadline)")
    assert trio.current_time() - t0 == pytest.approx(10, abs=0.5)


async def test_Pool_refuses_blocked_methods_and_bad_requests_before_taking_an_account(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    out_of_int32 = {"id": [{"_": "InputMessageID", "id": 2**31}]}
    async with open_pool(make_config(tmp_path), client_factory=world.factory()) as pool:
        for bad, pattern in [
            (lambda: pool.invoke("auth.LogOut", {}), r"auth\.LogOut is blocked: .*allow_methods"),
            (
                lambda: pool.invoke("InvokeWithLayer", {"layer": 1, "query": {"_": "auth.logOut"}}),
                r"auth\.LogOut is blocked",
            ),
            (lambda: pool.invoke("account.DeleteAccount", {"reason": "x"}), r"is blocked"),
            (lambda: pool.invoke("messages.GetMessages", out_of_int32), r"'id\[0\]\.id' must be"),
            (lambda: pool.invoke("nope.Nothing", {}), r'unknown TL function "nope\.Nothing"'),
            (
                lambda: pool.get_messages("@mtpoold_news", [2**31]),
                r"^INVALID_ARGUMENT: ids: message ids must be",
            ),
            (
                lambda: pool.get_messages("@mtpoold_news", [True]),
                r"^INVALID_ARGUMENT: ids must be a list",
            ),
            (lambda: pool.get_messages("@", [1]), r"^INVALID_ARGUMENT: peer: invalid peer '@'"),
            (
                lambda: pool.get_messages("t.me/mtpoold_news/99999999999"),
                r"^INVALID_ARGUMENT: peer: the message link's message id 99999999999 is out of"
                r" range \(message ids are 1\.\.2147483647\)$",
            ),
            (lambda: pool.resolve("@"), r"^INVALID_ARGUMENT: link_or_username: invalid peer '@'"),
            (lambda: pool.resolve("https://evil.com/x"), r"not a t\.me link$"),
            (lambda: pool.resolve("user:5001"), r"not a valid username$"),
            (lambda: pool.resolve("@пользователь"), r"not a valid username$"),
        ]:
            with pytest.raises(JobFailed, match=pattern) as info:
                await bad()
            assert info.value.error_class is ErrorClass.INVALID_ARGUMENT
            assert (info.value.account, info.value.attempts) == (None, 0)
        stats = pool.statistics()
    assert world.starts == []
    assert all(a.calls_failed == 0 and a.errors_by_class == {} for a in stats.accounts)


async def test_Pool_allow_methods_lets_a_blocked_method_through(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    config = make_config(tmp_path, policy={"allow_methods": ["auth.LogOut"]})
    async with open_pool(config, client_factory=world.factory()) as pool:
        result = await pool.invoke("auth.LogOut", {})
        with pytest.raises(JobFailed, match=r"account\.ResetAuthorization is blocked"):
            await pool.invoke("account.ResetAuthorization", {"hash": 1})
    assert result.meta.attempts == 1
    assert [kind for _, kind, _ in world.starts].count("call") == 1


async def test_Pool_direct_accounts_share_the_gated_no_proxy_lane(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    config = make_config(
        tmp_path, accounts={"d1": None, "d2": None}, direct={"capacity": 2, "interval_s": 0.5}
    )
    async with open_pool(config, client_factory=world.factory()) as pool:
        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(pool.invoke, "help.GetConfig", {})
        lane = lane_of(pool, "no_proxy")
        assert (lane.key, lane.type, lane.capacity, lane.interval_s) == (
            "no_proxy",
            "direct",
            2,
            0.5,
        )
        starts = sorted(t for _, _, t in world.starts)
        assert min(b - a for a, b in zip(starts, starts[1:], strict=False)) >= 0.5 - 1e-9
        await pool.reload(make_config(tmp_path, accounts={"d1": None, "d2": None}))
        lane = lane_of(pool, "no_proxy")
        assert (lane.capacity, lane.interval_s) == (1, 2.0)


async def test_Pool_job_that_failed_on_every_account_is_served_when_they_cool_off(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # shared case 003: job A fails on a1 then a2 (STREAM_CLOSED, 60 s cooldowns each); four
    # jobs arrive a second later. At ~60 s both accounts serve again, A among the first.
    world = World()
    for acc in ("a1", "a2"):
        world.script(
            acc,
            ConnectionResetError("Connection reset by peer"),
            *[Sleep(1.0, {"ok": True}) for _ in range(10)],
        )
    config = make_config(
        tmp_path,
        proxies={"p1": {"interval_s": 0.0, "capacity": 2}},
        accounts={"a1": "p1", "a2": "p1"},
    )
    done: dict[str, float | str] = {}
    async with open_pool(config, client_factory=world.factory()) as pool:

        async def job(name: str) -> None:
            try:
                result = await pool.invoke("help.GetConfig", {})
                done[name] = trio.current_time()
                assert result.meta.attempts == (3 if name == "A" else 1)
            except JobFailed as exc:
                done[name] = exc.error_class.value

        async with trio.open_nursery() as nursery:
            nursery.start_soon(job, "A")
            await trio.sleep(1)
            for i in range(4):
                nursery.start_soon(job, f"B{i}")
    print("case 003 answers (virtual s):", done)
    assert all(isinstance(t, float) for t in done.values()), done
    assert 60 <= done["A"] <= 65  # type: ignore[operator]
    assert all(60 <= done[f"B{i}"] <= 65 for i in range(4))  # type: ignore[operator]


async def test_Pool_waiting_jobs_answered_at_once_when_every_account_cools_past_their_deadline(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # A burst of 50 jobs with a 60 s deadline on 8 accounts; the server drops every
    # connection 1.5 s in (STREAM_CLOSED: each account cools 60 s, to 61.5 s). No account
    # can serve before 60 s, so every job is answered then, at 1.5 s, not at its deadline.
    world = World()
    accounts = {f"a{i}": f"p{i % 2}" for i in range(8)}
    for acc in accounts:
        world.script(acc, Sleep(1.5, ConnectionResetError("Connection reset by peer")))
    config = make_config(
        tmp_path,
        proxies={
            "p0": {"interval_s": 0.0, "capacity": 4},
            "p1": {"interval_s": 0.0, "capacity": 4},
        },
        accounts=accounts,
    )
    outcomes: list[tuple[str, float, float | None, str]] = []
    async with open_pool(config, client_factory=world.factory()) as pool:
        t0 = trio.current_time()

        async def job() -> None:
            try:
                await pool.invoke("help.GetConfig", {}, deadline_s=60)
                outcomes.append(("ok", trio.current_time() - t0, None, ""))
            except JobFailed as exc:
                outcomes.append(
                    (
                        exc.error_class.value,
                        trio.current_time() - t0,
                        exc.retry_after_s,
                        exc.message,
                    )
                )

        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(job)
    summary = collections.Counter((kind, round(t, 1)) for kind, t, _, _ in outcomes)
    print("outcomes (class, virtual s):", dict(summary))
    print("messages:", sorted({(k, m) for k, _, _, m in outcomes}))
    waiting = [o for o in outcomes if o[0] == "NO_ACCOUNT_AVAILABLE"]
    in_flight = [o for o in outcomes if o[0] == "STREAM_CLOSED"]
    assert len(waiting) == 42 and len(in_flight) == 8
    assert all(t == pytest.approx(1.5) for _, t, _, _ in outcomes)
    for _, _, retry_after, message in waiting:
        assert retry_after == pytest.approx(60.0)  # the cooldowns end at 61.5 s
        assert "STREAM_CLOSED" in message and "one could in 60.0 s" in message
    for _, _, retry_after, message in in_flight:
        assert retry_after == pytest.approx(60.0)
        assert "no account for a retry" in message


async def test_Pool_pinned_job_answered_at_once_when_its_account_cools_past_its_deadline(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("a1", Sleep(2.0, tg.FloodWaitError(request=None, capture=3600)))
    config = make_config(tmp_path, accounts={"a1": "p1", "a2": "p2"})
    answers: list[tuple[str, float, float | None, str]] = []
    async with open_pool(config, client_factory=world.factory()) as pool:
        t0 = trio.current_time()

        async def pinned() -> None:
            try:
                await pool.invoke("help.GetConfig", {}, account="a1", deadline_s=120)
            except JobFailed as exc:
                answers.append(
                    (
                        exc.error_class.value,
                        trio.current_time() - t0,
                        exc.retry_after_s,
                        exc.message,
                    )
                )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pinned)  # takes a1, meets FLOOD_WAIT_3600 at ~2 s
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(pinned)  # waits for a1
    print("pinned answers:", [(k, round(t, 1), r) for k, t, r, _ in answers])
    first, second = sorted(answers, key=lambda a: a[0])
    assert first[0] == "FLOOD_WAIT"
    kind, t, retry_after, message = second
    assert kind == "NO_ACCOUNT_AVAILABLE"
    assert t == pytest.approx(first[1])  # at once, not at its 120 s deadline
    assert retry_after == pytest.approx(3600, abs=1)
    assert "FLOOD_WAIT" in message
