"""Two cluster nodes in one process on a real redis-server and the loopback DC (issue 15).

Each node is a whole pool as the daemon opens one (`mtpoold._compose.open_pool` with
``[cluster]``): real Telethon clients, leases, the shared gate and the shared state in Redis.
One pool per process runs at a time (one trio-asyncio loop per thread; a second pool in a
thread of its own lost its loop to trio-asyncio's cancellation forwarding), so a second live
node is a registry entry written straight into Redis, and an account moves to a node opened
after the first one closed; `tests/test_cluster_chaos.py` runs daemons side by side.
Real sockets, so the real clock: ``lease_s = 3`` (renewed every second) keeps each test to a
few seconds.
"""

from __future__ import annotations

import json
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
#: Seconds a test may take at most (a few rounds, a quarantine of 2 x LEASE_S, start-up).
TEST_LIMIT_S = 90.0
ACCOUNTS = {f"a{i}": (PHONES[i], None) for i in range(4)}


@pytest.fixture
async def dc() -> AsyncIterator[DC]:
    async with open_dc(fleet_world()) as dc:
        yield dc


@pytest.fixture
def redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    with start_redis(tmp_path / "redis") as server:
        yield server


def _config(tmp_path: Path, dc: DC, redis: RedisServer, node: str, **cluster: object) -> Config:
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
                **cluster,
            },
            "daemon": {"state_dir": str(tmp_path / node / "state")},
        },
    )


def _open_store(state_dir: Path) -> StateStore:
    state_dir.mkdir(parents=True, exist_ok=True)
    return StateStore.open(state_dir / "state.sqlite3")


@asynccontextmanager
async def _node(
    tmp_path: Path, dc: DC, redis: RedisServer, name: str, **cluster: object
) -> AsyncIterator[Pool]:
    config = _config(tmp_path, dc, redis, name, **cluster)
    store = _open_store(Path(config.daemon.state_dir))
    try:
        async with open_pool(config, store=store) as pool:
            yield pool
    finally:
        store.close()


def _held(pool: Pool) -> set[str]:
    return set(pool.cluster.held)


def _states(pool: Pool) -> dict[str, AccountState]:
    return {s.id: s.state for s in pool.statistics().accounts}


async def test_accounts_spread_over_live_nodes_and_move_when_one_leaves(
    tmp_path: Path, dc: DC, redis: RedisServer
) -> None:
    from mtpoold._clusternodes import assign_accounts

    # a second live node, as its heartbeat leaves it in the registry
    info = json.dumps({"rpc": "127.0.0.1:1", "pid": 1, "started_unix": 0, "version": "x"})
    redis.command("SET", "mtpoold:node:node-b", info, "PX", "60000")
    redis.command("SADD", "mtpoold:nodes", "node-b")
    placed = assign_accounts(ACCOUNTS, ["node-a", "node-b"])
    mine = {a for a in ACCOUNTS if placed[a] == "node-a"}
    assert mine and mine != set(ACCOUNTS)
    with trio.fail_after(TEST_LIMIT_S):
        await _spread_then_leave(tmp_path, dc, redis, mine)


async def _spread_then_leave(tmp_path: Path, dc: DC, redis: RedisServer, mine: set[str]) -> None:
    async with _node(tmp_path, dc, redis, "node-a") as a:
        await wait_until(lambda: _held(a) == mine, timeout_s=10 * LEASE_S, what="a's share")
        await trio.sleep(LEASE_S)  # a few rounds more: still only its share
        assert _held(a) == mine
        assert set(a.cluster.live_nodes) == {"node-a", "node-b"}
        for acc_id in sorted(mine):
            assert (await a.invoke("help.GetConfig", {}, account=acc_id)).meta.account == acc_id
        other = sorted(set(ACCOUNTS) - mine)[0]
        assert _states(a)[other] is AccountState.REMOTE
        with pytest.raises(JobFailed) as caught:
            await a.invoke("help.GetConfig", {}, account=other, deadline_s=1.0)
        assert caught.value.error_class is ErrorClass.NO_ACCOUNT_AVAILABLE
        assert "unheld" in caught.value.message
        redis.command("DEL", "mtpoold:node:node-b")  # node b left
        await wait_until(
            lambda: _held(a) == set(ACCOUNTS), timeout_s=3 * LEASE_S, what="a to take over"
        )
        assert (await a.invoke("help.GetConfig", {}, account=other)).meta.account == other


async def test_a_flood_wait_seen_on_one_node_keeps_the_account_out_on_the_next(
    tmp_path: Path, dc: DC, redis: RedisServer
) -> None:
    victim = "a0"
    async with _node(tmp_path, dc, redis, "node-a") as a:
        await wait_until(
            lambda: _held(a) == set(ACCOUNTS), timeout_s=10 * LEASE_S, what="a to hold all"
        )
        dc.faults.add(
            rpc_error(420, "FLOOD_WAIT_600"), user=ACCOUNTS[victim][0], method="help.GetConfig"
        )
        with pytest.raises(JobFailed) as caught:
            await a.invoke("help.GetConfig", {}, account=victim)
        assert caught.value.error_class is ErrorClass.FLOOD_WAIT
    # node a left cleanly (drained, flushed, released): node b takes the accounts over
    async with _node(tmp_path, dc, redis, "node-b") as b:
        await wait_until(
            lambda: _held(b) == set(ACCOUNTS), timeout_s=3 * LEASE_S, what="b to hold all"
        )
        with pytest.raises(JobFailed) as caught:
            await b.invoke("help.GetConfig", {}, account=victim, deadline_s=2.0)
        assert caught.value.error_class is ErrorClass.NO_ACCOUNT_AVAILABLE
        assert caught.value.retry_after_s is not None and caught.value.retry_after_s > 500
        for acc_id in sorted(set(ACCOUNTS) - {victim}):
            assert (await b.invoke("help.GetConfig", {}, account=acc_id)).meta.account == acc_id


async def test_redis_stopped_answers_no_account_naming_the_cause_then_resumes(
    tmp_path: Path, dc: DC, redis: RedisServer
) -> None:
    async with _node(tmp_path, dc, redis, "node-a") as a:
        await wait_until(
            lambda: _held(a) == set(ACCOUNTS), timeout_s=10 * LEASE_S, what="a to hold all"
        )
        for acc_id in ACCOUNTS:
            await a.invoke("help.GetConfig", {}, account=acc_id)
        assert dc.statistics().connections >= len(ACCOUNTS)
        redis.stop()
        await wait_until(
            lambda: all(s is AccountState.REMOTE for s in _states(a).values()),
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
            lambda: _held(a) == set(ACCOUNTS) and AccountState.REMOTE not in _states(a).values(),
            timeout_s=4 * LEASE_S,
            what="the leases to be confirmed again",
        )
        result = await a.invoke("help.GetConfig", {}, deadline_s=5.0)
        assert result.meta.account in ACCOUNTS


async def test_a_first_start_on_an_empty_redis_waits_out_the_quarantine_and_says_so(
    tmp_path: Path, dc: DC, redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A brand-new Redis has no epoch, like one that lost its data: the first node writes
    one and acquires nothing for ``lease_s + disconnect_delay_s`` (2 x lease_s). Meanwhile
    the node's ``trouble`` (status), its log and each job's error name the quarantine and
    the seconds left, not a bare "unheld"."""
    caplog.set_level("INFO", logger="mtpoold.cluster")
    with trio.fail_after(TEST_LIMIT_S):
        async with _node(tmp_path, dc, redis, "node-a") as a:
            await wait_until(
                lambda: "epoch quarantine" in (_remote_reason(a, "a0") or ""),
                timeout_s=2 * LEASE_S,
                what="quarantine",
            )
            assert a.cluster.trouble is not None
            assert "epoch quarantine" in a.cluster.trouble
            assert "first start on an empty redis" in a.cluster.trouble
            with pytest.raises(JobFailed) as caught:
                await a.invoke("help.GetConfig", {}, account="a0", deadline_s=0.5)
            assert caught.value.error_class is ErrorClass.NO_ACCOUNT_AVAILABLE
            assert "epoch quarantine" in caught.value.message
            assert [str(r.msg) for r in caplog.records if "quarantine" in str(r.msg)]
            await wait_until(
                lambda: _held(a) == set(ACCOUNTS), timeout_s=4 * LEASE_S, what="a to hold all"
            )
            assert a.cluster.trouble is None
            assert (await a.invoke("help.GetConfig", {}, account="a0")).meta.account == "a0"


async def test_a_node_started_with_a_live_nodes_name_holds_nothing_and_says_why(
    tmp_path: Path, dc: DC, redis: RedisServer
) -> None:
    """Another live process already has the name (its key refreshed in Redis): this node
    takes no lease, its status and each job's error name the clash and the other's rpc;
    once the other leaves, it serves."""
    redis.command("SET", "mtpoold:epoch", "e1|0")  # no quarantine
    other = json.dumps({"rpc": "10.0.0.9:8765", "pid": 4242, "started_unix": 0, "version": "x"})
    redis.command("SET", "mtpoold:node:node-a", other, "PX", "60000")
    redis.command("SADD", "mtpoold:nodes", "node-a")
    with trio.fail_after(TEST_LIMIT_S):
        async with _node(tmp_path, dc, redis, "node-a") as a:
            await wait_until(
                lambda: a.cluster.trouble is not None, timeout_s=2 * LEASE_S, what="the clash"
            )
            assert "node name 'node-a' is in use" in a.cluster.trouble
            assert "10.0.0.9:8765" in a.cluster.trouble
            await trio.sleep(LEASE_S)  # rounds go by: still nothing taken
            assert _held(a) == set()
            with pytest.raises(JobFailed) as caught:
                await a.invoke("help.GetConfig", {}, account="a0", deadline_s=0.5)
            assert caught.value.error_class is ErrorClass.NO_ACCOUNT_AVAILABLE
            assert "node name 'node-a' is in use" in caught.value.message
            assert dc.statistics().connections == 0
            redis.command("DEL", "mtpoold:node:node-a")  # the other one left
            await wait_until(
                lambda: _held(a) == set(ACCOUNTS), timeout_s=3 * LEASE_S, what="a to hold all"
            )
            assert a.cluster.trouble is None
            assert (await a.invoke("help.GetConfig", {}, account="a0")).meta.account == "a0"
        assert redis.command("EXISTS", "mtpoold:node:node-a") == b":0"  # left cleanly


async def test_migration_mode_leaves_an_account_a_php_worker_locks_unused_and_says_why(
    tmp_path: Path, dc: DC, redis: RedisServer
) -> None:
    """``php_keys``: a PHP worker holds ``tg:mtproto:lock:{id}`` (Laravel ``Cache::lock``):
    the account is never acquired or connected, its status says ``unheld: PHP lock held``,
    the other accounts serve; once PHP lets go, this node takes it."""
    redis.command("SET", "mtpoold:epoch", "e1|0")  # no quarantine
    redis.command("SET", "laravel_cache:tg:mtproto:lock:a0", "php-worker-7", "EX", "600")
    with trio.fail_after(TEST_LIMIT_S):
        async with _node(
            tmp_path, dc, redis, "node-a", php_keys=True, php_prefix="laravel_cache:"
        ) as a:
            others = set(ACCOUNTS) - {"a0"}
            await wait_until(lambda: _held(a) == others, timeout_s=3 * LEASE_S, what="others")
            await wait_until(
                lambda: _remote_reason(a, "a0") == "unheld: PHP lock held",
                timeout_s=2 * LEASE_S,
                what="a0's reason",
            )
            assert _held(a) == others
            assert redis.command("GET", "laravel_cache:tg:mtproto:lock:a0") == b"$12"
            assert not dc.counters(ACCOUNTS["a0"][0])  # never connected: no call reached the DC
            with pytest.raises(JobFailed) as caught:
                await a.invoke("help.GetConfig", {}, account="a0", deadline_s=1.0)
            assert caught.value.error_class is ErrorClass.NO_ACCOUNT_AVAILABLE
            assert "PHP lock held" in caught.value.message
            redis.command("DEL", "laravel_cache:tg:mtproto:lock:a0")  # PHP let go
            await wait_until(
                lambda: _held(a) == set(ACCOUNTS), timeout_s=3 * LEASE_S, what="a0 taken"
            )
            assert _remote_reason(a, "a0") is None
            assert (await a.invoke("help.GetConfig", {}, account="a0")).meta.account == "a0"


def _remote_reason(pool: Pool, account_id: str) -> str | None:
    return next(s.remote_reason for s in pool.statistics().accounts if s.id == account_id)
