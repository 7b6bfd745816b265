"""Shared per-account state in Redis (`mtpoold._clusterstate`), on a real redis-server.

What a node writes through `ClusterStore` (SQLite as before + queued for Redis) is what the
next holder of the account pulls; garbled fields are skipped by name; a failed flush keeps
its changes; a node whose lease passed cannot overwrite the new holder's state (but its
FLOOD_WAIT still lands).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from _redisserver import RedisServer, start_redis

from mtpoold._clusterstate import (
    SPEND_KEEP_S,
    ClusterState,
    ClusterStore,
    SharedAccountState,
)
from mtpoold._peermemory import PeerMemory
from mtpoold._store import StateStore, StoredAccount, StoredPeer

NOW = 1_764_650_000.0  # the tests' wall clock (UNIX s)
HEX_SECRET = "0123456789abcdef" * 4  # looks like an api_hash: must be redacted


class _LocalLink:
    """Until core's RedisLink lands: the same surface, minimal."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.round_trips = 0

    def key(self, *parts: str) -> str:
        return "t:" + ":".join(parts)

    async def _call(self, fn: Any, *args: Any) -> Any:
        import redis
        import trio_asyncio

        from mtpoold._redislink import ClusterUnavailable

        self.round_trips += 1
        try:
            with trio.fail_after(1.0):
                return await trio_asyncio.aio_as_trio(fn)(*args)
        except (redis.ConnectionError, OSError, trio.TooSlowError) as exc:
            raise ClusterUnavailable(f"redis unreachable ({type(exc).__name__})") from None

    async def command(self, *args: Any) -> Any:
        return await self._call(self._client.execute_command, *args)

    async def run_script(self, name: str, keys: Any, args: Any) -> Any:
        from mtpoold._clusterscripts import SCRIPTS

        return await self._call(self._client.eval, SCRIPTS[name], len(keys), *keys, *args)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with start_redis(tmp_path / "redis", aof=False) as server:
        yield server


@pytest.fixture
async def link(redis_server: RedisServer) -> AsyncIterator[Any]:
    """Core's `RedisLink`; while the branch has only its skeleton, `_LocalLink`."""
    import redis.asyncio
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    from mtpoold._aioloop import open_aio_loop
    from mtpoold._redislink import open_redis_link

    async with open_aio_loop():
        opened = open_redis_link(url=redis_server.url, password=None, key_prefix="t:")
        try:
            real = await opened.__aenter__()
        except NotImplementedError:
            real = None
        if real is not None:
            try:
                yield real
            finally:
                await opened.__aexit__(None, None, None)
            return
        client = redis.asyncio.Redis(port=redis_server.port, retry=Retry(NoBackoff(), 0))
        try:
            yield _LocalLink(client)
        finally:
            await trio_asyncio_close(client)


async def trio_asyncio_close(client: Any) -> None:
    import trio_asyncio

    await trio_asyncio.aio_as_trio(client.aclose)()


async def _load_scripts(link: Any) -> None:
    """Use both scripts once, so that the round trips counted next hold no NOSCRIPT
    fallback (which `RedisLink.round_trips` counts twice)."""
    warm = _state(link)
    warm.push_first_seen("warm-up", NOW)
    await warm.flush()
    await warm.pull_many(["warm-up"])
    await link.command("DEL", warm.key("warm-up"))


async def _until(condition: Callable[[], bool]) -> None:
    """Wait (polling, at most 10 s of trio time) until ``condition()`` holds."""
    with trio.fail_after(10):
        for _ in itertools.count():
            if condition():
                return
            await trio.sleep(0.01)


def _state(link: Any, **kwargs: Any) -> ClusterState:
    return ClusterState(link, wall_clock=lambda: NOW, **kwargs)


def _account(**kwargs: Any) -> StoredAccount:
    base: dict[str, Any] = {
        "id": "a1",
        "cooldown_until_unix": NOW + 300,
        "failures_by_class": {"FLOOD_WAIT": 2},
        "last_error_class": "FLOOD_WAIT",
        "last_error_message": f"FLOOD_WAIT_300 api_hash={HEX_SECRET}",
        "calls_ok": 7,
        "calls_failed": 2,
        "last_used_unix": NOW - 5,
    }
    base.update(kwargs)
    return StoredAccount(**base)


async def test_what_one_node_pushes_the_next_pulls_in_one_round_trip_each(link: Any) -> None:
    state = _state(link)
    state.push_account(_account(), cooldown_cause=f"FLOOD_WAIT: FLOOD_WAIT_300 {HEX_SECRET}")
    state.push_class_cooldown("a1", "send", NOW + 60, "FLOOD_WAIT: send")
    state.push_chat_cooldown("a1", "username:chat", NOW + 30, "SLOWMODE_WAIT: 30")
    state.push_budget_spends(
        [("a1", "send", NOW - 2), ("a1", "send", NOW - 1), ("a2", "join", NOW)]
    )
    state.push_first_seen("a1", NOW - 86400 * 3)
    peer = StoredPeer("a1", "user", 42, -(2**63) + 1, "alice", NOW - 10)
    state.push_peers([peer, StoredPeer("a1", "channel", 7, 2**63 - 1, None, NOW)])
    assert state.queued == 2
    await _load_scripts(link)
    before = link.round_trips
    await state.flush()
    assert link.round_trips - before == 1  # one script for both accounts
    assert state.queued == 0

    before = link.round_trips
    got = await _state(link).pull("a1")
    assert link.round_trips - before == 1
    assert got.found and got.skipped == ()
    assert got.cooldown_until_unix == NOW + 300
    assert got.cooldown_cause.startswith("FLOOD_WAIT: FLOOD_WAIT_300 ")
    assert HEX_SECRET not in got.cooldown_cause
    assert got.last_error_message is not None and HEX_SECRET not in got.last_error_message
    assert got.class_cooldowns == {"send": (NOW + 60, "FLOOD_WAIT: send")}
    assert got.chat_cooldowns == {"username:chat": (NOW + 30, "SLOWMODE_WAIT: 30")}
    assert got.budget_spends == [("send", NOW - 2), ("send", NOW - 1)]
    assert got.first_seen_unix == NOW - 86400 * 3
    assert (got.calls_ok, got.calls_failed, got.failures_by_class) == (7, 2, {"FLOOD_WAIT": 2})
    assert got.last_used_unix == NOW - 5
    assert sorted(got.peers, key=lambda p: p.peer_id) == [
        StoredPeer("a1", "channel", 7, 2**63 - 1, None, NOW),
        peer,
    ]
    assert got.stored_account().cooldown_until_unix == NOW + 300
    later = got.without_expired(NOW + 45)  # the chat cooldown is over, the rest runs
    assert later.chat_cooldowns == {} and later.class_cooldowns == got.class_cooldowns
    assert later.cooldown_until_unix == NOW + 300
    assert got.without_expired(NOW + SPEND_KEEP_S).budget_spends == []

    many = await _state(link).pull_many(["a1", "a2", "nobody"])
    assert link.round_trips - before == 2
    assert many["a1"] == got
    assert many["a2"].budget_spends == [("join", NOW)]
    assert many["nobody"] == SharedAccountState("nobody")  # found=False, defaults


async def test_queued_changes_merge_per_field_and_clears_apply_in_push_order(link: Any) -> None:
    state = _state(link)
    state.push_class_cooldown("a1", "send", NOW + 60, "x")
    state.push_chat_cooldown("a1", "username:old", NOW + 60, "x")
    await state.flush()
    state.push_class_cooldown("a1", "send", None)  # cleared before the flush: gone
    state.push_class_cooldown("a1", "join", NOW + 9, "y")
    state.push_class_cooldown("a1", "join", NOW + 10, "z")  # the last value wins
    state.push_chat_cooldown("a1", "username:queued", NOW + 5, "x")
    state.push_forget_chat_cooldowns("a1")  # drops the stored one and the queued one
    state.push_chat_cooldown("a1", "username:after", NOW + 5, "w")  # after the clear: kept
    state.push_first_seen("a1", NOW)
    await state.flush()
    state.push_first_seen("a1", NOW + 1000)  # first writer wins
    await state.flush()
    got = await state.pull("a1")
    assert got.class_cooldowns == {"join": (NOW + 10, "z")}
    assert got.chat_cooldowns == {"username:after": (NOW + 5, "w")}
    assert got.first_seen_unix == NOW


async def test_spends_older_than_the_longest_window_are_dropped(link: Any) -> None:
    clock = [NOW]
    state = ClusterState(link, wall_clock=lambda: clock[0])
    state.push_budget_spends([("a1", "send", NOW - 10), ("a1", "send", NOW)])
    await state.flush()
    clock[0] = NOW + SPEND_KEEP_S - 5  # NOW - 10 is now past the day
    state.push_budget_spends([("a1", "send", clock[0])])
    await state.flush()
    got = await state.pull("a1")
    assert got.budget_spends == [("send", NOW), ("send", NOW + SPEND_KEEP_S - 5)]


async def test_a_garbled_field_is_skipped_and_logged_by_name_only(
    link: Any, caplog: pytest.LogCaptureFixture
) -> None:
    state = _state(link)
    state.push_account(_account(), cooldown_cause="FLOOD_WAIT")
    state.push_class_cooldown("a1", "send", NOW + 60, "ok")
    await state.flush()
    key = state.key("a1")
    garbage = {
        "counters": "{not json SECRETVALUE",
        "cooldown": '["soon", "x"]',
        "class:join": '[1e999, "x"]',
        "chat:username:x": '"SECRETVALUE"',
        "spends:send": "12 nope 13",
        "peer:user:notanint": "[1, null, 2]",
        "peer:robot:1": "[1, null, 2]",
        "peer:user:5": "[true, null, 2]",
        "first_seen": "\xff",
        "whatever": "SECRETVALUE",
    }
    for name, value in garbage.items():
        await link.command("HSET", key, name, value)
    with caplog.at_level(logging.WARNING, logger="mtpoold.clusterstate"):
        got = await state.pull("a1")
    assert set(got.skipped) == set(garbage)
    assert got.class_cooldowns == {"send": (NOW + 60, "ok")}  # the good field survives
    assert got.cooldown_until_unix is None and got.calls_ok == 0 and got.peers == []
    assert got.budget_spends == []  # a field is all or nothing
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "cluster_state_field_unreadable" in logged and "class:join" in logged
    assert "SECRETVALUE" not in logged and "nope" not in logged


async def test_a_failed_flush_keeps_its_changes_under_newer_ones(
    link: Any, redis_server: RedisServer
) -> None:
    from mtpoold._redislink import ClusterUnavailable

    state = _state(link)
    state.push_class_cooldown("a1", "send", NOW + 60, "old")
    state.push_chat_cooldown("a1", "username:x", NOW + 60, "kept")
    redis_server.stop()
    with pytest.raises(ClusterUnavailable):
        await state.flush()
    assert state.queued == 1 and state.failed_flushes == 1
    state.push_class_cooldown("a1", "send", NOW + 90, "new")  # newer wins over the requeued
    redis_server.restart()
    await state.flush()
    got = await state.pull("a1")
    assert got.class_cooldowns == {"send": (NOW + 90, "new")}
    assert got.chat_cooldowns == {"username:x": (NOW + 60, "kept")}


async def test_the_flusher_writes_what_is_queued_and_survives_an_outage(
    link: Any, redis_server: RedisServer
) -> None:
    state = _state(link, flush_interval_s=0.01)
    async with trio.open_nursery() as nursery:
        await nursery.start(state.run)
        redis_server.stop()
        state.push_class_cooldown("a1", "send", NOW + 60, "FLOOD_WAIT")
        await _until(lambda: state.failed_flushes > 0)
        assert state.last_error is not None and state.queued == 1
        redis_server.restart()
        await _until(lambda: not state.queued and state.last_error is None)
        nursery.cancel_scope.cancel()
    got = await state.pull("a1")
    assert got.class_cooldowns == {"send": (NOW + 60, "FLOOD_WAIT")}


async def test_a_node_whose_lease_passed_cannot_overwrite_but_its_flood_wait_lands(
    link: Any,
) -> None:
    held = {"a1": "n1|e|1"}
    old = _state(link, lease_of=held.get)
    await link.command("SET", link.key("lease", "a1"), "n1|e|1")
    old.push_account(_account(calls_ok=1, cooldown_until_unix=None))
    await old.flush()
    assert (await old.pull("a1")).calls_ok == 1

    await link.command("SET", link.key("lease", "a1"), "n2|e|2")  # n2 took it over
    new = _state(link, lease_of={"a1": "n2|e|2"}.get)
    new.push_account(_account(calls_ok=50, cooldown_until_unix=None))
    new.push_class_cooldown("a1", "send", NOW + 10, "n2's")
    await new.flush()

    old.push_account(_account(calls_ok=2, cooldown_until_unix=NOW + 600), cooldown_cause="FW")
    old.push_class_cooldown("a1", "send", NOW + 5, "stale, shorter")
    old.push_class_cooldown("a1", "join", NOW + 700, "FLOOD_WAIT seen by n1")
    old.push_peers([StoredPeer("a1", "user", 1, 1, None, NOW)])
    await old.flush()
    assert old.fenced_out == 1
    got = await new.pull("a1")
    assert got.calls_ok == 50 and got.peers == []  # n1's counters and peers were dropped
    assert got.cooldown_until_unix == NOW + 600  # but its cooldowns that end later landed
    assert got.class_cooldowns == {
        "send": (NOW + 10, "n2's"),
        "join": (NOW + 700, "FLOOD_WAIT seen by n1"),
    }

    unheld = _state(link, lease_of=lambda account_id: None)  # not held at all
    unheld.push_account(_account(calls_ok=99, cooldown_until_unix=None))
    unheld.push_first_seen("a2", NOW)  # what a restarted pool queues for every account
    before = link.round_trips
    await unheld.flush()
    assert link.round_trips == before  # nothing to send: the holders write their own
    assert unheld.dropped_unheld == 2 and (await new.pull("a1")).calls_ok == 50
    unheld.push_class_cooldown("a1", "join", NOW + 800, "FLOOD_WAIT")  # but a cooldown is sent
    await unheld.flush()
    assert unheld.fenced_out == 1
    assert (await new.pull("a1")).class_cooldowns["join"] == (NOW + 800, "FLOOD_WAIT")


async def test_a_key_that_is_not_a_hash_is_read_as_empty_and_never_stops_the_flusher(
    link: Any,
) -> None:
    state = _state(link)
    await link.command("SET", state.key("a1"), "someone else's string")
    got = await state.pull("a1")
    assert not got.found and got.skipped == ("<the whole key>",)
    many = await state.pull_many(["a1", "a2"])
    assert many["a1"] == got and many["a2"] == SharedAccountState("a2")
    state.push_class_cooldown("a1", "send", NOW + 60, "FLOOD_WAIT")
    state.push_class_cooldown("a2", "send", NOW + 60, "FLOOD_WAIT")
    await state.flush()  # a1 is skipped (dropped, not requeued), a2 written
    assert state.queued == 0 and state.refused == 1 and state.failed_flushes == 0
    assert (await state.pull("a2")).class_cooldowns == {"send": (NOW + 60, "FLOOD_WAIT")}
    assert await link.command("GET", state.key("a1")) in (
        "someone else's string",
        b"someone else's string",
    )


async def test_bytes_that_are_not_utf8_never_make_a_pull_raise(link: Any) -> None:
    state = _state(link)
    state.push_class_cooldown("a1", "send", NOW + 60, "ok")
    await state.flush()
    await link.command("HSET", state.key("a1"), "disabled", b"\xff\xfe")
    got = await state.pull("a1")
    # the link decodes replies (a whole-key error) or hands bytes over (that field skipped)
    assert got.skipped in (("<the whole key>",), ("disabled",))
    assert (await state.pull_many(["a1"]))["a1"] == got
    await link.command("HDEL", state.key("a1"), "disabled")
    assert (await state.pull("a1")).class_cooldowns == {"send": (NOW + 60, "ok")}


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[StateStore]:
    with StateStore.open(tmp_path / "state" / "state.sqlite3") as store:
        yield store


async def test_the_cluster_store_writes_sqlite_and_queues_redis(
    link: Any, sqlite: StateStore
) -> None:
    state = _state(link)
    store = ClusterStore(sqlite, state)
    store.cooldown_cause_of = lambda account_id: "FLOOD_WAIT: FLOOD_WAIT_300"
    store.save_account(_account())
    store.save_class_cooldown("a1", "send", NOW + 60, "FLOOD_WAIT")
    store.save_chat_cooldown("a1", "username:c", NOW + 60, "SLOWMODE_WAIT")
    store.add_budget_spends([("a1", "send", NOW)])
    assert store.first_seen(["a1"], NOW) == {"a1": NOW}
    memory = PeerMemory(store, clock=lambda: NOW)  # the peer memory writes through it
    memory.book("a1").learn([StoredPeer("a1", "user", 5, 55, "bob", 0.0)])
    await state.flush()

    assert sqlite.load().accounts["a1"].calls_ok == 7
    assert sqlite.load_class_cooldowns(NOW) == {"a1": {"send": (NOW + 60, "FLOOD_WAIT")}}
    assert [p.peer_id for p in sqlite.load_peers()] == [5]
    got = await state.pull("a1")
    assert got.cooldown_cause == "FLOOD_WAIT: FLOOD_WAIT_300"
    assert got.class_cooldowns == {"send": (NOW + 60, "FLOOD_WAIT")}
    assert got.chat_cooldowns == {"username:c": (NOW + 60, "SLOWMODE_WAIT")}
    assert got.budget_spends == [("send", NOW)] and got.first_seen_unix == NOW
    assert [(p.peer_id, p.access_hash, p.username) for p in got.peers] == [(5, 55, "bob")]

    memory.book("a1").forget("username:bob")
    store.forget_chat_cooldowns("a1")
    await state.flush()
    got = await state.pull("a1")
    assert got.peers == [] and got.chat_cooldowns == {}

    with store.quiet():  # applying pulled state: SQLite only
        store.save_class_cooldown("a1", "join", NOW + 5, "quiet")
    assert state.queued == 0
    assert store.forget_account("a1") is True
    await state.flush()
    assert not (await state.pull("a1")).found
    assert sqlite.account_ids() == set()


async def test_adopt_mirrors_pulled_state_into_sqlite(link: Any, sqlite: StateStore) -> None:
    state = _state(link)
    state.push_account(_account(disabled_reason="USER_DEACTIVATED", disabled_at_unix=NOW))
    state.push_class_cooldown("a1", "send", NOW + 60, "FLOOD_WAIT")
    state.push_chat_cooldown("a1", "username:c", NOW + 60, "SLOWMODE_WAIT")
    state.push_peers([StoredPeer("a1", "user", 5, 55, "bob", NOW)])
    await state.flush()
    sqlite.save_chat_cooldown("a1", "username:stale", NOW + 99, "gone elsewhere")
    store = ClusterStore(sqlite, state)
    store.adopt(await state.pull("a1"))
    store.adopt(await state.pull("nobody"))  # not found: nothing written
    assert state.queued == 0
    row = sqlite.load().accounts["a1"]
    assert (row.disabled_reason, row.calls_ok) == ("USER_DEACTIVATED", 7)
    assert sqlite.load_class_cooldowns(NOW) == {"a1": {"send": (NOW + 60, "FLOOD_WAIT")}}
    assert sqlite.load_chat_cooldowns(NOW) == {"a1": {"username:c": (NOW + 60, "SLOWMODE_WAIT")}}
    assert [p.peer_id for p in sqlite.load_peers()] == [5]
    assert sqlite.account_ids() == {"a1"}
