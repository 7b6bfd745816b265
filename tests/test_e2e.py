"""End to end (issue 3): pool -> real TelethonClient -> python-socks -> real pproxy SOCKS5/HTTP
proxies (subprocesses) -> the loopback MTProto DC, with its fixture world and scripted faults.

Real sockets, so the real clock (no autojump): intervals and deadlines are small and every wait
is on a condition with a timeout. Every test runs inside ``open_fleet``, which checks on exit
that the asyncio exception handler saw nothing (no "... was never retrieved"), no asyncio task
or trio task is left, and the DC sees every connection closed.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from mtpoold._errors import ErrorClass, JobFailed
from mtpoold.testing import DC, Proxy, open_dc, open_proxy
from mtpoold.testing.dc import blackhole, drop, rpc_error

from _e2e import (
    PHONES,
    fleet_config,
    fleet_world,
    open_blackhole,
    open_fleet,
    proxy_entry,
    wait_until,
)

#: Interval of every proxy unless a test says otherwise, seconds: small, so the file is fast.
INTERVAL_S = 0.2


@pytest.fixture
async def dc() -> AsyncIterator[DC]:
    async with open_dc(fleet_world()) as dc:
        yield dc


@pytest.fixture
async def socks() -> AsyncIterator[Proxy]:
    async with open_proxy("socks5") as proxy:
        yield proxy


@pytest.fixture
async def socks_auth() -> AsyncIterator[Proxy]:
    async with open_proxy("socks5", username="fleet", password="s3cret") as proxy:
        yield proxy


@pytest.fixture
async def http() -> AsyncIterator[Proxy]:
    async with open_proxy("http") as proxy:
        yield proxy


def six_accounts() -> dict[str, tuple[str, str | None]]:
    """a1, a2 on s1 (socks5); a3, a4 on s2 (socks5 with a password); a5, a6 on h1 (http)."""
    names = ("s1", "s1", "s2", "s2", "h1", "h1")
    return {f"a{i + 1}": (PHONES[i], names[i]) for i in range(6)}


def three_proxies(
    socks: Proxy, socks_auth: Proxy, http: Proxy, **extra: Any
) -> list[dict[str, Any]]:
    return [
        proxy_entry("s1", socks, interval_s=INTERVAL_S, **extra),
        proxy_entry("s2", socks_auth, interval_s=INTERVAL_S, **extra),
        proxy_entry("h1", http, interval_s=INTERVAL_S, **extra),
    ]


# --- 1. the fleet serves real data ------------------------------------------------------------


async def test_fleet_of_six_over_socks5_socks5_auth_and_http_serves_real_data(
    tmp_path: Path, dc: DC, socks: Proxy, socks_auth: Proxy, http: Proxy
) -> None:
    config = rotating_fleet_config(
        tmp_path, dc, proxies=three_proxies(socks, socks_auth, http), accounts=six_accounts()
    )
    results: dict[str, Any] = {}
    async with open_fleet(dc, config) as fleet:
        pool = fleet.pool

        async def run(key: str, fn: Any, *args: Any, **kw: Any) -> None:
            results[key] = await fn(*args, deadline_s=20, **kw)

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for i in range(3):
                    nursery.start_soon(run, f"news{i}", pool.resolve, "@mtpoold_news")
                    nursery.start_soon(run, f"chat{i}", pool.resolve, "https://t.me/mtpoold_chat")
                    nursery.start_soon(
                        run, f"msgs{i}", pool.get_messages, "@mtpoold_news", [1, 2, 5, 99]
                    )
                    nursery.start_soon(
                        run, f"full{i}", pool.invoke, "channels.getFullChannel",
                        {"channel": "t.me/mtpoold_news"},
                    )  # fmt: skip
                nursery.start_soon(run, "bob", pool.resolve, "@bob_test")
                nursery.start_soon(run, "bot", pool.resolve, "t.me/mtpoold_test_bot")

        for i in range(3):
            news = results[f"news{i}"].value
            assert (news["kind"], news["title"], news["username"]) == (
                "channel",
                "mtpoold News",
                "mtpoold_news",
            )
            assert news["participants_count"] == 12345
            assert news["verified"] is True
            chat = results[f"chat{i}"].value
            assert (chat["kind"], chat["title"], chat["participants_count"]) == (
                "supergroup",
                "mtpoold Chat",
                321,
            )
            msgs = results[f"msgs{i}"].value
            assert [msgs[k]["views"] for k in ("1", "2", "5")] == [1000, 2000, 5000]
            assert msgs["5"]["text"] == "News post #5"
            assert msgs["5"]["forwards"] == 50
            assert msgs["99"] == {"exists": False}
            full = results[f"full{i}"].value
            assert full["full_chat"]["participants_count"] == 12345
            assert full["chats"][0]["title"] == "mtpoold News"
        bob = results["bob"].value
        assert (bob["kind"], bob["name"], bob["verified"]) == ("user", "Bob", True)
        assert results["bot"].value["kind"] == "bot"

        # Every account and every proxy (socks5, socks5 with a password, http) carried calls.
        used = collections.Counter(r.meta.account for r in results.values())
        assert set(used) == {f"a{i}" for i in range(1, 7)}, used
        for name in ("s1", "s2", "h1"):
            assert fleet.lane(name).errors_by_class == {}
        stats = pool.statistics()
        assert stats.jobs_ok == len(results) and stats.jobs_failed == 0
        assert all(a.connected and a.calls_failed == 0 for a in stats.accounts)
        # The DC saw each account logged in as its own user.
        seen_users = {c.user_id for c in dc.calls}
        assert seen_users == {fleet.user_id(f"a{i}") for i in range(1, 7)}


def rotating_fleet_config(*args: Any, economy: dict[str, Any] | None = None, **kw: Any) -> Any:
    """`fleet_config` with plain least-recently-used rotation: no peer memory and no routing
    by knowledge, so every account gets jobs in turn (the fault tests below count on a
    faulted account getting one within a few jobs; with routing by knowledge the account
    that already knows the peer would take them all)."""
    rotate = {"peer_memory": False, "route_by_knowledge": False, **(economy or {})}
    return fleet_config(*args, economy=rotate, **kw)


# --- helpers -------------------------------------------------------------------------------------


async def resolve_news(pool: Any, **kw: Any) -> Any:
    result = await pool.resolve("@mtpoold_news", **kw)
    assert result.value["title"] == "mtpoold News"
    assert result.value["participants_count"] == 12345
    return result


async def until_rule_used(dc: DC, rule: Any, job: Any, *, max_jobs: int = 12) -> Any:
    """Run ``job()`` one at a time until the fault ``rule`` (times=1) was used; return that
    job's result. The pool rotates accounts (soonest lane, then least recently used), so the
    faulted account gets a job within a few."""
    for _ in range(max_jobs):
        result = await job()
        if rule not in dc.faults.pending():
            return result
    raise AssertionError(f"no job reached the faulted account in {max_jobs} jobs")


# --- 2..4: errors from the DC ---------------------------------------------------------------------


async def test_flood_wait_cools_the_account_37_s_and_the_job_succeeds_on_another(
    tmp_path: Path, dc: DC, socks: Proxy, socks_auth: Proxy, http: Proxy
) -> None:
    # the old behaviour, [economy] flood_scopes = false (tests/test_e2e_scopes.py: the new)
    config = rotating_fleet_config(
        tmp_path,
        dc,
        proxies=three_proxies(socks, socks_auth, http),
        accounts=six_accounts(),
        extra={"economy": {"flood_scopes": False}},
    )
    rule = dc.faults.add(
        rpc_error(420, "FLOOD_WAIT_37"), user=PHONES[0], method="contacts.ResolveUsername"
    )
    async with open_fleet(dc, config) as fleet:
        pool = fleet.pool
        with trio.fail_after(15):
            result = await until_rule_used(dc, rule, lambda: resolve_news(pool, deadline_s=10))
        assert result.meta.attempts == 2
        assert result.meta.account != "a1"
        a1 = fleet.account("a1")
        assert a1.state == "cooldown"
        assert a1.cooldown_remaining_s == pytest.approx(37, abs=1.0)
        assert a1.errors_by_class == {"FLOOD_WAIT": 1}
        assert a1.last_error_class == "FLOOD_WAIT"
        assert pool.statistics().accounts_cooling == 1
        # While it rests, jobs go elsewhere; a job pinned to it cannot start in time.
        with trio.fail_after(10):
            for _ in range(6):
                assert (await resolve_news(pool, deadline_s=10)).meta.account != "a1"
        remaining = fleet.account("a1").cooldown_remaining_s
        assert 30 < remaining < 37
        with pytest.raises(JobFailed) as info:
            await pool.resolve("@mtpoold_news", account="a1", deadline_s=5)
        assert info.value.error_class is ErrorClass.NO_ACCOUNT_AVAILABLE
        assert info.value.retry_after_s == pytest.approx(remaining, abs=0.5)


async def test_auth_key_unregistered_disables_the_account_and_the_job_is_rerouted(
    tmp_path: Path, dc: DC, socks: Proxy, socks_auth: Proxy, http: Proxy
) -> None:
    config = rotating_fleet_config(
        tmp_path, dc, proxies=three_proxies(socks, socks_auth, http), accounts=six_accounts()
    )
    rule = dc.faults.add(
        rpc_error(401, "AUTH_KEY_UNREGISTERED"), user=PHONES[1], method="contacts.ResolveUsername"
    )
    async with open_fleet(dc, config) as fleet:
        pool = fleet.pool
        with trio.fail_after(15):
            result = await until_rule_used(dc, rule, lambda: resolve_news(pool, deadline_s=10))
        assert result.meta.attempts == 2
        assert result.meta.account != "a2"
        a2 = fleet.account("a2")
        assert a2.state == "disabled"
        assert a2.disabled_reason is not None
        assert a2.disabled_reason.startswith("AUTH_KEY_UNREGISTERED: ")
        assert a2.errors_by_class == {"SESSION_REVOKED": 1}
        assert pool.statistics().accounts_disabled == 1
        with pytest.raises(JobFailed) as info:
            await pool.resolve("@mtpoold_news", account="a2", deadline_s=5)
        assert info.value.error_class is ErrorClass.NO_ACCOUNT_AVAILABLE


async def test_dropped_connection_is_stream_closed_then_the_account_reconnects_after_its_cooldown(
    tmp_path: Path, dc: DC, socks: Proxy, socks_auth: Proxy, http: Proxy
) -> None:
    config = rotating_fleet_config(
        tmp_path, dc, proxies=three_proxies(socks, socks_auth, http), accounts=six_accounts(),
        policy={"stream_closed_cooldown_s": 2.0},
    )  # fmt: skip
    rule = dc.faults.add(drop(), user=PHONES[2], method="contacts.ResolveUsername")
    async with open_fleet(dc, config) as fleet:
        pool = fleet.pool
        a3_user = fleet.user_id("a3")
        with trio.fail_after(15):
            result = await until_rule_used(dc, rule, lambda: resolve_news(pool, deadline_s=10))
        assert result.meta.attempts == 2
        assert result.meta.account != "a3"
        a3 = fleet.account("a3")
        assert a3.errors_by_class == {"STREAM_CLOSED": 1}
        assert a3.state == "cooldown"
        assert 0 < a3.cooldown_remaining_s <= 2.0
        assert not a3.connected
        assert fleet.aio_tasks_of("a3") == []  # Telethon's loops for that connection ended
        first_conn = {c.connection_id for c in dc.calls if c.user_id == a3_user}
        assert len(first_conn) == 1
        # After the cooldown it serves again, on a new connection.
        await wait_until(lambda: fleet.account("a3").cooldown_remaining_s == 0, timeout_s=4)
        with trio.fail_after(10):
            again = await resolve_news(pool, account="a3", deadline_s=10)
        assert again.meta.attempts == 1
        assert fleet.account("a3").connected
        conns = {c.connection_id for c in dc.calls if c.user_id == a3_user}
        assert len(conns) == 2


# --- 5. a proxy dies and comes back ---------------------------------------------------------------


async def test_killed_proxy_cools_its_lane_jobs_flow_elsewhere_and_it_serves_again_after_restart(
    tmp_path: Path, dc: DC, socks: Proxy, socks_auth: Proxy, http: Proxy
) -> None:
    config = rotating_fleet_config(
        tmp_path, dc, proxies=three_proxies(socks, socks_auth, http), accounts=six_accounts(),
        policy={"proxy_cooldown_min_s": 3.0, "proxy_cooldown_max_s": 3.0},
    )  # fmt: skip
    on_s1 = {"a1", "a2"}
    async with open_fleet(dc, config) as fleet:
        pool = fleet.pool
        with trio.fail_after(10):  # warm up: every account connected
            async with trio.open_nursery() as nursery:
                for _ in range(6):
                    nursery.start_soon(resolve_news, pool)
        assert all(a.connected for a in pool.statistics().accounts)

        await socks.kill()
        # Telethon sees the proxy hang up on both connections through it.
        await wait_until(
            lambda: not any(fleet.account(a).connected for a in on_s1),
            timeout_s=5, what="a1 and a2 to see their connections die",
        )  # fmt: skip
        with trio.fail_after(15):
            for _ in range(12):
                result = await resolve_news(pool, deadline_s=10)
                assert result.meta.account not in on_s1
                if fleet.lane("s1").errors_by_class:
                    break
        assert result.meta.attempts == 2  # the job that met the dead proxy was rerouted
        lane = fleet.lane("s1")
        assert lane.errors_by_class == {"PROXY_UNAVAILABLE": 1}
        assert lane.consecutive_failures == 1
        assert 0 < lane.cooldown_remaining_s <= 3.0
        assert pool.statistics().accounts_cooling == 2  # a1 and a2, through their lane
        assert all(fleet.account(a).cooldown_remaining_s == 0 for a in on_s1)  # not blamed

        # While the lane cools, jobs flow through s2 and h1 only.
        served: list[str] = []
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for _ in range(4):

                    async def one() -> None:
                        served.append((await resolve_news(pool, deadline_s=10)).meta.account)

                    nursery.start_soon(one)
        assert not set(served) & on_s1
        assert fleet.lane("s1").cooldown_remaining_s > 0  # still cooling: the test meant it

        await socks.restart()
        await wait_until(lambda: fleet.lane("s1").cooldown_remaining_s == 0, timeout_s=4)
        with trio.fail_after(10):
            for acc in sorted(on_s1):
                again = await resolve_news(pool, account=acc, deadline_s=10)
                assert again.meta.attempts == 1
        lane = fleet.lane("s1")
        assert lane.consecutive_failures == 0
        assert lane.errors_by_class == {"PROXY_UNAVAILABLE": 1}
        assert all(fleet.account(a).connected for a in on_s1)


# --- 6. a blackholed DC ---------------------------------------------------------------------------


async def test_blackholed_call_fails_at_the_call_deadline_and_is_rerouted(
    tmp_path: Path, dc: DC, socks: Proxy, socks_auth: Proxy, http: Proxy
) -> None:
    config = rotating_fleet_config(
        tmp_path, dc, proxies=three_proxies(socks, socks_auth, http), accounts=six_accounts(),
        policy={"call_deadline_s": 2.0},
    )  # fmt: skip
    rule = dc.faults.add(blackhole(), user=PHONES[3], method="contacts.ResolveUsername")
    async with open_fleet(dc, config) as fleet:
        pool = fleet.pool
        with trio.fail_after(20):
            result = await until_rule_used(dc, rule, lambda: resolve_news(pool, deadline_s=10))
        assert result.meta.attempts == 2
        assert result.meta.account != "a4"
        assert 2000 <= result.meta.elapsed_ms < 3500
        a4 = fleet.account("a4")
        assert a4.errors_by_class == {"DEADLINE_EXCEEDED": 1}
        assert not a4.connected  # dropped: the call's state on that connection is unknown
        assert fleet.aio_tasks_of("a4") == []


async def test_blackhole_all_fails_the_job_with_deadline_exceeded_at_the_call_deadline(
    tmp_path: Path, dc: DC, socks: Proxy, socks_auth: Proxy, http: Proxy
) -> None:
    config = rotating_fleet_config(
        tmp_path, dc, proxies=three_proxies(socks, socks_auth, http), accounts=six_accounts(),
        policy={"call_deadline_s": 2.0, "max_attempts": 1},
    )  # fmt: skip
    async with open_fleet(dc, config) as fleet:
        pool = fleet.pool
        with trio.fail_after(10):
            await resolve_news(pool, account="a5")  # connected before the DC goes silent
        dc.blackhole_all()
        t0 = trio.current_time()
        with trio.fail_after(10), pytest.raises(JobFailed) as info:
            await pool.resolve("@mtpoold_news", account="a5", deadline_s=10)
        elapsed = trio.current_time() - t0
        assert info.value.error_class is ErrorClass.DEADLINE_EXCEEDED
        assert info.value.account == "a5"
        assert 2.0 <= elapsed < 3.0  # the 2 s call deadline (after a gate slot of <= 0.35 s)
        assert fleet.account("a5").errors_by_class == {"DEADLINE_EXCEEDED": 1}
        assert not fleet.account("a5").connected
        assert fleet.aio_tasks_of("a5") == []


# --- 7. the per-proxy interval, seen from the DC --------------------------------------------------

#: Seconds by which two arrivals at the DC through one proxy may be closer than the proxy's
#: interval. The gate spaces *starts* in the pool at least ``interval_s`` apart; the DC stamps
#: *arrivals*, each one start + its own latency. A call's request goes out at once on an open
#: connection, while a connect's first request follows the TCP connect and the SOCKS5/HTTP
#: CONNECT handshake through pproxy (another process), so a connect's first arrival lags its
#: start by a few milliseconds more than a call's does: a connect followed by a call can reach
#: the DC up to that lag closer than the interval. 50 ms covers that lag on a loaded machine;
#: a real breach (two starts in one slot) shows up as a gap near 0, far below the bound.
WIRE_JITTER_S = 0.05


@pytest.mark.alone
async def test_per_proxy_interval_holds_on_the_wire(
    tmp_path: Path, dc: DC, socks: Proxy, socks_auth: Proxy, http: Proxy
) -> None:
    interval_s = 0.25
    config = rotating_fleet_config(
        tmp_path, dc, accounts=six_accounts(),
        proxies=[
            proxy_entry("s1", socks, interval_s=interval_s, capacity=2),
            proxy_entry("s2", socks_auth, interval_s=interval_s),
            proxy_entry("h1", http, interval_s=interval_s, capacity=2),
        ],
    )  # fmt: skip
    jobs = 24
    async with open_fleet(dc, config) as fleet:
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for _ in range(jobs):
                    nursery.start_soon(fleet.pool.invoke, "help.getNearestDc", {})
        account_of = fleet.account_of_user()
        # One slot start per connect (the first request on each TCP connection: Telethon's
        # initConnection; the users.getUsers & co. that follow belong to the same connect
        # slot) and one per call (help.getNearestDc is a single request, so one per job).
        first_on_connection: dict[int, Any] = {}
        for c in dc.calls:
            first_on_connection.setdefault(c.connection_id, c)
        starts: dict[str, list[float]] = collections.defaultdict(list)
        for c in dc.calls:
            if c.method == "help.GetNearestDc" or first_on_connection[c.connection_id] is c:
                starts[fleet.proxy_of(account_of[c.user_id])].append(c.time)  # type: ignore[index]
        assert sum(len(v) for v in starts.values()) == jobs + 6  # 24 calls + 6 connects
        assert set(starts) == {"s1", "s2", "h1"}
        for name, times in starts.items():
            times.sort()
            gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
            assert min(gaps) >= interval_s - WIRE_JITTER_S, (name, gaps)
            # the gate was saturated, so the bound was actually tested: most gaps are tight
            assert sorted(gaps)[len(gaps) // 2] < interval_s + 0.1, (name, gaps)
            assert fleet.lane(name).calls == len(times)


# --- 8. a blackholing proxy does not hold start-up hostage ----------------------------------------


async def test_startup_is_not_held_hostage_by_an_account_whose_proxy_blackholes(
    tmp_path: Path, dc: DC, socks: Proxy, socks_auth: Proxy, http: Proxy
) -> None:
    accounts = six_accounts()
    del accounts["a6"]
    accounts["stuck"] = (PHONES[5], "bh")
    async with open_blackhole() as hole:
        config = rotating_fleet_config(
            tmp_path, dc, accounts=accounts,
            proxies=[*three_proxies(socks, socks_auth, http),
                     proxy_entry("bh", (hole.host, hole.port), interval_s=INTERVAL_S)],
            telegram={"connect_timeout_s": 2.0},
            policy={"max_attempts": 1},
        )  # fmt: skip
        failures: list[JobFailed] = []
        failed_at: list[float] = []
        async with open_fleet(dc, config) as fleet:
            pool = fleet.pool
            t0 = trio.current_time()

            async def stuck_job() -> None:
                with pytest.raises(JobFailed) as info:
                    await pool.resolve("@mtpoold_news", account="stuck", deadline_s=10)
                failures.append(info.value)
                failed_at.append(trio.current_time() - t0)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(stuck_job)
                await wait_until(lambda: hole.accepted == 1, timeout_s=1, what="the TCP connect")
                assert fleet.account("stuck").state == "connecting"
                # The other five accounts serve from the first second (each one's connect and
                # call take two slots of their lane), all while the stuck one is connecting.
                served: list[Any] = []
                done_at: list[float] = []
                async with trio.open_nursery() as others:
                    for _ in range(5):

                        async def one() -> None:
                            served.append(await resolve_news(pool, deadline_s=5))
                            done_at.append(trio.current_time() - t0)

                        others.start_soon(one)
                assert min(done_at) < 1.0
                assert max(done_at) < 2.0
                assert {r.meta.account for r in served} == {"a1", "a2", "a3", "a4", "a5"}
                assert fleet.account("stuck").state == "connecting"
                assert not failures
            # ... and the stuck one failed at its 2 s connect deadline.
            assert 2.0 <= failed_at[0] < 3.0
            (failure,) = failures
            assert failure.error_class in (ErrorClass.STREAM_CLOSED, ErrorClass.PROXY_UNAVAILABLE)
            stuck = fleet.account("stuck")
            assert stuck.state != "connecting"
            assert not stuck.connected
            assert stuck.last_error_class == failure.error_class.value
            # No Telethon task is left for it, and its socket to the "proxy" was closed.
            assert fleet.aio_tasks_of("stuck") == []
            await wait_until(lambda: hole.open == 0, timeout_s=2, what="the socket to close")
            # The others still work.
            with trio.fail_after(5):
                await resolve_news(pool, deadline_s=5)
