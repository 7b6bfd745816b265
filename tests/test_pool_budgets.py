"""Budgets per (account, rate class) in the pool, on MockClock: counted where a (fake) client
asks the request guard, held until a window frees, served by the timer then, scaled by the
warm-up ramp, changed by a reload, off with ``[economy] budgets = false``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from mtpoold._compose import open_pool
from mtpoold._config import Config, parse_config
from mtpoold._errors import ConfigError, ErrorClass, JobFailed
from mtpoold._store import StateStore

from _fakeclient import FakeClient, World, make_config

WALL0 = 1_700_000_000.0


def wall() -> float:
    """UNIX time that moves with the (mock) trio clock."""
    return WALL0 + trio.current_time()


@attrs.define(eq=False)
class GuardedClient(FakeClient):
    """A fake client that asks the request guard before each request, as the real one does."""

    guard: Any = None
    sent: list[str] = attrs.field(factory=list)

    def set_request_guard(self, guard: Any) -> None:
        self.guard = guard

    def _send(self, *tl_names: str) -> None:
        for name in tl_names:
            if self.guard is not None:
                self.guard.admit(name)
            self.sent.append(name)

    async def call(self, method: str, args: Any) -> dict[str, Any]:
        self._send(method)
        return await self._call()

    async def resolve(self, link_or_username: str) -> dict[str, Any]:
        self._send("contacts.ResolveUsernameRequest", "channels.GetFullChannelRequest")
        return await self._call()


def guarded(world: World) -> Any:
    def make(acc: Any) -> GuardedClient:
        client = GuardedClient(acc.id, world)
        world.clients.append(client)
        return client

    return make


def config_with(tmp_path: Path, **economy: Any) -> Config:
    base = make_config(tmp_path, proxies={"p1": {"interval_s": 0.0}}, accounts={"a1": "p1"})
    data: dict[str, Any] = {
        "proxies": [attrs.asdict(p) for p in base.proxies],
        "accounts": [
            {k: v for k, v in attrs.asdict(a).items() if v is not None and v != ()}
            for a in base.accounts
        ],
        "policy": {"job_deadline_s": 4000.0},
        "economy": {"warmup_days": 0, **economy.pop("economy", {})},
        **economy,
    }
    return parse_config(data, base_dir=tmp_path)


async def test_a_spent_budget_answers_at_once_and_a_waiting_job_is_served_when_it_frees(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    config = config_with(tmp_path, rate_classes={"resolve": {"per_hour": 3, "per_day": 0}})
    world = World()
    async with open_pool(config, client_factory=guarded(world), wall_clock=wall) as pool:
        for _ in range(3):
            await pool.resolve("@channel_x", deadline_s=10)
        t0 = trio.current_time()
        with pytest.raises(JobFailed) as info:
            await pool.resolve("@channel_x", deadline_s=10)
        assert info.value.error_class is ErrorClass.NO_ACCOUNT_AVAILABLE
        assert info.value.retry_after_s == pytest.approx(3600, abs=1)
        assert trio.current_time() == t0  # at once
        (state,) = [c for c in pool.cooldowns("a1").rate_classes if c.rate_class == "resolve"]
        assert state.budget_left == {"per_hour": 0}
        assert state.budget_frees_in_s == pytest.approx(3600, abs=1)
        # other classes go on meanwhile; a resolve that may wait is served when the window frees
        await pool.invoke("help.getConfig", {})
        result = await pool.resolve("@channel_x", deadline_s=3700)
        assert result.meta.account == "a1"
        assert trio.current_time() - t0 == pytest.approx(3600, abs=1)
    (client,) = world.clients
    assert client.sent.count("contacts.ResolveUsernameRequest") == 4


async def test_warm_up_gives_a_new_account_part_of_its_budget(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    config = config_with(
        tmp_path,
        economy={"warmup_days": 1, "warmup_start": 0.5},
        rate_classes={"resolve": {"per_hour": 4, "per_day": 0}},
    )
    async with open_pool(config, client_factory=guarded(World()), wall_clock=wall) as pool:
        for _ in range(2):
            await pool.resolve("@channel_x", deadline_s=10)
        with pytest.raises(JobFailed) as info:
            await pool.resolve("@channel_x", deadline_s=10)
        assert info.value.error_class is ErrorClass.NO_ACCOUNT_AVAILABLE


async def test_a_reload_with_higher_limits_lifts_the_hold_and_budgets_off_has_none(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    tight = config_with(tmp_path, rate_classes={"resolve": {"per_hour": 1, "per_day": 0}})
    loose = config_with(tmp_path, rate_classes={"resolve": {"per_hour": 10, "per_day": 0}})
    off = config_with(tmp_path, economy={"budgets": False})
    async with open_pool(tight, client_factory=guarded(World()), wall_clock=wall) as pool:
        await pool.resolve("@channel_x", deadline_s=10)
        with pytest.raises(JobFailed):
            await pool.resolve("@channel_x", deadline_s=10)
        await pool.reload(loose)
        await pool.resolve("@channel_x", deadline_s=10)
        await pool.reload(off)
        for _ in range(60):
            await pool.resolve("@channel_x", deadline_s=10)


async def test_budget_spends_and_first_seen_survive_a_restart(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    config = config_with(
        tmp_path,
        economy={"warmup_days": 1, "warmup_start": 0.5},
        rate_classes={"resolve": {"per_hour": 4, "per_day": 0}},
    )
    with StateStore.open(tmp_path / "state.sqlite3") as store:
        async with open_pool(
            config, client_factory=guarded(World()), store=store, wall_clock=wall
        ) as pool:
            await pool.resolve("@channel_x", deadline_s=10)
        await trio.sleep(600)
    with StateStore.open(tmp_path / "state.sqlite3") as store:
        async with open_pool(
            config, client_factory=guarded(World()), store=store, wall_clock=wall
        ) as pool:
            # still new (first seen 10 min ago): 2 per hour, 1 already spent
            await pool.resolve("@channel_x", deadline_s=10)
            with pytest.raises(JobFailed) as info:
                await pool.resolve("@channel_x", deadline_s=10)
            assert info.value.error_class is ErrorClass.NO_ACCOUNT_AVAILABLE
            assert info.value.retry_after_s == pytest.approx(3000, abs=2)


async def test_knower_wait_s_reaches_the_dispatcher_and_a_reload_changes_it(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    waits = config_with(tmp_path, economy={"knower_wait_s": 7.5})
    never = config_with(tmp_path, economy={"knower_wait_s": 0})
    assert config_with(tmp_path).economy.knower_wait_s == 2.0  # the shipped default
    async with open_pool(waits, client_factory=guarded(World()), wall_clock=wall) as pool:
        assert pool._dispatch.knower_wait_s == 7.5
        await pool.reload(never)
        assert pool._dispatch.knower_wait_s == 0.0
    with pytest.raises(ConfigError, match="economy.knower_wait_s"):
        config_with(tmp_path, economy={"knower_wait_s": -1})


async def test_budgets_turned_on_by_a_reload_keep_the_spends(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Off then on by reload: the spends of before hold again (this run's book, kept aside);
    started with budgets off and turned on: the store's spends of before the restart."""
    limits = {"resolve": {"per_hour": 2, "per_day": 0}}
    on = config_with(tmp_path, rate_classes=limits)
    off = config_with(tmp_path, economy={"budgets": False}, rate_classes=limits)
    with StateStore.open(tmp_path / "state.sqlite3") as store:
        async with open_pool(
            on, client_factory=guarded(World()), store=store, wall_clock=wall
        ) as pool:
            for _ in range(2):
                await pool.resolve("@channel_x", deadline_s=10)
            await pool.reload(off)
            await pool.reload(on)
            with pytest.raises(JobFailed) as info:
                await pool.resolve("@channel_x", deadline_s=10)
            assert info.value.error_class is ErrorClass.NO_ACCOUNT_AVAILABLE
        await trio.sleep(600)
    with StateStore.open(tmp_path / "state.sqlite3") as store:
        async with open_pool(
            off, client_factory=guarded(World()), store=store, wall_clock=wall
        ) as pool:
            await pool.reload(on)
            with pytest.raises(JobFailed) as info:
                await pool.resolve("@channel_x", deadline_s=10)
            assert info.value.error_class is ErrorClass.NO_ACCOUNT_AVAILABLE
            assert info.value.retry_after_s == pytest.approx(3000, abs=2)
