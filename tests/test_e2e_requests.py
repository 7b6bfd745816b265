"""End to end: requests the pool must refuse or report as not found, through the real
TelethonClient against the loopback DC (no proxy: direct connections)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mtpoold._errors import ErrorClass, JobFailed
from mtpoold.testing import DC, open_dc

from _e2e import fleet_config, fleet_world, open_fleet


@pytest.fixture
async def dc() -> AsyncIterator[DC]:
    async with open_dc(fleet_world()) as dc:
        yield dc


ACCOUNTS = {"acc-1": ("15550000001", None), "acc-2": ("15550000002", None)}


async def test_unreachable_peers_are_PEER_NOT_FOUND_not_missing_messages(
    tmp_path: Path, dc: DC
) -> None:
    config = fleet_config(tmp_path, dc, proxies=[], accounts=ACCOUNTS)
    async with open_fleet(dc, config) as fleet:
        pool = fleet.pool
        for peer in (-1, -1009999999, "-1006001"):
            with pytest.raises(JobFailed) as info:
                await pool.get_messages(peer, [1], deadline_s=20)
            assert info.value.error_class is ErrorClass.PEER_NOT_FOUND, (peer, info.value)
        with pytest.raises(JobFailed) as info:
            await pool.resolve("-1006001", deadline_s=20)
        assert info.value.error_class is ErrorClass.PEER_NOT_FOUND
        assert "CHAT_ID_INVALID" in info.value.message
        # reachable peers still answer: a channel, and a user the account can see
        news = await pool.get_messages("@mtpoold_news", [1, 999], deadline_s=20)
        assert news.value["1"]["exists"] is True and news.value["999"] == {"exists": False}
        await pool.resolve("@bob_test", deadline_s=20, account="acc-1")
        bob = await pool.get_messages(1002, [1], deadline_s=20, account="acc-1")
        assert bob.value == {"1": {"exists": False}}
        stats = pool.statistics()
    # caller errors: final, nobody cooled down or disabled
    assert all(a.cooldown_remaining_s == 0 and a.disabled_reason is None for a in stats.accounts)


async def test_invalid_and_blocked_requests_never_reach_an_account(tmp_path: Path, dc: DC) -> None:
    config = fleet_config(tmp_path, dc, proxies=[], accounts=ACCOUNTS)
    async with open_fleet(dc, config) as fleet:
        pool = fleet.pool
        for bad in [
            lambda: pool.get_messages("@mtpoold_news", [2147483648]),
            lambda: pool.resolve("@"),
            lambda: pool.resolve("https://evil.com/x"),
            lambda: pool.resolve("user:5001"),
            lambda: pool.invoke("auth.LogOut", {}),
            lambda: pool.invoke("account.DeleteAccount", {"reason": "bye"}),
            lambda: pool.invoke(
                "messages.GetMessages", {"id": [{"_": "InputMessageID", "id": 2**31}]}
            ),  # fmt: skip
        ]:
            with pytest.raises(JobFailed) as info:
                await bad()
            assert info.value.error_class is ErrorClass.INVALID_ARGUMENT
            assert info.value.attempts == 0
        stats = pool.statistics()
    assert all(a.calls_ok == a.calls_failed == 0 for a in stats.accounts)
    assert dc.counters("15550000001").get("auth.LogOut", 0) == 0


async def test_allow_methods_lets_auth_LogOut_through(tmp_path: Path, dc: DC) -> None:
    config = fleet_config(
        tmp_path, dc, proxies=[], accounts=ACCOUNTS, policy={"allow_methods": ["auth.LogOut"]}
    )
    async with open_fleet(dc, config) as fleet:
        result = await fleet.pool.invoke("auth.LogOut", {}, account="acc-2", deadline_s=20)
    assert result.value["_"] == "LoggedOut"
