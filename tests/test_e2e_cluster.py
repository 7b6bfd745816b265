"""Two cluster nodes in one process on a real redis-server and the loopback DC (issue 15).

Each node is a whole pool as the daemon opens one (`mtpoold._compose.open_pool` with
``[cluster]``): real Telethon clients, leases, the shared gate and the shared state in Redis.
Real sockets, so the real clock: ``lease_s = 3`` (renewed every second) keeps each test to a
few seconds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from _redisserver import RedisServer, start_redis

from mtpoold._compose import open_pool
from mtpoold._config import Config
from mtpoold._errors import ErrorClass, JobFailed
from mtpoold._pool import Pool
from mtpoold._stats import AccountState
from mtpoold._store import StateStore
from mtpoold.testing import DC, open_dc
from mtpoold.testing.dc import rpc_error

from _e2e import PHONES, fleet_config, fleet_world, wait_until

pytestmark = pytest.mark.trio

LEASE_S = 3.0
ACCOUNTS = {f"a{i}": (PHONES[i], None) for i in range(4)}


@pytest.fixture
async def dc() -> AsyncIterator[DC]:
    async with open_dc(fleet_world()) as dc:
        yield dc


@pytest.fixture
def redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    with start_redis(tmp_path / "redis") as server:
        yield server


def _config(tmp_path: Path, dc: DC, redis: RedisServer, node: str) -> Config:
    return fleet_config(
        tmp_path / node,
        dc,
        proxies=[],
        accounts=ACCOUNTS,
        policy={"job_deadline_s": 5.0, "call_deadline_s": 2.0},
        extra={
            "cluster": {
                "redis_url": redis.url,
                "node": node,
                "lease_s": LEASE_S,
                "op_timeout_s": 0.3,
            },
            "daemon": {"state_dir": str(tmp_path / node / "state")},
        },
    )


def _open_store(state_dir: Path) -> StateStore:
    state_dir.mkdir(parents=True, exist_ok=True)
    return StateStore.open(state_dir / "state.sqlite3")


@asynccontextmanager
async def _node(tmp_path: Path, dc: DC, redis: RedisServer, name: str) -> AsyncIterator[Pool]:
    config = _config(tmp_path, dc, redis, name)
    store = _open_store(Path(config.daemon.state_dir))
    try:
        async with open_pool(config, store=store) as pool:
            yield pool
    finally:
        store.close()


def _held(pool: Pool) -> set[str]:
    return set(pool.cluster.held)


async def test_two_nodes_spread_accounts_move_and_a_flood_wait_follows(
    tmp_path: Path, dc: DC, redis: RedisServer
) -> None:
    async with _node(tmp_path, dc, redis, "node-a") as a:
        async with _node(tmp_path, dc, redis, "node-b") as b:
            await wait_until(
                lambda: _held(a) | _held(b) == set(ACCOUNTS) and bool(_held(a)) and bool(_held(b)),
                timeout_s=4 * LEASE_S,
                what="both nodes to hold their share",
            )
            assert not _held(a) & _held(b)
            for pool in (a, b):
                for acc_id in sorted(_held(pool)):
                    result = await pool.invoke("help.GetConfig", {}, account=acc_id)
                    assert result.meta.account == acc_id
                other = next(iter(set(ACCOUNTS) - _held(pool)))
                state = next(s.state for s in pool.statistics().accounts if s.id == other)
                assert state is AccountState.REMOTE
            assert {a.cluster.node, b.cluster.node} <= set(a.cluster.live_nodes)
            # a FLOOD_WAIT seen on node b
            victim = sorted(_held(b))[0]
            dc.faults.add(
                rpc_error(420, "FLOOD_WAIT_600"),
                user=ACCOUNTS[victim][0],
                method="help.GetConfig",
            )
            with pytest.raises(JobFailed) as caught:
                await b.invoke("help.GetConfig", {}, account=victim)
            assert caught.value.error_class is ErrorClass.FLOOD_WAIT
        # node b stopped: its accounts move to node a, the flood with them
        await wait_until(
            lambda: _held(a) == set(ACCOUNTS), timeout_s=3 * LEASE_S, what="a to take over"
        )
        with pytest.raises(JobFailed) as caught:
            await a.invoke("help.GetConfig", {}, account=victim, deadline_s=2.0)
        assert caught.value.error_class is ErrorClass.NO_ACCOUNT_AVAILABLE
        assert caught.value.retry_after_s is not None and caught.value.retry_after_s > 500
        for acc_id in sorted(set(ACCOUNTS) - {victim}):
            assert (await a.invoke("help.GetConfig", {}, account=acc_id)).meta.account == acc_id


async def test_redis_stopped_answers_no_account_naming_the_cause_then_resumes(
    tmp_path: Path, dc: DC, redis: RedisServer
) -> None:
    async with _node(tmp_path, dc, redis, "node-a") as a:
        await wait_until(
            lambda: _held(a) == set(ACCOUNTS), timeout_s=3 * LEASE_S, what="a to hold all"
        )
        for acc_id in ACCOUNTS:
            await a.invoke("help.GetConfig", {}, account=acc_id)
        assert dc.statistics().connections >= len(ACCOUNTS)
        redis.stop()
        await wait_until(
            lambda: all(s.state is AccountState.REMOTE for s in a.statistics().accounts),
            timeout_s=2 * LEASE_S,
            what="every lease to run out locally",
        )
        await wait_until(
            lambda: dc.statistics().connections == 0,
            timeout_s=LEASE_S,
            what="the connections to be dropped",
        )
        with pytest.raises(JobFailed) as caught:
            await a.invoke("help.GetConfig", {}, deadline_s=2.0)
        assert caught.value.error_class is ErrorClass.NO_ACCOUNT_AVAILABLE
        assert f"redis 127.0.0.1:{redis.port}" in caught.value.message
        assert "leases unconfirmed" in caught.value.message
        redis.restart()
        await wait_until(
            lambda: (
                _held(a) == set(ACCOUNTS)
                and all(s.state is not AccountState.REMOTE for s in a.statistics().accounts)
            ),
            timeout_s=4 * LEASE_S,
            what="the leases to be confirmed again",
        )
        with trio.fail_after(10):
            result = await a.invoke("help.GetConfig", {})
        assert result.meta.account in ACCOUNTS
