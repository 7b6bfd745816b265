"""The pool's durable side: state store across restarts, session locks, live reload."""

from __future__ import annotations

import json
import os
import stat
import time
from functools import partial
from pathlib import Path

import attrs
import cattrs
import pytest
import trio
import trio.testing
from telethon import errors as tg

from mtpoold._compose import open_pool
from mtpoold._errors import ErrorClass, JobFailed
from mtpoold._sessionlock import SessionLocked, runtime_lock_dir
from mtpoold._stats import AccountState
from mtpoold._store import StateStore, StoredPeer

from _fakeclient import Sleep, World, make_config


class WallClock:
    """An injected UNIX clock the test moves by hand (a restart takes no trio time)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def stats_of(pool, account_id):
    return next(a for a in pool.statistics().accounts if a.id == account_id)


async def test_Pool_flood_wait_survives_a_restart_with_the_remaining_time(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("a1", tg.FloodWaitError(request=None, capture=300))
    config = make_config(tmp_path, accounts={"a1": "p1", "a2": "p2"})
    wall = WallClock()
    store = StateStore.open(tmp_path / "state.sqlite3")
    async with open_pool(
        config, client_factory=world.factory(), store=store, wall_clock=wall
    ) as pool:
        await pool.invoke("help.GetConfig", {})
    # Nothing but the verdict's own write happened: the store is what a SIGKILL leaves.
    store.close()
    wall.now += 100  # the daemon was down for 100 s
    store = StateStore.open(tmp_path / "state.sqlite3")
    async with open_pool(
        config, client_factory=World().factory(), store=store, wall_clock=wall
    ) as pool:
        a1 = stats_of(pool, "a1")
        assert a1.state == "cooldown"
        assert a1.cooldown_remaining_s == pytest.approx(200, abs=1)
        assert a1.errors_by_class == {"FLOOD_WAIT": 1}
        with pytest.raises(JobFailed) as info:
            await pool.invoke("help.GetConfig", {}, account="a1", deadline_s=100)
        assert info.value.error_class is ErrorClass.NO_ACCOUNT_AVAILABLE
    store.close()


async def test_Pool_disabled_account_stays_disabled_until_enabled(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    config = make_config(tmp_path, accounts={"a1": "p1", "a2": "p2"})
    path = tmp_path / "state.sqlite3"
    with StateStore.open(path) as store:
        async with open_pool(config, client_factory=World().factory(), store=store) as pool:
            pool.disable_account("a1", "banned in the panel")
    with StateStore.open(path) as store:
        async with open_pool(config, client_factory=World().factory(), store=store) as pool:
            assert stats_of(pool, "a1").disabled_reason == "banned in the panel"
            pool.enable_account("a1")
    with StateStore.open(path) as store:
        async with open_pool(config, client_factory=World().factory(), store=store) as pool:
            assert stats_of(pool, "a1").state == "idle"


async def test_Pool_account_states_are_an_enum_that_goes_on_the_wire_as_its_value(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    config = make_config(tmp_path, accounts={"a1": "p1", "a2": "p2"})
    async with open_pool(config, client_factory=World().factory()) as pool:
        pool.disable_account("a2", "test")
        stats = pool.statistics()
        assert [a.state for a in stats.accounts] == [AccountState.IDLE, AccountState.DISABLED]
        assert (stats.accounts_ready, stats.accounts_disabled) == (1, 1)
        wire = json.loads(json.dumps(cattrs.unstructure(stats)))
        assert [a["state"] for a in wire["accounts"]] == ["idle", "disabled"]


async def test_Pool_reports_accounts_removed_from_the_config_as_orphaned(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "state.sqlite3"
    with StateStore.open(path) as store:
        config = make_config(tmp_path, accounts={"a1": "p1", "old": "p2"})
        async with open_pool(config, client_factory=World().factory(), store=store) as pool:
            pool.disable_account("old", "retired")
    with StateStore.open(path) as store:
        config = make_config(tmp_path, accounts={"a1": "p1"})
        async with open_pool(config, client_factory=World().factory(), store=store) as pool:
            assert pool.statistics().orphaned_accounts == ("old",)
        assert "old" in store.load().accounts  # nothing deleted silently


async def test_Pool_finds_orphans_in_every_table_and_forgets_them_completely(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "state.sqlite3"
    with StateStore.open(path) as store:
        store.save_peers([StoredPeer("peers-only", "channel", 2001, 7, "news", 1.0)])
        store.save_class_cooldown("old", "resolve", time.time() + 3600, "FLOOD_WAIT")
        store.add_budget_spends([("old", "resolve", time.time())])
        config = make_config(tmp_path, accounts={"a1": "p1"})
        async with open_pool(config, client_factory=World().factory(), store=store) as pool:
            assert pool.statistics().orphaned_accounts == ("old", "peers-only")
            assert pool.forget_account("old") is True
            assert pool.forget_account("peers-only") is True
            assert pool.statistics().orphaned_accounts == ()
        assert not store.account_ids() & {"old", "peers-only"}


async def test_Pool_session_lock_refuses_a_second_pool_on_the_same_sessions(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    config = make_config(tmp_path, accounts={"a1": "p1", "a2": "p2"})
    async with open_pool(config, client_factory=World().factory(), lock_sessions=True):
        with pytest.raises(SessionLocked, match=r'^account "a1": string session'):
            async with open_pool(config, client_factory=World().factory(), lock_sessions=True):
                pass  # pragma: no cover
    # released at exit: a new pool opens fine
    async with open_pool(config, client_factory=World().factory(), lock_sessions=True):
        pass


async def test_Pool_reload_adds_retires_and_reconfigures_without_dropping_jobs(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("a2", Sleep(20, {"slow": True}))
    config = make_config(tmp_path, accounts={"a1": "p1", "a2": "p2"})
    results = []
    async with open_pool(config, client_factory=world.factory(), lock_sessions=True) as pool:
        async with trio.open_nursery() as nursery:

            async def slow_job() -> None:
                results.append(await pool.invoke("help.GetConfig", {}, account="a2"))

            nursery.start_soon(slow_job)
            await trio.sleep(5)
            assert stats_of(pool, "a2").state == "busy"
            new = make_config(
                tmp_path,
                proxies={"p1": {"interval_s": 0.5, "capacity": 2}, "p2": {}},
                accounts={"a1": "p1", "a3": "p1"},
            )
            summary = await pool.reload(new)
            assert (summary.added, summary.removed, summary.generation) == (("a3",), ("a2",), 2)
            stats = pool.statistics()
            assert stats.config_generation == 2
            p1 = next(p for p in stats.proxies if p.name == "p1")
            assert (p1.capacity, p1.interval_s) == (2, 0.5)
            # the removed account takes no new jobs but finishes the one in flight
            assert stats_of(pool, "a2").state == "retired"
            r = await pool.invoke("help.GetConfig", {}, account="a3")
            assert r.meta.account == "a3"
        assert results[0].value == {"slow": True}
        await trio.testing.wait_all_tasks_blocked()
        assert [a.id for a in pool.statistics().accounts] == ["a1", "a3"]


async def test_Pool_reload_reconnects_an_account_whose_proxy_changed(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    config = make_config(tmp_path, accounts={"a1": "p1"})
    async with open_pool(config, client_factory=world.factory()) as pool:
        await pool.invoke("help.GetConfig", {})
        moved = make_config(tmp_path, accounts={"a1": "p2"})
        summary = await pool.reload(moved)
        assert summary.reconnected == ("a1",)
        r = await pool.invoke("help.GetConfig", {})
        assert r.meta.proxy_key == next(p.key for p in pool.statistics().proxies if p.name == "p2")
    assert len(world.clients) == 2
    assert world.clients[0].disconnects == 1


async def test_Pool_reload_with_a_locked_new_session_changes_nothing(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    base = make_config(tmp_path, accounts={"a1": "p1"})
    other = make_config(tmp_path, accounts={"a9": "p1"})
    async with open_pool(other, client_factory=World().factory(), lock_sessions=True):
        async with open_pool(base, client_factory=World().factory(), lock_sessions=True) as pool:
            with pytest.raises(SessionLocked):
                await pool.reload(make_config(tmp_path, accounts={"a1": "p1", "a9": "p1"}))
            assert [a.id for a in pool.statistics().accounts] == ["a1"]
            assert pool.statistics().config_generation == 1


async def test_Pool_string_sessions_are_locked_machine_wide_by_default(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # Two pools with different state directories (two daemons, two embedding apps) and the
    # same session strings: the second is refused, naming the account, never the session.
    first = make_config(tmp_path / "one", accounts={"a1": "p1", "a2": "p2"})
    second = attrs.evolve(
        first,
        daemon=attrs.evolve(first.daemon, state_dir=str(tmp_path / "two" / "state")),
        accounts=tuple(attrs.evolve(a, id=f"other-{a.id}") for a in first.accounts),
    )
    async with open_pool(first, client_factory=World().factory()):  # lock_sessions default
        with pytest.raises(SessionLocked) as info:
            async with open_pool(second, client_factory=World().factory()):
                pass  # pragma: no cover
        message = str(info.value)
        assert message.startswith('account "other-a1": string session (lock ')
        assert message.endswith(f" is in use by PID {os.getpid()}")
        assert first.accounts[0].session_string not in message
        lock_dir = runtime_lock_dir()
        assert info.value.lock_path.parent == lock_dir
        assert stat.S_IMODE(os.stat(lock_dir).st_mode) == 0o700
    # released at exit: the second opens now; lock_sessions=False opts out
    async with open_pool(second, client_factory=World().factory()):
        async with open_pool(first, client_factory=World().factory(), lock_sessions=False):
            pass


async def test_Pool_two_accounts_with_one_session_text_from_different_sources_are_refused(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(tmp_path, accounts={"a1": "p1", "a2": "p2"})
    text = config.accounts[0].session_string
    assert text is not None
    monkeypatch.setenv("SAME_SESSION", text)
    config = attrs.evolve(
        config,
        accounts=(
            config.accounts[0],
            attrs.evolve(
                config.accounts[1], session_string=None, session_string_env="SAME_SESSION"
            ),
        ),
    )
    with pytest.raises(SessionLocked, match=r'^account "a2": string session \(lock '):
        async with open_pool(config, client_factory=World().factory()):
            pass  # pragma: no cover


@pytest.mark.parametrize("deadline_s", [180.5, 10_000, float("inf"), float("nan")])
async def test_Pool_refuses_a_deadline_over_the_policy_cap_or_not_finite(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, deadline_s: float
) -> None:
    config = make_config(tmp_path, accounts={"a1": "p1"})
    world = World()
    async with open_pool(config, client_factory=world.factory()) as pool:
        with pytest.raises(JobFailed) as info:
            await pool.invoke("help.GetConfig", {}, deadline_s=deadline_s)
        assert info.value.error_class is ErrorClass.INVALID_ARGUMENT
        if deadline_s == 10_000:
            assert info.value.message == (
                "deadline 10000 s (deadline_ms 1e+07) is over the operator's cap,"
                " policy.job_deadline_s = 180 s (deadline_ms 180000)"
            )
        # exactly the cap is fine
        await pool.invoke("help.GetConfig", {}, deadline_s=180)


async def test_Pool_reload_takes_back_an_account_still_draining_from_an_earlier_reload(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    world.script("w0", Sleep(4, {"slow": True}))
    both = make_config(tmp_path, accounts={"w0": "p1", "w1": "p2"})
    path = tmp_path / "state.sqlite3"
    with StateStore.open(path) as store:
        async with open_pool(both, client_factory=world.factory(), store=store) as pool:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(pool.invoke, "help.GetConfig", {}, account="w0"))
                await trio.sleep(1)
                gone = await pool.reload(make_config(tmp_path, accounts={"w1": "p2"}))
                assert gone.removed == ("w0",)
                back = await pool.reload(both)
                assert (back.added, back.removed) == (("w0",), ())
            # the slow call ended; w0 stays, serves, and is no orphan
            await trio.testing.wait_all_tasks_blocked()
            assert [a.id for a in pool.statistics().accounts] == ["w0", "w1"]
            assert pool.statistics().orphaned_accounts == ()
            r = await pool.invoke("help.GetConfig", {}, account="w0")
            assert r.meta.account == "w0"
