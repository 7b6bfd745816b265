"""LeaseBook on a real redis-server: batched fenced leases, lost leases reported, the conn key,
the epoch quarantine after Redis lost its memory, the PHP lock (migration mode).

Redis's TIME is real time, so leases here are short (300-1000 ms) and the waits real."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio
from _redisserver import RedisServer, start_redis

from mtpoold._aioloop import open_aio_loop
from mtpoold._leases import LeaseBook, lease_margin_s
from mtpoold._redislink import ClusterUnavailable, RedisLink, open_redis_link

ACCOUNTS = [f"a{i:02d}" for i in range(1, 6)]


@asynccontextmanager
async def linked(server: RedisServer, n: int = 1) -> AsyncIterator[list[RedisLink]]:
    async with open_aio_loop(), AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(open_redis_link(url=server.url, password=None))
            for _ in range(n)
        ]


def no_quarantine(server: RedisServer) -> RedisServer:
    server.command("SET", "mtpoold:epoch", "e1|0")
    return server


async def test_acquire_renew_release_one_round_trip_each(tmp_path: Path) -> None:
    with no_quarantine(start_redis(tmp_path)) as server:
        async with linked(server) as (link,):
            book = LeaseBook(link, "n1", lease_s=1.0, disconnect_delay_s=0.5)
            await link.run_script("renew", [], [0, 0, 0])  # load the scripts' cache
            await link.run_script("acquire", ["f", "e"], ["x", 1, 1, 0, "e"])
            await link.run_script("release", [], [0])
            start = link.round_trips
            sent_at = trio.current_time()
            leases = await book.acquire(ACCOUNTS)
            assert link.round_trips == start + 1
            assert sorted(leases) == ACCOUNTS
            tokens = [leases[a].token for a in ACCOUNTS]
            assert tokens == sorted(tokens) and len(set(tokens)) == 5
            assert leases["a01"].value == f"n1|e1|{tokens[0]}"
            assert book.lease("a01") == leases["a01"]
            assert sent_at + 1.0 - lease_margin_s(1.0) <= book.valid_until("a01")
            assert book.valid_until("zz") == -math.inf and book.lease("zz") is None
            assert await book.acquire(ACCOUNTS) == {}  # all held: no round trip
            assert link.round_trips == start + 1
            assert await book.renew({"a01"}) == set()
            assert link.round_trips == start + 2
            assert await link.command("GET", link.key("conn", "a01")) == leases["a01"].value
            assert await link.command("EXISTS", link.key("conn", "a02")) == 0
            before = link.round_trips
            await book.release(ACCOUNTS)
            assert link.round_trips == before + 1
            assert book.held == frozenset()
            keys = [link.key(kind, a) for a in ACCOUNTS for kind in ("lease", "conn")]
            assert await link.command("EXISTS", *keys) == 0
            # The fence only grows.
            again = await book.acquire(["a01"])
            assert again["a01"].token > max(tokens)


async def test_renew_reports_deleted_expired_and_taken_leases(tmp_path: Path) -> None:
    with no_quarantine(start_redis(tmp_path)) as server:
        async with linked(server, 2) as (link, other):
            book = LeaseBook(link, "n1", lease_s=1.0, disconnect_delay_s=0.5)
            leases = await book.acquire(ACCOUNTS)
            await link.command("DEL", link.key("lease", "a01"))
            await link.command("PEXPIRE", link.key("lease", "a02"), 1)
            await link.command("DEL", link.key("lease", "a03"))
            thief = LeaseBook(other, "n2", lease_s=1.0, disconnect_delay_s=0.5)
            await trio.sleep(0.01)
            assert sorted(await thief.acquire(["a03"])) == ["a03"]
            assert await book.renew(set()) == {"a01", "a02", "a03"}
            assert book.held == {"a04", "a05"}
            assert book.lease("a03") is None
            # Releasing a lost lease never deletes the new holder's key.
            await book.release(["a03"])
            assert await link.command("GET", link.key("lease", "a03")) == thief.lease("a03").value  # type: ignore[union-attr]
            assert leases["a03"].value != thief.lease("a03").value  # type: ignore[union-attr]


async def test_a_conn_key_blocks_acquisition_until_it_expires(tmp_path: Path) -> None:
    with no_quarantine(start_redis(tmp_path)) as server:
        async with linked(server, 2) as (link, other):
            first = LeaseBook(link, "n1", lease_s=0.3, disconnect_delay_s=0.3)
            lease = (await first.acquire(["a01"]))["a01"]
            assert await first.renew({"a01"}) == set()  # connected: conn key PX 600 ms
            second = LeaseBook(other, "n2", lease_s=0.3, disconnect_delay_s=0.3)
            await trio.sleep(0.4)  # the lease expired, the connection may still be open
            assert await link.command("EXISTS", link.key("lease", "a01")) == 0
            assert await second.acquire(["a01"]) == {}
            assert second.refused == {"a01": "connection may be open"}
            await trio.sleep(0.3)
            taken = await second.acquire(["a01"])
            assert taken["a01"].token > lease.token


async def test_a_clean_release_of_a_lost_lease_frees_the_account_at_once(
    tmp_path: Path,
) -> None:
    with no_quarantine(start_redis(tmp_path)) as server:
        async with linked(server, 2) as (link, other):
            first = LeaseBook(link, "n1", lease_s=0.5, disconnect_delay_s=5.0)
            await first.acquire(["a01"])
            await first.renew({"a01"})
            await link.command("DEL", link.key("lease", "a01"))
            assert await first.renew({"a01"}) == {"a01"}
            await first.release(["a01"])  # after the disconnect: our conn key goes too
            second = LeaseBook(other, "n2", lease_s=0.5, disconnect_delay_s=5.0)
            assert sorted(await second.acquire(["a01"])) == ["a01"]


@pytest.mark.parametrize("loss", ["flushall", "restart without AOF"])
async def test_quarantine_after_redis_lost_its_memory(tmp_path: Path, loss: str) -> None:
    with no_quarantine(start_redis(tmp_path, aof=loss == "flushall")) as server:
        async with linked(server, 2) as (link, other):
            book = LeaseBook(link, "n1", lease_s=0.4, disconnect_delay_s=0.3)
            old = await book.acquire(["a01", "a02"])
            if loss == "flushall":
                server.flushall()
            else:
                server.restart()
                with pytest.raises(ClusterUnavailable):  # the pooled connection died
                    await book.renew(set())
            assert await book.renew({"a01"}) == {"a01", "a02"}
            late = LeaseBook(other, "n2", lease_s=0.4, disconnect_delay_s=0.3)
            assert await late.acquire(["a01"]) == {}  # finds no epoch: makes one, refuses
            assert late.quarantined_until_ms is not None
            assert late.last_cause is not None  # named as the README names it
            assert "epoch quarantine" in late.last_cause and "lost its data" in late.last_cause
            assert await book.acquire(["a01", "a02"]) == {}
            assert book.quarantined_until_ms == late.quarantined_until_ms
            assert book.refused == {"a01": "quarantine", "a02": "quarantine"}
            await trio.sleep(0.75)  # lease + disconnect delay
            new = await book.acquire(["a01", "a02"])
            assert sorted(new) == ["a01", "a02"]
            assert new["a01"].epoch != old["a01"].epoch
            assert book.last_cause is None


async def test_a_restart_with_aof_keeps_leases_and_tokens(tmp_path: Path) -> None:
    with no_quarantine(start_redis(tmp_path, aof=True)) as server:
        async with linked(server) as (link,):
            book = LeaseBook(link, "n1", lease_s=1.0, disconnect_delay_s=0.5)
            old = await book.acquire(["a01"])
            server.restart()
            with pytest.raises(ClusterUnavailable):  # the pooled connection died with it
                await book.renew(set())
            assert book.lease("a01") == old["a01"]  # valid_until unchanged by the failure
            assert await book.renew(set()) == set()
            new = await book.acquire(["a02"])
            assert new["a02"].token == old["a01"].token + 1
            assert new["a02"].epoch == old["a01"].epoch


async def test_unreachable_redis_leaves_valid_until_to_run_out(tmp_path: Path) -> None:
    with no_quarantine(start_redis(tmp_path)) as server:
        async with linked(server) as (link,):
            book = LeaseBook(link, "n1", lease_s=0.3, disconnect_delay_s=0.1)
            await book.acquire(["a01"])
            until = book.valid_until("a01")
            server.stop()
            with pytest.raises(ClusterUnavailable):
                await book.renew(set())
            assert book.valid_until("a01") == until
            assert book.last_cause is not None and "unreachable" in book.last_cause
            await trio.sleep_until(until)
            assert book.lease("a01") is None


async def test_migration_mode_honours_and_takes_the_php_lock(tmp_path: Path) -> None:
    with no_quarantine(start_redis(tmp_path)) as server:
        async with linked(server) as (link,):
            php = "laravel_cache:tg:mtproto:lock:"
            book = LeaseBook(
                link,
                "n1",
                lease_s=1.0,
                disconnect_delay_s=0.5,
                php_keys=True,
                php_prefix="laravel_cache:",
            )
            # PHP holds a01 (Cache::lock: SET NX EX with its owner).
            assert await link.command("SET", php + "a01", "php-owner", "EX", 10, "NX") is True
            leases = await book.acquire(["a01", "a02"])
            assert sorted(leases) == ["a02"]
            assert book.refused == {"a01": "PHP lock held"}
            # We hold a02: PHP's SET NX fails; the renew keeps the lock ours.
            assert await link.command("SET", php + "a02", "php-owner", "EX", 10, "NX") is None
            assert await link.command("GET", php + "a02") == leases["a02"].value
            assert await book.renew(set()) == set()
            assert 900 < await link.command("PTTL", php + "a02") <= 1000
            # PHP's lock released and taken by PHP while we hold the lease: lost.
            await link.command("SET", php + "a02", "php-owner")
            assert await book.renew(set()) == {"a02"}
            await book.release(["a02"])
            assert await link.command("GET", php + "a02") == "php-owner"  # not ours: kept
            await link.command("DEL", php + "a02")
            again = await book.acquire(["a02"])
            await book.release(["a02"])
            assert await link.command("EXISTS", php + "a02", link.key("lease", "a02")) == 0
            assert again["a02"].token > leases["a02"].token
