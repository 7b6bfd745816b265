"""Flood scopes, the request guard and budgets on real Telethon against the loopback DC
(issue 12): requests are counted AT THE DC (``dc.counters(user)``), never at our own API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
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


@pytest.fixture
async def dc() -> AsyncIterator[DC]:
    async with open_dc(fleet_world()) as dc:
        yield dc


RESOLVE = "contacts.ResolveUsername"
NEWS = "@mtpoold_news"


class Knows:
    """A `PeerKnowledge` double: the (account, peer key) pairs a test declares known."""

    def __init__(self, *pairs: tuple[str, str]) -> None:
        self.pairs = set(pairs)

    def knows(self, account_id: str, peer_key: str) -> bool:
        return (account_id, peer_key) in self.pairs

    def knowers(self, peer_key: str) -> Collection[str]:
        return [a for a, p in self.pairs if p == peer_key]


def _config(tmp_path: Path, dc: DC, n: int = 1, **extra: Any) -> Config:
    return fleet_config(
        tmp_path,
        dc,
        proxies=[],
        accounts={f"a{i + 1}": (PHONES[i], None) for i in range(n)},
        policy={"job_deadline_s": 30.0},
        extra={"economy": {"warmup_days": 0}, **extra},
    )


async def test_resolve_flood_leaves_the_account_serving_get_messages_for_known_peers(
    tmp_path: Path, dc: DC
) -> None:
    async with open_fleet(dc, _config(tmp_path, dc)) as fleet:
        pool = fleet.pool
        await pool.get_messages(NEWS, [1], deadline_s=10)  # a1 learns the channel
        dc.faults.add(rpc_error(420, "FLOOD_WAIT_86400"), user=PHONES[0], method=RESOLVE)
        with pytest.raises(JobFailed) as info:
            await pool.resolve("@mtpoold_chat", deadline_s=10)
        assert info.value.error_class is ErrorClass.FLOOD_WAIT
        a1 = fleet.account("a1")
        assert a1.cooldown_remaining_s == 0 and a1.state in ("ready", "idle")
        (resolve,) = [c for c in a1.rate_classes if c.rate_class == "resolve"]
        assert resolve.cooldown_remaining_s == pytest.approx(86400, abs=2)
        pool._dispatch.knowledge = Knows(("a1", "username:mtpoold_news"))
        before = dc.counters(PHONES[0])
        got = await pool.get_messages(NEWS, [1], deadline_s=10)
        assert got.meta.account == "a1"
        after = dc.counters(PHONES[0])
        assert after[RESOLVE] == before[RESOLVE]
        assert after["channels.GetMessages"] == before["channels.GetMessages"] + 1
        # a peer it does not know needs a look-up: none before the flood ends, none sent
        with pytest.raises(JobFailed) as info:
            await pool.get_messages("@mtpoold_chat", [1], deadline_s=10)
        assert info.value.error_class is ErrorClass.NO_ACCOUNT_AVAILABLE
        assert info.value.retry_after_s == pytest.approx(86400, abs=5)
        assert dc.counters(PHONES[0])[RESOLVE] == before[RESOLVE]
        # the operator lifts it: the look-up goes out again
        assert pool.cooldowns("a1").rate_classes[0].rate_class
        assert pool.clear_cooldown("a1", "resolve") == ("resolve",)
        await pool.get_messages("@mtpoold_chat", [1], deadline_s=10)
        assert dc.counters(PHONES[0])[RESOLVE] == before[RESOLVE] + 1


async def test_no_request_reaches_the_dc_inside_a_class_flood_window_across_a_restart(
    tmp_path: Path, dc: DC
) -> None:
    config = _config(tmp_path, dc)
    with StateStore.open(tmp_path / "state.sqlite3") as store:
        async with open_fleet(dc, config, store=store) as fleet:
            await flood_resolve(fleet.pool, dc, NEWS)
    sent = dc.counters(PHONES[0])[RESOLVE]
    with StateStore.open(tmp_path / "state.sqlite3") as store:
        async with open_fleet(dc, config, store=store) as fleet:
            pool = fleet.pool
            for job in (
                lambda: pool.resolve(NEWS, deadline_s=10),
                lambda: pool.get_messages(NEWS, [1], deadline_s=10),
                # a look-up nobody foresaw: the guard refuses it (RateClassBlocked)
                lambda: pool.invoke("channels.getMessages", {"channel": NEWS, "id": []}),
            ):
                with pytest.raises(JobFailed) as info:
                    await job()
                assert info.value.error_class is ErrorClass.NO_ACCOUNT_AVAILABLE
                assert info.value.retry_after_s == pytest.approx(3600, abs=10)
            # reads that need no look-up still go out
            await pool.invoke("help.getConfig", {})
    counters = dc.counters(PHONES[0])
    assert counters[RESOLVE] == sent
    assert counters["help.GetConfig"] >= 1


async def test_budgets_hold_across_a_restart(tmp_path: Path, dc: DC) -> None:
    # peer memory off: every resolve of the same channel looks it up (spends the budget)
    config = _config(
        tmp_path,
        dc,
        rate_classes={"resolve": {"per_hour": 2, "per_day": 0}},
        economy={"warmup_days": 0, "peer_memory": False},
    )
    with StateStore.open(tmp_path / "state.sqlite3") as store:
        async with open_fleet(dc, config, store=store) as fleet:
            for _ in range(2):
                await fleet.pool.resolve(NEWS, deadline_s=10)
            with pytest.raises(JobFailed) as info:
                await fleet.pool.resolve(NEWS, deadline_s=10)
            assert info.value.error_class is ErrorClass.NO_ACCOUNT_AVAILABLE
            assert 3500 < (info.value.retry_after_s or 0) <= 3600
            (state,) = [c for c in fleet.account("a1").rate_classes if c.rate_class == "resolve"]
            assert state.budget_left == {"per_hour": 0}
    with StateStore.open(tmp_path / "state.sqlite3") as store:
        async with open_fleet(dc, config, store=store) as fleet:
            with pytest.raises(JobFailed) as info:
                await fleet.pool.resolve(NEWS, deadline_s=10)
            assert info.value.error_class is ErrorClass.NO_ACCOUNT_AVAILABLE
            assert 3500 < (info.value.retry_after_s or 0) <= 3600
    assert dc.counters(PHONES[0])[RESOLVE] == 2


async def test_slowmode_wait_is_the_chats_not_the_accounts(tmp_path: Path, dc: DC) -> None:
    async with open_fleet(dc, _config(tmp_path, dc)) as fleet:
        pool = fleet.pool
        dc.faults.add(
            rpc_error(420, "SLOWMODE_WAIT_300"), user=PHONES[0], method="channels.GetMessages"
        )
        with pytest.raises(JobFailed) as info:
            await pool.get_messages(NEWS, [1], deadline_s=10)
        assert info.value.error_class is ErrorClass.FLOOD_WAIT
        # another chat is served at once by the same account
        with trio.fail_after(10):
            await pool.get_messages("@mtpoold_chat", [1], deadline_s=10)
        with pytest.raises(JobFailed) as info:
            await pool.get_messages(NEWS, [1], deadline_s=10)
        assert info.value.error_class is ErrorClass.NO_ACCOUNT_AVAILABLE
        assert info.value.retry_after_s == pytest.approx(300, abs=5)
        assert fleet.account("a1").cooldown_remaining_s == 0
        assert pool.clear_cooldown("a1") == ()
        await pool.get_messages(NEWS, [1], deadline_s=10)  # clearing all lifts the chat's too
