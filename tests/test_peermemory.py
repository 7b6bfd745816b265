"""The peer memory on its own (`mtpoold._peermemory`): plain Python, a real state store."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtpoold._peermemory import SEEN_REFRESH_S, PeerMemory, first_peer_argument, keys_of
from mtpoold._store import StateStore, StoredPeer


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def _channel(
    peer_id: int = 2001, access_hash: int = 7, username: str | None = "news"
) -> StoredPeer:
    return StoredPeer("", "channel", peer_id, access_hash, username, 0.0)


def _user(peer_id: int = 1002, access_hash: int = 9, username: str | None = "bob") -> StoredPeer:
    return StoredPeer("", "user", peer_id, access_hash, username, 0.0)


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    with StateStore.open(tmp_path / "state.sqlite3") as s:
        yield s  # type: ignore[misc]


def test_knows_and_knowers_by_id_and_username(store: StateStore) -> None:
    memory = PeerMemory(store)
    assert memory.knowers("username:news") == frozenset()
    assert memory.book("a1").learn([_channel(), _user()]) == 2
    memory.book("a2").learn([_channel()])
    assert memory.knows("a1", "username:news") and memory.knows("a1", "channel_id:2001")
    assert memory.knows("a1", "user_id:1002") and not memory.knows("a2", "user_id:1002")
    assert set(memory.knowers("channel_id:2001")) == {"a1", "a2"}
    assert not memory.knows("a3", "username:news")
    assert keys_of(memory.book("a1").get("username:bob")) == ("user_id:1002", "username:bob")  # type: ignore[arg-type]


def test_peers_survive_a_reload_of_the_store(tmp_path: Path) -> None:
    clock = Clock()
    with StateStore.open(tmp_path / "state.sqlite3") as store:
        book = PeerMemory(store, clock=clock).book("a1")
        book.check_owner(1001)
        book.learn([_channel(), _user()])
    with StateStore.open(tmp_path / "state.sqlite3") as store:
        memory = PeerMemory.load(store)
        rows = store.load_peers()
    book = memory.book("a1")
    assert book.owner == 1001
    assert book.get("username:news") == StoredPeer("a1", "channel", 2001, 7, "news", clock.now)
    assert {(r.kind, r.peer_id) for r in rows} == {
        ("self", 1001),
        ("channel", 2001),
        ("user", 1002),
    }


def test_a_username_names_one_peer_the_last_seen(store: StateStore) -> None:
    clock = Clock()
    memory = PeerMemory(store, clock=clock)
    book = memory.book("a1")
    book.learn([_channel(2001, username="news")])
    clock.now += 10
    book.learn([_channel(2002, access_hash=8, username="news")])  # the username moved
    got = book.get("username:news")
    assert got is not None and got.peer_id == 2002
    old = book.get("channel_id:2001")
    assert old is not None and old.username is None
    assert set(memory.knowers("username:news")) == {"a1"}
    # the store agrees, and a load keeps the one seen last
    assert {(r.peer_id, r.username) for r in store.load_peers()} == {(2001, None), (2002, "news")}
    again = PeerMemory.load(store).book("a1").get("username:news")
    assert again is not None and again.peer_id == 2002


def test_an_unchanged_peer_is_written_again_only_after_SEEN_REFRESH_S(store: StateStore) -> None:
    clock = Clock()
    book = PeerMemory(store, clock=clock).book("a1")
    assert book.learn([_channel()]) == 1
    clock.now += 60
    assert book.learn([_channel()]) == 0  # seen again: no write
    assert book.learn([_channel(access_hash=99)]) == 1  # a new hash is written at once
    clock.now += SEEN_REFRESH_S
    assert book.learn([_channel(access_hash=99)]) == 1
    assert store.load_peers()[0].seen_unix == clock.now


def test_forget_drops_the_peer_and_its_keys(store: StateStore) -> None:
    memory = PeerMemory(store)
    book = memory.book("a1")
    book.learn([_channel(), _user()])
    forgotten = book.forget("username:news")
    assert forgotten is not None and forgotten.peer_id == 2001
    assert book.get("channel_id:2001") is None and not memory.knows("a1", "username:news")
    assert memory.knowers("channel_id:2001") == frozenset()
    assert book.forget("username:news") is None
    assert [r.peer_id for r in store.load_peers()] == [1002]


def test_another_user_on_the_account_drops_its_peers(store: StateStore) -> None:
    memory = PeerMemory(store)
    book = memory.book("a1")
    book.learn([_channel()])  # seen during the first connect, before the owner is known
    assert book.check_owner(1001) is False  # first owner: the peers are kept
    assert book.get("username:news") is not None
    assert book.check_owner(1001) is False
    assert book.check_owner(1003) is True  # another session: access hashes are not its own
    assert len(book) == 0 and memory.knowers("username:news") == frozenset()
    assert [(r.kind, r.peer_id) for r in store.load_peers()] == [("self", 1003)]


def test_forget_account_and_a_closed_store_never_raise(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path / "state.sqlite3")
    memory = PeerMemory(store)
    memory.book("a1").learn([_channel()])
    assert memory.forget_account("a1") == 1
    assert store.load_peers() == []
    store.close()
    memory.book("a1").learn([_channel()])  # logged, kept in memory
    assert memory.knows("a1", "username:news")


def test_kinds_without_an_access_hash_are_ignored() -> None:
    book = PeerMemory().book("a1")
    assert book.learn([StoredPeer("", "chat", 7, 0, None, 0.0)]) == 0
    assert len(book) == 0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"peer": "@news", "id": [1]}, "@news"),
        ({"channel": -1002001}, -1002001),
        ({"id": "@bob"}, "@bob"),
        ({"id": 5}, None),  # a message or photo id
        ({"id": [1, 2]}, None),
        ({"peer": {"_": "InputPeerSelf"}}, None),
        ({"user_id": True}, None),
        ({}, None),
    ],
)
def test_first_peer_argument(args: dict[str, object], expected: object) -> None:
    assert first_peer_argument(args) == expected
