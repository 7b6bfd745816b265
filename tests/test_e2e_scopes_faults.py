"""Flood scopes and budgets under faults, counted at the loopback DC (real Telethon): every
spelling of a flooded function, budget races, connect traffic inside class floods, restarts,
reloads, slow mode across a restart."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from mtpoold._config import Config
from mtpoold._errors import ErrorClass, JobFailed
from mtpoold._store import StateStore
from mtpoold.testing import DC, open_dc
from mtpoold.testing.dc import rpc_error

from _e2e import PHONES, fleet_config, fleet_world, flood_resolve, open_fleet

pytestmark = pytest.mark.trio

RESOLVE = "contacts.ResolveUsername"
NEWS = "@mtpoold_news"


@pytest.fixture
async def dc() -> AsyncIterator[DC]:
    async with open_dc(fleet_world()) as dc:
        yield dc


def _config(
    tmp_path: Path, dc: DC, n: int = 1, economy: dict[str, Any] | None = None, **extra: Any
) -> Config:
    return fleet_config(
        tmp_path,
        dc,
        proxies=[],
        accounts={f"a{i + 1}": (PHONES[i], None) for i in range(n)},
        policy={"job_deadline_s": 30.0},
        extra={"economy": {"warmup_days": 0, **(economy or {})}, **extra},
    )


SPELLINGS = [
    "contacts.ResolveUsername",
    "contacts.resolveUsername",
    "contacts.ResolveUsernameRequest",
    "CONTACTS.RESOLVEUSERNAME",
    "functions.contacts.ResolveUsername",
    " contacts.ResolveUsername ",
]


async def test_invoke_spellings_never_reach_the_dc_inside_a_resolve_flood(
    tmp_path: Path, dc: DC
) -> None:
    async with open_fleet(dc, _config(tmp_path, dc)) as fleet:
        pool = fleet.pool
        sent = await flood_resolve(pool, dc, "@mtpoold_chat")
        outcomes: dict[object, str] = {}
        for spelling in SPELLINGS:
            for pin in (None, "a1"):
                try:
                    await pool.invoke(
                        spelling, {"username": "mtpoold_scam"}, account=pin, deadline_s=5
                    )
                    outcomes[(spelling, pin)] = "OK"
                except JobFailed as exc:
                    outcomes[(spelling, pin)] = exc.error_class.value
        # same class: contacts.search
        try:
            await pool.invoke("contacts.Search", {"q": "mtpoold", "limit": 5}, deadline_s=5)
            outcomes["search"] = "OK"
        except JobFailed as exc:
            outcomes["search"] = exc.error_class.value
        # clearing another class must not lift it
        pool.clear_cooldown("a1", "read")
        try:
            await pool.resolve("@bob_test", deadline_s=5)
            outcomes["after clear read"] = "OK"
        except JobFailed as exc:
            outcomes["after clear read"] = exc.error_class.value
        # a reload of the same config, then one changing the class table
        await pool.reload(_config(tmp_path, dc))
        await pool.reload(_config(tmp_path, dc, rate_classes={"resolve": {"per_hour": 40}}))
        try:
            await pool.resolve("@dave_2fa", deadline_s=5)
            outcomes["after reload"] = "OK"
        except JobFailed as exc:
            outcomes["after reload"] = exc.error_class.value
        # a look-up hidden in an invoke's peer argument
        try:
            await pool.invoke("channels.GetFullChannel", {"channel": "@mtpoold_chat"}, deadline_s=5)
            outcomes["peer arg"] = "OK"
        except JobFailed as exc:
            outcomes["peer arg"] = exc.error_class.value
        print(outcomes)
        print(dc.counters(PHONES[0]))
        assert dc.counters(PHONES[0])[RESOLVE] == sent
        assert dc.counters(PHONES[0])["contacts.Search"] == 0


async def test_budget_race_many_concurrent_jobs(tmp_path: Path, dc: DC) -> None:
    config = _config(
        tmp_path,
        dc,
        n=2,
        economy={"peer_memory": False},
        rate_classes={"resolve": {"per_hour": 3, "per_day": 0}},
    )
    results: list[str] = []
    retry: list[float | None] = []
    async with open_fleet(dc, config) as fleet:
        pool = fleet.pool

        async def job(i: int) -> None:
            spelling = SPELLINGS[i % len(SPELLINGS)]
            try:
                if i % 2:
                    await pool.resolve(NEWS, deadline_s=20)
                else:
                    await pool.invoke(spelling, {"username": "mtpoold_news"}, deadline_s=20)
                results.append("OK")
            except JobFailed as exc:
                results.append(exc.error_class.value)
                retry.append(exc.retry_after_s)

        with trio.fail_after(25):
            async with trio.open_nursery() as n:
                for i in range(20):
                    n.start_soon(job, i)
    total = dc.counters(PHONES[0])[RESOLVE] + dc.counters(PHONES[1])[RESOLVE]
    print(results, retry, total)
    assert total <= 6
    assert results.count("OK") == 6
    assert set(results) <= {"OK", "NO_ACCOUNT_AVAILABLE"}
    assert all(r is not None and 3000 < r <= 3600 for r in retry)


async def test_other_class_flood_and_connect_traffic(tmp_path: Path, dc: DC) -> None:
    """A FLOOD_WAIT on an "other" function: the connect's help.getConfig is "other" too.

    The connect's requests are its own traffic (Telethon wraps help.getConfig in the
    initConnection every connect must send): the reconnect sends exactly that one, a job's
    help.GetConfig inside the flood none."""
    config = _config(tmp_path, dc)
    async with open_fleet(dc, config) as fleet:
        pool = fleet.pool
        await pool.get_messages(NEWS, [1], deadline_s=10)
        dc.faults.add(rpc_error(420, "FLOOD_WAIT_3600"), user=PHONES[0], method="help.GetConfig")
        with pytest.raises(JobFailed):
            await pool.invoke("help.GetConfig", {}, deadline_s=10)
        print([(c.rate_class, c.cooldown_remaining_s) for c in fleet.account("a1").rate_classes])
        sent = dc.counters(PHONES[0])["help.GetConfig"]
        dc.disconnect_all()
        await trio.sleep(0.5)
        await pool.get_messages(NEWS, [2], deadline_s=10)  # read class: free
        print(dc.counters(PHONES[0]))
        assert dc.counters(PHONES[0])["help.GetConfig"] == sent + 1, (
            "the reconnect's initConnection"
        )
        with pytest.raises(JobFailed) as info:
            await pool.invoke("help.GetConfig", {}, deadline_s=5)
        assert info.value.error_class is ErrorClass.NO_ACCOUNT_AVAILABLE
        assert dc.counters(PHONES[0])["help.GetConfig"] == sent + 1, "sent inside the flood"


@pytest.mark.parametrize("method", ["help.GetConfig", "updates.GetState"])
async def test_a_flood_wait_answered_to_the_connect_cools_the_account(
    tmp_path: Path, dc: DC, method: str
) -> None:
    """A FLOOD_WAIT answered to a connect's own request (initConnection's help.getConfig, or
    getState): that account cannot connect, so the account rests, not the request's class;
    the other account serves the job in the same attempt count as any reroute."""
    dc.faults.add(rpc_error(420, "FLOOD_WAIT_600"), user=PHONES[0], method=method)
    async with open_fleet(dc, _config(tmp_path, dc, n=2)) as fleet:
        with pytest.raises(JobFailed) as info:
            await fleet.pool.get_messages(NEWS, [1], deadline_s=10, account="a1")
        assert info.value.error_class is ErrorClass.FLOOD_WAIT, info.value
        a1 = fleet.account("a1")
        assert 590 < a1.cooldown_remaining_s <= 600
        assert all(not c.cooldown_remaining_s for c in a1.rate_classes), a1.rate_classes
        got = await fleet.pool.get_messages(NEWS, [1], deadline_s=10)
        assert got.meta.account == "a2"


async def test_other_class_flood_across_a_restart_leaves_reads_served(
    tmp_path: Path, dc: DC
) -> None:
    """A FLOOD_WAIT on an "other" function (help.getNearestDc) must not stop reads; after a
    restart the fresh client's connect sends getMe/GetState/GetDifference (other class)."""
    config = _config(tmp_path, dc)
    with StateStore.open(tmp_path / "state.sqlite3") as store:
        async with open_fleet(dc, config, store=store) as fleet:
            dc.faults.add(
                rpc_error(420, "FLOOD_WAIT_3600"), user=PHONES[0], method="help.GetNearestDc"
            )
            with pytest.raises(JobFailed):
                await fleet.pool.invoke("help.GetNearestDc", {}, deadline_s=10)
    before = dc.counters(PHONES[0])
    with StateStore.open(tmp_path / "state.sqlite3") as store:
        async with open_fleet(dc, config, store=store) as fleet:
            print(
                [(c.rate_class, c.cooldown_remaining_s) for c in fleet.account("a1").rate_classes]
            )
            try:
                got = await fleet.pool.get_messages(NEWS, [1], deadline_s=10)
                print("OK", got.meta)
            except JobFailed as exc:
                print("FAILED", exc.error_class, exc.message, exc.retry_after_s)
                raise
            finally:
                after = dc.counters(PHONES[0])
                after.subtract(before)
                print({k: v for k, v in after.items() if v})


@pytest.mark.parametrize("flooded", ["channels.GetMessages", "help.GetNearestDc"])
async def test_class_flood_across_a_restart_two_accounts(
    tmp_path: Path, dc: DC, flooded: str
) -> None:
    """a1 flooded on one class before a restart; after it, jobs of another class on a
    2-account fleet: a1 must serve them or be skipped, without connect storms."""
    config = _config(tmp_path, dc, n=2)
    with StateStore.open(tmp_path / "state.sqlite3") as store:
        async with open_fleet(dc, config, store=store) as fleet:
            dc.faults.add(rpc_error(420, "FLOOD_WAIT_3600"), user=PHONES[0], method=flooded)
            with pytest.raises(JobFailed):
                if flooded == "channels.GetMessages":
                    await fleet.pool.get_messages(NEWS, [1], deadline_s=10, account="a1")
                else:
                    await fleet.pool.invoke(flooded, {}, deadline_s=10, account="a1")
    before = dc.counters(PHONES[0])
    outcomes: list[tuple[str, object]] = []
    with StateStore.open(tmp_path / "state.sqlite3") as store:
        async with open_fleet(dc, config, store=store) as fleet:
            for _ in range(6):
                try:
                    got = await fleet.pool.resolve(NEWS, deadline_s=10)
                    outcomes.append((got.meta.account, got.meta.attempts))
                except JobFailed as exc:
                    outcomes.append((exc.error_class.value, exc.message[:100]))
            after = dc.counters(PHONES[0])
            after.subtract(before)
            print(outcomes, {k: v for k, v in after.items() if v})
            print(fleet.account("a1"))
    assert all(o[0] in ("a1", "a2") and o[1] == 1 for o in outcomes), outcomes


async def test_a_reload_moving_the_function_to_another_class_keeps_its_flood(
    tmp_path: Path, dc: DC
) -> None:
    async with open_fleet(dc, _config(tmp_path, dc)) as fleet:
        pool = fleet.pool
        sent = await flood_resolve(pool, dc, "@mtpoold_chat")
        await pool.reload(
            _config(
                tmp_path,
                dc,
                rate_classes={
                    "lookups": {"functions": ["contacts.resolveUsername"], "per_hour": 100}
                },
            )
        )
        try:
            await pool.resolve("@mtpoold_scam", deadline_s=5)
            print("resolve OK after reload")
        except JobFailed as exc:
            print(exc.error_class, exc.message)
        assert dc.counters(PHONES[0])[RESOLVE] == sent


async def test_budgets_off_then_on_by_reload_keep_the_spends(tmp_path: Path, dc: DC) -> None:
    limits = {"resolve": {"per_hour": 2, "per_day": 0}}
    on = _config(tmp_path, dc, economy={"peer_memory": False}, rate_classes=limits)
    off = _config(
        tmp_path, dc, economy={"peer_memory": False, "budgets": False}, rate_classes=limits
    )
    async with open_fleet(dc, on) as fleet:
        pool = fleet.pool
        for _ in range(2):
            await pool.resolve(NEWS, deadline_s=10)
        await pool.reload(off)
        await pool.reload(on)
        outcome = "OK"
        try:
            await pool.resolve(NEWS, deadline_s=5)
        except JobFailed as exc:
            outcome = exc.error_class.value
        print(outcome, dc.counters(PHONES[0])[RESOLVE])
        assert dc.counters(PHONES[0])[RESOLVE] == 2


async def test_a_cleared_class_cooldown_stays_cleared_after_a_restart(
    tmp_path: Path, dc: DC
) -> None:
    config = _config(tmp_path, dc)
    with StateStore.open(tmp_path / "state.sqlite3") as store:
        async with open_fleet(dc, config, store=store) as fleet:
            await flood_resolve(fleet.pool, dc, "@mtpoold_chat")
            assert fleet.pool.clear_cooldown("a1") == ("resolve",)
    with StateStore.open(tmp_path / "state.sqlite3") as store:
        async with open_fleet(dc, config, store=store) as fleet:
            states = [
                (c.rate_class, c.cooldown_remaining_s)
                for c in fleet.pool.cooldowns("a1").rate_classes
                if c.cooldown_remaining_s
            ]
            print(states)
            assert states == []


async def test_slowmode_survives_a_restart(tmp_path: Path, dc: DC) -> None:
    config = _config(tmp_path, dc)
    with StateStore.open(tmp_path / "state.sqlite3") as store:
        async with open_fleet(dc, config, store=store) as fleet:
            await fleet.pool.get_messages(NEWS, [1], deadline_s=10)
            dc.faults.add(
                rpc_error(420, "SLOWMODE_WAIT_300"), user=PHONES[0], method="channels.GetMessages"
            )
            with pytest.raises(JobFailed):
                await fleet.pool.get_messages(NEWS, [1], deadline_s=10)
    sent = dc.counters(PHONES[0])["channels.GetMessages"]
    with StateStore.open(tmp_path / "state.sqlite3") as store:
        async with open_fleet(dc, config, store=store) as fleet:
            outcome = "OK"
            try:
                await fleet.pool.get_messages(NEWS, [1], deadline_s=5)
            except JobFailed as exc:
                outcome = exc.error_class.value
            print(outcome)
    assert dc.counters(PHONES[0])["channels.GetMessages"] == sent
