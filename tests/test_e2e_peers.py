"""End to end: the peer memory (issue 12), counted at the loopback DC.

Real Telethon clients, direct connections, a real state store; requests are counted where
they arrive (``dc.counters(user)``), never at our own API.
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest

from mtpoold._authorize import write_session_file
from mtpoold._config import Config, EconomyConfig
from mtpoold._store import StateStore
from mtpoold.testing import DC, open_dc

from _e2e import fleet_config, fleet_world, open_fleet

ALICE, BOB, CAROL = "15550000001", "15550000002", "15550000003"
ACCOUNTS = {"acc-1": (ALICE, None)}
RESOLVE = "contacts.ResolveUsername"
NEWS = "@mtpoold_news"


@pytest.fixture
async def dc() -> AsyncIterator[DC]:
    async with open_dc(fleet_world()) as dc:
        yield dc


def _config(tmp_path: Path, dc: DC, *, peer_memory: bool = True) -> Config:
    config = fleet_config(tmp_path, dc, proxies=[], accounts=ACCOUNTS)
    return attrs.evolve(config, economy=EconomyConfig(peer_memory=peer_memory))


def _store(tmp_path: Path) -> StateStore:
    return StateStore.open(tmp_path / "state" / "state.sqlite3")


def _peer_rows(tmp_path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(tmp_path / "state" / "state.sqlite3") as conn:
        return conn.execute("SELECT * FROM peers ORDER BY kind, peer_id").fetchall()


def _delta(dc: DC, before: collections.Counter[str], user: str = ALICE) -> dict[str, int]:
    after = dc.counters(user)
    after.subtract(before)
    return {
        k: v
        for k, v in after.items()
        if v and k.split(".")[0] in ("contacts", "channels", "users", "messages")
    }


async def _workload(dc: DC, config: Config, store: StateStore | None) -> dict[str, int]:
    """Two resolves of a channel, one of a user, messages of both, an invoke on the channel."""
    before = dc.counters(ALICE)
    async with open_fleet(dc, config, store=store) as fleet:
        pool = fleet.pool
        for _ in range(2):
            news = await pool.resolve(NEWS)
            assert news.value["participants_count"] == 12345 and news.meta.attempts == 1
        assert (await pool.resolve("@bob_test")).value["username"] == "bob_test"
        got = await pool.get_messages(NEWS, [1, 999])
        assert got.value["1"]["exists"] is True and got.value["999"] == {"exists": False}
        assert (await pool.get_messages(1002, [1])).value == {"1": {"exists": False}}
        full = await pool.invoke("channels.GetFullChannel", {"channel": NEWS})
        assert full.value["full_chat"]["participants_count"] == 12345
    return _delta(dc, before)


async def test_resolve_of_a_known_peer_sends_no_ResolveUsername(tmp_path: Path, dc: DC) -> None:
    with _store(tmp_path) as store:
        first = await _workload(dc, _config(tmp_path, dc), store)
    # one look-up per username, ever; a known channel's resolve is its GetFullChannel alone
    assert first == {
        RESOLVE: 2,  # @mtpoold_news, @bob_test
        "channels.GetFullChannel": 3,  # 2 resolves + the invoke
        "users.GetFullUser": 1,
        "channels.GetMessages": 1,
        "users.GetUsers": 2,  # Telethon's connect (self) + get_messages(1002) checks the user
        "messages.GetMessages": 1,
    }, first


async def test_peer_memory_off_is_the_old_behaviour_and_stores_nothing(
    tmp_path: Path, dc: DC
) -> None:
    with _store(tmp_path) as store:
        off = await _workload(dc, _config(tmp_path, dc, peer_memory=False), store)
    assert off[RESOLVE] == 3  # every resolve looks up (get_messages uses Telethon's cache)
    assert off["channels.GetFullChannel"] == 3
    assert _peer_rows(tmp_path) == []


async def test_peer_memory_survives_a_restart_for_string_sessions(tmp_path: Path, dc: DC) -> None:
    config = _config(tmp_path, dc)
    with _store(tmp_path) as store:
        await _workload(dc, config, store)
    with _store(tmp_path) as store:  # a new pool on the same state dir: a restart
        again = await _workload(dc, config, store)
    assert RESOLVE not in again, again
    assert again["channels.GetFullChannel"] == 3 and again["users.GetFullUser"] == 1


async def test_peer_memory_survives_a_restart_for_session_files(tmp_path: Path, dc: DC) -> None:
    session = tmp_path / "sessions" / "acc-1"
    write_session_file(session, dc.session_string(ALICE), {})
    config = _config(tmp_path, dc)
    account = attrs.evolve(config.accounts[0], session=str(session), session_string=None)
    config = attrs.evolve(config, accounts=(account,))
    with _store(tmp_path) as store:
        first = await _workload(dc, config, store)
    with _store(tmp_path) as store:
        again = await _workload(dc, config, store)
    assert first[RESOLVE] == 2 and RESOLVE not in again, (first, again)


async def test_a_stale_cached_peer_is_looked_up_again_in_the_same_call(
    tmp_path: Path, dc: DC
) -> None:
    config = _config(tmp_path, dc)
    with _store(tmp_path) as store:
        async with open_fleet(dc, config, store=store) as fleet:
            await fleet.pool.get_messages(NEWS, [1])
    # The channel's access hash changed for this account (or the username moved) meanwhile.
    with sqlite3.connect(tmp_path / "state" / "state.sqlite3") as conn:
        conn.execute("UPDATE peers SET access_hash = 12345 WHERE username = 'mtpoold_news'")
    before = dc.counters(ALICE)
    with _store(tmp_path) as store:
        async with open_fleet(dc, config, store=store) as fleet:
            got = await fleet.pool.get_messages(NEWS, [1])
            assert got.value["1"]["exists"] is True
            assert got.meta.attempts == 1  # one job attempt: the retry is inside the call
            again = await fleet.pool.resolve(NEWS)  # the fresh hash was remembered
            assert again.value["id"] == 2001
    delta = _delta(dc, before)
    assert delta == {
        "users.GetUsers": 1,  # Telethon's connect (self)
        "channels.GetMessages": 2,  # CHANNEL_INVALID with the stale hash, then the answer
        RESOLVE: 1,
        "channels.GetFullChannel": 1,
    }, delta
    hashes = [row[3] for row in _peer_rows(tmp_path) if row[4] == "mtpoold_news"]
    assert hashes == [0x2001AA]


async def test_the_store_holds_no_names_phones_or_text(tmp_path: Path, dc: DC) -> None:
    with _store(tmp_path) as store:
        await _workload(dc, _config(tmp_path, dc), store)
    rows = _peer_rows(tmp_path)
    assert {(r[1], r[2], r[4]) for r in rows} == {
        ("channel", 2001, "mtpoold_news"),
        ("user", 1001, "alice_test"),  # the account's own user, from its connect
        ("user", 1002, "bob_test"),
        ("self", 1001, None),
    }
    raw = b"".join(
        p.read_bytes() for p in (tmp_path / "state").iterdir() if p.name.startswith("state")
    )
    for secret in (b"Alice", b"Bob", b"mtpoold News", b"News post", ALICE.encode(), BOB.encode()):
        assert secret not in raw, secret


async def test_a_reload_onto_another_user_drops_the_accounts_peers(tmp_path: Path, dc: DC) -> None:
    config = _config(tmp_path, dc)
    carol = attrs.evolve(config.accounts[0], session_string=dc.session_string(CAROL))
    with _store(tmp_path) as store:
        async with open_fleet(dc, config, store=store) as fleet:
            await fleet.pool.get_messages(NEWS, [1])
            before = dc.counters(CAROL)
            await fleet.pool.reload(attrs.evolve(config, accounts=(carol,)))
            await fleet.pool.get_messages(NEWS, [1])  # carol must look the channel up
            assert _delta(dc, before, CAROL)[RESOLVE] == 1
    rows = _peer_rows(tmp_path)
    assert ("self", 1003) in {(r[1], r[2]) for r in rows}
    assert ("self", 1001) not in {(r[1], r[2]) for r in rows}
